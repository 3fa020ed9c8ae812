"""The drill itself: stand the lab up, start the riders, kill at `kill_at`, stop at `duration`, heal, prove.
The lab is always taken down afterwards (unless `keep`), however the drill ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from movr.bench.failover.analysis import expectations, label, per_city
from movr.bench.failover.checks import check_invariants, check_ledger, check_replicas, wait_replicas
from movr.bench.failover.ledger import Ledger
from movr.bench.failover.riders import DrillError, Rider
from movr.geo import load_preset
from movr.lab.faults import FaultError, fail_region, fail_server, heal
from movr.lab.standbys import StandbyError
from movr.lab.state import LabState
from movr.lab.supervisor import lab_down, lab_up
from movr.lab.survival import SurvivalOptions, lost_servers
from movr.store.sample import generate


@dataclass
class DrillConfig:
    preset_source: str = "aws-eu-us"
    survival: str = "region"
    super_regions: bool = True
    kill: str | None = None  # a region or a server name; default: the preset's primary region
    duration: float = 60.0
    kill_at: float = 20.0
    scale: float = 1.0
    cities_per_region: int = 2
    think_ms: float = 50.0
    run_dir: Path = field(default_factory=lambda: Path.cwd() / "run" / "bench" / "failover")  # the lab's
    keep: bool = False  # leave the lab running afterwards (inspect it with movr lab status)


class Clock:
    """Seconds since the load started (restarted once the riders are set up)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.base, self.wall_base = time.monotonic(), time.time()

    def __call__(self) -> float:
        return time.monotonic() - self.base

    def sleep_until(self, when: float) -> None:
        while (left := when - self()) > 0:
            time.sleep(min(left, 0.2))  # the drill's own schedule, not a distance


def run_drill(config: DrillConfig, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The drill's result (the runner adds the envelope: versions, machine, start time, checks)."""
    preset = load_preset(config.preset_source)
    kill = config.kill or preset.primary_region
    run_dir = config.run_dir.resolve()
    options = SurvivalOptions(config.survival, config.super_regions)
    say(f"standing up the lab: {config.survival} survival on {preset.name}, delays x{config.scale:g}")
    state = lab_up(run_dir, config.preset_source, "multi", config.scale, say=say, survival=options)
    try:
        layout, survival = state.plan.survival, state.survival
        assert layout is not None and survival is not None, "lab_up with a survival goal lays one out"
        if kill not in preset.regions and kill not in layout.servers:
            raise DrillError(f"--kill {kill!r} is neither a region of {preset.name} nor a server of this lab")
        n = len(preset.cities)
        state.load_sample(generate(preset, users=n * 2, vehicles=n * 2, rides=n * 2, seed=11))

        ledger = Ledger()
        clock = Clock()
        riders = [  # from the first cities of every region (the preset's order: its main cities first)
            Rider(state.balancer_url or "", city, preset.region_of(city), ledger, clock, config.think_ms / 1000)
            for region in preset.regions.values()
            for city in region.cities[: config.cities_per_region]
        ]
        say(f"{len(riders)} riders sign up, log in and add a vehicle")
        for rider in riders:
            rider.set_up()
        clock.restart()
        for rider in riders:
            rider.start()
        say(f"load running; {kill} will be killed at {config.kill_at:g} s")
        clock.sleep_until(config.kill_at)
        t_kill = clock()
        if kill in preset.regions:
            fail_region(run_dir, kill)
        else:
            fail_server(run_dir, kill)
        t_killed = clock()
        say(f"{kill} killed ({t_killed - t_kill:.2f} s to kill); load continues until {config.duration:g} s")
        clock.sleep_until(config.duration)
        t_load_end = clock()  # riders finish the request they are in; gaps are measured up to here
        for rider in riders:
            rider.stop.set()
        for rider in riders:
            rider.join(timeout=60)
        t_stop = clock()
        errors = [f"{r.city}: {r.error!r}" for r in riders if r.error is not None]
        if errors:
            raise DrillError("a rider failed: " + "; ".join(errors))

        after_kill = LabState.read(run_dir).survival
        assert after_kill is not None
        failovers = [f for f in after_kill.failovers if f["detected_at"] >= clock.wall_base]
        primaries_after = dict(after_kill.primaries)
        lost = lost_servers(layout, preset, kill)
        say("healing: lost servers rejoin as standbys, the app server restarts")
        started = time.monotonic()
        try:
            heal(run_dir, ["all"])
        except FaultError as err:
            raise DrillError(f"the heal failed: {err}") from None
        lagging = None
        try:
            wait_replicas(run_dir)
        except StandbyError as err:
            # Identical fingerprints would not prove a standby that never caught up: the check fails on this.
            lagging = str(err)
            say(f"not every standby caught up: {err}")
        heal_s = time.monotonic() - started
        final = LabState.read(run_dir)
        samples = [s for r in riders for s in r.samples]
        routed_at = max((f["routed_at"] - clock.wall_base for f in failovers), default=None)
        before = dict(survival.primaries)
        label(samples, preset, layout, before, primaries_after, lost, config.scale, t_kill, routed_at)
        result: dict[str, Any] = {
            "preset": preset.name,
            "scale": config.scale,
            "survival": config.survival,
            "super_regions": config.super_regions,
            "goals": {group: info.goal for group, info in layout.groups.items()},
            "kill": kill,
            "kill_kind": "region" if kill in preset.regions else "server",
            "duration_s": config.duration,
            "kill_at_s": t_kill,
            "kill_took_s": t_killed - t_kill,
            "stopped_at_s": t_stop,
            "load_ended_at_s": t_load_end,
            "think_ms": config.think_ms,
            "failovers": [
                {
                    **f,
                    "first_miss_s": f["first_miss_at"] - clock.wall_base,
                    "routed_s": f["routed_at"] - clock.wall_base,
                    "after_kill_s": f["routed_at"] - clock.wall_base - t_kill,
                }
                for f in failovers
            ],
            "primaries_before": before,
            "primaries_after": primaries_after,
            "heal_s": heal_s,
            "ledger": ledger.as_dict(),
            "ledger_check": check_ledger(final, ledger),
            "invariants": check_invariants(final),
            "replicas": check_replicas(final, lagging),
            "cities": per_city(samples, riders, t_kill, t_load_end),
            "samples": [asdict(s) for s in samples],
        }
        result["expectations"] = expectations(result, layout, before, lost)
        result["passed"] = not result["expectations"]["unmet"]
        return result
    finally:
        if config.keep:
            say(f"the lab keeps running in {run_dir} (stop it with: movr lab down --run-dir {run_dir})")
        else:
            lab_down(run_dir)
