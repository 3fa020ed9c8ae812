"""Stand a lab up and take it down: real processes with ports, logs and a state file (law 6).

`lab_up` starts, in order: the PostgreSQL servers (schema on each), the links process, GLOBAL-table
replication (multi), the standbys of a survival goal, one app server per region, the balancer, and (survival
goals only) the failover controller; if any step fails it stops what it started. `servers_up` stands up only
the servers and the links from every region to each of them (the data-homing benchmarks' lab). `lab_down`
stops everything the state file names, then any postgres left under the run dir (standbys included).

The run directory is 0700, the state file (session secret, control token) and the PostgreSQL passfile 0600;
the control endpoints want the token (movr.lab.control), the servers the password (scram-sha-256 over TCP).
Which processes the lab may signal, and how it proves them, is movr.lab.processes.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg

from movr.geo import Preset, PresetError, load_preset
from movr.lab import control
from movr.lab.apps import restart_app_server, start_apps, start_balancer
from movr.lab.layout import AppSettings, LabPlan, Topology, link_name, plan_lab, plan_servers, subscription_name
from movr.lab.links import LinkSpec, LinkThread, dump_specs, fetch_counters
from movr.lab.pgserver import LAB_DEFAULTS, PostgresServer, write_passfile
from movr.lab.postmasters import stop_stray_servers
from movr.lab.processes import (
    READY_TIMEOUT,
    RUN_DIR_MARKER,
    LabError,
    Say,
    is_alive,
    log_tail,
    on_stderr,
    processes_left,
    spawn,
    start_guarded,
    started_for,
    stop_family,
    stop_process_tree,
)
from movr.lab.standbys import PRIMARY_BASE_SETTINGS, StandbyError, bring_up
from movr.lab.state import LabState, LabStateError, SurvivalRecord, lab_passfile, lab_server
from movr.lab.survival import SurvivalOptions, plan_survival
from movr.placement.spec import SpecError
from movr.store.regional import DIRECTORY_DDL
from movr.store.schema import create_schema

DATABASE = "movr"
LinkMode = Literal["process", "thread"]
LINK_MODES: tuple[LinkMode, ...] = ("process", "thread")


def _load(preset_source: str) -> Preset:
    try:
        return load_preset(preset_source)
    except PresetError as err:
        raise LabError(str(err)) from None


def lab_up(
    run_dir: Path,
    preset: str,
    topology: Topology,
    scale: float,
    *,
    say: Say = lambda _: None,
    app_workers: int = 2,
    survival: SurvivalOptions | None = None,
    app_threads: int = 4,
) -> LabState:
    """Stand a lab up from `preset` (a preset name or TOML file, loaded once here: `state.preset`).

    `survival` (multi only) adds standbys per region, a synchronous quorum for commits and the failover
    controller (movr.lab.survival); without it the lab is exactly the plain topology. Each app server runs
    `app_workers` workers of `app_threads` threads (gthread when > 1: threads keep the balancer's connections
    alive, and requests waiting on a lost region do not hold up the rest).
    """
    plan = plan_lab(_load(preset), topology, scale, preset, AppSettings(app_workers, app_threads))
    if survival is not None:
        if topology != "multi":
            raise LabError(f"a survival goal needs --topology multi (a primary per region), not {topology}")
        try:
            plan_survival(plan, survival.spec(preset))
        except SpecError as err:
            raise LabError(str(err)) from None
    state = _new_lab(run_dir, plan, DATABASE)
    try:
        _start_servers(state, say, schema=True)
        _start_links(state, say)
        if topology == "multi" and len(plan.servers) > 1:
            _replicate_global_tables(state, say)
        if survival is not None:
            _start_standbys(state, say)
        start_apps(state, say)
        start_balancer(state, say)
        if survival is not None:
            _start_controller(state, say)
    except BaseException as error:
        _failed(state.run_dir, error, say)
        raise
    # The controller writes the state file from now on: hand back what is on disk.
    return LabState.read(state.run_dir) if survival is not None else state


def _failed(run_dir: Path, error: BaseException, say: Say) -> None:
    """Stop what a failed bring-up started; an unexpected error becomes one LabError line (Ctrl-C stays)."""
    if isinstance(error, Exception):
        say("bring-up failed; stopping what was started")
    lab_down(run_dir)
    if isinstance(error, Exception) and not isinstance(error, LabError):
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LabError(f"bring-up failed: {first_line} (logs in {run_dir / 'logs'})") from error


def _new_lab(run_dir: Path, plan: LabPlan, database: str) -> LabState:
    """Make the run directory ready for a new lab and write its state file, before anything starts."""
    run_dir = run_dir.resolve()
    try:
        existing = LabState.read(run_dir)
    except LabStateError:
        existing = None
    if existing is not None and not existing.plan.serves_app:
        lab_down(run_dir)  # a benchmark's servers-only lab, left by a run that was killed: its run dir
    elif existing is not None:
        raise LabError(f"a lab is already running in {run_dir}; stop it with 'movr lab down'")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)  # logs, configurations, state: the lab's user's only (root adds o+x: pgserver)
    # A lab starts from empty servers: data left by an earlier lab in this run dir belongs to that lab.
    stop_stray_servers(run_dir)
    shutil.rmtree(run_dir / "servers", ignore_errors=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    write_passfile(lab_passfile(run_dir))  # a new password per lab, for every server of it
    state = LabState(
        run_dir,
        plan,
        secret_key=secrets.token_hex(32),
        control_token=control.new_token(),
        database=database,
        started_at=time.time(),
    )
    state.write()  # written first, so that `lab down` can clean up even a half-started lab
    return state


def _start_servers(state: LabState, say: Say, *, schema: bool) -> None:
    # Commits are local by default; only GLOBAL writes ask to wait for the other regions. A survival goal
    # adds the settings standbys, rewinds and failovers need (its quorum is set once they stream).
    layout = state.plan.survival
    settings = {
        **LAB_DEFAULTS,
        **PRIMARY_BASE_SETTINGS,
        **(layout.server_settings if layout is not None else {}),
    }
    for region, server_plan in state.plan.servers.items():
        say(f"PostgreSQL 18 for {region} on 127.0.0.1:{server_plan.port}")
        server = lab_server(state.run_dir, server_plan)
        server.init(settings)
        server.start()
        server.create_database(state.database)
        if schema:
            dsn = server.dsn(state.database)
            create_schema(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(DIRECTORY_DDL)


def _start_links(state: LabState, say: Say) -> None:
    plan = state.plan
    spec_path = state.run_dir / "links.json"
    dump_specs(plan.links, spec_path)
    say(f"{len(plan.links)} links (WAN delay x{plan.scale:g}), control on 127.0.0.1:{plan.links_control_port}")
    argv = [sys.executable, "-m", "movr.lab.links", "--spec", str(spec_path)]
    start_guarded(
        state, "links", [*argv, "--control-port", str(plan.links_control_port)], plan.links_control_port, "/links"
    )


def _replicate_global_tables(state: LabState, say: Say) -> None:
    """GLOBAL tables: published by the primary region's server, subscribed by every other region's."""
    plan = state.plan
    primary = plan.preset.primary_region
    primary_server = plan.servers[primary]
    say(f"GLOBAL table promo_codes: replicated from {primary} to every region, writes wait for all")
    with psycopg.connect(state.server_dsn(primary), autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION movr_global FOR TABLE promo_codes")
    names = []
    for region in plan.servers:
        if region == primary:
            continue
        name = subscription_name(region)
        names.append(name)
        link = plan.link("repl", region, primary_server.name)
        # Read by the subscriber server itself, as its OS user: the passfile is theirs (pgserver.write_passfile).
        source = state.dsn(link.listen_port)
        with psycopg.connect(state.server_dsn(region), autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION movr_global").format(
                    psycopg.sql.Identifier(name), psycopg.sql.Literal(source)
                )
            )
    with psycopg.connect(state.server_dsn(primary), autocommit=True) as conn:
        standby_names = f"FIRST {len(names)} ({', '.join(names)})"
        conn.execute(
            psycopg.sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
                psycopg.sql.Literal(standby_names)
            )
        )
        conn.execute("SELECT pg_reload_conf()")
        # Wait until every subscriber streams, so the first GLOBAL write does not hang on a late one.
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            streaming = conn.execute(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = ANY(%s) AND state = 'streaming'",
                (names,),
            ).fetchone()[0]
            if streaming == len(names):
                return
            time.sleep(0.1)  # polling for readiness, not distance
    raise LabError("GLOBAL-table subscribers did not start streaming; see the servers' postgres.log")


def _start_standbys(state: LabState, say: Say) -> None:
    layout = state.plan.survival
    assert layout is not None
    if len(state.plan.servers) > 1:
        # One synchronous_standby_names per server: under a survival goal it names the quorum of standbys,
        # so GLOBAL writes wait for that quorum, and the other regions' copies follow asynchronously.
        say("survival goal: GLOBAL writes wait for the quorum; other regions' copies follow asynchronously")
    try:
        # A standby whose port was taken meanwhile gets another one, in `layout` (so in the plan) itself.
        bring_up(state.run_dir, layout, {link.name: link.listen_port for link in state.plan.links}, say)
    except StandbyError as err:
        raise LabError(str(err)) from None
    state.survival = SurvivalRecord(primaries={group: info.primary for group, info in layout.groups.items()})
    state.write()


def _start_controller(state: LabState, say: Say) -> None:
    """The failure detector and failover controller (movr.lab.controller); ready once it recorded itself."""
    say("failover controller: watching every primary")
    argv = [sys.executable, "-m", "movr.lab.controller", "--run-dir", str(state.run_dir)]
    process = spawn(state, "controller", "controller", argv, None)
    log = state.run_dir / "logs" / "controller.log"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"the controller exited with status {process.returncode}; its log:\n{log_tail(log)}")
        with contextlib.suppress(LabStateError):
            survival = LabState.read(state.run_dir).survival
            if survival is not None and (survival.controller or {}).get("pid") == process.pid:
                return
        time.sleep(0.1)  # polling for readiness, not distance
    raise LabError(f"the controller did not start within {READY_TIMEOUT:.0f} s; its log:\n{log_tail(log)}")


def lab_down(run_dir: Path, timeout: float = 10.0, say: Say = on_stderr) -> list[str]:
    """Stop everything; idempotent, and thorough even when the state file is gone or stale.

    Recorded processes are stopped only while they are still what the lab started; each one skipped is
    said (one line to `say`, stderr by default). Then whatever still carries this lab's marker (started for
    it, by a state file that no longer names it) and every PostgreSQL server under the run directory.
    """
    run_dir = run_dir.resolve()
    stopped: list[str] = []
    try:
        state = LabState.read(run_dir)
    except LabStateError:
        state = None
    if state is not None:
        for record in reversed(state.processes):
            if stop_process_tree(record, timeout, say=say):
                stopped.append(record.name)
        for server in state.plan.servers.values():
            pg = lab_server(run_dir, server)
            if pg.is_running():
                pg.stop(timeout=timeout)
                stopped.append(server.name)
    for process in started_for(run_dir):
        if stop_family(process, timeout, signal.SIGTERM):
            stopped.append(f"pid {process.pid} (started for this lab, not in its state file)")
    for data_dir in stop_stray_servers(run_dir, timeout):
        stopped.append(str(data_dir))
    LabState.remove(run_dir)
    return stopped


def link_counters(state: LabState) -> dict[str, dict[str, int]]:
    """Every link's counters (round trips, connections, bytes), by link name, from the links process."""
    return fetch_counters(state.links_control_port, token=state.control_token)


