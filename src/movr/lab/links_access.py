"""The client's access link: the client<->region network delay that the balancer carries for each request.

This module is part of the links (ARCHITECTURE.md, law 1: distance lives only in the links). It is one of the
only places in the product where waiting stands in for distance; nothing else may sleep to model the WAN.
Keep it tiny: one wait, and the counters that say what crossed it (law 2: count before you time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from movr.lab.links.timing import Scheduler

log = logging.getLogger("movr.lab.balancer")


class _Arrival:
    """What the links' scheduler wakes for one leg of a request: the write that delivers it."""

    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action

    def flush(self, now: float) -> None:
        _run(self._action)


def _run(action: Callable[[], None]) -> None:
    """One leg's delivery, whether the scheduler wakes for it or it is due at once."""
    try:
        action()
    except Exception:  # one failed delivery must not stop the scheduler, nor its caller, delivering the others
        log.exception("delivering a request or an answer across the access link failed")


class AccessDelay:
    """The one wait of the access links: each leg of a request is delivered when it is due.

    It uses the links' own precise wake-ups (movr.lab.links.timing.Scheduler: a timerfd armed early by the
    median lateness, then at most 150 us on the clock), so a leg is never early, and late by 13-30 us at the
    median (~100 us p90 on a busy 2-core VM), while no core spins for a millisecond per leg as a plain spin on
    the clock would (it cost 1.5 ms of CPU per leg): event-loop timers alone wake ~1 ms off (uvloop counts
    whole milliseconds against a cached clock), which would make a request cheaper or dearer than the distance
    it models. The delivery itself (a write) runs in the wake-up, as a link's does: resuming a coroutine there
    would add a trip through the event loop to every leg. Made and closed on the event loop that runs it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduler = Scheduler(loop)

    @staticmethod
    def due(one_way_ms: float, *, since: float | None = None, not_before: float = 0.0) -> float:
        """When a leg arrives, on ``time.monotonic``'s clock: a leg sets off `since` (when its last byte reached
        the balancer, as a link's leg sets off when its bytes reach the link; default: now), or at
        `not_before` if later. So what the balancer does with a request or an answer (wake up, parse, route,
        encode) happens while it travels, as a link's own work does, instead of being added to the distance."""
        start = time.monotonic() if since is None else since
        return max(start, not_before) + one_way_ms / 1000.0

    def deliver(self, due: float, action: Callable[[], None]) -> None:
        """Run `action` (a leg's delivery) at `due`, never before; at once if that time has come."""
        if due <= time.monotonic():
            _run(action)
        else:
            self._scheduler.add(due, _Arrival(action))

    def close(self) -> None:
        self._scheduler.close()


@dataclass
class RegionAccessCounts:
    """What crossed the access links into one region. Bytes are HTTP bodies (headers are not counted)."""

    requests: int = 0
    client_round_trips: int = 0
    bytes_in: int = 0  # client -> region
    bytes_out: int = 0  # region -> client


class AccessLinkCounters:
    """Per-region counters of the access links: requests routed, round trips carried, body bytes each way."""

    def __init__(self, regions: list[str]) -> None:
        self._counts = {region: RegionAccessCounts() for region in regions}

    def count_request(self, region: str, nbytes: int) -> None:
        """A request was routed to `region` and its body is about to cross the link."""
        counts = self._counts[region]
        counts.requests += 1
        counts.bytes_in += nbytes

    def count_response(self, region: str, nbytes: int) -> None:
        """A response crossed back: with the request leg, that completes one client round trip."""
        counts = self._counts[region]
        counts.client_round_trips += 1
        counts.bytes_out += nbytes

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {region: asdict(counts) for region, counts in self._counts.items()}

    def reset(self) -> None:
        for region in self._counts:
            self._counts[region] = RegionAccessCounts()
