"""The API's request and response bodies (marshmallow, via APIFlask): validation and the OpenAPI document.

Limits mirror `movr.domain.rules`: a body that breaks them is a 422 before any action runs. Request
bodies refuse unknown fields (`additionalProperties: false` in the document). City names are checked by
the actions against the preset; the document lists them (`enum`, added per app in `api.document_cities`).
"""

from __future__ import annotations

from typing import Any

from apiflask import Schema
from apiflask.fields import UUID, Boolean, DateTime, Integer, Method, Nested, String
from apiflask.validators import Length, OneOf, Range, Regexp
from marshmallow import EXCLUDE, RAISE, ValidationError

from movr.domain import rules
from movr.domain.models import VEHICLE_TYPES

PRINTABLE = r"^[^\x00-\x1f]*$"  # no control characters (NUL cannot even be stored)
# Control characters and what Python's str.isspace() calls white space, spelled out: the document's
# readers (JSON Schema, ECMA-262 regular expressions) and Python disagree on `\s`.
BLANK = r"\x00-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL = rf"^$|^[^@{BLANK}]{{1,64}}@[^@{BLANK}]{{1,189}}$"
# Printable with something left once the action strips white space (a blank code is no code at all).
VISIBLE = rf"^[^\x00-\x1f]*[^{BLANK}][^\x00-\x1f]*$"


class Pattern(Regexp):
    """A Regexp the whole value must match, as JSON Schema's `pattern` means it: Python's `$` also
    matches before a final newline (so `^[a-z]+$` would let "abc\\n" through)."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def _no_surrogates(value: str) -> str:
    """A lone surrogate (legal in JSON text, not in UTF-8) can be neither stored nor hashed."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Not valid Unicode text.") from None
    return value


class Text(String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return _no_surrogates(super()._deserialize(value, attr, data, **kwargs))


def text(limit: int, *, required: bool = False, minimum: int = 0, **kwargs: Any) -> Text:
    return Text(
        required=required,
        validate=[Length(min=minimum, max=limit), Pattern(PRINTABLE)],
        **({} if required else {"load_default": ""}),
        **kwargs,
    )


class In(Schema):
    class Meta:
        unknown = RAISE


# --- requests ----------------------------------------------------------------------------------------


class SignUpIn(In):
    username = Text(
        required=True,
        validate=[Length(min=3, max=32), Pattern(rules.USERNAME_RE)],
        metadata={"description": "3 to 32 letters, digits, '.', '_' or '-'; unique across every region"},
    )
    password = Text(required=True, validate=Length(min=rules.MIN_PASSWORD, max=rules.MAX_PASSWORD))
    city = String(required=True, validate=Length(max=64), metadata={"description": "home city"})
    first_name = text(rules.MAX_NAME)
    last_name = text(rules.MAX_NAME)
    email = Text(load_default="", validate=[Length(max=254), Pattern(EMAIL)])


class LogInIn(In):
    username = Text(required=True, validate=Length(min=1, max=64))
    password = Text(required=True, validate=Length(min=1, max=rules.MAX_PASSWORD))


class VehicleIn(In):
    type = String(required=True, validate=OneOf(VEHICLE_TYPES))
    brand = text(rules.MAX_NAME)
    color = text(32)
    location = text(rules.MAX_LOCATION)
    city = String(
        validate=Length(max=64),
        metadata={"description": "optional; vehicles are added in the owner's home city only"},
    )


class RideIn(In):
    vehicle_id = UUID(required=True)
    city = String(
        validate=Length(max=64),
        metadata={"description": "the vehicle's city (default: your home city, the only one you can ride in)"},
    )


class RideEndIn(In):
    location = Text(
        allow_none=True,
        load_default=None,
        validate=[Length(max=rules.MAX_LOCATION), Pattern(PRINTABLE)],
        metadata={"description": "where the vehicle was left (default: where the ride started)"},
    )


class PromoCodeIn(In):
    code = Text(required=True, validate=[Length(min=1, max=32), Pattern(VISIBLE)])


class VehiclesQuery(In):
    all = Boolean(load_default=False, metadata={"description": "include vehicles that are in a ride"})


class IdempotencyHeaders(Schema):
    """The writes that create something take an Idempotency-Key. Validated by the action (a malformed key
    is a 400, not a 422), so the limits below are documentation only."""

    class Meta:
        unknown = EXCLUDE  # every other header

    idempotency_key = String(
        data_key="Idempotency-Key",
        metadata={
            "description": "A key of your choosing (a UUID is a good one) that makes a retry safe: the same"
            " request sent again with it, within 24 hours, gets the first answer (status and body) and changes"
            " nothing. Scoped to the signed-in user (for a sign-up: to the city). Reused for a different"
            " request: 409. Malformed: 400.",
            "minLength": 1,
            "maxLength": 255,
            "pattern": "^[!-~]+$",
        },
    )


# --- responses ---------------------------------------------------------------------------------------


class RowOut(Schema):
    """A user, vehicle or ride, named as its table keys it: by its city (which homes the row) and id."""

    city = String(required=True)
    id = UUID(required=True)


class UserPublicOut(RowOut):
    username = String(required=True)
    first_name = String(required=True)
    last_name = String(required=True)
    created_at = DateTime(required=True, allow_none=True)


class UserOut(UserPublicOut):
    email = String(required=True, metadata={"description": "in your own record only; a city's user list leaves it out"})


class SessionOut(Schema):
    token = String(required=True, metadata={"description": "send it as `Authorization: Bearer <token>`"})
    token_type = String(required=True, metadata={"enum": ["Bearer"]})
    expires_in = Integer(required=True, metadata={"description": "seconds"})
    csrf_token = String(
        required=True, metadata={"description": "send it as X-CSRFToken on writes authenticated by the cookie"}
    )
    user = Nested(UserOut, required=True)


class CityOut(Schema):
    name = String(required=True)
    region = String(required=True, metadata={"description": "the region that homes the city's data"})
    local = Boolean(required=True, metadata={"description": "homed in the region of this app server"})


class VehicleOut(RowOut):
    type = String(required=True, validate=OneOf(VEHICLE_TYPES))
    owner_id = UUID(required=True)
    owner_username = String(required=True, metadata={"description": "empty where the listing does not join it"})
    status = String(required=True, validate=OneOf(["available", "in_use"]))
    last_location = String(required=True)
    color = String(required=True)
    brand = String(required=True)
    date_added = DateTime(required=True, allow_none=True)


class RideOut(RowOut):
    rider_id = UUID(required=True)
    vehicle_id = UUID(required=True)
    vehicle_type = String(required=True)
    vehicle_brand = String(required=True)
    start_location = String(required=True)
    start_time = DateTime(required=True)
    end_location = String(required=True, allow_none=True)
    end_time = DateTime(required=True, allow_none=True)
    promo_code = String(required=True, allow_none=True)
    is_open = Boolean(required=True)
    length_seconds = Method("get_length_seconds", required=True, metadata={"type": "number"})

    def get_length_seconds(self, ride: Any) -> float:
        return round(ride.length.total_seconds(), 3)


class PromoCodeOut(Schema):
    code = String(required=True)
    description = String(required=True)
    discount_percent = Integer(required=True, validate=Range(1, 100))
    expires_at = DateTime(required=True)


# The one error body of every 4xx/5xx (APIFlask is told to document it for its own errors too).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable, e.g. not_your_ride"},
                "message": {"type": "string", "description": "for people"},
            },
        }
    },
}
