"""How a `movr bench journey` result is shown: terminal tables, chart, report section, checks, headline.

Every function reads the result as the runner wrote it (JSON): `movr bench report` shows any earlier run,
and `movr demo` prints the same tables from its own journeys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from movr.bench.client import STEPS
from movr.bench.experiment import Check, Figure, Result, console
from movr.bench.markup import esc, num, ratio, table
from movr.bench.plots import pyplot, save_figure

PLAIN = ("single", "hybrid", "multi")
# Issue 15's goals, each a ratio of one run from Rome at scale 1 with the default settings.
GOAL_CITY = "rome"
GOAL_HYBRID_OVER_MULTI = 60.0  # hybrid/multi average SQL latency of the city's home steps, at least
GOAL_STEP_X_FLOOR = 1.15  # every multi step but sign-up, at most this many times its floor
GOAL_SIGN_UP_X_FLOOR = 1.10  # multi's sign-up, at most


def find_row(rows: Sequence[Mapping[str, Any]], topology: str, city: str, step: str) -> Mapping[str, Any] | None:
    """The summary row of one step of one city's journey in one topology."""
    return next((r for r in rows if r["topology"] == topology and r["city"] == city and r["step"] == step), None)


def print_tables(result: Result) -> None:
    rows = result["rows"]
    machine = result.get("machine", {})
    held = ", CPUs held awake" if machine.get("cpus_held_awake") else ""
    for city in result["cities"]:
        scope = f"preset {result['preset']}, delays x{result['scale']:g}, median of {result['repeats']}{held}"
        steps = Table(title=f"journey from {city} — {scope}")
        steps.add_column("step")
        for topology in result["topologies"]:
            steps.add_column(f"{topology}\nms (floor)", justify="right")
            steps.add_column(f"{topology}\nSQL ms", justify="right")
            steps.add_column(f"{topology}\nstmts/WAN", justify="right")
        for step in STEPS:
            cells = [step]
            for topology in result["topologies"]:
                row = find_row(rows, topology, city, step)
                if row is None:
                    cells += ["", "", ""]
                    continue
                cells.append(f"{row['client_ms']:.1f} ({row['floor_ms']:.1f})")
                cells.append(f"{row['sql_ms']:.1f}")
                cells.append(f"{row['statements']}/{row['wan_round_trips']}")
            steps.add_row(*cells)
        console.print(steps)
        console.print(excess_table(rows, city, [t for t in result["topologies"] if t.startswith("multi")]))
        ratios = result["ratios"][city]
        parts = [
            f"avg SQL ms {t}: {ratios[f'{t}_avg_sql_ms']:.2f}"
            for t in result["topologies"]
            if ratios.get(f"{t}_avg_sql_ms") is not None
        ]
        for topology in ("single", "hybrid"):
            if ratios.get(f"{topology}/multi"):
                parts.append(f"{topology}/multi = {ratios[f'{topology}/multi']:.1f}x")
        console.print("   ".join(parts))
        line = limit_line(rows, ratios, city)
        if line:
            console.print(line)
    idle = machine.get("idle_cost")
    if idle:
        hop = (
            f"; a bare process hop (a loopback echo) {idle['hop_busy_ms']:.2f} ms and "
            f"{idle['hop_after_idle_ms']:.2f} ms"
            if "hop_after_idle_ms" in idle
            else ""
        )
        console.print(
            f"this machine: SELECT 1 on a local server takes {idle['select_busy_ms']:.2f} ms back to back and "
            f"{idle['select_after_idle_ms']:.2f} ms after {idle['gap_ms']:.0f} ms idle (a committed INSERT: "
            f"{idle['insert_after_idle_ms']:.2f} ms){hop}; every request wakes the balancer, an app server, the "
            "links and a database in turn"
        )


def _span(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}x" if round(low, 2) == round(high, 2) else f"{low:.2f}–{high:.2f}x"


def limit_line(rows: Sequence[Mapping[str, Any]], ratios: Mapping[str, Any], city: str) -> str | None:
    """One line: multi's limit from `city` on this machine (movr.bench.journey.step_limit) against the floor,
    how close the lab comes to it, and the SQL side of the ratio; None without limits (an older result, the
    demo)."""
    multi = [r for r in rows if r["topology"] == "multi" and r["city"] == city and "limit_ms" in r]
    if not multi:
        return None
    line = (
        f"this machine's limit, multi from {city} (the floor + PostgreSQL after idle per SQL round + a bare "
        f"process hop after idle for the app server): {_span([r['limit_x_floor'] for r in multi])} "
        f"the floor; the lab at {_span([r['x_limit'] for r in multi])} that limit"
    )
    limit = ratios.get("multi_sql_limit_ms")
    if limit:
        line += f"; SQL of the home steps at the limit {limit:.2f} ms"
        if ratios.get("hybrid/multi_at_limit"):
            line += f", so hybrid/multi is at most {ratios['hybrid/multi_at_limit']:.1f}x here"
        if ratios.get("multi_sql_x_limit"):
            line += f"; multi's SQL at {ratios['multi_sql_x_limit']:.2f}x that limit"
    return line


