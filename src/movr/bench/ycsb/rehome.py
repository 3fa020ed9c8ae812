"""`movr bench rehome`: rehoming against default when c regions' remote accesses share one hot range
(article 003's contention experiment, 50 % locality).

A hot range of `--hot-keys` rows is first homed in the preset's last region; each region also homes its
private rows. For each c in `--contending`, the first c regions of `rehome_order` run the workload: half
their operations on their own private rows, half on the shared hot range. A hot row moves only when a
remote client *updates* it, so the warm-up is long: that is what "converging" means here. Reported per
client (a closed loop that holds the hot rows runs far faster than one that crosses the WAN for them, so a
distribution merged over clients is mostly the fastest one's) and, in `summary`, all clients together.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from movr.bench.experiment import Check, ExperimentError, numbers, preset_option
from movr.bench.histograms import figures, merged_figures
from movr.bench.output import ms
from movr.bench.plots import pyplot, save_figure
from movr.bench.ycsb import options, views
from movr.bench.ycsb.keys import KeyLayout, hot_keys
from movr.bench.ycsb.runs import bench, experiment, timeline
from movr.bench.ycsb.tables import load_tables

VARIANTS = ("default", "rehoming")
DEFAULTS = {
    "quick": {"records": 300, "duration": 1.0, "warmup": 0.4},
    "full": {"records": 3_000, "duration": 45.0, "warmup": 45.0},
}


def rehome_order(regions: list[str]) -> tuple[str, list[str]]:
    """The hot range's home (the last region) and the contending regions in order, the hot home last:
    c = 1 and 2 reach it only remotely; at c = 3 its own client contends too."""
    hot_home = regions[-1]
    return hot_home, [r for r in regions if r != hot_home] + [hot_home]


def run(
    run_dir: Path,
    *,
    contending_text: str,
    hot: int,
    workload: str,
    distribution: str,
    records: int | None,
    **common: Any,
) -> dict[str, Any]:
    if hot < 1:
        raise ExperimentError("--hot-keys must be at least 1")
    regions = preset_option(common["preset"]).region_names
    contending = numbers(contending_text, "--contending", int, 1, len(regions))
    settings = options.settings(
        "rehome", run_dir, DEFAULTS, records=records, workload=workload, distribution=distribution, **common
    )
    hot_home, order = rehome_order(regions)
    hot_range = hot_keys(hot)
    layout = KeyLayout(tuple(regions), settings.records // len(regions), computed=False)
    results: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    runs = [(c, v) for c in contending for v in VARIANTS]
    with bench(settings, "movr.bench.ycsb.clients:YcsbClient", len(runs)) as running:
        result = running.result(
            **settings.workload_description(), contending=list(contending), hot_keys=hot, locality=50
        )
        result["hot_home"] = hot_home
        for run_number, (count, variant) in enumerate(runs):
            rows = {r: layout.keys(r) + (hot_range if r == hot_home else []) for r in regions}
            load_tables(running.lab, rows, settings.seed + run_number)
            clients = order[:count]
            tasks = {
                region: settings.task(
                    variant,
                    run_number,
                    i,
                    [
                        {"weight": 0.5, "keys": layout.keys(region), "labels": ["private"]},
                        {"weight": 0.5, "keys": hot_range, "labels": ["hot"]},
                    ],
                )
                for i, region in enumerate(clients)
            }
            measured = running.measure(tasks, f"c={count}, {variant}")
            for region in clients:
                payload = measured.payloads[region]
                results.append(
                    {
                        "contending": count,
                        "variant": variant,
                        "region": region,
                        **measured.client(region),
                        **measured.reads_and_updates(region, ["private", "hot"]),
                        "hot_read_tail": figures(payload, "read|hot@tail"),
                        "timeline": timeline(payload, ["read|hot", "update|hot"]),
                    }
                )
            summary.append(
                together(count, variant, clients, [measured.payloads[r] for r in clients], settings.duration)
            )
    result["results"] = results
    result["summary"] = summary
    return result


def together(
    count: int, variant: str, clients: list[str], payloads: list[Mapping[str, Any]], duration: float
) -> dict[str, Any]:
    """One run's contending clients together: their operations added up, their histograms merged."""
    ops = sum(p["ops_measured"] for p in payloads)
    return {
        "contending": count,
        "variant": variant,
        "regions": clients,
        "ops": ops,
        "throughput_ops_s": ops / duration,
        "moves": sum(p["moves"] for p in payloads),
        "retries": sum(p["retries"] for p in payloads),
        "errors": sum(p["errors"] for p in payloads),
        "read": merged_figures(payloads, "read"),
        "update": merged_figures(payloads, "update"),
        "hot_read": merged_figures(payloads, "read|hot"),
        "hot_update": merged_figures(payloads, "update|hot"),
        "hot_read_tail": merged_figures(payloads, "read|hot@tail"),
    }


