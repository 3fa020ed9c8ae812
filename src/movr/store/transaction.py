"""run_transaction: retry what the database asks us to retry, and nothing else.

Serialization failures (40001) and deadlocks (40P01) mean "run it again": we do, with capped
exponential backoff and full jitter, then give up with a clear error. A constraint violation is not
retried: the action maps it to a domain error.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from movr.domain.errors import RetriesExhausted

T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, also when SQLAlchemy wrapped it."""
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if state:
            return state
    return None


def constraint_of(error: BaseException) -> str | None:
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        diag = getattr(candidate, "diag", None)
        if diag is not None and getattr(diag, "constraint_name", None):
            return diag.constraint_name
    return None


def run_transaction(
    attempt: Callable[[], T],
    *,
    max_attempts: int = 8,
    base_delay: float = 0.005,
    max_delay: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    for number in range(1, max_attempts + 1):
        try:
            return attempt()
        except Exception as error:
            if sqlstate_of(error) not in RETRYABLE_SQLSTATES:
                raise
            if number == max_attempts:
                raise RetriesExhausted(
                    f"gave up after {max_attempts} attempts: the database kept reporting "
                    f"conflicts (SQLSTATE {sqlstate_of(error)})"
                ) from error
            # Full jitter keeps contending retries from marching in step (a backoff, not a distance).
            sleep(random.uniform(0, min(max_delay, base_delay * 2 ** (number - 1))))
    raise AssertionError("unreachable")