def excess_table(rows: Sequence[Mapping[str, Any]], city: str, topologies: Sequence[str]) -> Table:
    """Where each step's time above the floor went (medians; see journey.StepResult.excess_parts)."""
    excess = Table(title=f"time above the floor from {city}, ms: total = SQL beyond its network + app + path")
    excess.add_column("step")
    for topology in topologies:
        excess.add_column(f"{topology}\ntotal = sql + app + path", justify="right")
    for step in STEPS:
        cells = [step]
        for topology in topologies:
            row = find_row(rows, topology, city, step)
            parts = row and row.get("excess_parts_ms")
            cells.append(
                f"{row['excess_ms']:.1f} = {parts['sql']:.1f} + {parts['app']:.1f} + {parts['path']:.1f}"
                if row and parts
                else ""
            )
        excess.add_row(*cells)
    return excess


def plot_journey(result: Result, path: Path) -> None:
    """Client-observed latency per step, a bar per topology, the floor marked, one panel per city."""
    plt = pyplot()
    rows, cities, topologies = result["rows"], result["cities"], result["topologies"]
    fig, axes = plt.subplots(1, len(cities), figsize=(6 * len(cities), 4.5), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(topologies))
    for axis, city in zip(axes[0], cities, strict=True):
        for index, topology in enumerate(topologies):
            found = [find_row(rows, topology, city, step) for step in STEPS]
            values = [row["client_ms"] if row else 0.0 for row in found]
            floors = [row["floor_ms"] if row else 0.0 for row in found]
            positions = [i + index * width for i in range(len(STEPS))]
            axis.bar(positions, values, width, label=topology)
            axis.scatter(
                positions, floors, marker="_", color="black", s=120, zorder=3, label="floor" if index == 0 else None
            )
        axis.set_title(f"from {city}")
        axis.set_xticks([i + width * (len(topologies) - 1) / 2 for i in range(len(STEPS))])
        axis.set_xticklabels(STEPS, rotation=35, ha="right")
        axis.set_ylabel("client-observed ms (median)")
        axis.legend()
    fig.suptitle(
        f"MovR journey per topology — preset {result['preset']}, delays x{result['scale']:g}; "
        "black marks: physical floor"
    )
    save_figure(fig, path)


def figures(_result: Result) -> list[Figure]:
    return [Figure("client-observed latency per step (black marks: floor)", plot_journey)]


def report(result: Result) -> list[str]:
    parts = []
    rows = result.get("rows", [])
    for city in result.get("cities", []):
        body = [
            [
                esc(row["topology"]),
                esc(row["step"]),
                esc(row.get("served_by", "")),
                num(row["client_ms"]),
                num(row["floor_ms"]),
                ratio(row["client_ms"], row["floor_ms"]),
                num(row.get("sql_ms")),
                num(row.get("statements")),
                num(row.get("wan_round_trips")),
                num(row.get("limit_ms")),
                ratio(row.get("client_ms"), row.get("limit_ms")),
            ]
            for row in rows
            if row["city"] == city
        ]
        parts.append(f"<h4>from {esc(city)} — median of {esc(result.get('repeats', '?'))}, ms</h4>")
        headers = (
            *("topology", "step", "served by", "client", "floor", "÷ floor", "SQL", "statements", "WAN rt"),
            *("this machine's limit", "÷ limit"),
        )
        parts.append(table(headers, body, numeric_from=3))
        line = limit_line(rows, result.get("ratios", {}).get(city, {}), city)
        if line:
            parts.append(f"<p>{esc(line)}</p>")
    ratios = result.get("ratios", {})
    if ratios:
        topologies = [t for t in PLAIN if t in result.get("topologies", [])]
        body = [
            [esc(city)]
            + [num(r.get(f"{t}_avg_sql_ms"), 2) for t in topologies]
            + [f"{r[k]:.1f}×" if r.get(k) else "–" for k in ("single/multi", "hybrid/multi")]
            for city, r in ratios.items()
        ]
        parts.append("<h4>average SQL latency of the steps homed in the client's city (all but sign up), ms</h4>")
        parts.append(table(["city", *topologies, "single / multi", "hybrid / multi"], body))
    return parts


