"""`movr bench throughput`: the journey mix, open loop, at rising request rates, per topology.

The tutorial article measured one user and "did not explore" higher throughput. Per topology a lab is
stood up (`run`), loaded and calibrated (`calibration`: each step's floor, movr.floors); then, for each rate
R, users (`load`) send the journey's steps on a fixed grid of slots 1/R s apart (`schedule`), open loop:
latency counts from each slot's intended send time (coordinated-omission safe), while `cpu` records what
every lab process used. A rate is sustained when errors <= 1 %, achieved >= 90 % of R and p99 <= the target
(`--p99-target-ms`, else 4 x the slowest step's floor); rates rise until one is not, and the highest
sustained rate is the topology's result (`output`). Options and rules: `settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from movr.bench.experiment import Experiment
from movr.bench.throughput import output
from movr.bench.throughput.settings import build_settings


def run(run_dir: Path, **options: Any) -> dict[str, Any]:
    settings = build_settings(run_dir, **options)  # every option checked before anything starts
    # Imported here, not at the top: the load's libraries (aiohttp, uvloop, the lab supervisor, the store)
    # take a good part of a second, and every `movr` command builds this experiment's options.
    from movr.bench.throughput.run import run_benchmark

    return run_benchmark(settings)


EXPERIMENT = Experiment(
    name="throughput",
    summary="The journey mix, open loop, at rising rates per topology: the highest rate each sustains.",
    run=run,
    must_hold=True,
    run_dir_help="Where the labs (throughput/<topology>/), their logs and the result go.",
    options=(
        click.option("--preset", default="gcp-3", show_default=True, help="Preset name or TOML file."),
        click.option(
            "--scale", type=float, default=None, help="Multiplies every delay [default: 1; 0.05 with --quick]."
        ),
        click.option("--topologies", "topologies_text", default="single,hybrid,multi", show_default=True),
        click.option(
            "--rates", "rates_text", default=None, help="Rising offered rates, requests/s [10,20,40,80,160,320]."
        ),
        click.option("--duration", type=float, default=None, help="Measured seconds per rate [20; 1.5 with --quick]."),
        click.option("--warmup", type=float, default=None, help="Seconds before measuring, at least one journey [5]."),
        click.option("--p99-target-ms", type=float, default=None, help="p99 target [4 x the slowest step's floor]."),
        click.option("--quick", is_flag=True, help="Two short rates at scale 0.05: a smoke run, not numbers."),
    ),
    tables=output.print_tables,
    report=output.report,
    figures=output.figures,
    checks=output.checks,
    headline=output.headline,
)