# --- servers and links only: the data-homing benchmarks' lab ---------------------------------------------


@dataclass
class ServerLab:
    """A running servers-only lab (`servers_up`): a primary per region and a `client:` link from every region
    to each, with their counters. Clients measure through `client_dsn`; loading and checks use `server_dsn`."""

    state: LabState
    link_thread: LinkThread | None = None  # the links, when they run in this process

    @property
    def preset(self) -> Preset:
        return self.state.preset

    @property
    def preset_source(self) -> str:
        return self.state.preset_source

    @property
    def scale(self) -> float:
        return self.state.scale

    @property
    def run_dir(self) -> Path:
        return self.state.run_dir

    @property
    def database(self) -> str:
        return self.state.database

    @property
    def passfile(self) -> Path:
        return self.state.passfile

    @property
    def regions(self) -> list[str]:
        return list(self.state.plan.servers)

    @property
    def links(self) -> list[LinkSpec]:
        return self.state.plan.links

    @property
    def servers(self) -> dict[str, PostgresServer]:
        return {region: lab_server(self.run_dir, server) for region, server in self.state.plan.servers.items()}

    def link(self, client_region: str, server_region: str) -> LinkSpec:
        return self.state.plan.link("client", client_region, self.state.plan.servers[server_region].name)

    def client_dsn(self, client_region: str, server_region: str) -> str:
        """Through the link from `client_region` to the server of `server_region`: what a client measures."""
        return self.state.dsn(self.link(client_region, server_region).listen_port)

    def server_dsn(self, region: str) -> str:
        """Straight to the server, past the links: loading and checking data, never measuring."""
        return self.state.server_dsn(region)

    def counters(self) -> dict[str, dict[str, int]]:
        return self.link_thread.counters() if self.link_thread is not None else link_counters(self.state)

    def round_trips(
        self, before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
    ) -> dict[str, dict[str, int]]:
        """Round trips each client region's links counted between two `counters()` snapshots: WAN and local."""
        result: dict[str, dict[str, int]] = {}
        for spec in self.links:
            delta = after[spec.name]["round_trips"] - before.get(spec.name, {}).get("round_trips", 0)
            entry = result.setdefault(spec.src, {"wan": 0, "local": 0})
            entry["wan" if spec.kind == "wan" else "local"] += delta
        return result


