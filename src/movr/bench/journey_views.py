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


def find_row(rows: Sequence[Mapping[str, Any]], topology: str, city: str, step: str) -> Mapping[str, Any] | None:
    """The summary row of one step of one city's journey in one topology."""
    return next((r for r in rows if r["topology"] == topology and r["city"] == city and r["step"] == step), None)


def print_tables(result: Result) -> None:
    rows = result["rows"]
    for city in result["cities"]:
        scope = f"preset {result['preset']}, delays x{result['scale']:g}, median of {result['repeats']}"
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
    idle = result.get("machine", {}).get("idle_cost")
    if idle:
        console.print(
            f"this machine: SELECT 1 on a local server takes {idle['select_busy_ms']:.2f} ms back to back and "
            f"{idle['select_after_idle_ms']:.2f} ms after {idle['gap_ms']:.0f} ms idle (a committed INSERT: "
            f"{idle['insert_after_idle_ms']:.2f} ms); every request wakes the balancer, an app server, the links "
            "and a database in turn"
        )


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
            ]
            for row in rows
            if row["city"] == city
        ]
        parts.append(f"<h4>from {esc(city)} — median of {esc(result.get('repeats', '?'))}, ms</h4>")
        headers = ("topology", "step", "served by", "client", "floor", "÷ floor", "SQL", "statements", "WAN rt")
        parts.append(table(headers, body, numeric_from=3))
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
    """Per city: the average SQL latency of each topology and the ratios the tutorial quotes."""
    lines = []
    for city, r in result.get("ratios", {}).items():
        parts = [f"{t} {r[f'{t}_avg_sql_ms']:.2f} ms" for t in PLAIN if r.get(f"{t}_avg_sql_ms")]
        parts += [f"{k} {r[k]:.1f}×" for k in ("single/multi", "hybrid/multi") if r.get(k)]
        if parts:
            lines.append(f"from {city}, average SQL latency: " + ", ".join(parts))
    return lines


def checks(result: Result) -> list[Check]:
    return [_local_steps_stay_local(result)]


def _local_steps_stay_local(result: Result) -> Check:
    name = "multi: the steps whose data is homed in the client's region cross no WAN link (the links' count)"
    rows = [r for r in result["rows"] if r["topology"] == "multi" and r["step"] != "sign up"]
    if not rows:
        return Check(name, None, "multi was not run")
    crossing = [f"{r['step']} from {r['city']}" for r in rows if r["wan_round_trips"]]
    return Check(name, not crossing, "crossed: " + ", ".join(crossing) if crossing else f"{len(rows)} steps")