def throughput_ratios(summary: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per contention level, the throughput of rehoming over default's (all contending clients together)."""
    ratios = {}
    for count in dict.fromkeys(row["contending"] for row in summary):
        rehoming, default = (views.cell(summary, contending=count, variant=v) for v in ("rehoming", "default"))
        if rehoming and default and default["throughput_ops_s"]:
            ratios[count] = round(rehoming["throughput_ops_s"] / default["throughput_ops_s"], 3)
    return ratios


def checks(result: Mapping[str, Any]) -> list[Check]:
    intra = result["network"]["intra_region_rtt_ms"] * result["scale"]
    summary = result["summary"]
    found = []
    rehoming = views.cell(summary, contending=1, variant="rehoming")
    default = views.cell(summary, contending=1, variant="default")
    if rehoming and default:
        tail = rehoming["hot_read_tail"]["p50_ms"]
        found.append(
            views.claim(
                f"c = 1: rehoming converges to local latency (hot-range reads in the last "
                f"{result['settings']['tail_s']:g} s: p50 <= local floor {intra:g} ms + 2 ms)",
                {
                    "rehoming_hot_read_tail_p50_ms": tail,
                    "rehoming_hot_read_p50_ms": rehoming["hot_read"]["p50_ms"],
                    "default_hot_read_p50_ms": default["hot_read"]["p50_ms"],
                },
                tail is not None and tail - intra <= 2.0,
            )
        )
    ratios = throughput_ratios(summary)
    if len(ratios) > 1:
        values = [ratios[c] for c in sorted(ratios)]
        found.append(
            views.claim(
                "rehoming loses its value as contention rises: its throughput relative to default "
                "(all contending clients together) falls as c grows",
                {f"c={c}": ratio for c, ratio in sorted(ratios.items())},
                all(later < earlier for earlier, later in itertools.pairwise(values)),
            )
        )
    return found


def grids(result: Mapping[str, Any]) -> list[views.Grid]:
    """Per client first: a closed loop that holds the hot rows runs hundreds of times faster than one that
    does not, so a distribution merged over clients mostly shows the fastest client."""
    title = f"rehoming under contention, hot range first homed in {result['hot_home']}, per client"
    columns = ("c", "variant", "client region", "hot read p50", "p99", "floor p50", "hot update p50", "p99")
    more = ("private read p50", "ops/s", "rows moved", "retries")
    per_client = views.Grid(title, (*columns, *more), left=("variant", "client region"))
    for row in result["results"]:
        read, update = row["read"]["by_access"]["hot"], row["update"]["by_access"]["hot"]
        per_client.rows.append(
            [
                str(row["contending"]),
                row["variant"],
                row["region"],
                ms(read["p50_ms"]),
                ms(read["p99_ms"]),
                ms(read["floor"]["p50_ms"]),
                ms(update["p50_ms"]),
                ms(update["p99_ms"]),
                ms(row["read"]["by_access"]["private"]["p50_ms"]),
                f"{row['throughput_ops_s']:.0f}",
                str(row["moves"]),
                str(row["retries"]),
            ]
        )
    title = "rehoming under contention, all contending clients together"
    columns = ("c", "variant", "ops/s", "rows moved", "read p50", "read p99", "update p50", "update p99")
    overall = views.Grid(title, (*columns, "hot read p50, last part"), left=("variant",))
    for row in result["summary"]:
        overall.rows.append(
            [
                str(row["contending"]),
                row["variant"],
                f"{row['throughput_ops_s']:.0f}",
                str(row["moves"]),
                *(ms(row[op][p]) for op in ("read", "update") for p in ("p50_ms", "p99_ms")),
                ms(row["hot_read_tail"]["p50_ms"]),
            ]
        )
    return [per_client, overall]


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Per contention level: each client's hot-range reads and updates, default vs rehoming."""
    plt = pyplot()
    rows = result["results"]
    counts = list(dict.fromkeys(r["contending"] for r in rows))
    fig, axes = views.read_update_grid(plt, len(counts))
    for col, count in enumerate(counts):
        regions = list(dict.fromkeys(r["region"] for r in rows if r["contending"] == count))
        totals = {
            v: (views.cell(result["summary"], contending=count, variant=v) or {}).get("throughput_ops_s", 0.0)
            for v in VARIANTS
        }
        for row_index, op in enumerate(("read", "update")):
            axis = axes[row_index][col]
            series = {
                v: [
                    ((views.cell(rows, contending=count, variant=v, region=r) or {}).get(op) or {})
                    .get("by_access", {})
                    .get("hot")
                    for r in regions
                ]
                for v in VARIANTS
            }
            views.bars(axis, regions, series)
            axis.set_title(
                f"c={count}: hot-range {op}s "
                f"(ops/s: default {totals['default']:.0f}, rehoming {totals['rehoming']:.0f})",
                fontsize=9,
            )
            axis.set_ylabel("ms (bar p50, whisker p99)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"rehoming under contention — preset {result['preset']}, delays x{result['scale']:g}, hot range first "
        f"homed in {result['hot_home']}; black marks: floor"
    )
    save_figure(fig, path)


def headline(result: Mapping[str, Any]) -> list[str]:
    """Rehoming's throughput relative to default at each contention level (all contending clients)."""
    ratios = throughput_ratios(result.get("summary", []))
    shown = ", ".join(f"c={count} {ratio:.2f}×" for count, ratio in sorted(ratios.items()))
    return [f"throughput, rehoming ÷ default (all contending clients): {shown}"] if ratios else []


SUMMARY = "Rehoming vs default when c regions' remote accesses share one hot range (50% locality)."
OWN_OPTIONS = [
    click.option("--contending", "contending_text", default="1,2,3", show_default=True, help="Contending regions."),
    click.option("--hot-keys", "hot", type=int, default=10, show_default=True, help="Rows in the shared hot range."),
    *options.workload_options(distribution="uniform"),
    click.option("--records", type=int, default=None, help="Private rows, all regions [default: 3000; 300 quick]."),
]
EXPERIMENT = experiment("rehome", SUMMARY, run, grids, checks, headline, plot, OWN_OPTIONS)
