"""`movr bench ycsb`: reads and updates of homed rows — computed vs default (locality-optimized search) vs
rehoming — at several localities of access (article 003's first experiment).

For each variant and locality, each region's client picks, with probability = locality, a row homed in
its own region, else one homed in another region (equally likely), zipfian or uniform within that set.
Every region's rows are split into one part per client region and a client only touches its own part of
each region (`KeyLayout.part`), so no two clients touch the same row: the article's "ideal uncontended"
case, in which rehoming shows its best. Tables are reloaded before every run.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from movr.bench.experiment import Check, choices, numbers
from movr.bench.output import ms
from movr.bench.plots import pyplot, save_figure
from movr.bench.ycsb import options, views
from movr.bench.ycsb.keys import KeyLayout
from movr.bench.ycsb.runs import bench, experiment, timeline
from movr.bench.ycsb.tables import load_tables

VARIANTS = ("computed", "default", "rehoming")
DEFAULTS = {
    "quick": {"records": 600, "duration": 1.0, "warmup": 0.3},
    "full": {"records": 30_000, "duration": 45.0, "warmup": 10.0},
}


def run(
    run_dir: Path,
    *,
    workload: str,
    distribution: str,
    locality_text: str,
    variants_text: str,
    records: int | None,
    **common: Any,
) -> dict[str, Any]:
    localities = numbers(locality_text, "--locality", int, 0, 100)
    variants = choices(variants_text, "--variants", VARIANTS)
    settings = options.settings(
        "ycsb", run_dir, DEFAULTS, records=records, workload=workload, distribution=distribution, **common
    )
    runs = [(v, loc) for v in variants for loc in localities]
    results: list[dict[str, Any]] = []
    with bench(settings, "movr.bench.ycsb.clients:YcsbClient", len(runs)) as running:
        regions = running.lab.regions
        per_region = settings.records // len(regions)
        result = running.result(**settings.workload_description(), localities=list(localities), variants=list(variants))
        for run_number, (variant, locality) in enumerate(runs):
            layout = KeyLayout(tuple(regions), per_region, computed=variant == "computed")
            load_tables(running.lab, {r: layout.keys(r) for r in regions}, settings.seed + run_number)
            remote = (1 - locality / 100) / (len(regions) - 1)  # the share of each other region's rows
            tasks = {}
            for index, region in enumerate(regions):
                buckets = [
                    {
                        "weight": locality / 100 if home == region else remote,
                        "keys": layout.part(home, region),
                        "labels": ["local" if home == region else "remote", f"home={home}"],
                    }
                    for home in [region, *(h for h in regions if h != region)]
                ]
                tasks[region] = settings.task(variant, run_number, index, [b for b in buckets if b["weight"] > 0])
            measured = running.measure(tasks, f"{variant} @ {locality}%")
            labels = ["local", "remote", *(f"home={h}" for h in regions)]
            for region in regions:
                results.append(
                    {
                        "variant": variant,
                        "locality": locality,
                        "region": region,
                        **measured.client(region),
                        **measured.reads_and_updates(region, labels),
                        "timeline": timeline(measured.payloads[region], ["read", "update"]),
                    }
                )
    result["results"] = results
    return result


def checks(result: Mapping[str, Any]) -> list[Check]:
    intra = result["network"]["intra_region_rtt_ms"] * result["scale"]
    rows = result["results"]
    found: list[Check] = []
    regions = sorted({r["region"] for r in rows})
    for variant in ("default", "computed"):
        cells = [c for c in (views.cell(rows, variant=variant, locality=100, region=r) for r in regions) if c]
        p50s = {c["region"]: c["read"]["p50_ms"] for c in cells}
        wan = {c["region"]: c["round_trips"]["wan_per_op"] for c in cells}
        if cells and len(cells) == len(regions) and None not in p50s.values():
            worst = max(p50s.values())
            found.append(
                views.claim(
                    f"100% locality: {variant} median read exceeds the local floor ({intra:g} ms) by <= 2 ms, "
                    "with no WAN round trip",
                    {"read_p50_ms": p50s, "wan_round_trips_per_op": wan, "excess_ms": round(worst - intra, 3)},
                    worst - intra <= 2.0 and all(v == 0 for v in wan.values()),
                )
            )
    deltas: dict[str, float] = {}
    for region in regions:
        default, computed = (views.cell(rows, variant=v, locality=50, region=region) for v in ("default", "computed"))
        if not default or not computed:
            continue
        for home, figures_default in default["read"].get("by_home", {}).items():
            figures_computed = computed["read"].get("by_home", {}).get(home)
            if home == region or not figures_computed:
                continue
            if figures_default["p50_ms"] is not None and figures_computed["p50_ms"] is not None:
                deltas[f"{region}->{home}"] = round(figures_default["p50_ms"] - figures_computed["p50_ms"], 3)
    if deltas:
        found.append(
            views.claim(
                "50% locality: default pays the local attempt before its remote search, computed goes straight "
                "to the home (remote reads: default p50 - computed p50 > 0 for every client->home pair)",
                deltas,
                all(delta > 0 for delta in deltas.values()),
            )
        )
    return found


def grids(result: Mapping[str, Any]) -> list[views.Grid]:
    rows = sorted(result["results"], key=lambda r: (-r["locality"], VARIANTS.index(r["variant"]), r["region"]))
    found = []
    for op in ("read", "update"):
        title = f"YCSB-{result['settings']['workload']} {op}s, every operation"
        columns = ("locality", "variant", "client region", *views.CLIENT_FIGURE_COLUMNS)
        grid = views.Grid(title, columns, left=("variant", "client region"))
        for row in rows:
            grid.rows.append(
                [f"{row['locality']}%", row["variant"], row["region"], *views.client_figure_cells(row, op)]
            )
        found.append(grid)
    return found + remote_by_home(result)


def remote_by_home(result: Mapping[str, Any]) -> list[views.Grid]:
    """Remote accesses split by the row's original home: where default's local attempt shows."""
    rows = result["results"]
    variants = [v for v in VARIANTS if v in result["settings"]["variants"]]
    localities = [loc for loc in result["settings"]["localities"] if loc < 100]
    regions = list(dict.fromkeys(r["region"] for r in rows))
    found = []
    for op in ("read", "update") if localities else ():
        title = f"remote {op}s by the row's original home: p50 (floor p50)"
        grid = views.Grid(title, ("locality", "client region", "home", *variants), left=("client region", "home"))
        for locality in localities:
            for region in regions:
                for home in regions:
                    if home == region:
                        continue
                    cells = []
                    for variant in variants:
                        row = views.cell(rows, variant=variant, locality=locality, region=region)
                        h = (row or {}).get(op, {}).get("by_home", {}).get(home)
                        cells.append(f"{ms(h['p50_ms'])} ({ms(h['floor']['p50_ms'])})" if h and h["count"] else "-")
                    grid.rows.append([f"{locality}%", region, home, *cells])
        found.append(grid)
    return found


def plot(result: Mapping[str, Any], path: Path) -> None:
    plt = pyplot()
    rows = result["results"]
    localities = list(result["settings"]["localities"])
    variants = list(result["settings"]["variants"])
    regions = list(dict.fromkeys(r["region"] for r in rows))
    fig, axes = views.read_update_grid(plt, len(localities))
    for row_index, op in enumerate(("read", "update")):
        for col_index, locality in enumerate(localities):
            axis = axes[row_index][col_index]
            series = {
                v: [(views.cell(rows, variant=v, locality=locality, region=r) or {}).get(op) for r in regions]
                for v in variants
            }
            views.bars(axis, regions, series)
            axis.set_title(f"{op}s, {locality}% locality")
            axis.set_ylabel("ms (bar p50, whisker p99)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"YCSB-{result['settings']['workload']} on the lab — preset {result['preset']}, delays x{result['scale']:g}; "
        "black marks: floor"
    )
    save_figure(fig, path)


def headline(result: Mapping[str, Any]) -> list[str]:
    """Per locality, each variant's read p50 (the median over client regions) beside the local floor."""
    rows = result.get("results", [])
    floor = result["network"]["intra_region_rtt_ms"] * result["scale"]
    lines = []
    for locality in result["settings"]["localities"]:
        medians = []
        for variant in result["settings"]["variants"]:
            p50s = [r["read"]["p50_ms"] for r in rows if r["variant"] == variant and r["locality"] == locality]
            known = [p for p in p50s if p is not None]
            if known:
                medians.append(f"{variant} {ms(statistics.median(known))} ms")
        if medians:
            lines.append(f"{locality}% locality, read p50 (median over client regions): {', '.join(medians)}")
    return [*lines, f"local floor {floor:g} ms"] if lines else []


SUMMARY = "Reads and updates of homed rows: computed vs default (locality-optimized search) vs rehoming."
OWN_OPTIONS = [
    *options.workload_options(distribution="zipfian"),
    click.option("--locality", "locality_text", default="100,95,50", show_default=True, help="Locality of access, %."),
    click.option("--variants", "variants_text", default=",".join(VARIANTS), show_default=True),
    click.option("--records", type=int, default=None, help="Rows in all regions together [default: 30000; 600 quick]."),
]
EXPERIMENT = experiment("ycsb", SUMMARY, run, grids, checks, headline, plot, OWN_OPTIONS)
