"""Per client address limits on the costly anonymous writes: log-in and sign-up (a password hash each).

Each limit is one budget per client address, shared by the page and the API view of the same thing, so a
client cannot double its attempts by switching. The address is `request.remote_addr`: the peer, or, with
MOVR_PROXY_HOPS > 0, what ProxyFix took from the trusted hops' X-Forwarded-For (a header a client sends
itself is never trusted beyond them).

Counted in memory, per worker: `limits` offers no storage shared by a server's workers that needs no
server of its own (Redis, Memcached, MongoDB...), so with N workers an address gets up to N budgets. The
limit that matters against password guessing, failed log-ins per username, is counted in the database
with the user's row and holds across workers and regions (movr.store.actions.authenticate).

Built on `limits` (the library under Flask-Limiter) rather than on the Flask extension: the extension runs
hooks before and after every request to find the limits that apply, which cost a few tenths of a millisecond
on each of them, and here only four views have a limit. So those views are wrapped, and every other
request pays nothing.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from werkzeug.exceptions import TooManyRequests


def parse_rate(rate: str, setting: str) -> RateLimitItem:
    """A rate such as "10/minute" or "10 per 15 minutes"; ValueError naming the setting otherwise."""
    try:
        return parse(str(rate))
    except ValueError:
        raise ValueError(f"{setting}: {str(rate)[:64]!r} is not a rate such as '10/minute'") from None


class Throttle:
    """POSTs to the guarded views, per client address: one `limits` rate per scope (e.g. "log-in")."""

    def __init__(self, rates: Mapping[str, RateLimitItem], storage_uri: str = "memory://", *, enabled: bool = True):
        self.rates = dict(rates)
        self.storage = storage_from_string(storage_uri)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.enabled = enabled

    def guard(
        self, scope: str, view: Callable[..., Any], refuse: Callable[[int], Any] | None = None
    ) -> Callable[..., Any]:
        """`view`, counting each POST to it against `scope`'s budget. Over budget: `refuse(retry_after)`
        answers (a page with the form and a message), else TooManyRequests (429 with Retry-After)."""

        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.enabled and request.method == "POST":
                retry_after = self.hit(scope, client_key())
                if retry_after is not None:
                    if refuse is None:
                        raise TooManyRequests(retry_after=retry_after)
                    return refuse(retry_after)
            return view(*args, **kwargs)

        return guarded

    def hit(self, scope: str, key: str) -> int | None:
        """Count one attempt; None while within budget, else the seconds until one is free again."""
        limit = self.rates[scope]
        if self.limiter.hit(limit, scope, key):
            return None
        reset_at = self.limiter.get_window_stats(limit, scope, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def reset(self) -> None:
        self.storage.reset()


def client_key() -> str:
    """The client's address, as far as the trusted proxy hops say (see the module docstring)."""
    return request.remote_addr or "?"
