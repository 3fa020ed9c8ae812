"""How a `movr bench throughput` result is shown: the terminal tables, a chart per topology, the report's
section, its headline and its check. Every function reads the result as the runner wrote it (JSON), so
`movr bench report` shows a result from any earlier run.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from rich.table import Table

from movr.bench.experiment import Check, Figure, Result
from movr.bench.markup import P50_P95_P99, esc, figures_cells, ms, num, table
from movr.bench.output import console
from movr.bench.plots import pyplot, save_figure


def print_tables(result: Result) -> None:
    for entry in result["topologies"]:
        if entry.get("error"):
            console.print(f"[bold red]{entry['topology']}: not measured: {entry['error']}")
            continue
        table_ = Table(
            title=(
                f"throughput, {entry['topology']} — preset {result['preset']}, delays x{result['scale']:g}; "
                f"p99 target {entry['target_ms']:.0f} ms ({entry['target_basis']}); ms from intended send time"
            )
        )
        columns = ("rate/s", "users", "achieved/s", "errors", "p50", "p95", "p99", "floor p50", "p50/floor")
        for column in (*columns, "lab CPU %", "client CPU %", "rest %", "verdict"):
            table_.add_column(column, justify="left" if column == "verdict" else "right")
        for cell in entry["rates"]:
            latency, cpu = cell["latency"], cell["cpu"]
            client = next((p["cpu_percent"] for p in cpu.get("processes", []) if p["kind"] == "bench-client"), None)
            ratio_p50 = latency["ratio_p50"]
            table_.add_row(
                f"{cell['rate']:g}",
                str(cell["users"]),
                f"{cell['achieved_rate']:.1f}",
                f"{cell['error_rate']:.1%}" if cell["error_rate"] is not None else "-",
                ms(latency["p50_ms"]),
                ms(latency["p95_ms"]),
                ms(latency["p99_ms"]),
                ms(latency["floor"]["p50_ms"]),
                f"{ratio_p50:.1f}x" if ratio_p50 else "-",
                f"{cpu.get('lab_percent', 0):.0f}",
                f"{client:.0f}" if client is not None else "-",
                f"{cpu.get('rest_of_machine_percent', 0):.0f}",
                "sustained" if cell["sustained"] else "; ".join(cell["failed_because"]),
            )
        console.print(table_)
        for cell in entry["rates"]:
            if cell["errors"]:
                console.print(f"[yellow]{entry['topology']} @ {cell['rate']:g}/s: first error: {cell['first_error']}")
    best = [(e["topology"], e["max_sustained_rate"]) for e in result["topologies"]]
    console.print("highest sustained rate: " + ", ".join(f"{t} {f'{r:g}/s' if r else 'none'}" for t, r in best))


def figures(result: Result) -> list[Figure]:
    """One chart per measured topology, `<stem>-<topology>.png` beside the result."""
    return [
        Figure(f"{t}: latency and achieved rate against the offered rate", partial(plot_topology, t), suffix=t)
        for t in (entry["topology"] for entry in result.get("topologies", []) if entry.get("rates"))
    ]


def plot_topology(topology: str, result: Result, path: Path) -> None:
    """Latency percentiles and the floor against the offered rate; achieved rate on a second panel."""
    plt = pyplot()
    import matplotlib.ticker  # here, not at the top: matplotlib is slow to import and only drawing needs it

    entry = next(e for e in result["topologies"] if e["topology"] == topology)
    cells = entry["rates"]
    rates = [c["rate"] for c in cells]
    fig, (axis, achieved) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        values = [c["latency"][key] if c["latency"][key] is not None else float("nan") for c in cells]
        axis.plot(rates, values, marker="o", label=label)
    floors = [c["latency"]["floor"]["p50_ms"] or float("nan") for c in cells]
    axis.plot(rates, floors, linestyle=":", color="black", label="floor p50")
    axis.axhline(entry["target_ms"], color="red", linestyle="--", label=f"p99 target {entry['target_ms']:.0f} ms")
    for cell in cells:
        if not cell["sustained"]:
            axis.axvline(cell["rate"], color="grey", alpha=0.4)
    axis.set_yscale("log")
    axis.set_xlabel("offered rate, requests/s (log)")
    axis.set_ylabel("ms from intended send time (log)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    sustained = entry["max_sustained_rate"]
    axis.set_title(f"{entry['topology']}: highest sustained rate {f'{sustained:g}/s' if sustained else 'none'}")
    for panel in (axis, achieved):
        panel.set_xscale("log")
        panel.set_xticks(rates, [f"{rate:g}" for rate in rates])
        panel.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    achieved.plot(rates, [c["achieved_rate"] for c in cells], marker="o", label="achieved")
    achieved.plot(rates, rates, linestyle=":", color="black", label="offered")
    achieved.set_yscale("log")
    achieved.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    achieved.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    achieved.set_xlabel("offered rate, requests/s (log)")
    achieved.set_ylabel("successful responses/s (log)")
    achieved.grid(alpha=0.3, which="both")
    achieved.legend(fontsize=8)
    fig.suptitle(
        f"journey mix, open loop — preset {result['preset']}, delays x{result['scale']:g}, "
        f"{entry['rates'][0]['duration_s']:g} s measured per rate"
        if cells
        else "no rate measured",
        fontsize=10,
    )
    save_figure(fig, path)


def report(result: Result) -> list[str]:
    parts = [
        f"<p>{esc(result.get('settings', {}).get('load', ''))}. A rate is sustained when errors ≤ 1 %, achieved "
        "≥ 90 % of offered and p99 ≤ the target; rates rise until one is not.</p>"
    ]
    summary = []
    for entry in result.get("topologies", []):
        best = entry.get("max_sustained_rate")
        if entry.get("error"):
            summary.append([esc(entry["topology"]), f"<span class=bad>not measured: {esc(entry['error'])}</span>"])
            continue
        summary.append(
            [
                esc(entry["topology"]),
                f"{best:g}/s" if best else "none",
                num(entry.get("target_ms")),
                esc(entry.get("target_basis", "")),
                num(entry.get("think_ms")),
            ]
        )
    headers = ("topology", "highest sustained rate", "p99 target ms", "target basis", "think ms")
    parts.append(table(headers, summary, numeric_from=1))
    for entry in result.get("topologies", []):
        if not entry.get("error"):
            parts += _topology_section(entry)
    return parts


RATE_HEADERS = (
    "offered/s",
    "users",
    "achieved/s",
    "errors",
    "p50",
    "p95",
    "p99",
    "floor p50",
    "÷ floor",
    "lab CPU %",
    "rest of machine %",
    "busiest processes, % of a core",
    "verdict",
)


def _topology_section(entry: Mapping[str, Any]) -> list[str]:
    rows = []
    for cell in entry.get("rates", []):
        cpu = cell.get("cpu", {})
        processes = sorted(cpu.get("processes", []), key=lambda p: -p["cpu_percent"])
        top = ", ".join(f"{esc(p['name'])} {p['cpu_percent']:.0f}" for p in processes[:4])
        rows.append(
            [
                f"{cell['rate']:g}",
                num(cell.get("users")),
                f"{cell.get('achieved_rate', 0):.1f}",
                "–" if cell.get("error_rate") is None else f"{cell['error_rate']:.1%}",
                *figures_cells(cell.get("latency"), P50_P95_P99),
                f"{cpu.get('lab_percent', 0):.0f}",
                f"{cpu.get('rest_of_machine_percent', 0):.0f}",
                top,
                "<span class=ok>sustained</span>"
                if cell.get("sustained")
                else f"<span class=bad>{esc('; '.join(cell.get('failed_because', [])))}</span>",
            ]
        )
    parts = [
        f"<h4>{esc(entry['topology'])}: ms from each request's intended send time</h4>",
        table(RATE_HEADERS, rows, numeric_from=0),
    ]
    # The steps at the highest sustained rate (else the first rate): where a saturated lab's time went.
    cells = entry.get("rates") or [None]
    steps_at = next((c for c in reversed(cells) if c and c.get("sustained")), cells[0])
    if steps_at:
        step_rows = [
            [esc(step), num(f.get("count")), *figures_cells(f)] for step, f in steps_at.get("steps", {}).items()
        ]
        parts.append(f"<h5>per step at {steps_at['rate']:g}/s</h5>")
        parts.append(table(("step", "requests", "p50", "p99", "floor p50", "÷ floor"), step_rows))
    return parts


def headline(result: Result) -> list[str]:
    parts = []
    for entry in result.get("topologies", []):
        best = entry.get("max_sustained_rate")
        parts.append(f"{entry['topology']} {'not measured' if entry.get('error') else f'{best:g}' if best else 'none'}")
    return ["highest sustained journey-mix rate, requests/s: " + ", ".join(parts)] if parts else []


def checks(result: Result) -> list[Check]:
    """One: every topology asked for was measured (a lab that did not come up, or a calibration journey that
    failed, leaves its topology without figures, and the run must say so by its exit status)."""
    failed = [f"{e['topology']}: {e['error']}" for e in result["topologies"] if e.get("error")]
    detail = "not measured: " + "; ".join(failed) if failed else ", ".join(e["topology"] for e in result["topologies"])
    return [Check("every topology asked for was measured", not failed, detail)]
