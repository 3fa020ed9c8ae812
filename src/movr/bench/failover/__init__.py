"""`movr bench failover`: lose a region (or a server) under load, and prove that nothing acknowledged is lost.

    movr bench failover [--preset aws-eu-us] [--survival region|zone] [--no-super-regions] [--kill REGION|SERVER]
                        [--duration 60] [--kill-at 20] [--scale 1.0] [--cities-per-region 2] [--quick]
                        [--keep] [--json PATH] [--run-dir ./run/bench]

The drill stands a lab up with the survival goal, loads sample data, and starts one client per chosen city
(`--cities-per-region` of every region), each a rider who signs up, logs in, adds a vehicle and then, through
the balancer like a browser, rides it again and again: start ride, view vehicles, end ride, view vehicles
(and, after a write whose answer was lost, view rides to find out what happened). At
`--kill-at` seconds it kills the region (its servers, app server and balancer target: `movr lab fail region`)
or the server named by `--kill`; the failover controller does the rest. At `--duration` the load stops, the
lab is healed (`movr lab heal`), and the drill checks:

- a client-side ledger of every *acknowledged* write (users, vehicles, ride starts, ride ends) against the
  databases: every one present on its region's current primary, exactly once; every acknowledged end has its
  end time. A write whose answer was lost (an error, a timeout) is not in the ledger: the client finds out
  what happened by reading, as a real client would, and never counts it as acknowledged;
- invariants: no vehicle in two open rides, no ride with an end location but no end time, and a vehicle is
  `in_use` exactly when it has an open ride;
- replicas: once healed, every member of every group holds the same rows as its primary.

Per city it reports the unavailability window (last successful write before the loss, first successful write
started after it), when writes resumed (first success minus the moment of the kill), error rates and latency
before and after, each request beside its physical floor (law 3): client<->serving-region RTT + one round trip
per statement to the data's primary if that is in another region + for writes the commit's wait for the
nearest synchronous standby still alive. After the loss the floor is the new one: the data may be served from
another region and commits may wait for a farther standby. <run-dir>/failover.json (every request) and the
timeline failover.png beside it record everything; the lab runs in <run-dir>/failover/. A drill that breaks
a promise of its survival goal exits with status 1.

The modules: `riders` (the load), `ledger`, `drill` (the schedule of the fault), `checks` (what the
databases prove after the heal), `analysis` (phases, floors, per-city figures, the verdict), `output`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from movr.bench.experiment import Experiment, ExperimentError
from movr.bench.failover import output
from movr.bench.output import console
from movr.geo import PresetError, load_preset

QUICK = {"duration": 12.0, "kill_at": 4.0, "cities_per_region": 1}


def run(run_dir: Path, *, quick: bool, **options: Any) -> dict[str, Any]:
    """The options are DrillConfig's fields, as click parsed them; --quick overrides three of them."""
    try:
        load_preset(options["preset_source"])
    except PresetError as err:
        raise ExperimentError(str(err)) from None
    if quick:
        options |= {**QUICK, "kill_at": options["kill_at"] or QUICK["kill_at"]}
    if options["kill_at"] is None:
        options["kill_at"] = options["duration"] / 3
    if options["kill_at"] >= options["duration"]:
        raise ExperimentError("--kill-at must come before the end of --duration")
    # Imported here, not at the top: the drill's modules (the lab supervisor, faults, the store) take a good
    # part of a second, and every `movr` command builds this experiment's options.
    from movr.bench.failover.drill import DrillConfig, run_drill
    from movr.lab.supervisor import LabError

    try:
        return run_drill(
            DrillConfig(**options, run_dir=run_dir / "failover"),
            say=lambda message: console.print(f"[dim]·[/] {message}"),
        )
    except LabError as err:
        raise ExperimentError(str(err)) from None


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
