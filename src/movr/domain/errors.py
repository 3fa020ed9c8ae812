"""Domain errors: what can go wrong in a user action, in words a user understands.

Each carries a stable `code` that the web layer maps to an HTTP status and the API puts in its JSON body.
"""

from __future__ import annotations


class MovrError(Exception):
    code = "movr_error"
    status = 400

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    default_message = "something went wrong"

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(MovrError):
    code = "invalid_input"
    status = 422
    default_message = "the input is not valid"


class BadCity(InvalidInput):
    code = "bad_city"
    default_message = "unknown city"


class UnknownUser(MovrError):
    code = "unknown_user"
    status = 404
    default_message = "no such user"


class UnknownVehicle(MovrError):
    code = "unknown_vehicle"
    status = 404
    default_message = "no such vehicle"


class UnknownRide(MovrError):
    code = "unknown_ride"
    status = 404
    default_message = "no such ride"


class UnknownPromoCode(MovrError):
    code = "unknown_promo_code"
    status = 404
    default_message = "no such promo code, or it has expired"


class UsernameTaken(MovrError):
    code = "username_taken"
    status = 409
    default_message = "that username is taken"


class BadCredentials(MovrError):
    code = "bad_credentials"
    status = 401
    default_message = "wrong username or password"


class VehicleNotAvailable(MovrError):
    code = "vehicle_not_available"
    status = 409
    default_message = "that vehicle is not available"


class VehicleInUse(MovrError):
    code = "vehicle_in_use"
    status = 409
    default_message = "that vehicle is in a ride"


class WrongCity(MovrError):
    code = "wrong_city"
    status = 409
    default_message = "you can only do that in your home city"


class RideAlreadyEnded(MovrError):
    code = "ride_already_ended"
    status = 409
    default_message = "that ride has already ended"


class RideNotEnded(MovrError):
    code = "ride_open"
    status = 409
    default_message = "end your open ride first"


class NotYourRide(MovrError):
    code = "not_your_ride"
    status = 403
    default_message = "that is not your ride"


class NotYourVehicle(MovrError):
    code = "not_your_vehicle"
    status = 403
    default_message = "that is not your vehicle"


class RetriesExhausted(MovrError):
    code = "retries_exhausted"
    status = 503
    default_message = "the database was too busy to finish this; please try again"


class StoreUnavailable(MovrError):
    code = "store_unavailable"
    status = 503
    default_message = "the database for that region is not reachable right now"