@contextlib.contextmanager
def servers_up(
    run_dir: Path,
    preset: str,
    scale: float,
    *,
    database: str,
    links: LinkMode = "process",
    say: Say = lambda _: None,
) -> Iterator[ServerLab]:
    """A servers-only lab for the body of the `with`: a primary per region of `preset` (the lab's settings,
    database `database`, no schema) and a `client:<region>-><server>` link from every region to every server,
    run as the links process (`links="process"`, as `lab up` runs them) or on a thread of this process.
    Everything is stopped, and the state file removed, however the body ends (`movr lab down` cleans up
    after a run that was killed)."""
    if links not in LINK_MODES:
        raise LabError(f"links must be one of {', '.join(LINK_MODES)}, not {links!r}")
    state = _new_lab(run_dir, plan_servers(_load(preset), scale, preset), database)
    lab = ServerLab(state)
    try:
        try:
            say(f"PostgreSQL for {', '.join(state.plan.servers)}")
            _start_servers(state, say, schema=False)
            if links == "process":
                _start_links(state, say)
            else:
                say(f"{len(state.plan.links)} links (in this process), delays x{scale:g}")
                lab.link_thread = LinkThread(state.plan.links)
        except BaseException as error:
            _failed(state.run_dir, error, say)
            raise
        yield lab
    finally:
        if lab.link_thread is not None:
            lab.link_thread.close()
        lab_down(state.run_dir)


__all__ = [
    "RUN_DIR_MARKER",
    "LabError",
    "ServerLab",
    "SurvivalOptions",
    "is_alive",
    "lab_down",
    "lab_up",
    "link_counters",
    "link_name",
    "processes_left",
    "restart_app_server",
    "servers_up",
]
