"""Pure rules of MovR: validation and derived values, no I/O."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from dataclasses import dataclass

from movr.domain.errors import InvalidInput
from movr.domain.models import VEHICLE_TYPES

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
MAX_NAME = 64
MAX_LOCATION = 128
MIN_PASSWORD = 8
MAX_PASSWORD = 128
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")


def check_username(username: str) -> str:
    """A valid username in its canonical form (see canonical_username)."""
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise InvalidInput("a username is 3 to 32 letters, digits, '.', '_' or '-'")
    return canonical_username(username)


def canonical_username(username: str) -> str:
    """Usernames ignore case: `Mallory` and `mallory` are one name, stored (and hashed to its directory
    region in the lab) in lower case, so a plain unique index keeps them unique. ASCII only (USERNAME_RE),
    so Python's and SQL's lower() agree."""
    return username.lower()


# --- sessions ------------------------------------------------------------------------------------------
# A session id carries the second it was issued in its high bits, so that ids of sessions that have
# expired anyway can be pruned by comparison alone (no timestamp stored beside them).
SESSION_ID_RANDOM_BITS = 20


def new_session_id(issued_at: float) -> int:
    return (int(issued_at) << SESSION_ID_RANDOM_BITS) | secrets.randbits(SESSION_ID_RANDOM_BITS)


def session_issued_at(session_id: int) -> int:
    return session_id >> SESSION_ID_RANDOM_BITS


def first_session_id_since(moment: float) -> int:
    """The smallest id of a session issued at or after `moment`."""
    return int(moment) << SESSION_ID_RANDOM_BITS


@dataclass(frozen=True)
class LoginLimit:
    """Failed log-ins allowed per username within `window_s` seconds, counted on the user's row."""

    failures: int = 10
    window_s: int = 900


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def check_text(value: str | None, what: str, limit: int = MAX_NAME, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise InvalidInput(f"{what} is required")
    if len(value) > limit:
        raise InvalidInput(f"{what} is at most {limit} characters")
    if any(ord(ch) < 32 for ch in value):
        raise InvalidInput(f"{what} has control characters")
    return value


def check_email(email: str | None) -> str:
    email = check_text(email, "email", 254)
    if email and not EMAIL_RE.match(email):
        raise InvalidInput("that email address does not look right")
    return email


def check_vehicle_type(kind: str) -> str:
    if kind not in VEHICLE_TYPES:
        raise InvalidInput(f"a vehicle type is one of {', '.join(VEHICLE_TYPES)}")
    return kind


def check_uuid(value: str | uuid.UUID, what: str = "id") -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidInput(f"{what} is not a valid UUID") from None


def ride_length(start: dt.datetime, end: dt.datetime | None, now: dt.datetime | None = None) -> dt.timedelta:
    """How long a ride lasted, or has lasted so far if it is still open."""
    stop = end or now or dt.datetime.now(dt.UTC)
    return max(stop - start, dt.timedelta(0))


def format_length(length: dt.timedelta) -> str:
    seconds = int(length.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"
