"""How a `movr bench failover` result is shown: the terminal table, the timeline, the report's section, its
headline and its checks (the promises the drill must keep: a failed one makes the command exit 1). Every
function reads the result as the runner wrote it (JSON), so `movr bench report` shows any earlier drill.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.table import Table

from movr.bench.experiment import Check, Figure, Result
from movr.bench.failover.analysis import integrity_unmet
from movr.bench.markup import esc, num, ratio, table
from movr.bench.output import console
from movr.bench.plots import pyplot, save_figure

COLUMNS = (
    "city",
    "home",
    "longest write gap\nsince kill (s)",
    "it ended (s\nafter kill)",
    "errors\nbefore/after",
    "write ms before\n(floor)",
    "write ms after\n(floor)",
    "read ms\nbefore/after",
    "excess ms\nbefore/after",
    "served by\nafter",
)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(result: Result) -> None:
    title = (
        f"failover drill: {result['survival']} survival on {result['preset']}"
        f"{'' if result['super_regions'] else ' (no super regions)'}, kill {result['kill']} at "
        f"{result['kill_at_s']:.1f} s, delays x{result['scale']:g}"
    )
    cities = Table(title=title)
    for column in COLUMNS:
        cities.add_column(column, justify="left" if column in ("city", "home") else "right")
    for row in result["cities"]:
        before, after = row["before"], row["after"]
        cities.add_row(
            row["city"],
            row["home"],
            _fmt(row["longest_write_gap_s"], 2) + ("" if row["resumed"] else "+"),
            _fmt(row["writes_resumed_after_kill_s"], 2) if row["resumed"] else "never",
            f"{before['errors']}/{after['errors']}",
            f"{_fmt(before['median_write_ms'])} ({_fmt(before['median_write_floor_ms'])})",
            f"{_fmt(after['median_write_ms'])} ({_fmt(after['median_write_floor_ms'])})",
            f"{_fmt(before['median_read_ms'])}/{_fmt(after['median_read_ms'])}",
            f"{_fmt(before['median_excess_ms'])}/{_fmt(after['median_excess_ms'])}",
            ",".join(after["served_by"]) or "-",
        )
    console.print(cities)
    for failover in result["failovers"]:
        console.print(
            f"failover {failover['group']}: {failover['old']} -> {failover['new']} ({failover['new_region']}), "
            f"routed {failover['after_kill_s']:.2f} s after the kill"
        )
    ledger, invariants, replicas = result["ledger_check"], result["invariants"], result["replicas"]
    console.print(
        f"ledger: {ledger['acknowledged_writes']} acknowledged writes ({result['ledger']}); "
        f"lost {len(ledger['lost'])}, duplicated {len(ledger['duplicated'])}"
    )
    console.print(f"invariants: {invariants['violations']}")
    if replicas:
        console.print(f"replicas identical after heal: {replicas['ok']} (heal took {result['heal_s']:.1f} s)")
        if replicas.get("lagging"):
            console.print(f"[red]a standby had not caught up:[/] {replicas['lagging']}")
    promised = result["expectations"]
    if promised["unavailable_by_design"]:
        console.print(f"unavailable by design (goal does not survive this fault): {promised['unavailable_by_design']}")
    for reason in promised["unmet"]:
        console.print(f"[red]unmet:[/] {reason}")
    console.print("[bold green]drill passed[/]" if result["passed"] else "[bold red]drill FAILED[/]")


def plot_timeline(result: Result, path: Path) -> None:
    """Every request's latency around the kill, one panel per home region; kill and failovers marked."""
    plt = pyplot()
    homes = list(dict.fromkeys(row["home"] for row in result["cities"]))
    fig, axes = plt.subplots(len(homes), 1, figsize=(11, 2.8 * len(homes)), sharex=True, squeeze=False)
    t_kill = result["kill_at_s"]
    for axis, home in zip(axes[:, 0], homes, strict=True):
        samples = [s for s in result["samples"] if s["home"] == home]
        for op, marker in (("start ride", "o"), ("end ride", "s"), ("view vehicles", "."), ("view rides", "+")):
            ok = [s for s in samples if s["op"] == op and s["ok"]]
            axis.scatter([s["t1"] - t_kill for s in ok], [s["ms"] for s in ok], s=8, marker=marker, label=op)
        failed = [s for s in samples if not s["ok"]]
        if failed:
            axis.scatter(
                [s["t1"] - t_kill for s in failed],
                [max(s["ms"], 1) for s in failed],
                s=18,
                marker="x",
                color="red",
                label="failed",
            )
        axis.axvline(0, color="black", linestyle="--", linewidth=1)
        for failover in result["failovers"]:
            axis.axvline(failover["after_kill_s"], color="green", linestyle=":", linewidth=1)
        axis.set_yscale("log")
        axis.set_ylabel("ms")
        axis.set_title(f"clients whose data is homed in {home}", fontsize=10)
        axis.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(f"seconds since {result['kill']} was killed (dashed); dotted: failover routed")
    fig.suptitle(
        f"failover drill — {result['survival']} survival, preset {result['preset']}, delays x{result['scale']:g}"
    )
    save_figure(fig, path)


