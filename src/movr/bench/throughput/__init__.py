"""`movr bench throughput`: the journey mix, open loop, at rising request rates, per topology.

The tutorial article measured one user and says it "did not explore" higher throughput. This experiment
offers the lab a fixed schedule of requests and watches where each topology stops keeping up.

For each topology a lab is stood up (and always taken down), loaded with the sample data and calibrated
(`calibration`: one journey from each client city on the idle lab gives every step its floor). Then, for
each rate R (requests per second, every step of the journey mix counted), N users (`load`) send the journey's
steps on a fixed grid of slots 1/R s apart (`schedule`), open loop and coordinated-omission safe: latency is
measured from each slot's intended send time, after a warm-up of at least one journey's length, while a
sampler (`cpu`) records what every lab process used.

**Judging a rate.** A rate is sustained when the error rate is <= 1 %, the achieved rate is >= 90 % of R,
and the p99 latency (HdrHistogram, from intended send times) is <= the p99 target. The target, unless
``--p99-target-ms`` states one, is per topology: **4 x the slowest step's floor** (movr.bench.floors, as
`movr bench journey` reports it) over the calibration journeys. The rates rise until one is not sustained;
the highest sustained rate is the topology's result. Every request's floor under load comes from what its
response says (serving region, statements) with the idle lab's hashing time for its step.

The result goes to <run-dir>/throughput.json with a chart per topology beside it (`output`); the labs to
<run-dir>/throughput/<topology>/ (`run`). Options and rules: `settings`.
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
