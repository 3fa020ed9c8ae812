"""`movr bench report`: every benchmark result under a run directory, on one static HTML page.

It finds the result JSON files the `movr bench` commands write (journey, links, ycsb, insert, rehome,
throughput, failover — whichever exist), and renders for each: what was run (preset, delay scale, versions,
machine: law 7), its tables with measured / floor ratios where the result has floors (law 3), and its plots.
A plot is the PNG the command wrote beside its JSON; when that PNG is missing, the command's own plot
function draws it again from the JSON. The page opens with the articles' claims (the claims table of
`reference/README.md`) beside what these runs measured.

The page is one file: inline CSS, PNGs embedded as base64 data, no script and no external URL, so that it
can be mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from movr.bench.common import console, ms
from movr.cli_support import CliError

KINDS = ("journey", "links", "ycsb", "insert", "rehome", "throughput", "failover")
SKIP_DIRS = {"servers", "logs", "data"}  # PostgreSQL data and logs: never results, and often large
MAX_JSON_BYTES = 512 * 2**20

# The articles' measurable claims, as /work/shared/reference/README.md states them (texts copied verbatim).
CLAIMS: tuple[dict[str, Any], ...] = (
    {
        "claim": (
            "journey from Rome (sign up, log in, view vehicles, add vehicle, start ride, end ride, view rides, "
            'log out): ~150 ms average SQL latency single-region, < 2.5 ms multi-region, "over 60x"'
        ),
        "source": "000",
        "experiment": "movr bench journey",
        "kinds": ("journey",),
    },
    {
        "claim": 'higher throughput, hybrid deployments (multi-region app, single-region database) "not explored"',
        "source": "000",
        "experiment": "movr bench journey (hybrid), movr bench throughput",
        "kinds": ("journey", "throughput"),
    },
    {
        "claim": (
            "default REGIONAL BY ROW keeps local read/update latency via locality-optimized search; only slightly "
            "slower than manual partitioning; rehoming best when uncontended"
        ),
        "source": "003",
        "experiment": "movr bench ycsb",
        "kinds": ("ycsb",),
    },
    {
        "claim": (
            "inserts: default REGIONAL BY ROW > 100 ms (uniqueness checked in all regions) vs tens of ms with a "
            "computed region"
        ),
        "source": "003",
        "experiment": "movr bench insert",
        "kinds": ("insert",),
    },
    {
        "claim": (
            "auto-rehoming under contention (c = 1, 2, 3 contending regions, 50 % locality) loses its value as "
            "contention rises"
        ),
        "source": "003",
        "experiment": "movr bench rehome",
        "kinds": ("rehome",),
    },
    {
        "claim": (
            "region survival: reads local, writes cost at least the RTT to the nearest other region; leases for "
            "a lost region move in < 10 s"
        ),
        "source": "004",
        "experiment": "movr bench failover, survival write latency",
        "kinds": ("failover",),
    },
    {
        "claim": "data domiciling: EU rows only on EU nodes with super regions",
        "source": "004",
        "experiment": "domicile audit",
        "kinds": (),
    },
)
ARTICLES = {
    "000": "the MovR tutorial (000_fd183b4ea4813171.txt)",
    "003": "REGIONAL BY ROW (003_172a48c681fde038.txt)",
    "004": "region-level survival (004_2faa11663c964a6e.txt)",
}


@dataclass
class Result:
    kind: str
    path: Path
    data: dict[str, Any]

    @property
    def scale(self) -> float | None:
        if self.kind == "links":
            return self.data.get("settings", {}).get("scale")
        return self.data.get("scale")


@dataclass
class Plot:
    title: str
    png: bytes | None
    origin: str  # "beside the JSON" | "drawn from the JSON"
    error: str = ""


@dataclass
class Section:
    result: Result
    anchor: str
    body: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------
# Finding the results


def classify(data: Any) -> str | None:
    """The benchmark a JSON document is the result of, or None (lab state, link specs, configs...)."""
    if not isinstance(data, dict):
        return None
    kind = data.get("benchmark")
    if kind in KINDS:
        return kind
    # `movr bench links` writes no "benchmark" field: recognise its shape.
    if {"settings", "error", "rtt", "pass"} <= set(data) and "configured_rtt_ms" in data.get("settings", {}):
        return "links"
    return None


def find_results(run_dir: Path) -> list[Result]:
    found = []
    for root, dirs, files in os.walk(run_dir, onerror=lambda _error: None):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if not name.endswith(".json"):
                continue
            path = Path(root) / name
            try:
                if path.stat().st_size > MAX_JSON_BYTES:
                    continue
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            kind = classify(data)
            if kind is not None:
                found.append(Result(kind, path, data))
    return sorted(found, key=lambda r: (KINDS.index(r.kind), str(r.path)))


# --------------------------------------------------------------------------------------------------------
# Plots: the PNG beside the JSON, or drawn again by the command's own plot function


def _plot(title: str, beside: Path, draw: Callable[[Path], None]) -> Plot:
    if beside.is_file():
        return Plot(title, beside.read_bytes(), "beside the JSON")
    with tempfile.TemporaryDirectory(prefix="movr-report-") as tmp:
        target = Path(tmp) / "plot.png"
        try:
            draw(target)
            return Plot(title, target.read_bytes(), "drawn from the JSON")
        except Exception as error:  # an older or partial result: say so on the page, keep the rest
            return Plot(title, None, "", f"{type(error).__name__}: {error}")


def plots_for(result: Result) -> list[Plot]:
    data, path = result.data, result.path
    beside = path.with_suffix(".png")
    if result.kind == "journey":
        from movr.bench.journey import plot_journey

        return [
            _plot(
                "client-observed latency per step (black marks: floor)",
                beside,
                lambda out: plot_journey(
                    data["rows"], data["cities"], data["topologies"], out, data["preset"], data["scale"]
                ),
            )
        ]
    if result.kind in ("ycsb", "insert", "rehome"):
        from movr.bench import ycsb

        draw = {"ycsb": ycsb.plot_ycsb, "insert": ycsb.plot_insert, "rehome": ycsb.plot_rehome}[result.kind]
        return [_plot("p50 bars, p99 whiskers, floor marks", beside, lambda out: draw(data, out))]
    if result.kind == "failover":
        from movr.bench.failover import plot_timeline

        return [_plot("every request around the kill", beside, lambda out: plot_timeline(data, out))]
    if result.kind == "throughput":
        from movr.bench.throughput import plot_path_for, plot_topology

        plots = []
        for entry in data.get("topologies", []):
            if not entry.get("rates"):
                continue
            png = path.with_name(entry.get("plot") or plot_path_for(path, entry["topology"]).name)
            plots.append(
                _plot(
                    f"{entry['topology']}: latency and achieved rate against the offered rate",
                    png,
                    lambda out, entry=entry: plot_topology(data, entry, out),
                )
            )
        return plots
    return []  # links: a table says it all


# --------------------------------------------------------------------------------------------------------
# HTML pieces


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return ms(value, digits)
    return esc(value)


def ratio(measured: float | None, floor: float | None) -> str:
    """measured / floor, the yardstick of law 3."""
    if measured is None or not floor:
        return "–"
    return f"{measured / floor:.2f}×"


def scale_text(scale: float | None) -> str:
    return "?" if scale is None else f"{scale:g}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric_from: int = 1) -> str:
    """An HTML table; cells are already-escaped HTML. Columns from `numeric_from` on are right-aligned."""
    head = "".join(f"<th{' class=n' if i >= numeric_from else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f"<td{' class=n' if i >= numeric_from else ''}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def verdict(holds: bool | None) -> str:
    if holds is None:
        return "<span class=muted>–</span>"
    return "<span class=ok>holds</span>" if holds else "<span class=bad>does not hold</span>"


def checks_list(checks: Sequence[Mapping[str, Any]]) -> str:
    if not checks:
        return ""
    items = "".join(
        f"<li>{verdict(c.get('holds'))}: {esc(c.get('claim', ''))} "
        f"<span class=muted>— measured {esc(json.dumps(c.get('measured'), default=str))}</span></li>"
        for c in checks
    )
    return f"<h4>The tracker's claims, on this run</h4><ul class=checks>{items}</ul>"


# --------------------------------------------------------------------------------------------------------
# Per benchmark: tables


def _cell(rows: Sequence[Mapping[str, Any]], **match: Any) -> Mapping[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def journey_body(data: Mapping[str, Any]) -> list[str]:
    parts = []
    rows = data.get("rows", [])
    for city in data.get("cities", []):
        body = []
        for row in (r for r in rows if r["city"] == city):
            body.append(
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
            )
        parts.append(f"<h4>from {esc(city)} — median of {esc(data.get('repeats', '?'))}, ms</h4>")
        headers = ("topology", "step", "served by", "client", "floor", "÷ floor", "SQL", "statements", "WAN rt")
        parts.append(table(headers, body, numeric_from=3))
    ratios = data.get("ratios", {})
    if ratios:
        topologies = [t for t in ("single", "hybrid", "multi") if t in data.get("topologies", [])]
        body = []
        for city, r in ratios.items():
            body.append(
                [esc(city)]
                + [num(r.get(f"{t}_avg_sql_ms"), 2) for t in topologies]
                + [f"{r[k]:.1f}×" if r.get(k) else "–" for k in ("single/multi", "hybrid/multi")]
            )
        parts.append("<h4>average SQL latency of the steps homed in the client's city (all but sign up), ms</h4>")
        parts.append(table(["city", *topologies, "single / multi", "hybrid / multi"], body))
    return parts


def links_body(data: Mapping[str, Any]) -> list[str]:
    s = data.get("settings", {})
    rows = []
    for label, key in (("round trip through the link", "rtt"), ("error vs configured", "error")):
        f = data.get(key, {})
        rows.append([esc(label), *(num(f.get(k), 3) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))])
    intro = (
        f"<p>configured RTT {num(s.get('configured_rtt_ms'))} ms ({num(s.get('rtt_ms'))} × {num(s.get('scale'))}), "
        f"{num(s.get('count'))} round trips at {num(s.get('rate'))}/s over {num(s.get('connections'))} connections; "
        f"received {num(data.get('received'))}, lost {num(data.get('lost'))}; targets: error p50 ≤ "
        f"{num(data.get('targets', {}).get('p50_ms'))} ms, p99 ≤ {num(data.get('targets', {}).get('p99_ms'))} ms — "
        f"{verdict(data.get('pass'))}</p>"
    )
    return [intro, table(("ms", "p50", "p90", "p99", "max"), rows)]


P50_P95_P99 = ("p50_ms", "p95_ms", "p99_ms")


def _figures_cells(f: Mapping[str, Any] | None, percentiles: tuple[str, ...] = ("p50_ms", "p99_ms")) -> list[str]:
    """The percentiles of a latency summary, then its floor's p50 and the p50's ratio to that floor."""
    f = f or {}
    floor = (f.get("floor") or {}).get("p50_ms")
    return [*(num(f.get(p)) for p in percentiles), num(floor), ratio(f.get("p50_ms"), floor)]


def ycsb_body(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for cell in data.get("results", []):
        wan = cell.get("round_trips", {}).get("wan_per_op")
        rows.append(
            [
                f"{esc(cell['locality'])}%",
                esc(cell["variant"]),
                esc(cell["region"]),
                *_figures_cells(cell.get("read")),
                *_figures_cells(cell.get("update")),
                f"{cell.get('throughput_ops_s', 0):.0f}",
                f"{wan:.2f}" if wan is not None else "–",
            ]
        )
    headers = (
        "locality",
        "variant",
        "client region",
        "read p50",
        "p99",
        "floor p50",
        "÷ floor",
        "update p50",
        "p99",
        "floor p50",
        "÷ floor",
        "ops/s",
        "WAN rt/op",
    )
    return [
        "<h4>every operation, ms</h4>",
        table(headers, rows, numeric_from=3),
        checks_list(data.get("checks", [])),
    ]


def insert_body(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for cell in data.get("results", []):
        wan = cell.get("round_trips", {}).get("wan_per_op")
        rows.append(
            [
                esc(cell["variant"]),
                esc(cell["region"]),
                *_figures_cells(cell.get("insert"), P50_P95_P99),
                f"{cell.get('throughput_ops_s', 0):.0f}",
                f"{wan:.2f}" if wan is not None else "–",
            ]
        )
    headers = ("variant", "client region", "p50", "p95", "p99", "floor p50", "÷ floor", "inserts/s", "WAN rt/op")
    verification = "".join(
        f"<li>{esc(variant)}: rows and claims after the run "
        f"{'<span class=ok>consistent</span>' if v.get('consistent') else '<span class=bad>WRONG</span>'}</li>"
        for variant, v in data.get("verification", {}).items()
    )
    return [
        "<h4>inserts, ms</h4>",
        table(headers, rows, numeric_from=2),
        f"<ul>{verification}</ul>" if verification else "",
        checks_list(data.get("checks", [])),
    ]


def rehome_body(data: Mapping[str, Any]) -> list[str]:
    per_client = []
    for cell in data.get("results", []):
        hot_read = cell.get("read", {}).get("by_access", {}).get("hot")
        hot_update = cell.get("update", {}).get("by_access", {}).get("hot")
        per_client.append(
            [
                esc(cell["contending"]),
                esc(cell["variant"]),
                esc(cell["region"]),
                *_figures_cells(hot_read),
                *_figures_cells(hot_update),
                f"{cell.get('throughput_ops_s', 0):.0f}",
                num(cell.get("moves")),
            ]
        )
    headers = (
        "c",
        "variant",
        "client region",
        "hot read p50",
        "p99",
        "floor p50",
        "÷ floor",
        "hot update p50",
        "p99",
        "floor p50",
        "÷ floor",
        "ops/s",
        "rows moved",
    )
    summary = [
        [
            esc(row["contending"]),
            esc(row["variant"]),
            f"{row.get('throughput_ops_s', 0):.0f}",
            num(row.get("moves")),
            num(row.get("read", {}).get("p50_ms")),
            num(row.get("update", {}).get("p50_ms")),
            num(row.get("hot_read_tail", {}).get("p50_ms")),
        ]
        for row in data.get("summary", [])
    ]
    return [
        f"<h4>per client (hot range first homed in {esc(data.get('hot_home', '?'))}), ms</h4>",
        table(headers, per_client, numeric_from=3),
        "<h4>all contending clients together</h4>",
        table(
            ("c", "variant", "ops/s", "rows moved", "read p50", "update p50", "hot read p50, last part"),
            summary,
            numeric_from=2,
        ),
        checks_list(data.get("checks", [])),
    ]


def throughput_body(data: Mapping[str, Any]) -> list[str]:
    parts = [
        f"<p>{esc(data.get('settings', {}).get('load', ''))}. A rate is sustained when errors ≤ 1 %, achieved ≥ 90 % "
        "of offered and p99 ≤ the target; rates rise until one is not.</p>"
    ]
    summary = []
    for entry in data.get("topologies", []):
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
    parts.append(
        table(
            ("topology", "highest sustained rate", "p99 target ms", "target basis", "think ms"), summary, numeric_from=1
        )
    )
    for entry in data.get("topologies", []):
        if entry.get("error"):
            continue
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
                    pct(cell.get("error_rate")),
                    *_figures_cells(cell.get("latency"), P50_P95_P99),
                    f"{cpu.get('lab_percent', 0):.0f}",
                    f"{cpu.get('rest_of_machine_percent', 0):.0f}",
                    top,
                    "<span class=ok>sustained</span>"
                    if cell.get("sustained")
                    else f"<span class=bad>{esc('; '.join(cell.get('failed_because', [])))}</span>",
                ]
            )
        headers = (
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
        parts.append(f"<h4>{esc(entry['topology'])}: ms from each request's intended send time</h4>")
        parts.append(table(headers, rows, numeric_from=0))
        steps_at = next(
            (c for c in reversed(entry.get("rates", [])) if c.get("sustained")), (entry.get("rates") or [None])[0]
        )
        if steps_at:
            step_rows = []
            for step, f in steps_at.get("steps", {}).items():
                floor = (f.get("floor") or {}).get("p50_ms")
                step_rows.append(
                    [
                        esc(step),
                        num(f.get("count")),
                        num(f.get("p50_ms")),
                        num(f.get("p99_ms")),
                        num(floor),
                        ratio(f.get("p50_ms"), floor),
                    ]
                )
            parts.append(f"<h5>per step at {steps_at['rate']:g}/s</h5>")
            parts.append(table(("step", "requests", "p50", "p99", "floor p50", "÷ floor"), step_rows))
    return parts


def failover_body(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for row in data.get("cities", []):
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
    headers = (
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
    failovers = "".join(
        f"<li>{esc(f.get('group'))}: {esc(f.get('old'))} → {esc(f.get('new'))} ({esc(f.get('new_region'))}), routed "
        f"{num(f.get('after_kill_s'), 2)} s after the kill</li>"
        for f in data.get("failovers", [])
    )
    return [
        f"<p>{esc(data.get('survival'))} survival, killed {esc(data.get('kill'))} ({esc(data.get('kill_kind'))}) at "
        f"{num(data.get('kill_at_s'))} s of {num(data.get('duration_s'))} s — drill "
        f"{'<span class=ok>passed</span>' if data.get('passed') else '<span class=bad>FAILED</span>'}</p>",
        f"<ul>{failovers}</ul>" if failovers else "<p>no failover recorded</p>",
        "<h4>per client city, ms</h4>",
        table(headers, rows, numeric_from=2),
    ]


BODIES: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "journey": journey_body,
    "links": links_body,
    "ycsb": ycsb_body,
    "insert": insert_body,
    "rehome": rehome_body,
    "throughput": throughput_body,
    "failover": failover_body,
}


# --------------------------------------------------------------------------------------------------------
# The claims beside our runs


def _ours_journey(data: Mapping[str, Any]) -> str:
    ratios = data.get("ratios", {})
    city = "rome" if "rome" in ratios else next(iter(ratios), None)
    if city is None:
        return ""
    r = ratios[city]
    parts = [f"{t} {r[f'{t}_avg_sql_ms']:.2f} ms" for t in ("single", "hybrid", "multi") if r.get(f"{t}_avg_sql_ms")]
    parts += [f"{k} {r[k]:.1f}×" for k in ("single/multi", "hybrid/multi") if r.get(k)]
    return f"from {city}, average SQL latency: " + ", ".join(parts)


def _ours_throughput(data: Mapping[str, Any]) -> str:
    parts = []
    for entry in data.get("topologies", []):
        best = entry.get("max_sustained_rate")
        parts.append(f"{entry['topology']} {'not measured' if entry.get('error') else f'{best:g}' if best else 'none'}")
    return "highest sustained journey-mix rate, requests/s: " + ", ".join(parts)


def _ours_checks(data: Mapping[str, Any]) -> str:
    checks = data.get("checks", [])
    if not checks:
        return ""
    held = sum(1 for c in checks if c.get("holds"))
    return f"{held} of {len(checks)} checks hold: " + "; ".join(
        f"{'✔' if c.get('holds') else '✘'} {c.get('claim', '')}" for c in checks
    )


def _ours_insert(data: Mapping[str, Any]) -> str:
    p50s: dict[str, list[float]] = {}
    for cell in data.get("results", []):
        value = cell.get("insert", {}).get("p50_ms")
        if value is not None:
            p50s.setdefault(cell["variant"], []).append(value)
    medians = ", ".join(f"{v} p50 {statistics.median(x):.1f} ms" for v, x in p50s.items())
    checks = _ours_checks(data)
    return "; ".join(p for p in (f"median over client regions: {medians}" if medians else "", checks) if p)


def _ours_failover(data: Mapping[str, Any]) -> str:
    moved = [f.get("after_kill_s") for f in data.get("failovers", []) if f.get("after_kill_s") is not None]
    writes = [
        row["after"]["median_write_ms"] for row in data.get("cities", []) if row.get("after", {}).get("median_write_ms")
    ]
    parts = [f"{data.get('survival')} survival, {data.get('kill')} killed"]
    if moved:
        parts.append(f"failover routed {max(moved):.2f} s after the kill")
    if writes:
        parts.append(f"median write after {statistics.median(writes):.1f} ms")
    parts.append("drill passed" if data.get("passed") else "drill FAILED")
    return ", ".join(parts)


OURS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "journey": _ours_journey,
    "throughput": _ours_throughput,
    "ycsb": _ours_checks,
    "insert": _ours_insert,
    "rehome": _ours_checks,
    "failover": _ours_failover,
}


def claims_table(results: Sequence[Result], anchors: Mapping[int, str]) -> str:
    rows = []
    for claim in CLAIMS:
        ours = []
        for index, result in enumerate(results):
            if result.kind not in claim["kinds"] or result.kind not in OURS:
                continue
            try:
                text = OURS[result.kind](result.data)
            except (KeyError, TypeError, ValueError, AttributeError):
                text = "(this result's shape is not one this report knows)"
            if text:
                ours.append(
                    f"<div><a href='#{anchors[index]}'>{esc(result.kind)}</a> "
                    f"<span class=muted>(delays ×{esc(scale_text(result.scale))})</span>: {esc(text)}</div>"
                )
        rows.append(
            [
                esc(claim["claim"]),
                f"<span title='{esc(ARTICLES[claim['source']])}'>{esc(claim['source'])}</span>",
                f"<code>{esc(claim['experiment'])}</code>",
                "".join(ours) or "<span class=muted>no result in this run directory</span>",
            ]
        )
    return table(("the articles' claim", "article", "our experiment", "these runs"), rows, numeric_from=99)


# --------------------------------------------------------------------------------------------------------
# The page

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 1em 2em 4em; color: #1b1f24; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2em;
       margin-top: 2.2em; } h4 { margin: 1.4em 0 .4em; } h5 { margin: 1em 0 .3em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; vertical-align: top; }
th { background: #f3f5f8; text-align: left; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
.muted { color: #6a737d; } .ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
.meta { color: #57606a; font-size: 12.5px; } .warn { background: #fff8c5; padding: .3em .6em; border-radius: 4px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 12.5px; } ul.checks li { margin: .2em 0; }
nav ul { columns: 2; } code { background: #f3f5f8; padding: 0 .25em; border-radius: 3px; }
"""


