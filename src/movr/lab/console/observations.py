"""What a fault did, measured: how long until the hit region's writes were served again (failover), the
errors clients saw, the requests sent to another region than usual - from the requests the balancer forwarded,
and the failover controller's decisions in the state file. Pure: fed with request views and failover records.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KEPT = 5  # the stream shows the last few faults
SETTLE_S = 60.0  # a fault whose watched writes never come back is reported as settled after this long
QUIET_S = 10.0  # a fault with nothing to wait for (a heal, a partition) is watched this long


@dataclass
class Observation:
    id: int
    fault: dict[str, Any]  # Fault.as_dict()
    at: float  # epoch seconds the fault began
    prediction: str
    watched: frozenset[str]  # regions whose cities' writes must come back (the hit group's home)
    failover_s: float | None = None
    failover_from: str | None = None  # "requests" | "controller"
    controller_failovers: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    rerouted: int = 0
    requests: int = 0
    seen: int = 0  # the last request id counted

    def feed(self, requests: Iterable[Mapping[str, Any]]) -> None:
        """Count the requests (views, oldest first) forwarded after the fault began."""
        for request in requests:
            if request["id"] <= self.seen:
                continue
            self.seen = request["id"]
            if request["time"] < self.at:
                continue
            self.requests += 1
            self.errors += request["status"] >= 500
            self.rerouted += bool(request["rerouted"])
            if (
                self.failover_from != "requests"
                and request["write"]
                and request["status"] < 400
                and request["home_region"] in self.watched
            ):
                self.failover_s, self.failover_from = request["time"] - self.at, "requests"

    def feed_failovers(self, failovers: Iterable[Mapping[str, Any]]) -> None:
        """The controller's failovers (the state file's records) that followed the fault."""
        self.controller_failovers = [
            {"group": f["group"], "promoted": f["new"], "after_s": round(f["routed_at"] - self.at, 3)}
            for f in failovers
            if f.get("detected_at", 0) >= self.at
        ]
        if self.failover_from is None:
            times = [f["after_s"] for f in self.controller_failovers if f["group"] in self.watched]
            if times:
                self.failover_s, self.failover_from = min(times), "controller"

    def settled(self, now: float) -> bool:
        age = now - self.at
        if self.watched:
            return self.failover_from == "requests" or age >= SETTLE_S
        return age >= QUIET_S

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            **{key: self.fault[key] for key in ("action", "kind", "target")},
            "at": self.at,
            "prediction": self.prediction,
            "age_s": round(now - self.at, 3),
            "failover_s": None if self.failover_s is None else round(self.failover_s, 3),
            "failover_from": self.failover_from,
            "controller_failovers": self.controller_failovers,
            "errors": self.errors,
            "rerouted": self.rerouted,
            "requests": self.requests,
            "settled": self.settled(now),
        }


class Observations:
    """The last few faults' observations; written by the fault handler, fed by the stream's ticks (threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: deque[Observation] = deque(maxlen=KEPT)
        self._next = 1

    def start(
        self, fault: dict[str, Any], at: float, prediction: str, watched: Iterable[str], seen: int
    ) -> Observation:
        """A new observation; `seen`: the last request id forwarded before the fault (not counted)."""
        with self._lock:
            observation = Observation(self._next, fault, at, prediction, frozenset(watched), seen=seen)
            self._next += 1
            self._kept.append(observation)
            return observation

    def oldest_seen(self, now: float) -> int | None:
        """The oldest request id a fault still being watched has counted up to; None when none is watched."""
        with self._lock:
            seen = [observation.seen for observation in self._kept if not observation.settled(now)]
            return min(seen) if seen else None

    def update(self, requests: list[Mapping[str, Any]], failovers: list[Mapping[str, Any]], now: float) -> list[dict]:
        """Feed the unsettled ones; all of them as the stream sends them, oldest first."""
        with self._lock:
            for observation in self._kept:
                if not observation.settled(now):
                    observation.feed(requests)
                    observation.feed_failovers(failovers)
            return [observation.as_dict(now) for observation in self._kept]
