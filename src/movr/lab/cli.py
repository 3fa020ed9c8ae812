"""`movr lab up | status | placement | down | fail | partition | heal | audit-domicile`.

The commands are thin: each calls the lab module that does the work (supervisor, status, faults, domicile)
and turns its refusals into one-line errors (exit status 2).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from movr.cli_support import CliError, cli_errors, default_run_dir
from movr.lab.console.page import console_url
from movr.lab.console.placement import TABLES as PLACEMENT_TABLES
from movr.lab.console.placement import rows_per_server
from movr.lab.domicile import audit
from movr.lab.faults import FaultError, fail_region, fail_server, heal, partition
from movr.lab.layout import TOPOLOGIES
from movr.lab.state import LabState, LabStateError
from movr.lab.status import collect_status
from movr.lab.supervisor import LabError, SurvivalOptions, lab_down, lab_up
from movr.lab.views import print_audit, print_status
from movr.placement.spec import SURVIVALS

console = Console()

run_dir_option = click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=default_run_dir,
    show_default="./run",
    help="Where the lab keeps its servers, logs and state file.",
)


@click.group("lab")
def lab_group() -> None:
    """A multi-region MovR on this machine: servers per region behind delayed WAN links."""


@lab_group.command("up")
@click.option("--topology", type=click.Choice(TOPOLOGIES), default="multi", show_default=True)
@click.option("--preset", default="gcp-3", show_default=True, help="Preset name or TOML file.")
@click.option(
    "--scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.001, 100),
    help="Multiply every delay (0.1 for quick runs); reports state it.",
)
@click.option("--no-serve", is_flag=True, help="Start the lab and return, leaving it running (stop: movr lab down).")
@click.option(
    "--survival",
    type=click.Choice(SURVIVALS),
    default=None,
    help="Survival goal (multi only): standbys per region, synchronous commits, automatic failover.",
)
@click.option("--no-super-regions", is_flag=True, help="With --survival: switch the preset's super regions off.")
@click.option(
    "--placement-restricted", is_flag=True, help="With --survival zone: keep every replica in its home region."
)
@click.option("--spec", "spec_file", type=click.Path(path_type=Path), help="With --survival: a placement spec file.")
@run_dir_option
def up_command(
    topology: str,
    preset: str,
    scale: float,
    no_serve: bool,
    survival: str | None,
    no_super_regions: bool,
    placement_restricted: bool,
    spec_file: Path | None,
    run_dir: Path,
) -> None:
    """Stand a lab up. Without --no-serve it serves until Ctrl-C, then stops everything."""
    if survival is None and (no_super_regions or placement_restricted or spec_file):
        raise CliError("--no-super-regions, --placement-restricted and --spec shape a survival goal: add --survival")
    options = (
        SurvivalOptions(survival, not no_super_regions, placement_restricted, spec_file)  # type: ignore[arg-type]
        if survival
        else None
    )
    with cli_errors(LabError):
        state = lab_up(
            run_dir, preset, topology, scale, say=lambda m: console.print(f"[dim]·[/] {m}"), survival=options
        )
    goal = f", survival {survival}" if survival else ""
    console.print(
        f"[bold green]MovR lab up[/]: {topology} on {state.preset.name} (delays x{scale:g}{goal}) — "
        f"open [bold]{state.balancer_url}[/]"
    )
    console.print(f"lab console: [bold]{console_url(state)}[/] (docs/lab.md, Console)", soft_wrap=True)
    if no_serve:
        console.print("stop it with: movr lab down")
        return
    wait_for_interrupt()
    console.print("stopping the lab")
    lab_down(run_dir)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print("serving; press Ctrl-C to stop")
    while not stop.wait(0.5):
        reap_children()


def reap_children() -> None:
    """Collect the exit status of this process's children that have ended.

    While we serve, the lab's servers are our children: a server killed by a fault (from the console, or
    `movr lab fail` in another terminal) stays a zombie until its parent reaps it, and a zombie postmaster
    keeps its pid and lock file, so the heal could not start the server again.
    """
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


@lab_group.command("down")
@run_dir_option
def down_command(run_dir: Path) -> None:
    """Stop every process of the lab; nothing is left running."""
    stopped = lab_down(run_dir)
    console.print(f"stopped {len(stopped)} process(es)" if stopped else "no lab was running")


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def show(as_json: bool, data: dict, draw: Callable[[], None]) -> None:
    """Print `data` as JSON (--json), or `draw` its tables."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        draw()


def running_lab(run_dir: Path) -> LabState:
    """The state of the lab running in `run_dir`, or a one-line error (exit status 2) when there is none."""
    with cli_errors(LabStateError):
        return LabState.read(run_dir)


@lab_group.command("status")
@json_option
@run_dir_option
def status_command(as_json: bool, run_dir: Path) -> None:
    """Regions, processes, ports, health and the links' counters, region by region."""
    status = collect_status(running_lab(run_dir))
    show(as_json, status, lambda: print_status(console, status))


FAULTS = {"server": fail_server, "region": fail_region}


@lab_group.command("fail")
@click.argument("kind", type=click.Choice(tuple(FAULTS)))
@click.argument("name")
@run_dir_option
@cli_errors(FaultError, LabStateError)
def fail_command(kind: str, name: str, run_dir: Path) -> None:
    """Inject a fault. `server NAME`: SIGKILL one PostgreSQL server (see `movr lab status` for names).
    `region NAME`: kill a region - its servers, its app server, and its place in the balancer's rotation."""
    FAULTS[kind](run_dir, name, say=console.print)


@lab_group.command("partition")
@click.argument("region_a")
@click.argument("region_b")
@run_dir_option
@cli_errors(FaultError, LabStateError)
def partition_command(region_a: str, region_b: str, run_dir: Path) -> None:
    """Cut every link between two regions (connections refused and dropped) until healed."""
    partition(run_dir, region_a, region_b, say=console.print)


@lab_group.command("heal")
@click.argument("target", nargs=-1)
@run_dir_option
def heal_command(target: tuple[str, ...], run_dir: Path) -> None:
    """Undo faults: all (default), a region, a server, or a partition (two regions).

    Lost servers come back as standbys of their group's current primary (pg_rewind, else a fresh clone).
    """
    with cli_errors(FaultError, LabStateError):
        done = heal(run_dir, list(target), say=console.print)
    if not done:
        console.print("nothing to heal")


@lab_group.command("audit-domicile")
@json_option
@run_dir_option
def audit_domicile_command(as_json: bool, run_dir: Path) -> None:
    """Scan every server for rows stored outside the regions their city allows; exit status 1 if any."""
    report = audit(running_lab(run_dir))
    show(as_json, report.as_dict(), lambda: print_audit(console, report))
    if not report.ok:
        raise click.exceptions.Exit(1)


@lab_group.command("placement")
@run_dir_option
def placement_command(run_dir: Path) -> None:
    """Rows per table per region server (like SHOW RANGES)."""
    state = running_lab(run_dir)
    table = Table(title=f"rows per table on each server ({state.topology})")
    table.add_column("server")
    for name in PLACEMENT_TABLES:
        table.add_column(name, justify="right")
    for row in rows_per_server(state):  # the console's placement view reads the same
        counts = [str(row["rows"][name]) if row["rows"] else "-" for name in PLACEMENT_TABLES]
        table.add_row(f"{row['server']} ({row['group']})", *counts)
    console.print(table)