def _meta(result: Result, run_dir: Path) -> str:
    data = result.data
    if result.kind == "links":
        env = data.get("environment", {})
        versions = {"python": env.get("python")}
        machine = {"platform": env.get("platform"), "cpus": env.get("cpus")}
        preset = "–"
    else:
        versions = data.get("versions", {})
        machine = data.get("machine", {})
        preset = data.get("preset", "–")
    try:
        where = result.path.relative_to(run_dir)
    except ValueError:
        where = result.path
    items = [
        f"file <code>{esc(where)}</code>",
        f"preset <b>{esc(preset)}</b>",
        f"delays ×<b>{esc(scale_text(result.scale))}</b>",
        "versions " + esc(", ".join(f"{k} {v}" for k, v in versions.items() if v)),
        "machine " + esc(", ".join(f"{k} {v}" for k, v in machine.items() if v)),
    ]
    if data.get("started_at"):
        items.append(f"started {esc(data['started_at'])}")
    return "<p class=meta>" + " · ".join(items) + "</p>"


def render(results: Sequence[Result], run_dir: Path) -> tuple[str, int]:
    """The page, and how many plots it embeds."""
    anchors = {i: f"{r.kind}-{i}" for i, r in enumerate(results)}
    sections = []
    embedded = 0
    for index, result in enumerate(results):
        parts = [f"<h2 id='{anchors[index]}'>{esc(result.kind)}</h2>", _meta(result, run_dir)]
        if result.scale is not None and result.scale != 1:
            parts.append(
                f"<p class=warn>Delays scaled ×{esc(scale_text(result.scale))}: milliseconds here are not comparable "
                "with the articles' figures; ratios and counts are.</p>"
            )
        try:
            parts += BODIES[result.kind](result.data)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            parts.append(
                f"<p class=bad>could not read this result's tables: {esc(type(error).__name__)} {esc(error)}</p>"
            )
        for plot in plots_for(result):
            if plot.png is None:
                parts.append(f"<p class=bad>plot “{esc(plot.title)}” could not be drawn: {esc(plot.error)}</p>")
                continue
            embedded += 1
            data = base64.b64encode(plot.png).decode("ascii")
            parts.append(
                f"<figure><img alt='{esc(result.kind)}: {esc(plot.title)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{esc(plot.title)} <span class=muted>({esc(plot.origin)})</span></figcaption></figure>"
            )
        sections.append("\n".join(parts))
    nav = "".join(
        f"<li><a href='#{anchors[i]}'>{esc(r.kind)}</a> <span class=muted>{esc(r.path.name)}</span></li>"
        for i, r in enumerate(results)
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MovR Global — benchmark report</title>
<style>{CSS}</style></head>
<body>
<h1>MovR Global — benchmark report</h1>
<p class=meta>{len(results)} results found under <code>{esc(run_dir)}</code>; page made
{esc(time.strftime("%Y-%m-%d %H:%M:%S %z"))}. Every latency is set beside its physical floor (÷ floor = measured /
floor); every result states its preset and delay scale.</p>
<nav><ul>{nav}</ul></nav>
<h2 id="claims">The articles' claims beside these runs</h2>
{claims_table(results, anchors)}
{"".join(f"<section>{s}</section>" for s in sections)}
</body></html>
"""
    return page, embedded


@click.command("report")
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=lambda: Path.cwd() / "run" / "bench",
    help="Where to look for result JSON files [./run/bench].",
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="HTML file [<run-dir>/report.html].")
def report_command(run_dir: Path, output: Path | None) -> None:
    """Every benchmark result under the run directory, on one static HTML page."""
    if not run_dir.is_dir():
        raise CliError(f"--run-dir {run_dir} is not a directory")
    output = output or run_dir / "report.html"
    if output.is_dir():
        raise CliError(f"--output {output} is a directory")
    results = find_results(run_dir)
    if not results:
        raise CliError(f"no benchmark result JSON under {run_dir}")
    page, plots = render(results, run_dir.resolve())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    kinds = ", ".join(dict.fromkeys(r.kind for r in results))
    console.print(f"report: {output} — {len(results)} results ({kinds}), {plots} plots")
