"""Traffic rates for the console: requests per second per region (from the balancer's record) and WAN round
trips per second per link (from the links' counters, sampled a few times a second). Pure: no I/O."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from movr.lab.console.recorder import Forwarded

WINDOW_S = 5.0  # rates over the last few seconds: steady enough to read, quick enough to show a fault


def requests_per_s(entries: Iterable[Forwarded], regions: Iterable[str], window_s: float = WINDOW_S) -> dict:
    """Requests per second each region served over the window (`entries`: those of the window)."""
    counts = dict.fromkeys(regions, 0)
    for entry in entries:
        if entry.region in counts:
            counts[entry.region] += 1
    return {region: round(n / window_s, 2) for region, n in counts.items()}


class LinkRates:
    """Round trips per second per link, from successive samples of the links' cumulative counters."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, at: float, round_trips: Mapping[str, int]) -> None:
        """A sample: each link's cumulative round trips at time `at` (seconds, any monotonic clock)."""
        self._samples.append((at, dict(round_trips)))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rates(self, links: Iterable[str] | None = None) -> dict[str, float]:
        """Round trips per second between the oldest and the newest sample; a link whose counter went back
        (its counters were reset) counts from zero. Links with no traffic are left out."""
        if len(self._samples) < 2:
            return {}
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        elapsed = t1 - t0
        if elapsed <= 0:
            return {}
        chosen = last if links is None else {name: last[name] for name in links if name in last}
        rates = {}
        for name, count in chosen.items():
            before = first.get(name, 0)
            done = count - before if count >= before else count
            if done > 0:
                rates[name] = round(done / elapsed, 2)
        return rates
