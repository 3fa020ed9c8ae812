"""The balancer's record of the requests it forwarded: written on the forward path, read by the console.

Writing must cost the forward path next to nothing (it is what every benchmark measures): one tuple of what
the balancer already knows and the app's `X-Movr-*` header values (strings, unparsed) appended to a bounded
deque, no I/O, no parsing. Everything else - numbers, the floor, the JSON the console sends - is made later,
off the forward path (`views`).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from movr import telemetry_headers as names

CAPACITY = 4096  # enough for the last 50 and a few seconds of rates under a benchmark's load
# The figures read from each answer, in the order `Forwarded.figures` keeps them.
FIGURE_HEADERS = (
    names.REGION,
    names.STATEMENTS,
    names.SQL_MS,
    names.APP_MS,
    names.CPU_MS,
    names.WAN_ROUND_TRIPS,
    names.DATA_REGIONS,
)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Forwarded(NamedTuple):
    """One forwarded request as the balancer saw it; `figures`: the raw header values (None: absent).

    A named tuple, not a dataclass: made on the forward path, where a frozen dataclass costs twice as much."""

    seq: int
    time: float  # epoch seconds when the answer left the balancer
    method: str
    path: str
    city: str
    region: str | None  # the region it was sent to; None when no region could serve it
    status: int
    latency_ms: float  # as the client sees it: the carried client RTT included
    client_rtt_ms: float
    figures: tuple[str | None, ...]

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def failed(self) -> bool:
        """An answer that says the request was not served: the server's fault, not the client's."""
        return self.status >= 500


class RequestRecorder:
    """A bounded, append-only log of forwarded requests, numbered from 1."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._entries: deque[Forwarded] = deque(maxlen=capacity)
        self._next = itertools.count(1)

    def record(
        self,
        method: str,
        path: str,
        city: str,
        region: str | None,
        status: int,
        latency_ms: float,
        client_rtt_ms: float,
        headers: Mapping[str, str] | None,
    ) -> None:
        figures = tuple(headers.get(name) for name in FIGURE_HEADERS) if headers is not None else ()
        self._entries.append(
            Forwarded(
                next(self._next), time.time(), method, path, city, region, status, latency_ms, client_rtt_ms, figures
            )
        )

    @property
    def latest_seq(self) -> int:
        """The number of the newest entry (0 before any)."""
        return self._entries[-1].seq if self._entries else 0

    def _snapshot(self) -> list[Forwarded]:
        # One C-level copy: the console reads from worker threads while the event loop appends, and a deque
        # iterated in Python code while another thread appends raises "mutated during iteration".
        return list(self._entries)

    def since(self, seq: int, limit: int | None = None) -> list[Forwarded]:
        """The entries numbered above `seq` (the newest `limit` of them), oldest first."""
        entries = self._snapshot()
        if not entries:
            return []
        found = entries[max(0, seq - entries[0].seq + 1) :]  # numbers are consecutive: an index
        return found[-limit:] if limit is not None and limit > 0 else found

    def last(self, n: int) -> list[Forwarded]:
        return self.since(0, n)

    def within(self, seconds: float, now: float | None = None) -> list[Forwarded]:
        """The entries of the last `seconds`, oldest first."""
        start = (time.time() if now is None else now) - seconds
        found = list(itertools.takewhile(lambda entry: entry.time >= start, reversed(self._snapshot())))
        found.reverse()
        return found


# --- the console's view of an entry ---------------------------------------------------------------------------


def _number(text: str | None, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text) if text else kind("0")
    except ValueError:  # an answer that did not come from the app; its figures say nothing
        return kind("0")


def figures_of(entry: Forwarded) -> dict[str, Any]:
    """The app's figures from an entry's headers (absent ones read as empty or zero)."""
    raw = entry.figures or (None,) * len(FIGURE_HEADERS)
    region, statements, sql_ms, app_ms, cpu_ms, wan, data_regions = raw
    return {
        "served_by": region or "",
        "statements": _number(statements, int),
        "sql_ms": _number(sql_ms, float),
        "app_ms": _number(app_ms, float),
        "cpu_ms": _number(cpu_ms, float),
        "wan_round_trips": _number(wan, int),
        "data_regions": [r for r in (data_regions or "").split(",") if r],
    }


def view(entry: Forwarded, home_region: str | None, usual_region: str | None, floor_ms: float | None) -> dict:
    """An entry as /lab/api/requests and the stream send it (see docs/console-api.md)."""
    figures = figures_of(entry)
    return {
        "id": entry.seq,
        "time": entry.time,
        "method": entry.method,
        "path": entry.path,
        "city": entry.city,
        "home_region": home_region,
        "region": entry.region,
        "data_regions": figures["data_regions"],
        "status": entry.status,
        "latency_ms": round(entry.latency_ms, 3),
        "client_rtt_ms": round(entry.client_rtt_ms, 3),
        "floor_ms": None if floor_ms is None else round(floor_ms, 3),
        "statements": figures["statements"],
        "sql_ms": figures["sql_ms"],
        "app_ms": figures["app_ms"],
        "wan_round_trips": figures["wan_round_trips"],
        "rerouted": entry.region is not None and usual_region is not None and entry.region != usual_region,
        "write": entry.write,
    }
