"""Who is asking: a session (pages, and the API from a browser) or a signed bearer token (the API).

Both carry the same three facts — home city, user id, username — signed with the app's secret key, so
authenticating a request needs no database lookup: a page costs only its own action's statements.
A removed account's session or token still verifies, but every action on it finds no such user.

CSRF: pages use Flask-WTF forms (a token in every form). The API is exempt from Flask-WTF's form check
and does its own: a write authenticated by a bearer token needs no CSRF token (a browser never attaches
one by itself); a write authenticated by the session cookie must send the session's CSRF token in the
`X-CSRFToken` header (it comes with the log-in response and in every page's `<meta name="csrf-token">`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import generate_csrf, validate_csrf
from itsdangerous import BadSignature, URLSafeTimedSerializer
from wtforms import ValidationError

from movr.domain import errors, rules
from movr.domain.records import UserRecord

TOKEN_SALT = "movr-api-token"
CSRF_HEADER = "X-CSRFToken"


@dataclass(frozen=True, eq=True)
class Rider(UserMixin):
    """The signed-in user, as far as the signed session or token tells (no database round trip)."""

    city: str
    id: uuid.UUID
    username: str

    @classmethod
    def of(cls, user: UserRecord) -> Rider:
        return cls(user.city, user.id, user.username)

    def get_id(self) -> str:
        return json.dumps([self.city, str(self.id), self.username])

    @classmethod
    def parse(cls, data: Any) -> Rider | None:
        """A Rider from signed data, or None when it does not have the expected shape."""
        if not (isinstance(data, list | tuple) and len(data) == 3 and all(isinstance(x, str) for x in data)):
            return None
        city, user_id, username = data
        try:
            return cls(city, rules.check_uuid(user_id), username)
        except errors.InvalidInput:
            return None


class AuthError(errors.MovrError):
    """No valid credentials on a request that needs them."""

    code = "unauthenticated"
    status = 401
    default_message = "sign in first: send a bearer token or the session cookie"


class CsrfError(errors.MovrError):
    code = "csrf_failed"
    status = 403
    default_message = f"a write with the session cookie needs the session's CSRF token in the {CSRF_HEADER} header"


def init_login(app) -> LoginManager:
    manager = LoginManager(app)
    manager.login_view = "pages.login"
    manager.login_message = "Please log in to do that."
    manager.login_message_category = "info"
    manager.session_protection = "basic"

    @manager.user_loader
    def load_rider(user_id: str) -> Rider | None:
        # The id *is* the user: the signed session carries city, id and username (no database lookup).
        try:
            return Rider.parse(json.loads(user_id))
        except (ValueError, TypeError):
            return None

    return manager


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def issue_token(rider: Rider) -> str:
    return _serializer().dumps([rider.city, str(rider.id), rider.username])


def rider_from_token(token: str) -> Rider | None:
    if not token or len(token) > 1024:
        return None
    try:
        data = _serializer().loads(token, max_age=current_app.config["MOVR_TOKEN_MAX_AGE"])
    except (BadSignature, ValueError, TypeError):
        return None
    return Rider.parse(data)


def bearer_token() -> str | None:
    """The bearer token of this request; "" when an Authorization header is there but is not Bearer."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def api_rider(*, write: bool) -> Rider:
    """The rider of an API request, or AuthError / CsrfError.

    A bearer token wins over the session (an invalid token is refused, never ignored in favour of the
    cookie); a session-authenticated write must prove it comes from our pages with the CSRF header.
    """
    token = bearer_token()
    if token is not None:
        rider = rider_from_token(token)
        if rider is None:
            raise AuthError("the bearer token is not valid or has expired; log in again")
    elif not current_user.is_authenticated:
        raise AuthError()
    else:
        if write:
            try:
                validate_csrf(request.headers.get(CSRF_HEADER, ""))
            except ValidationError:
                raise CsrfError() from None
        rider = current_user._get_current_object()
    g.movr_rider = rider  # the client's home city, should nothing better say where they are
    return rider


def csrf_token() -> str:
    return generate_csrf()
