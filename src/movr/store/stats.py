"""Counting before timing (law 2): statements, SQL time and WAN round trips of the current request.

A request (or a benchmark step) opens a scope with `measure()`; every backend adds what it did to the
innermost open scope. Scopes nest, so an action's own figures and the request's total are both kept.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Stats:
    statements: int = 0
    wan_round_trips: int = 0
    cpu_seconds: float = 0.0
    regions: set[str] = field(default_factory=set)
    statements_by_action: Counter[str] = field(default_factory=Counter)
    actions: list[str] = field(default_factory=list)
    # (start, end) of each round trip: parts of one request that run in parallel (a sign-up's claims in every
    # region at once) overlap, and the time the request waited on SQL is their union, not their sum.
    sql_intervals: list[tuple[float, float]] = field(default_factory=list)

    @property
    def sql_seconds(self) -> float:
        total, reached = 0.0, float("-inf")
        for start, end in sorted(self.sql_intervals):
            if end > reached:
                total += end - max(start, reached)
                reached = end
        return total

    @property
    def sql_ms(self) -> float:
        return self.sql_seconds * 1000.0

    def as_dict(self) -> dict:
        return {
            "statements": self.statements,
            "sql_ms": round(self.sql_ms, 3),
            "wan_round_trips": self.wan_round_trips,
            "cpu_ms": round(self.cpu_seconds * 1000, 3),
            "regions": sorted(self.regions),
            "actions": list(self.actions),
        }


_lock = threading.Lock()
_scopes: contextvars.ContextVar[tuple[Stats, ...]] = contextvars.ContextVar("movr_stats", default=())


@contextmanager
def measure() -> Iterator[Stats]:
    stats = Stats()
    token = _scopes.set((*_scopes.get(), stats))
    try:
        yield stats
    finally:
        _scopes.reset(token)


def record(
    action: str,
    statements: int,
    seconds: float,
    wan_round_trips: int = 0,
    regions: tuple[str, ...] = (),
) -> None:
    """Add one piece of work, which took `seconds` and has just ended, to every open scope (threads of one
    request may add at once)."""
    ended = time.perf_counter()
    with _lock:
        _add(_scopes.get(), action, statements, (ended - seconds, ended), wan_round_trips, regions)


def _add(
    scopes: tuple[Stats, ...],
    action: str,
    statements: int,
    interval: tuple[float, float],
    wan_round_trips: int,
    regions: tuple[str, ...],
) -> None:
    for stats in scopes:
        stats.statements += statements
        stats.sql_intervals.append(interval)
        stats.wan_round_trips += wan_round_trips
        stats.regions.update(regions)
        stats.statements_by_action[action] += statements


def note_action(action: str) -> None:
    for stats in _scopes.get():
        stats.actions.append(action)


@contextmanager
def cpu_work() -> Iterator[None]:
    """Time deliberate local CPU work (password hashing): part of the physical floor, not overhead."""
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        with _lock:
            for stats in _scopes.get():
                stats.cpu_seconds += elapsed
