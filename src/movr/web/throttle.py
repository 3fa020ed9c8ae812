"""Log-in throttling: attempts per client address and username, counted where log-in happens and nowhere else.

Built on `limits` (the library under Flask-Limiter) rather than on the Flask extension: the extension runs
hooks before and after every request to find the limits that apply, which cost a few tenths of a millisecond
on each of them, and here only two views have a limit. So those two views are wrapped, and every other
request pays nothing.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

from flask import request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import TooManyRequests


class LoginThrottle:
    """`rate` (e.g. "10/minute") of POSTs to each guarded view, per client address and username."""

    def __init__(self, rate: str, storage_uri: str = "memory://", *, enabled: bool = True) -> None:
        self.limit = parse(rate)
        self.storage = storage_from_string(storage_uri)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.enabled = enabled

    def guard(self, scope: str, view: Callable[..., Any]) -> Callable[..., Any]:
        """`view`, counting each POST to it against its own budget (`scope`: the view's endpoint)."""

        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.enabled and request.method == "POST":
                self.check(scope, login_key())
            return view(*args, **kwargs)

        return guarded

    def check(self, scope: str, key: str) -> None:
        """Count one attempt; TooManyRequests (429, with Retry-After) once the budget is spent."""
        if self.limiter.hit(self.limit, scope, key):
            return
        reset_at = self.limiter.get_window_stats(self.limit, scope, key).reset_time
        raise TooManyRequests(retry_after=max(1, math.ceil(reset_at - time.time())))

    def reset(self) -> None:
        self.storage.reset()


def login_key() -> str:
    """The client's address (behind the configured proxies) and the username tried (form field or JSON)."""
    username: Any = request.form.get("username")
    if username is None:
        data = request.get_json(silent=True)
        username = data.get("username", "") if isinstance(data, dict) else ""
    return f"{request.remote_addr or '?'}|{str(username)[:64].casefold()}"
