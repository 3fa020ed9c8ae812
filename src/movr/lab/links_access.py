"""The client's access link: the client<->region network delay that the balancer carries for each request.

This module is part of the links (ARCHITECTURE.md, law 1: distance lives only in the links). It is one of the
only places in the product where waiting stands in for distance; nothing else may sleep to model the WAN.
Keep it tiny: one wait, and the counters that say what crossed it (law 2: count before you time).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass


async def carry(one_way_ms: float) -> None:
    """Wait the one-way delay of the access link on the event loop (never blocking other requests).

    Event-loop timers wake up to ~1 ms off (uvloop truncates to whole milliseconds against a cached clock),
    which would make a request cheaper or dearer than the distance it models. So sleep on the timer until
    just before the due time, then yield to the loop until it has come: late by microseconds, never early.
    """
    if one_way_ms <= 0:
        return
    due = time.perf_counter() + one_way_ms / 1000.0
    coarse = one_way_ms / 1000.0 - _TIMER_SLACK_S
    if coarse > 0:
        await asyncio.sleep(coarse)
    while time.perf_counter() < due:
        await asyncio.sleep(0)


# How early to leave the coarse timer: more than uvloop's worst lateness (the balancer runs on uvloop), so
# the fine wait decides; kept short because the fine wait keeps a core busy that the app and database need.
_TIMER_SLACK_S = 0.0012


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