def figures(_result: Result) -> list[Figure]:
    return [Figure("every request around the kill", plot_timeline)]


CITY_HEADERS = (
    "city",
    "home",
    "longest write gap s",
    "writes resumed s after kill",
    "errors before/after",
    "median before",
    "floor",
    "÷ floor",
    "median after",
    "floor",
    "÷ floor",
)


def report(result: Result) -> list[str]:
    rows = []
    for row in result.get("cities", []):
        before, after = row.get("before", {}), row.get("after", {})
        rows.append(
            [
                esc(row["city"]),
                esc(row["home"]),
                num(row.get("longest_write_gap_s"), 2),
                num(row.get("writes_resumed_after_kill_s"), 2) if row.get("resumed") else "never",
                f"{before.get('errors', 0)}/{after.get('errors', 0)}",
                num(before.get("median_ms")),
                num(before.get("median_floor_ms")),
                ratio(before.get("median_ms"), before.get("median_floor_ms")),
                num(after.get("median_ms")),
                num(after.get("median_floor_ms")),
                ratio(after.get("median_ms"), after.get("median_floor_ms")),
            ]
        )
    failovers = "".join(
        f"<li>{esc(f.get('group'))}: {esc(f.get('old'))} → {esc(f.get('new'))} ({esc(f.get('new_region'))}), routed "
        f"{num(f.get('after_kill_s'), 2)} s after the kill</li>"
        for f in result.get("failovers", [])
    )
    return [
        f"<p>{esc(result.get('survival'))} survival, killed {esc(result.get('kill'))} ({esc(result.get('kill_kind'))}) "
        f"at {num(result.get('kill_at_s'))} s of {num(result.get('duration_s'))} s — drill "
        f"{'<span class=ok>passed</span>' if result.get('passed') else '<span class=bad>FAILED</span>'}</p>",
        f"<ul>{failovers}</ul>" if failovers else "<p>no failover recorded</p>",
        "<h4>per client city, ms</h4>",
        table(CITY_HEADERS, rows, numeric_from=2),
    ]


def headline(result: Result) -> list[str]:
    moved = [f["after_kill_s"] for f in result.get("failovers", []) if f.get("after_kill_s") is not None]
    writes = [
        row["after"]["median_write_ms"]
        for row in result.get("cities", [])
        if row.get("after", {}).get("median_write_ms")
    ]
    parts = [f"{result.get('survival')} survival, {result.get('kill')} killed"]
    if moved:
        parts.append(f"failover routed {max(moved):.2f} s after the kill")
    if writes:
        parts.append(f"median write after {statistics.median(writes):.1f} ms")
    parts.append("drill passed" if result.get("passed") else "drill FAILED")
    return [", ".join(parts)]


def checks(result: Result) -> list[Check]:
    """The drill's promises, each judged from the result (`expectations` is the verdict they come from)."""
    ledger, invariants, replicas = result["ledger_check"], result["invariants"], result["replicas"]
    integrity = set(integrity_unmet(result))
    availability = [reason for reason in result["expectations"]["unmet"] if reason not in integrity]
    unavailable = result["expectations"]["unavailable_by_design"]
    return [
        Check(
            "no acknowledged write lost or duplicated",
            ledger["ok"],
            f"{ledger['acknowledged_writes']} acknowledged; lost {len(ledger['lost'])}, "
            f"duplicated {len(ledger['duplicated'])}",
        ),
        Check("invariants hold", invariants["ok"], ", ".join(f"{k} {v}" for k, v in invariants["violations"].items())),
        Check(
            "replicas identical after the heal",
            replicas.get("ok") if replicas else None,
            "" if replicas else "not healed (no replicas compared)",
        ),
        Check(
            "the survival goals' promises for this fault: failover, writes resumed, other cities untouched",
            not availability,
            "; ".join(availability)
            or (f"unavailable by design: {', '.join(unavailable)}" if unavailable else "every promise kept"),
        ),
    ]