def headline(result: Result) -> list[str]:
    """Per city: the average SQL latency of each topology and the ratios the tutorial quotes; and, where the
    run measured it, how close multi's SQL comes to this machine's limit."""
    lines = []
    for city, r in result.get("ratios", {}).items():
        parts = [f"{t} {r[f'{t}_avg_sql_ms']:.2f} ms" for t in PLAIN if r.get(f"{t}_avg_sql_ms")]
        parts += [f"{k} {r[k]:.1f}×" for k in ("single/multi", "hybrid/multi") if r.get(k)]
        if r.get("multi_sql_x_limit"):
            parts.append(f"multi at {r['multi_sql_x_limit']:.2f}× this machine's limit")
        if r.get("hybrid/multi_at_limit"):
            parts.append(f"hybrid/multi at most {r['hybrid/multi_at_limit']:.1f}× here")
        if parts:
            lines.append(f"from {city}, average SQL latency: " + ", ".join(parts))
    return lines


def checks(result: Result) -> list[Check]:
    return [_local_steps_stay_local(result), _goal_sql_ratio(result), *_goal_steps(result)]


def _unjudged_scale(result: Result) -> str:
    """Why a goal is not judged at this scale ("" at scale 1): scaled delays shrink the floors, not the
    machine's own costs, so the ratios are not the goal's."""
    if result.get("scale") == 1:
        return ""
    return f"; not judged: the goal is set at scale 1, this run is x{result['scale']:g}"


def _goal_sql_ratio(result: Result) -> Check:
    name = (
        f"goal (issue 15): hybrid/multi average SQL latency of {GOAL_CITY}'s home steps >= {GOAL_HYBRID_OVER_MULTI:g}x"
    )
    r = result.get("ratios", {}).get(GOAL_CITY) or {}
    value = r.get("hybrid/multi")
    if value is None:
        return Check(name, None, f"needs hybrid and multi from {GOAL_CITY}")
    holds = value >= GOAL_HYBRID_OVER_MULTI
    detail = f"{value:.1f}x"
    if not holds and r.get("hybrid/multi_at_limit"):
        detail += (
            f"; this machine's limit allows at most {r['hybrid/multi_at_limit']:.1f}x (multi's SQL at the limit "
            f"{r['multi_sql_limit_ms']:.2f} ms; measured {r['multi_avg_sql_ms']:.2f} ms, "
            f"{r['multi_sql_x_limit']:.2f}x the limit)"
        )
        if r["hybrid/multi_at_limit"] < GOAL_HYBRID_OVER_MULTI:
            detail += ": out of this machine's reach"
    unjudged = _unjudged_scale(result)
    return Check(name, None if unjudged else holds, detail + unjudged)


def _goal_steps(result: Result) -> list[Check]:
    """The goals on multi's steps from GOAL_CITY against their floors: every step but sign-up, and sign-up."""
    found = []
    for sign_up, bound in ((False, GOAL_STEP_X_FLOOR), (True, GOAL_SIGN_UP_X_FLOOR)):
        which = "sign-up" if sign_up else "every step but sign-up"
        name = f"goal (issue 15): multi from {GOAL_CITY}, {which} <= {bound:.2f}x its floor"
        rows = [
            r
            for r in result["rows"]
            if r["topology"] == "multi" and r["city"] == GOAL_CITY and (r["step"] == "sign up") == sign_up
        ]
        if not rows:
            found.append(Check(name, None, f"multi was not run from {GOAL_CITY}"))
            continue
        x_floor = {r["step"]: r["client_ms"] / r["floor_ms"] for r in rows}
        worst = max(x_floor, key=lambda step: x_floor[step])
        missed = [r for r in rows if x_floor[r["step"]] > bound]
        detail = f"worst: {worst} {x_floor[worst]:.2f}x"
        if missed and "limit_ms" in missed[0]:
            detail += "; missed, with this machine's limit: " + ", ".join(
                f"{r['step']} {x_floor[r['step']]:.2f}x (the machine alone {r['limit_x_floor']:.2f}x"
                f"{', out of reach' if r['limit_x_floor'] > bound else ''}; the lab at {r['x_limit']:.2f}x its limit)"
                for r in missed
            )
        unjudged = _unjudged_scale(result)
        found.append(Check(name, None if unjudged else not missed, detail + unjudged))
    return found


def _local_steps_stay_local(result: Result) -> Check:
    name = "multi: the steps whose data is homed in the client's region cross no WAN link (the links' count)"
    rows = [r for r in result["rows"] if r["topology"] == "multi" and r["step"] != "sign up"]
    if not rows:
        return Check(name, None, "multi was not run")
    crossing = [f"{r['step']} from {r['city']}" for r in rows if r["wan_round_trips"]]
    return Check(name, not crossing, "crossed: " + ", ".join(crossing) if crossing else f"{len(rows)} steps")
