"""Stand a lab up and take it down: real processes with ports, logs and a state file (law 6).

`lab_up` starts, in order: the PostgreSQL servers (schema on each), the links process, GLOBAL-table
replication (multi), the standbys of a survival goal, one app server per region, the balancer, and (survival
goals only) the failover controller; if any step fails it stops what it started. `lab_down` stops everything
the state file names, then any postgres left under the run dir (standbys included).

A lab trusts nothing it did not start. A recorded pid is signalled only while it still runs the process the
lab started - same start time, same command line (`stop_process_tree`, the one place that signals them);
after a crash or a reboot the pid may belong to anything, and that is skipped, and said. PostgreSQL servers are
found and proven by their data directory (movr.lab.pgserver). The run directory is 0700, the state file
(session secret, control token) and the PostgreSQL passfile 0600; the control endpoints want the token
(movr.lab.control), the servers the password (scram-sha-256 over TCP).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg

from movr.geo import Preset
from movr.lab import control
from movr.lab.layout import LabPlan, Topology, link_name, plan_lab
from movr.lab.links import dump_specs
from movr.lab.pgserver import LAB_DEFAULTS, stop_stray_servers, write_passfile
from movr.lab.state import LabState, LabStateError, ProcessRecord, lab_passfile, lab_server
from movr.lab.survival import SurvivalOptions, plan_survival
from movr.placement.spec import SpecError
from movr.store.regional import DIRECTORY_DDL
from movr.store.schema import create_schema
from movr.store.twophase import DECISIONS_DDL

DATABASE = "movr"
RUN_DIR_MARKER = "MOVR_LAB_RUN_DIR"
ADDRESS_RATE_LIMITS = ("MOVR_LOGIN_RATE_LIMIT", "MOVR_SIGNUP_RATE_LIMIT")
LAB_ADDRESS_RATE_LIMIT = "100000/minute"
READY_TIMEOUT = 60.0
Say = Callable[[str], None]
# psutil's create_time adds the boot time, which moves when the wall clock is stepped: allow a little of that.
# (A pid reused within a second by a process with the very same command line is as good as the lab's own.)
_START_TIME_SLACK_S = 1.0


def _on_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LabError(RuntimeError):
    """The lab could not be stood up; the message says which part and where its log is."""


def subscription_name(region: str) -> str:
    return "movr_global_" + region.replace("-", "_")


def lab_up(
    run_dir: Path,
    preset: Preset,
    preset_source: str,
    topology: Topology,
    scale: float,
    say: Say = lambda _: None,
    app_workers: int = 2,
    survival: SurvivalOptions | None = None,
    app_threads: int | None = None,
) -> LabState:
    """Stand a lab up. `survival` (multi only) adds standbys per region, a synchronous quorum for commits
    and the failover controller (movr.lab.survival); without it the lab is exactly the plain topology.
    `app_threads` > 1 runs each app worker with threads (default: 4 with a survival goal, so that requests
    waiting on a lost region do not hold up the rest, else 1)."""
    run_dir = run_dir.resolve()
    try:
        existing = LabState.read(run_dir)
    except LabStateError:
        existing = None
    if existing is not None:
        raise LabError(f"a lab is already running in {run_dir}; stop it with 'movr lab down'")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)  # logs, configurations, state: the lab's user's only (root adds o+x: pgserver)
    # A lab starts from empty servers: data left by an earlier lab in this run dir belongs to that lab.
    stop_stray_servers(run_dir)
    shutil.rmtree(run_dir / "servers", ignore_errors=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    write_passfile(lab_passfile(run_dir))  # a new password per lab, for every server of it
    plan = plan_lab(preset, topology, scale, preset_source)
    if survival is not None:
        if topology != "multi":
            raise LabError(f"a survival goal needs --topology multi (a primary per region), not {topology}")
        try:
            plan_survival(plan, survival.spec(preset_source), preset)
        except SpecError as err:
            raise LabError(str(err)) from None
        threads = app_threads if app_threads is not None else 4
        plan.extra["apps"] = {"workers": app_workers, "threads": threads}
    else:
        threads = app_threads if app_threads is not None else 4  # gthread workers keep the balancer's connections alive
    state = LabState(
        run_dir,
        topology,
        preset_source,
        scale,
        plan.as_dict(),
        secret_key=secrets.token_hex(32),
        control_token=control.new_token(),
        database=DATABASE,
        started_at=time.time(),
    )
    state.write()  # written first, so that `lab down` can clean up even a half-started lab
    try:
        _start_servers(run_dir, plan, preset, say)
        _start_links(state, plan, say)
        if topology == "multi" and len(plan.servers) > 1:
            _replicate_global_tables(state, plan, preset, say)
        if survival is not None:
            _start_standbys(state, plan, say)
        _start_apps(state, plan, preset, app_workers, say, threads=threads)
        _start_balancer(state, plan, say)
        if survival is not None:
            _start_controller(state, say)
    except LabError:
        say("bring-up failed; stopping what was started")
        lab_down(run_dir)
        raise
    except Exception as error:
        say("bring-up failed; stopping what was started")
        lab_down(run_dir)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LabError(f"bring-up failed: {first_line} (logs in {run_dir / 'logs'})") from error
    except BaseException:  # Ctrl-C: stop what was started, then let it end the command
        lab_down(run_dir)
        raise
    # The controller writes the state file from now on: hand back what is on disk.
    return LabState.read(run_dir) if survival is not None else state


def _start_servers(run_dir: Path, plan: LabPlan, preset: Preset, say: Say) -> None:
    for region, server_plan in plan.servers.items():
        say(f"PostgreSQL 18 for {region} on 127.0.0.1:{server_plan.port}")
        server = lab_server(run_dir, {"name": server_plan.name, "port": server_plan.port})
        # Commits are local by default; only GLOBAL writes ask to wait for the other regions. A survival
        # goal adds the settings standbys, rewinds and failovers need (its quorum is set once they stream).
        survival_settings = plan.extra.get("survival", {}).get("server_settings", {})
        server.init({**LAB_DEFAULTS, "synchronous_commit": "local", "wal_sender_timeout": "0", **survival_settings})
        server.start()
        server.create_database(DATABASE)
        dsn = server.dsn(DATABASE)
        create_schema(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(DIRECTORY_DDL)
            conn.execute(DECISIONS_DDL)


def _launch(
    run_dir: Path, name: str, kind: str, argv: list[str], port: int | None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, ProcessRecord]:
    """Start a lab process, and the record that will prove it is still this process (start time, argv)."""
    log_path = run_dir / "logs" / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # The marker lets processes_left find this process and its children by the run directory even
            # when neither their command line nor their working directory names it (app servers).
            env={**os.environ, **(env or {}), RUN_DIR_MARKER: str(run_dir.resolve())},
            start_new_session=True,  # Ctrl-C reaches us, and we stop children in order
        )
    try:
        started: float | None = psutil.Process(process.pid).create_time()  # our unreaped child: still its pid
    except psutil.NoSuchProcess:
        started = None
    return process, ProcessRecord(name, kind, process.pid, str(log_path), port, started, list(argv))


def _spawn(
    state: LabState, name: str, kind: str, argv: list[str], port: int | None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    process, record = _launch(state.run_dir, name, kind, argv, port, env)
    state.processes.append(record)
    state.write()
    return process


def _control_env(state: LabState) -> dict[str, str]:
    """The environment that hands a control endpoint its token (a command line is readable by every user)."""
    return {control.TOKEN_ENV: state.control_token}


def _wait_http(
    url: str,
    process: subprocess.Popen,
    name: str,
    log: Path,
    timeout: float = READY_TIMEOUT,
    headers: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"{name} exited with status {process.returncode}; its log:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
                if response.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # polling for readiness, not distance
    raise LabError(f"{name} did not become ready at {url} within {timeout:.0f} s; its log:\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_links(state: LabState, plan: LabPlan, say: Say) -> None:
    spec_path = state.run_dir / "links.json"
    dump_specs(plan.links, spec_path)
    say(f"{len(plan.links)} links (WAN delay x{plan.scale:g}), control on 127.0.0.1:{plan.links_control_port}")
    process = _spawn(
        state,
        "links",
        "links",
        [
            sys.executable,
            "-m",
            "movr.lab.links",
            "--spec",
            str(spec_path),
            "--control-port",
            str(plan.links_control_port),
        ],
        plan.links_control_port,
        _control_env(state),
    )
    _wait_http(
        f"http://127.0.0.1:{plan.links_control_port}/links",
        process,
        "links",
        state.run_dir / "logs" / "links.log",
        headers={control.TOKEN_HEADER: state.control_token},
    )


def _replicate_global_tables(state: LabState, plan: LabPlan, preset: Preset, say: Say) -> None:
    """GLOBAL tables: published by the primary region's server, subscribed by every other region's."""
    primary = preset.primary_region
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
        source = state.dsn(link.listen_port, DATABASE)
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


def _start_standbys(state: LabState, plan: LabPlan, say: Say) -> None:
    from movr.lab.standbys import StandbyError, bring_up

    layout = plan.extra["survival"]
    if len(plan.servers) > 1:
        # One synchronous_standby_names per server: under a survival goal it names the quorum of standbys,
        # so GLOBAL writes wait for that quorum, and the other regions' copies follow asynchronously.
        say("survival goal: GLOBAL writes wait for the quorum; other regions' copies follow asynchronously")
    try:
        bring_up(state.run_dir, layout, {link.name: link.listen_port for link in plan.links}, say)
    except StandbyError as err:
        raise LabError(str(err)) from None
    state.plan["extra"]["survival"] = layout  # a standby whose port was taken meanwhile got another one
    state.survival = {
        "primaries": {group: info["primary"] for group, info in layout["groups"].items()},
        "partitions": [],
        "lost_regions": [],
        "events": [],
        "failovers": [],
    }
    state.write()


def _start_controller(state: LabState, say: Say) -> None:
    """The failure detector and failover controller (movr.lab.controller); ready once it recorded itself."""
    say("failover controller: watching every primary")
    process = _spawn(
        state,
        "controller",
        "controller",
        [sys.executable, "-m", "movr.lab.controller", "--run-dir", str(state.run_dir)],
        None,
    )
    log = state.run_dir / "logs" / "controller.log"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"the controller exited with status {process.returncode}; its log:\n{_tail(log)}")
        with contextlib.suppress(LabStateError):
            if LabState.read(state.run_dir).survival.get("controller", {}).get("pid") == process.pid:
                return
        time.sleep(0.1)  # polling for readiness, not distance
    raise LabError(f"the controller did not start within {READY_TIMEOUT:.0f} s; its log:\n{_tail(log)}")


def _app_env(state: LabState, plan: LabPlan, preset: Preset, region: str) -> dict[str, str]:
    env = {
        "MOVR_PRESET": state.preset_source,
        "MOVR_REGION": region,
        "MOVR_SECRET_KEY": state.secret_key,
        "MOVR_TOPOLOGY": plan.topology,
        "MOVR_PROXY_HOPS": "1",  # the balancer is the one trusted proxy (client IPs for log-in limits)
        # Every lab client comes from loopback, so a per-address budget would be one budget for the whole
        # world: the lab's is sized for load tests (set either variable before `lab up` to choose another).
        # The per-username failed log-in limit lives in the database and holds as in production.
        **{name: os.environ.get(name, LAB_ADDRESS_RATE_LIMIT) for name in ADDRESS_RATE_LIMITS},
    }
    if plan.topology == "multi":
        urls = {
            server_region: state.dsn(plan.link("app", region, server.name).listen_port, DATABASE)
            for server_region, server in plan.servers.items()
        }
        env["MOVR_REGION_DATABASE_URLS"] = json.dumps(urls)
        layout = plan.extra.get("survival")
        if layout is not None:
            env["MOVR_POOL_TIMEOUT"] = str(layout["pool_timeout_s"])
            if layout.get("directory_regions"):
                env["MOVR_DIRECTORY_REGIONS"] = json.dumps(layout["directory_regions"])
    else:
        server = plan.servers[preset.primary_region]
        env["MOVR_DATABASE_URL"] = state.dsn(plan.link("app", region, server.name).listen_port, DATABASE)
        env["MOVR_DATABASE_WAN"] = "1" if region != preset.primary_region else "0"
    return env


def _app_argv(state: LabState, region: str, port: int, workers: int, threads: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "movr.web.serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--region",
        region,
        "--preset",
        state.preset_source,
    ]
    return argv + (["--threads", str(threads)] if threads > 1 else [])


def _start_apps(state: LabState, plan: LabPlan, preset: Preset, workers: int, say: Say, *, threads: int = 1) -> None:
    started = []
    for region in plan.app_regions:
        port = plan.app_ports[region]
        say(f"app server for {region} on 127.0.0.1:{port}")
        process = _spawn(
            state,
            f"app-{region}",
            "app",
            _app_argv(state, region, port, workers, threads),
            port,
            _app_env(state, plan, preset, region),
        )
        started.append((region, port, process))
    for region, port, process in started:
        _wait_http(
            f"http://127.0.0.1:{port}/healthz",
            process,
            f"app server {region}",
            state.run_dir / "logs" / f"app-{region}.log",
        )


def restart_app_server(run_dir: Path, region: str, timeout: float = READY_TIMEOUT) -> int:
    """Start a lost region's app server again (movr lab heal), as lab_up started it; returns its pid.

    The state file is updated under its lock: the failover controller writes it too.
    """
    state = LabState.read(run_dir)
    plan = LabPlan.from_dict(state.plan)
    apps = plan.extra.get("apps", {"workers": 2, "threads": 1})
    port = plan.app_ports[region]
    name = f"app-{region}"
    process, started = _launch(
        state.run_dir,
        name,
        "app",
        _app_argv(state, region, port, apps["workers"], apps["threads"]),
        port,
        _app_env(state, plan, state.preset, region),
    )

    def record(current: LabState) -> None:
        current.processes = [p for p in current.processes if p.name != name]
        current.processes.append(started)

    LabState.update(state.run_dir, record)
    _wait_http(f"http://127.0.0.1:{port}/healthz", process, f"app server {region}", Path(started.log), timeout)
    return process.pid


def _start_balancer(state: LabState, plan: LabPlan, say: Say) -> None:
    config = {
        "preset": state.preset_source,
        "scale": plan.scale,
        "topology": plan.topology,
        "primary_region": state.preset.primary_region,
        "apps": {region: f"http://127.0.0.1:{port}" for region, port in plan.app_ports.items()},
        "default_city": None,
    }
    config_path = state.run_dir / "balancer.json"
    config_path.write_text(json.dumps(config, indent=2))
    say(f"balancer on http://127.0.0.1:{plan.balancer_port}")
    process = _spawn(
        state,
        "balancer",
        "balancer",
        [sys.executable, "-m", "movr.lab.balancer", "--config", str(config_path), "--port", str(plan.balancer_port)],
        plan.balancer_port,
        _control_env(state),
    )
    _wait_http(
        f"http://127.0.0.1:{plan.balancer_port}/_balancer/status",
        process,
        "balancer",
        state.run_dir / "logs" / "balancer.log",
        headers={control.TOKEN_HEADER: state.control_token},
    )


def lab_down(run_dir: Path, timeout: float = 10.0, say: Say = _on_stderr) -> list[str]:
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
        for server in state.plan.get("servers", {}).values():
            pg = lab_server(run_dir, server)
            if pg.is_running():
                pg.stop(timeout=timeout)
                stopped.append(server["name"])
    for process in _started_for(run_dir):
        if _stop_family(process, timeout, signal.SIGTERM):
            stopped.append(f"pid {process.pid} (started for this lab, not in its state file)")
    for data_dir in stop_stray_servers(run_dir, timeout):
        stopped.append(str(data_dir))
    LabState.remove(run_dir)
    return stopped


def _started_for(run_dir: Path) -> list[psutil.Process]:
    """Live processes the lab started for `run_dir`: RUN_DIR_MARKER in their environment (their children
    inherit it). Never this process or its ancestors."""
    marker = str(Path(run_dir).resolve())
    ours = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    found = []
    for process in psutil.process_iter(["environ"]):
        try:
            if (
                process.pid not in ours
                and (process.info["environ"] or {}).get(RUN_DIR_MARKER) == marker
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def processes_left(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory names the run directory, or that the lab
    started for it (RUN_DIR_MARKER in their environment, inherited by their children): after `lab down`
    (or any command that stood a lab up), the proof that it stopped everything it started."""
    marker = str(Path(run_dir).resolve())
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "environ"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
            spawned_for_it = (process.info["environ"] or {}).get(RUN_DIR_MARKER) == marker
            if (marker in text or spawned_for_it) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def prove(record: ProcessRecord) -> tuple[psutil.Process | None, str | None]:
    """Is `record.pid` still the process the lab started? (process, None) if so - signal only that object:
    psutil refuses to signal it once its pid is reused; (None, None) if nothing runs there any more;
    (None, why) if something else does, or if the record holds no proof (a state file from an older lab)."""
    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None, None
        started, cmdline = process.create_time(), _cmdline(process)
    except psutil.NoSuchProcess:  # a zombie too, on some calls
        return None, None
    except psutil.AccessDenied:
        return None, "it belongs to another user"
    if record.started is None or not record.cmdline:
        return None, "the state file does not record its start time and command line"
    if cmdline != record.cmdline:
        return None, f"it runs {shlex.join(cmdline)!r}, not what the lab started"
    if abs(started - record.started) > _START_TIME_SLACK_S:
        return None, f"it runs the same command, but started at {_clock(started)}, not {_clock(record.started)}"
    return process, None


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _cmdline(process: psutil.Process, settle: float = 1.0) -> list[str]:
    """The process's command line. Empty only for a moment while it execs (the kernel sets the new one up
    after the old is gone): read again until it shows, rather than take a lab process for a stranger."""
    deadline = time.monotonic() + settle
    while not (cmdline := process.cmdline()) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the exec, not distance
    return cmdline


