"""`movr bench failover`: lose a region (or a server) under load, and prove that nothing acknowledged is lost.

A lab with the survival goal, sample data, and one rider per chosen city (`riders`) riding its vehicle
through the balancer. At `--kill-at` the region (`movr lab fail region`) or the server named by `--kill`
dies and the failover controller does the rest; at `--duration` the load stops and the lab is healed
(`drill`). Then the databases must prove (`checks`) that every acknowledged write in the riders' `ledger`
is on its region's current primary exactly once, that the invariants hold, and that the replicas are
identical. Per city (`analysis`): the longest time without a successful write and when writes resumed,
errors, and latency before and after beside the floor of that phase (law 3; after the loss the data may be
served from another region and commits may wait for a farther standby). A drill that breaks a promise of
its survival goal exits with status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from movr.bench.experiment import Experiment, ExperimentError, preset_option
from movr.bench.failover import output
from movr.bench.output import console

QUICK = {"duration": 12.0, "kill_at": 4.0, "cities_per_region": 1}


def run(run_dir: Path, *, quick: bool, **options: Any) -> dict[str, Any]:
    """The options are DrillConfig's fields, as click parsed them; --quick overrides three of them."""
    preset_option(options["preset_source"])
    if quick:
        options |= {**QUICK, "kill_at": options["kill_at"] or QUICK["kill_at"]}
    if options["kill_at"] is None:
        options["kill_at"] = options["duration"] / 3
    if options["kill_at"] >= options["duration"]:
        raise ExperimentError("--kill-at must come before the end of --duration")
    # Imported here, not at the top: the drill's modules (the lab supervisor, faults, the store) take a good
    # part of a second, and every `movr` command builds this experiment's options.
    from movr.bench.failover.drill import DrillConfig, run_drill

    # A lab that does not come up is a LabError, which the runner turns into exit 2.
    return run_drill(
        DrillConfig(**options, run_dir=run_dir / "failover"), say=lambda message: console.print(f"[dim]·[/] {message}")
    )


EXPERIMENT = Experiment(
    name="failover",
    summary="Kill a region (or a server) under load; measure unavailability; prove no acknowledged write is lost.",
    run=run,
    options=(
        click.option(
            "--preset", "preset_source", default="aws-eu-us", show_default=True, help="Preset name or TOML file."
        ),
        click.option("--survival", type=click.Choice(("zone", "region")), default="region", show_default=True),
        click.option(
            "--kill", default=None, help="A region or a server to kill (default: the preset's primary region)."
        ),
        click.option(
            "--no-super-regions",
            "super_regions",
            flag_value=False,
            default=True,
            help="Switch the preset's super regions off.",
        ),
        click.option(
            "--duration", default=60.0, show_default=True, type=click.FloatRange(2, 3600), help="Seconds of load."
        ),
        click.option(
            "--kill-at", default=None, type=click.FloatRange(0.5, 3600), help="When to kill (default: a third in)."
        ),
        click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.001, 100)),
        click.option("--cities-per-region", default=2, show_default=True, type=click.IntRange(1, 20)),
        click.option("--think-ms", default=50.0, show_default=True, type=click.FloatRange(0, 10_000)),
        click.option("--quick", is_flag=True, help="A short drill: 12 s of load, kill at 4 s, one city per region."),
        click.option("--keep", is_flag=True, help="Leave the lab running afterwards (stop it with movr lab down)."),
    ),
    checks=output.checks,
    must_hold=True,  # a broken promise is a failed drill (exit 1), not a figure
    tables=output.print_tables,
    figures=output.figures,
    report=output.report,
    headline=output.headline,
    run_dir_help="Where the lab (failover/), its logs and the result go.",
)
