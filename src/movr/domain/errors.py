"""Domain errors: what can go wrong in a user action, in words a user understands.

Each carries a stable `code` that the web layer maps to an HTTP status and the API puts in its JSON body.
`ConfigError` is the operator's, not a user's: settings that describe no database the app can use. It lives
here, below the store and the web app, so that every layer that reads settings raises the same one.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The settings do not describe a database we can reach (a URL, a region, a pool timeout...)."""


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


class UsernamePending(UsernameTaken):
    """Another sign-up holds the name and has not finished (e.g. a two-phase commit waiting for its
    resolver): it may yet take the name or let it go."""

    code = "username_pending"
    default_message = "another sign-up for that username has not finished yet; try again in a few seconds"


class BadIdempotencyKey(MovrError):
    code = "bad_idempotency_key"
    status = 400
    default_message = "an Idempotency-Key is 1 to 255 visible ASCII characters (a UUID is a good one)"


class IdempotencyKeyReused(MovrError):
    """The key was used, by the same user (or for a sign-up in the same city), for a different request.

    409, not the 422 of the IETF Idempotency-Key draft: the request itself is valid (with a fresh key it
    succeeds); what it conflicts with is the state the key already holds. A 422 would also tell a client
    that checks the API against its document (schemathesis) that a valid request was refused."""

    code = "idempotency_key_reused"
    status = 409
    default_message = "that Idempotency-Key was used for a different request; use a new key for a new request"


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


class Busy(MovrError):
    """A row this needs stayed locked by another, unfinished change for longer than the lock timeout."""

    code = "busy"
    status = 503
    default_message = "another change to the same data has not finished yet; please try again in a few seconds"


class TimedOut(MovrError):
    """The statement ran longer than the statement timeout and was cancelled: nothing was changed."""

    code = "timed_out"
    status = 503
    default_message = "the database took too long to answer; please try again"


class StoreUnavailable(MovrError):
    code = "store_unavailable"
    status = 503
    default_message = "the database for that region is not reachable right now"


class ResultAmbiguous(MovrError):
    """The database could not tell whether the transaction committed (SQLSTATE 40003): never retried blindly."""

    code = "result_ambiguous"
    status = 503
    default_message = "the database could not confirm whether this change was saved: it may have been; check first"


class SessionEnded(MovrError):
    """The signed session or bearer token was ended (log-out, log-out everywhere, account removed)."""

    code = "session_ended"
    status = 401
    default_message = "this session has ended; log in again"


class TooManyAttempts(MovrError):
    """Too many failed log-ins for one username: refused, without checking the password, until `retry_after`."""

    code = "too_many_attempts"
    status = 429
    default_message = "too many failed log-ins for this username; try again later"

    def __init__(self, message: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
