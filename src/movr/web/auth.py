"""Who is asking: a session (pages, and the API from a browser) or a signed bearer token (the API).

Both carry the same facts — home city, user id, username, the user's session epoch and a session id —
signed with the app's secret key, so authenticating a request needs no database lookup of its own. Whether
the session is still live (not logged out, not ended by "log out everywhere", the account not removed) is
checked by each action inside its own statement (SESSION_LIVE in movr.store.actions._sql); an action that finds it
ended raises SessionEnded: 401 on the API, a redirect to log-in on pages. The bearer token issued at log-in
shares the session's id, so logging out ends both. A session id carries its issue time: sessions older
than their lifetime are refused here, which is what lets ended ids be forgotten after that long.

CSRF: pages use Flask-WTF forms (a token in every form). The API is exempt from Flask-WTF's form check
and does its own: a write authenticated by a bearer token needs no CSRF token (a browser never attaches
one by itself); a write authenticated by the session cookie must send the session's CSRF token in the
`X-CSRFToken` header (it comes with the log-in response and in every page's `<meta name="csrf-token">`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flask import current_app, flash, g, redirect, request, url_for
from flask_login import LoginManager, UserMixin, current_user, logout_user
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms import ValidationError

from movr.domain import errors, rules
from movr.store.actions import LoggedIn, Session
from movr.web import signing
from movr.web.errors import error_json, error_page, friendly, is_api_request

TOKEN_SALT = "movr-api-token"
CSRF_HEADER = "X-CSRFToken"
LOGIN_LIMIT = "movr_login_limit"


@dataclass(frozen=True, eq=True)
class Rider(UserMixin):
    """The signed-in user, as far as the signed session or token tells (no database round trip)."""

    city: str
    id: uuid.UUID
    username: str
    epoch: int
    session_id: int

    @classmethod
    def logged_in(cls, user: LoggedIn) -> Rider:
        """A new session for a user who just logged in."""
        return cls(user.city, user.id, user.username, user.session_epoch, rules.new_session_id(time.time()))

    @property
    def session(self) -> Session:
        """What an action checks to know that this session is still live."""
        return Session(self.city, self.id, self.epoch, self.session_id)

    def facts(self) -> list[Any]:
        return [self.city, str(self.id), self.username, self.epoch, self.session_id]

    def get_id(self) -> str:
        return json.dumps(self.facts())

    @classmethod
    def parse(cls, data: Any) -> Rider | None:
        """A Rider from signed data, or None when it does not have the expected shape or has expired."""
        if not (isinstance(data, list | tuple) and len(data) == 5):
            return None
        city, user_id, username, epoch, session_id = data
        if not all(isinstance(x, str) for x in (city, user_id, username)):
            return None
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63 for x in (epoch, session_id)):
            return None
        if rules.session_issued_at(session_id) + session_lifetime() < time.time():
            return None
        try:
            return cls(city, rules.check_uuid(user_id), username, epoch, session_id)
        except errors.InvalidInput:
            return None


def session_lifetime() -> int:
    """Seconds a session (and its bearer token) may live after log-in: the longer of the two lifetimes."""
    config = current_app.config
    return max(int(config["PERMANENT_SESSION_LIFETIME"].total_seconds()), int(config["MOVR_TOKEN_MAX_AGE"]))


def login_limit() -> rules.LoginLimit:
    """Failed log-ins allowed per username (MOVR_LOGIN_USER_LIMIT)."""
    return current_app.extensions[LOGIN_LIMIT]


class AuthError(errors.MovrError):
    """No valid credentials on a request that needs them."""

    code = "unauthenticated"
    status = 401
    default_message = "sign in first: send a bearer token or the session cookie"


class CsrfError(errors.MovrError):
    code = "csrf_failed"
    status = 403
    default_message = f"a write with the session cookie needs the session's CSRF token in the {CSRF_HEADER} header"


def init_login(app, limit: rules.LoginLimit) -> LoginManager:
    app.extensions[LOGIN_LIMIT] = limit
    app.register_error_handler(errors.SessionEnded, _session_ended)
    app.register_error_handler(errors.TooManyAttempts, _too_many_attempts)
    manager = LoginManager(app)
    manager.login_view = "pages.login"
    manager.login_message = "Please log in to do that."
    manager.login_message_category = "info"
    manager.session_protection = "basic"

    @manager.user_loader
    def load_rider(user_id: str) -> Rider | None:
        # The id *is* the user: the signed session carries who and which session (no database lookup).
        try:
            return Rider.parse(json.loads(user_id))
        except (ValueError, TypeError):
            return None

    return manager


def _session_ended(error: errors.SessionEnded) -> Any:
    """An action found this request's session ended: forget it; the API says 401, a page asks to log in."""
    logout_user()
    if is_api_request():
        return error_json(error.code, friendly(error), error.status)
    flash("Your session has ended. Please log in again.", "info")
    target = request.path if request.method == "GET" else None
    return redirect(url_for("pages.login", next=target), code=303)


def _too_many_attempts(error: errors.TooManyAttempts) -> Any:
    headers = {"Retry-After": str(error.retry_after)}
    if is_api_request():
        return error_json(error.code, friendly(error), error.status, headers)
    return error_page(error.status, friendly(error), headers=headers)


def issue_token(rider: Rider) -> str:
    return signing.sign(current_app.config["SECRET_KEY"], TOKEN_SALT, rider.facts())


def rider_from_token(token: str) -> Rider | None:
    if not token or len(token) > 1024:
        return None
    config = current_app.config
    data = signing.verified(config["SECRET_KEY"], TOKEN_SALT, token, config["MOVR_TOKEN_MAX_AGE"])
    return None if data is None else Rider.parse(data)


def bearer_token() -> str | None:
    """The bearer token of this request; "" when an Authorization header is there but is not Bearer."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def presented_riders() -> list[Rider]:
    """Every session this request presents, valid as far as signatures tell: its bearer token's, its cookie's."""
    riders = []
    token = bearer_token()
    if token:
        rider = rider_from_token(token)
        if rider is not None:
            riders.append(rider)
    if current_user.is_authenticated:
        riders.append(current_user._get_current_object())
    return list(dict.fromkeys(riders))


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
