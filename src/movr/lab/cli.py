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

from movr.cli_support import CliError, default_run_dir, preset_or_fail
from movr.lab.layout import TOPOLOGIES
from movr.lab.state import LabState, LabStateError
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
    from movr.lab.supervisor import LabError, SurvivalOptions, lab_down, lab_up

    chosen = preset_or_fail(preset)
    if survival is None and (no_super_regions or placement_restricted or spec_file):
        raise CliError("--no-super-regions, --placement-restricted and --spec shape a survival goal: add --survival")
    options = (
        SurvivalOptions(survival, not no_super_regions, placement_restricted, spec_file)  # type: ignore[arg-type]
        if survival
        else None
    )
    try:
        state = lab_up(
            run_dir, chosen, preset, topology, scale, say=lambda m: console.print(f"[dim]·[/] {m}"), survival=options
        )
    except LabError as err:
        raise CliError(str(err)) from None
    goal = f", survival {survival}" if survival else ""
    console.print(
        f"[bold green]MovR lab up[/]: {topology} on {chosen.name} (delays x{scale:g}{goal}) — "
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
    servers = Table(title="database servers")
    for column in ("server", "region", "port", "running", "in-doubt 2PC parts"):
        servers.add_column(column)
    for server in status["servers"]:
        in_doubt = server["in_doubt"]
        servers.add_row(
            server["name"],
            server["region"],
            str(server["port"]),
            "yes" if server["running"] else "NO",
            "unreachable" if in_doubt is None else str(in_doubt),
        )
    console.print(servers)
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
    if "survival" in status:
        print_survival(status["survival"])


def print_survival(survival: dict) -> None:
    import datetime as dt

    groups = Table(title=f"survival goal {survival['goal']}: each region's data, its primary now and its standbys")
    for column in ("data of", "goal", "primary now", "standby", "region", "running", "state", "sync", "lag bytes"):
        groups.add_column(column, justify="right" if column == "lag bytes" else "left")
    for group in survival["groups"]:
        primary = f"{group['primary']} ({group['primary_region']})" + ("" if group["primary_reachable"] else " LOST")
        first = True
        for member in group["members"]:
            if member["role"] == "primary":
                continue
            groups.add_row(
                group["group"] if first else "",
                group["goal"] if first else "",
                primary if first else "",
                member["name"],
                member["region"],
                "yes" if member["running"] else "NO",
                member["state"] or "-",
                member["sync_state"] or "-",
                "" if member["replay_lag_bytes"] is None else str(member["replay_lag_bytes"]),
            )
            first = False
    console.print(groups)
    for group in survival["groups"]:
        console.print(f"  {group['group']}: commits wait for {group['synchronous_standby_names']}")
    if survival["partitions"] or survival["lost_regions"]:
        parts = [" | ".join(p) for p in survival["partitions"]]
        console.print(f"faults: lost regions {survival['lost_regions'] or '-'}; partitions {parts or '-'}")
    if survival["events"]:
        events = Table(title="recent faults and controller decisions")
        events.add_column("time")
        events.add_column("event")
        events.add_column("what")
        for event in survival["events"]:
            when = dt.datetime.fromtimestamp(event["time"]).strftime("%H:%M:%S.%f")[:-3]
            events.add_row(when, event["kind"], event["message"])
        console.print(events)


@lab_group.group("fail")
def fail_group() -> None:
    """Inject a fault: kill a server or a whole region."""


@fail_group.command("server")
@click.argument("name")
@run_dir_option
def fail_server_command(name: str, run_dir: Path) -> None:
    """SIGKILL one PostgreSQL server (see `movr lab status` for names)."""
    from movr.lab.faults import FaultError, fail_server

    try:
        fail_server(run_dir, name, say=console.print)
    except (FaultError, LabStateError) as err:
        raise CliError(str(err)) from None


@fail_group.command("region")
@click.argument("region")
@run_dir_option
def fail_region_command(region: str, run_dir: Path) -> None:
    """Kill a region: its servers, its app server, and its place in the balancer's rotation."""
    from movr.lab.faults import FaultError, fail_region

    try:
        fail_region(run_dir, region, say=console.print)
    except (FaultError, LabStateError) as err:
        raise CliError(str(err)) from None


@lab_group.command("partition")
@click.argument("region_a")
@click.argument("region_b")
@run_dir_option
def partition_command(region_a: str, region_b: str, run_dir: Path) -> None:
    """Cut every link between two regions (connections refused and dropped) until healed."""
    from movr.lab.faults import FaultError, partition

    try:
        partition(run_dir, region_a, region_b, say=console.print)
    except (FaultError, LabStateError) as err:
        raise CliError(str(err)) from None


@lab_group.command("heal")
@click.argument("target", nargs=-1)
@run_dir_option
def heal_command(target: tuple[str, ...], run_dir: Path) -> None:
    """Undo faults: all (default), a region, a server, or a partition (two regions).

    Lost servers come back as standbys of their group's current primary (pg_rewind, else a fresh clone).
    """
    from movr.lab.faults import FaultError, heal

    try:
        done = heal(run_dir, list(target), say=console.print)
    except (FaultError, LabStateError) as err:
        raise CliError(str(err)) from None
    if not done:
        console.print("nothing to heal")


@lab_group.command("audit-domicile")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@run_dir_option
def audit_domicile_command(as_json: bool, run_dir: Path) -> None:
    """Scan every server for rows stored outside the regions their city allows; exit status 1 if any."""
    from movr.lab.domicile import audit

    try:
        state = LabState.read(run_dir)
    except LabStateError as err:
        raise CliError(str(err)) from None
    report = audit(state)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        table = Table(title="rows per server (every table with a city)")
        table.add_column("server")
        table.add_column("region")
        for name in ("users", "vehicles", "rides", "username_directory"):
            table.add_column(name, justify="right")
        for server, counts in report.scanned.items():
            table.add_row(server, report.regions[server], *(str(counts[t]) for t in counts))
        console.print(table)
        for home, allowed in report.allowed.items():
            console.print(f"  rows of {home} cities may be stored in: {', '.join(allowed)}")
        for server, why in report.not_audited.items():
            console.print(f"[red]not audited[/]: {server} ({report.regions[server]}): {why}")
        for v in report.violations:
            console.print(
                f"[bold red]VIOLATION[/]: {v.rows} {v.table} row(s) of {v.city} (home {v.home_region}, allowed "
                f"{', '.join(v.allowed) or 'nowhere'}) stored on {v.server} in {v.server_region}"
            )
        console.print(
            "[bold green]domicile audit passed[/]: every row is inside the regions its city allows"
            if report.ok
            else "[bold red]domicile audit failed[/]"
        )
    if not report.ok:
        raise click.exceptions.Exit(1)


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
