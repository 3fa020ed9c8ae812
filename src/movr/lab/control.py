"""Who may drive a running lab: its control endpoints (the links' and the balancer's) want the lab's token.

`movr lab up` makes a token per lab, keeps it in the state file (0600) and hands it to the links and the
balancer in their environment (`MOVR_LAB_TOKEN`), never on a command line, which any local user can read.
Every request to a control endpoint must carry it in the `X-Movr-Lab-Token` header (compared in constant
time), and every state-changing one must be `Content-Type: application/json`. A web page can send neither
without a CORS preflight, which these endpoints never approve: so a page the lab's user happens to open
cannot take a region down (a cross-site `text/plain` POST is answered 401 and changes nothing).

Answers: 401 without a token, 403 with a wrong one, 415 for a state change that is not JSON, all in the
app's error shape `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import functools
import hmac
import json
import os
import secrets
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_ENV = "MOVR_LAB_TOKEN"
TOKEN_HEADER = "X-Movr-Lab-Token"
_MIN_TOKEN_CHARS = 32
_READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


class ControlTokenError(RuntimeError):
    """A control endpoint was asked to start without a usable token."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The token a links or balancer process guards its control endpoints with (from its environment)."""
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    if len(token) < _MIN_TOKEN_CHARS:
        raise ControlTokenError(
            f"set {TOKEN_ENV} to the lab's control token (at least {_MIN_TOKEN_CHARS} characters; "
            "movr lab up makes one): the control endpoints never run unguarded"
        )
    return token


def error_body(code: str, message: str) -> dict[str, Any]:
    """The app's error shape (movr.web.errors), so that clients read the lab's refusals as they read the app's."""
    return {"error": {"code": code, "message": message}}


def _refusal(
    request_method: str, headers: Mapping[str, str], content_type: str, token: str
) -> tuple[int, str, str] | None:
    """Why a control request must be refused, as (status, code, message); None when it may go ahead."""
    sent = headers.get(TOKEN_HEADER)
    if not sent:
        return 401, "unauthorized", f"this is a lab control endpoint: send the lab's token in {TOKEN_HEADER}"
    if not hmac.compare_digest(sent.encode(), token.encode()):
        return 403, "forbidden", "that is not this lab's control token"
    if request_method not in _READ_ONLY_METHODS and content_type != "application/json":
        return 415, "unsupported_media_type", "a lab control request must be Content-Type: application/json"
    return None


def guard(token: str) -> Callable[[Handler], Handler]:
    """Wrap aiohttp handlers of control endpoints: each request needs the token (and JSON, if it changes
    anything). Handlers, not a middleware, so that the balancer's forwarding path pays nothing for it."""
    # Imported on use: every lab command reads this module (`call`), only the servers need aiohttp.
    from aiohttp import web

    if len(token) < _MIN_TOKEN_CHARS:
        raise ControlTokenError(f"a control token needs at least {_MIN_TOKEN_CHARS} characters")

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = _refusal(request.method, request.headers, request.content_type, token)
            if refused is not None:
                status, code, message = refused
                return web.json_response(error_body(code, message), status=status)
            return await handler(request)

        return guarded

    return wrap


def call(url: str, token: str, body: Any = None, timeout: float = 5.0) -> Any:
    """A control request with the lab's token: GET without `body`, else POST it as JSON; the decoded answer.

    urllib's HTTPError (an OSError) on a refusal or an error answer, as for any unreachable endpoint.
    """
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json", TOKEN_HEADER: token},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
