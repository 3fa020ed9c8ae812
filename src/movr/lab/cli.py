"""`movr lab up | status | placement | down`."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import click
import psycopg
from rich.console import Console
from rich.table import Table

from movr.cli_support import CliError, default_run_dir
from movr.geo import PresetError, load_preset
from movr.lab.layout import TOPOLOGIES
from movr.lab.state import LabState, LabStateError

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
@run_dir_option
def up_command(topology: str, preset: str, scale: float, no_serve: bool, run_dir: Path) -> None:
    """Stand a lab up. Without --no-serve it serves until Ctrl-C, then stops everything."""
    from movr.lab.supervisor import LabError, lab_down, lab_up

    try:
        chosen = load_preset(preset)
    except PresetError as err:
        raise CliError(str(err)) from None
    try:
        state = lab_up(run_dir, chosen, preset, topology, scale, say=lambda m: console.print(f"[dim]·[/] {m}"))
    except LabError as err:
        raise CliError(str(err)) from None
    console.print(
        f"[bold green]MovR lab up[/]: {topology} on {chosen.name} (delays x{scale:g}) — "
        f"open [bold]{state.balancer_url}[/]"
    )
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
        pass


@lab_group.command("down")
@run_dir_option
def down_command(run_dir: Path) -> None:
    """Stop every process of the lab; nothing is left running."""
    from movr.lab.supervisor import lab_down

    stopped = lab_down(run_dir)
    console.print(f"stopped {len(stopped)} process(es)" if stopped else "no lab was running")


@lab_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@run_dir_option
def status_command(as_json: bool, run_dir: Path) -> None:
    """Regions, processes, ports, health and per-link counters."""
    from movr.lab.status import collect_status

    try:
        state = LabState.read(run_dir)
    except LabStateError as err:
        raise CliError(str(err)) from None
    status = collect_status(state)
    if as_json:
        click.echo(json.dumps(status, indent=2, default=str))
        return
    console.print(
        f"[bold]{status['topology']}[/] lab, preset {status['preset']}, delays x{status['scale']:g}, "
        f"balancer {status['balancer_url']}"
    )
    processes = Table(title="processes")
    for column in ("name", "kind", "pid", "port", "alive"):
        processes.add_column(column)
    for p in status["processes"]:
        processes.add_row(p["name"], p["kind"], str(p["pid"]), str(p["port"] or ""), "yes" if p["alive"] else "NO")
    console.print(processes)
    links = Table(title="links (one-way delay each direction)")
    for column in ("link", "kind", "one-way ms", "connections", "round trips", "bytes up", "bytes down"):
        links.add_column(column, justify="right" if column not in ("link", "kind") else "left")
    for link in status["links"]:
        c = link.get("counters", {})
        links.add_row(
            link["name"],
            link["kind"],
            f"{link['one_way_ms']:.2f}",
            str(c.get("connections_total", "")),
            str(c.get("round_trips", "")),
            str(c.get("bytes_c2s", "")),
            str(c.get("bytes_s2c", "")),
        )
    console.print(links)


@lab_group.command("placement")
@run_dir_option
def placement_command(run_dir: Path) -> None:
    """Rows per table per region server (like SHOW RANGES)."""
    try:
        state = LabState.read(run_dir)
    except LabStateError as err:
        raise CliError(str(err)) from None
    table = Table(title=f"rows per table on each server ({state.topology})")
    table.add_column("server")
    tables = ("users", "vehicles", "rides", "promo_codes", "username_directory")
    for name in tables:
        table.add_column(name, justify="right")
    for region in state.plan["servers"]:
        with psycopg.connect(state.server_dsn(region)) as conn:
            counts = [str(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]) for name in tables]
        table.add_row(f"{state.plan['servers'][region]['name']} ({region})", *counts)
    console.print(table)
