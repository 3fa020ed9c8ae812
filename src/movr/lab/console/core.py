"""The console's view of its lab: the state file (re-read when it changes), the balancer it runs in, the
request views with their floors, and the periodic update the stream sends.

The balancer is seen through `BalancerView` (its region table, where a city is served when every region is
up, its request recorder), so that this package never imports the balancer that mounts it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from movr.lab.console import health, traffic
from movr.lab.console.observations import Observations
from movr.lab.console.recorder import Forwarded, RequestRecorder, figures_of, view
from movr.lab.state import STATE_FILE, LabState
from movr.lab.survival import current_primaries

SHOWN = 50  # requests in the timeline
_VIEW_CACHE = 512


class BalancerView(Protocol):
    recorder: RequestRecorder

    def describe(self) -> dict[str, Any]: ...

    def usual_region(self, city: str) -> str | None: ...


class Console:
    def __init__(self, run_dir: Path, token: str, balancer: BalancerView) -> None:
        self.run_dir = Path(run_dir)
        self.token = token
        self.balancer = balancer
        self.recorder = balancer.recorder
        self.observations = Observations()
        self.link_rates = traffic.LinkRates()
        self._state: LabState | None = None
        self._state_stamp: tuple[int, int] | None = None
        self._state_lock = threading.Lock()
        self._views: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._views_lock = threading.Lock()
        self._seq = 0  # the last request an update carried
        self._tick = 0

    # --- the lab's state ---

    def state(self) -> LabState:
        """The lab's state, read again only when the file changed (reading parses the preset)."""
        path = self.run_dir / STATE_FILE
        with self._state_lock:
            try:
                info = os.stat(path)
                stamp = (info.st_mtime_ns, info.st_size)
            except OSError:
                stamp = None
            if self._state is None or stamp is None or stamp != self._state_stamp:
                self._state = LabState.read(self.run_dir)  # LabStateError when the lab is gone
                self._state_stamp = stamp
            return self._state

    # --- requests ---

    def describe(self, entry: Forwarded, state: LabState) -> dict[str, Any]:
        """An entry as the console shows it, with its floor (made once per entry)."""
        with self._views_lock:
            cached = self._views.get(entry.seq)
        if cached is not None:
            return cached
        preset = state.preset
        home = preset.region_of(entry.city) if preset.is_city(entry.city) else None
        described = view(entry, home, self.balancer.usual_region(entry.city), self.floor_ms(entry, state))
        with self._views_lock:
            self._views[entry.seq] = described
            while len(self._views) > _VIEW_CACHE:
                self._views.popitem(last=False)
        return described

    def floor_ms(self, entry: Forwarded, state: LabState) -> float | None:
        # Imported on first use: the floor model pulls in the store (SQLAlchemy), which the balancer
        # process would otherwise load at start-up, on the lab's critical path.
        from movr.floors import request_floor

        figures = figures_of(entry)
        found = request_floor(
            state.preset,
            state.scale,
            state.topology,
            city=entry.city,
            served_by=figures["served_by"],
            statements=figures["statements"],
            write=entry.write,
            cpu_ms=figures["cpu_ms"],
            data_regions=figures["data_regions"],
            layout=state.plan.survival,
            primaries=current_primaries(state),
        )
        return None if found is None else found.total_ms

    def recent(self, n: int = SHOWN) -> list[dict[str, Any]]:
        state = self.state()
        return [self.describe(entry, state) for entry in self.recorder.last(n)]

    # --- the stream's update (blocking: call it in a worker thread) ---

    def update(self, balancer_regions: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The `update` event's data; `balancer_regions`: the balancer's table, read on its event loop."""
        now = time.time()  # before anything is read: an update says nothing older than its time
        state = self.state()
        live = health.live_links(state)
        if live is not None:
            wan = {spec.name for spec in state.plan.links if spec.kind == "wan"}
            self.link_rates.add(
                time.monotonic(),
                {name: int(link["counters"].get("round_trips", 0)) for name, link in live.items() if name in wan},
            )
        window = self.recorder.within(traffic.WINDOW_S, now)
        # From the oldest request a fault still being watched has not counted (it may predate the last update).
        pending = self.observations.oldest_seen(now)
        start = self._seq if pending is None else min(pending, self._seq)
        fresh = [self.describe(entry, state) for entry in self.recorder.since(start)]
        new = [request for request in fresh if request["id"] > self._seq][-SHOWN:]
        if fresh:
            self._seq = max(self._seq, fresh[-1]["id"])
        failovers = state.survival.failovers if state.survival is not None else []
        self._tick += 1
        return {
            "seq": self._tick,
            "time": now,
            "health": health.collect(state, balancer_regions, live),
            "traffic": {
                "window_s": traffic.WINDOW_S,
                "requests_per_s": traffic.requests_per_s(window, state.preset.region_names),
                "wan_round_trips_per_s": self.link_rates.rates(),
            },
            "requests": new,
            "observations": self.observations.update(fresh, failovers, now),
        }
