"""`movr bench insert`: inserting new rows, with a default region (the key must be unique in every region)
against a computed one (the key names its home, and is unique there) — article 003's insert experiment.

Each region's client inserts rows homed in its own region, closed loop, into an empty ``usertable``
(movr.bench.ycsb.clients.InsertClient says how each variant keeps keys unique). After each run the data is
checked straight on the servers: one row per successful insert, at its home, and with `default` a claim of
every key in every region (`verification` in the result).
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from movr.bench.experiment import Check, choices
from movr.bench.histograms import figures
from movr.bench.output import ms
from movr.bench.plots import pyplot, save_figure
from movr.bench.ycsb import options, views
from movr.bench.ycsb.runs import bench, experiment
from movr.bench.ycsb.tables import count_rows, load_tables

VARIANTS = ("default", "computed")
DEFAULTS = {"quick": {"duration": 1.5, "warmup": 0.3}, "full": {"duration": 45.0, "warmup": 10.0}}


def run(run_dir: Path, *, variants_text: str, **common: Any) -> dict[str, Any]:
    variants = choices(variants_text, "--variants", VARIANTS)
    settings = options.settings("insert", run_dir, DEFAULTS, **common)
    results: list[dict[str, Any]] = []
    verification: dict[str, Any] = {}
    with bench(settings, "movr.bench.ycsb.clients:InsertClient", len(variants)) as running:
        regions = running.lab.regions
        result = running.result(variants=list(variants))
        for run_number, variant in enumerate(variants):
            load_tables(running.lab, {}, settings.seed + run_number)
            nonce = uuid.uuid4().hex[:8]
            tasks = {region: settings.task(variant, run_number, i, nonce=nonce) for i, region in enumerate(regions)}
            measured = running.measure(tasks, f"insert, {variant} region")
            for region in regions:
                results.append(
                    {
                        "variant": variant,
                        "region": region,
                        **measured.client(region, searches=False),
                        "insert": figures(measured.payloads[region], "insert"),
                    }
                )
            verification[variant] = verify(variant, count_rows(running.lab), measured.payloads)
    result["results"] = results
    result["verification"] = verification
    return result


def verify(variant: str, counts: dict[str, dict[str, int]], payloads: Mapping[str, Any]) -> dict[str, Any]:
    """Every successful insert left exactly one row, at its home; with `default`, a claim in every region."""
    inserted = {region: p["ops_total"] for region, p in payloads.items()}
    total = sum(inserted.values())
    rows_ok = all(counts[region]["rows"] == inserted[region] for region in inserted)
    claims_ok = all(c["claims"] == (total if variant == "default" else 0) for c in counts.values())
    return {"inserted": inserted, "counts": counts, "consistent": rows_ok and claims_ok}


def checks(result: Mapping[str, Any]) -> list[Check]:
    """By counts first (law 2), then by time: how many WAN round trips an insert made, and whether its
    median fits one parallel round trip (at least the farthest RTT, less than farthest + nearest)."""
    scaled = result["network"]["scaled_rtt_ms"]
    found = []
    for variant in VARIANTS:
        rows = [r for r in result["results"] if r["variant"] == variant]
        if not rows:
            continue
        measured, holds = {}, True
        for row in rows:
            region = row["region"]
            others = [rtt for pair, rtt in scaled.items() if pair.split("|")[0] == region != pair.split("|")[1]]
            farthest, nearest = max(others), min(others)
            p50 = row["insert"]["p50_ms"]
            wan = row["round_trips"]["wan_per_op"]
            measured[region] = {"p50_ms": p50, "wan_round_trips_per_insert": wan, "farthest_rtt_ms": farthest}
            if p50 is None or wan is None:
                holds = False
            elif variant == "default":
                holds = holds and abs(wan - len(others)) < 0.05 and farthest <= p50 < farthest + nearest
            else:
                holds = holds and wan == 0 and p50 < nearest
        name = (
            "default pays one parallel round trip to the farthest region: one WAN round trip to each other region "
            "per insert, farthest RTT <= p50 < farthest + nearest RTT"
            if variant == "default"
            else "computed pays none: no WAN round trip per insert, p50 below the nearest region's RTT"
        )
        found.append(views.claim(name, measured, holds))
    return found


def grids(result: Mapping[str, Any]) -> list[views.Grid]:
    grid = views.Grid("inserts", ("variant", "region", *views.CLIENT_FIGURE_COLUMNS), left=("variant", "region"))
    for row in result["results"]:
        grid.rows.append([row["variant"], row["region"], *views.client_figure_cells(row, "insert")])
    return [grid]


def notes(result: Mapping[str, Any]) -> list[views.Note]:
    """What the servers held after each run, then any failed operations."""
    verified: list[views.Note] = [
        (
            f"{variant}: rows and claims after the run {'consistent' if check['consistent'] else 'WRONG'}",
            not check["consistent"],
        )
        for variant, check in result["verification"].items()
    ]
    return verified + views.error_notes(result["results"])


def plot(result: Mapping[str, Any], path: Path) -> None:
    plt = pyplot()
    rows = result["results"]
    regions = list(dict.fromkeys(r["region"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axis = plt.subplots(figsize=(7, 4.5))
    views.bars(
        axis,
        regions,
        {v: [(views.cell(rows, variant=v, region=r) or {}).get("insert") for r in regions] for v in variants},
    )
    axis.set_ylabel("insert ms (bar p50, whisker p99)")
    axis.legend(fontsize=8)
    axis.set_title(f"inserts — preset {result['preset']}, delays x{result['scale']:g}; black marks: floor")
    save_figure(fig, path)


def headline(result: Mapping[str, Any]) -> list[str]:
    """The median over client regions of each variant's insert p50."""
    p50s: dict[str, list[float]] = {}
    for row in result.get("results", []):
        value = row.get("insert", {}).get("p50_ms")
        if value is not None:
            p50s.setdefault(row["variant"], []).append(value)
    medians = ", ".join(f"{v} {ms(statistics.median(x))} ms" for v, x in p50s.items())
    return [f"insert p50, median over client regions: {medians}"] if medians else []


SUMMARY = "Inserts: default region (key unique across every region) vs computed region (unique at home)."
OWN_OPTIONS = [
    click.option("--variants", "variants_text", default=",".join(VARIANTS), show_default=True),
]
EXPERIMENT = experiment("insert", SUMMARY, run, grids, checks, headline, plot, OWN_OPTIONS, notes)