def is_alive(record: ProcessRecord) -> bool:
    """Does the recorded process still run (a zombie does not; nor does whatever reused its pid)?"""
    return prove(record)[0] is not None


def stop_process_tree(
    record: ProcessRecord, timeout: float, first: signal.Signals = signal.SIGTERM, say: Say = _on_stderr
) -> bool:
    """The one place that signals a recorded process: prove it (`prove`), then send `first` to it and its
    children (SIGTERM: a clean stop; SIGKILL: a crash, for fault drills), then SIGKILL what is left after
    `timeout`. False when it was already gone, or is not the lab's any more (skipped, and said to `say`)."""
    process, foreign = prove(record)
    if process is None:
        if foreign is not None:
            say(f"skipped {record.name} (pid {record.pid}): {foreign}; not signalled")
        return False
    return _stop_family(process, timeout, first)


def _stop_family(process: psutil.Process, timeout: float, first: signal.Signals) -> bool:
    try:
        family = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(first)
    for member in _wait_gone(family, timeout):
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    _wait_gone(family, timeout)
    return True


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (reaping our own children); those still running after `timeout`.

    A zombie counts as gone: when another process started it (`lab up --no-serve` in an earlier command, then
    `lab down`) only that parent can reap it, and waiting for that would only run out the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [process for process in processes if not _exited(process)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)  # polling for an exit, not distance


def _exited(process: psutil.Process) -> bool:
    try:
        process.wait(timeout=0)  # reaps it if it is our child
        return True
    except psutil.TimeoutExpired:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    except psutil.NoSuchProcess:
        return True


def link_counters(state: LabState) -> dict[str, dict[str, int]]:
    from movr.lab.links import fetch_counters

    return fetch_counters(state.links_control_port, token=state.control_token)


__all__ = ["LabError", "SurvivalOptions", "lab_down", "lab_up", "link_counters", "link_name", "restart_app_server"]
