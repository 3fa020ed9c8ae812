"""What the drill's requests say: each one's phase and physical floor, per-city figures, and the verdict.

Phases: *before* the kill; the *outage*; *after* (from the last failover's re-routing on, or a second after
the kill when nothing failed over). A request's floor (law 3, movr.floors.failover_floor) is taken
against the layout of its phase: after the loss the data may be served from another region and commits may
wait for a farther standby.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from movr.bench.failover.riders import Rider, Sample
from movr.floors import failover_floor
from movr.geo import Preset
from movr.lab.layout import SurvivalLayout
from movr.lab.survival import promise


def label(
    samples: Iterable[Sample],
    preset: Preset,
    layout: SurvivalLayout,
    before: Mapping[str, str],
    after: Mapping[str, str],
    lost: set[str],
    scale: float,
    t_kill: float,
    routed_at: float | None,
) -> None:
    """Phase and floor of every sample (`before`, `after`: each group's primary then)."""
    settled = routed_at if routed_at is not None else t_kill + 1.0
    for sample in samples:
        if sample.t0 < t_kill:
            sample.phase, primaries, down = "before", before, set()
        elif sample.t0 >= settled:
            sample.phase, primaries, down = "after", after, lost
        else:
            sample.phase = "outage"
            continue
        floor = failover_floor(preset, scale, layout=layout, primaries=primaries, lost=down, **sample.request())
        sample.floor_ms = None if floor is None else floor.total_ms


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def phase_stats(samples: Sequence[Sample], phase: str) -> dict[str, Any]:
    """Errors and medians of one phase; latency and excess over the floor from successful requests."""
    chosen = [s for s in samples if s.phase == phase]
    ok = [s for s in chosen if s.ok]
    floored = [(s, s.floor_ms) for s in ok if s.floor_ms is not None]
    return {
        "requests": len(chosen),
        "errors": len(chosen) - len(ok),
        "error_rate": (len(chosen) - len(ok)) / len(chosen) if chosen else None,
        "median_ms": _median([s.ms for s in ok]),
        "median_floor_ms": _median([floor for _, floor in floored]),
        "median_excess_ms": _median([s.ms - floor for s, floor in floored]),
        "median_write_ms": _median([s.ms for s in ok if s.write]),
        "median_read_ms": _median([s.ms for s in ok if not s.write]),
        "median_write_floor_ms": _median([floor for s, floor in floored if s.write]),
        "served_by": sorted({s.served_by for s in ok}),
    }


def per_city(samples: Sequence[Sample], riders: Sequence[Rider], t_kill: float, t_stop: float) -> list[dict]:
    """Per city: the longest time without a successful write once the fault began (from the last success
    before it), and when that outage ended, as seconds after the fault began (the killing is inside)."""
    rows = []
    for rider in riders:
        mine = [s for s in samples if s.city == rider.city]
        times = sorted(s.t1 for s in mine if s.write and s.ok)
        before = [t for t in times if t <= t_kill]
        after = [t for t in times if t > t_kill]
        points = [before[-1] if before else t_kill, *after]
        # The last stretch, from the last success to the end of the load, is a gap too: a region that died
        # after one last write slipped through never resumed, and its outage lasted at least that long.
        gaps: list[tuple[float, float, float | None]] = [(b - a, a, b) for a, b in itertools.pairwise(points)]
        gaps.append((t_stop - points[-1], points[-1], None))
        gap, start, end = max(gaps, key=lambda g: g[0])
        rows.append(
            {
                "city": rider.city,
                "home": rider.home,
                "last_write_ok_before_s": before[-1] if before else None,
                "longest_write_gap_s": gap,
                "longest_write_gap_from_s": start,
                "writes_resumed_after_kill_s": None if end is None else end - t_kill,
                "resumed": end is not None,
                "failed_after_kill": sum(1 for s in mine if s.t0 >= t_kill and not s.ok),
                "before": phase_stats(mine, "before"),
                "after": phase_stats(mine, "after"),
            }
        )
    return rows


def integrity_unmet(result: Mapping[str, Any]) -> list[str]:
    """The promises every drill keeps whatever the fault: nothing acknowledged lost, invariants held,
    replicas identical after the heal."""
    unmet = []
    checks = result["ledger_check"]
    if not checks["ok"]:
        unmet.append(f"acknowledged writes lost {len(checks['lost'])}, duplicated {len(checks['duplicated'])}")
    if not result["invariants"]["ok"]:
        unmet.append(f"invariants broken: {result['invariants']['violations']}")
    replicas = result["replicas"]
    if replicas and replicas.get("lagging"):
        unmet.append(f"a standby had not caught up after the heal: {replicas['lagging']}")
    elif replicas and not replicas.get("ok", True):
        unmet.append("replicas differ after the heal")
    return unmet


def expectations(
    result: Mapping[str, Any], layout: SurvivalLayout, primaries_before: Mapping[str, str], lost: set[str]
) -> dict[str, Any]:
    """What the survival goals promise for this fault, and each promise the drill saw broken.

    A drill passes only when it shows what it exists to show: no acknowledged write lost, invariants held,
    replicas identical after the heal; every group whose primary was lost and whose goal survives the
    fault failed over and its cities' writes resumed; every other city kept writing without an error.
    A group whose goal does not survive the fault (zone survival, its region lost) is expected to be
    unavailable: the article's trade, reported, not failed.
    """
    promised = promise(layout, primaries_before, lost, region_fault=result["kill_kind"] == "region")
    survives, unavailable = promised.fail_over, promised.unavailable
    failed_over = {f["group"] for f in result["failovers"]}
    unmet = [
        f"{group} lost its primary and its {layout.groups[group].goal} goal survives that, but no failover"
        for group in survives
        if group not in failed_over
    ]
    for row in result["cities"]:
        if row["home"] in unavailable:
            continue
        if not row["resumed"]:
            unmet.append(f"writes for {row['city']} never resumed after the fault")
        elif row["home"] not in survives and row["failed_after_kill"]:
            unmet.append(f"{row['city']} ({row['home']}, not hit by the fault) saw {row['failed_after_kill']} errors")
    return {"survive": survives, "unavailable_by_design": unavailable, "unmet": unmet + integrity_unmet(result)}
