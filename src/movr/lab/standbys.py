"""PostgreSQL work behind survival goals: clone standbys through links, set the synchronous quorum, probe,
promote, and bring a lost server back as a standby (pg_rewind, else a fresh clone).

Every replication byte crosses a link (law 1): a standby in region S streams from its group's primary through
`standby:S-><home>-a`, which the controller re-points at the new primary on failover, so a standby follows
a failover without being reconfigured (`recovery_target_timeline = latest` is PostgreSQL's default).

Every connection - ours, a standby's replication, pg_basebackup's and pg_rewind's - authenticates with the
lab's password from its passfile (`passfile` below; movr.lab.state.lab_passfile), which every server shares.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from movr.lab.layout import SurvivalLayout, link_name
from movr.lab.pgserver import LAB_DEFAULTS, PostgresServer, conninfo
from movr.lab.pgsetup import PostgresStartError, clean_env, make_traversable, postgres_bin_dir, run_as
from movr.lab.state import lab_passfile, lab_server
from movr.lab.survival import Probe, parse_lsn, stable_port, sync_standby_names

Say = Callable[[str], None]
PRIMARY_BASE_SETTINGS = {"synchronous_commit": "local", "wal_sender_timeout": "0"}  # as the supervisor's
CONNECT_TIMEOUT_S = 2
READY_TIMEOUT_S = 60.0


class StandbyError(RuntimeError):
    """A standby could not be cloned, started or rejoined; the message quotes the tool's output."""


def direct_dsn(port: int, passfile: Path, database: str = "movr") -> str:
    return conninfo(port, passfile, database, connect_timeout=CONNECT_TIMEOUT_S)


def link_dsn(link_port: int, passfile: Path, database: str = "postgres") -> str:
    return conninfo(link_port, passfile, database)


def standby_settings(layout: SurvivalLayout, name: str, link_port: int, passfile: Path) -> dict[str, str]:
    """movr.conf of a standby: the lab's settings, and its primary reached through its region's link (the
    walreceiver runs as the server's OS user, which owns the passfile)."""
    return {
        **LAB_DEFAULTS,
        **PRIMARY_BASE_SETTINGS,
        **layout.server_settings,
        "primary_conninfo": conninfo(link_port, passfile, application_name=layout.servers[name].app_name),
    }


def _run(command: list[str], what: str, timeout: float = 300) -> str:
    runner = run_as()
    try:
        result = subprocess.run(
            command,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **runner.subprocess_kwargs(),
        )
    except subprocess.TimeoutExpired as exc:
        raise StandbyError(f"{what}: timed out after {timeout:g} s") from exc
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise StandbyError(f"{what} failed with exit code {result.returncode}:\n{tail}")
    return output


def _owned(path: Path) -> None:
    run_as().give(path)


def _signal_standby(server: PostgresServer) -> None:
    signal_file = server.data_dir / "standby.signal"
    signal_file.touch()
    _owned(signal_file)


def clone(
    run_dir: Path,
    layout: SurvivalLayout,
    name: str,
    link_port: int,
    moved: Callable[[str, int], None] = lambda *_: None,
) -> PostgresServer:
    """A new standby: pg_basebackup from the group's primary through `link_port`, then start it.

    Not `pg_basebackup -R`: that writes primary_conninfo into postgresql.auto.conf, which would override the
    lab's own movr.conf (and name the clone after nothing); the standby's settings are written here instead.
    """
    server = lab_server(run_dir, layout.servers[name])
    passfile = lab_passfile(run_dir)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(server.data_dir)
    server.base_dir.mkdir(parents=True, exist_ok=True)
    server.base_dir.chmod(0o700)  # as PostgresServer.init: the folder of a Unix socket that trusts its callers
    runner = run_as()
    if runner.uid is not None:
        make_traversable(server.base_dir.parent)
        _owned(server.base_dir)
    _run(
        [
            str(postgres_bin_dir() / "pg_basebackup"),
            "--pgdata",
            str(server.data_dir),
            "--dbname",
            link_dsn(link_port, passfile),
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",  # a lab standby is re-cloned, not recovered, if the machine itself crashes
        ],
        f"{name}: pg_basebackup through 127.0.0.1:{link_port}",
    )
    server.write_config(standby_settings(layout, name, link_port, passfile))
    _signal_standby(server)
    start(server, layout, name, lambda: standby_settings(layout, name, link_port, passfile), moved)
    return server


def start(
    server: PostgresServer,
    layout: SurvivalLayout,
    name: str,
    settings: Callable[[], Mapping[str, str]],
    moved: Callable[[str, int], None] = lambda *_: None,
) -> None:
    """Start a server; if its port was taken meanwhile, move it to another one (recorded in `layout`, and
    reported to `moved`, which must update whatever points at it) and start again."""
    for attempt in range(3):
        try:
            server.start(timeout=READY_TIMEOUT_S)
            return
        except PostgresStartError as err:
            if "Address already in use" not in str(err) or attempt == 2:
                raise
        server.port = stable_port()
        layout.servers[name].port = server.port
        server.write_config(settings())
        moved(name, server.port)


def rejoin(
    run_dir: Path,
    layout: SurvivalLayout,
    name: str,
    link_port: int,
    primary_port: int,
    say: Say,
    moved: Callable[[str, int], None] = lambda *_: None,
) -> str:
    """Bring a lost server back as a standby of its group's current primary; returns how it came back.

    1. A server lost as a standby restarts as one: its WAL is usually a prefix of the primary's, and recovery
       in standby mode writes nothing of its own. (Not pg_rewind: finishing crash recovery, pg_rewind writes
       a shutdown checkpoint that the primary's WAL does not have, so the standby could never continue.)
    2. Otherwise - a lost primary, or a standby that had received WAL beyond the point where the promoted
       standby's timeline forked - pg_rewind undoes what the new primary does not have (commits nobody
       acknowledged), then it starts as a standby.
    3. If that fails too, it is cloned afresh.
    Each step counts only once the standby has replayed the primary's WAL up to the primary's position.
    """
    server = lab_server(run_dir, layout.servers[name])
    passfile = lab_passfile(run_dir)
    if server.is_running():
        server.stop(mode="fast")
    if not (server.data_dir / "PG_VERSION").exists():
        clone(run_dir, layout, name, link_port, moved)
        return "cloned"
    if (server.data_dir / "standby.signal").exists():
        try:
            _start_standby(server, layout, name, link_port, primary_port, timeout=10.0, moved=moved)
            return "restarted as a standby"
        except Exception as err:
            say(f"{name}: did not catch up as a standby ({_first_line(err)}); rewinding it")
            server.kill()
    try:
        (server.data_dir / "standby.signal").unlink(missing_ok=True)  # single-user crash recovery refuses it
        output = _run(
            [
                str(postgres_bin_dir() / "pg_rewind"),
                "--target-pgdata",
                str(server.data_dir),
                "--source-server",
                link_dsn(link_port, passfile),
            ],
            f"{name}: pg_rewind",
        )
        # pg_rewind copied the source's configuration files, movr.conf (with its port) among them.
        _start_standby(server, layout, name, link_port, primary_port, moved=moved)
        return "no rewind needed" if "no rewind required" in output else "rewound with pg_rewind"
    except Exception as err:
        say(f"{name}: {_first_line(err)}; cloning it afresh")
        server.kill()
    clone(run_dir, layout, name, link_port, moved)
    return "re-cloned"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _start_standby(
    server: PostgresServer,
    layout: SurvivalLayout,
    name: str,
    link_port: int,
    primary_port: int,
    timeout: float = 30.0,
    moved: Callable[[str, int], None] = lambda *_: None,
) -> None:
    assert server.passfile is not None
    passfile = server.passfile
    server.write_config(standby_settings(layout, name, link_port, passfile))
    _signal_standby(server)
    start(server, layout, name, lambda: standby_settings(layout, name, link_port, passfile), moved)
    wait_caught_up(server.port, primary_port, passfile, timeout)


def wait_caught_up(standby_port: int, primary_port: int, passfile: Path, timeout: float = 30.0) -> None:
    """Wait until the standby has replayed the primary's WAL up to where the primary is now.

    "Now" is where the primary has inserted WAL, made durable by a commit of our own. Not its write position
    (pg_current_wal_lsn): that may end inside a record whose tail nothing flushes - the WAL writer writes
    whole pages only until the record's transaction ends, and hint bits' full-page images written right after
    crash recovery were such records - so an idle primary would send the standby only part of it until its
    background writer logs running transactions, up to 15 s later. The commit writes no rows and waits for no
    standby (synchronous_commit local).
    """
    with psycopg.connect(direct_dsn(primary_port, passfile, "postgres"), autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = local")
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text, pg_current_xact_id()").fetchone()
        target = parse_lsn(row[0] if row else None)
    deadline = time.monotonic() + timeout
    with psycopg.connect(direct_dsn(standby_port, passfile, "postgres"), autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
            if row and parse_lsn(row[0]) >= target:
                return
            if time.monotonic() >= deadline:
                raise StandbyError(f"the standby on port {standby_port} did not catch up within {timeout:g} s")
            time.sleep(0.1)  # polling for readiness, not distance


def set_quorum(port: int, passfile: Path, layout: SurvivalLayout, group: str, primary: str) -> str:
    """Make commits on `primary` wait for its synchronous standbys; returns synchronous_standby_names.

    ALTER SYSTEM (postgresql.auto.conf), because it overrides movr.conf, and because the GLOBAL-table set-up
    wrote its own list there. Works on a standby too (read before promotion, so the first commit after it
    already waits for the quorum).
    """
    names = sync_standby_names(layout, group, primary)
    with psycopg.connect(direct_dsn(port, passfile), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(names)))
        conn.execute("ALTER SYSTEM SET synchronous_commit = 'on'")
        conn.execute("SELECT pg_reload_conf()")
    return names


def wait_streaming(port: int, passfile: Path, app_names: list[str], timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until every named standby streams from the server on `port`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(direct_dsn(port, passfile), autocommit=True) as conn:
        while True:
            streaming = {
                row[0]
                for row in conn.execute(
                    "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
                ).fetchall()
            }
            missing = sorted(set(app_names) - streaming)
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise StandbyError(f"standby(s) {', '.join(missing)} did not start streaming within {timeout:g} s")
            time.sleep(0.1)  # polling for readiness, not distance


def probe(conn: psycopg.Connection) -> Probe:
    """A standby's position is the WAL it holds on disk: received-and-flushed, or replayed - whichever is
    further. (After a restart its WAL receiver reports only what it received since, from the start of a
    segment, until the primary writes something new: the replayed position is then ahead of it.)"""
    row = conn.execute(
        "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() "
        "THEN GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text "
        "ELSE pg_current_wal_lsn()::text END"
    ).fetchone()
    assert row is not None
    return Probe(in_recovery=bool(row[0]), lsn=parse_lsn(row[1]))


def probe_port(port: int, passfile: Path, timeout: float = 1.0) -> Probe | None:
    """One probe over a fresh connection; None if the server does not answer."""
    try:
        with psycopg.connect(conninfo(port, passfile, connect_timeout=max(1, round(timeout))), autocommit=True) as conn:
            return probe(conn)
    except psycopg.Error:
        return None


def promote(port: int, passfile: Path, timeout: float = 30.0) -> None:
    with psycopg.connect(direct_dsn(port, passfile), autocommit=True) as conn:
        done = conn.execute("SELECT pg_promote(true, %s)", (int(timeout),)).fetchone()
        if not done or not done[0]:
            raise StandbyError(f"the standby on port {port} did not finish promotion within {timeout:g} s")


def replication_status(port: int, passfile: Path) -> list[dict[str, Any]]:
    """The primary's view of its standbys (pg_stat_replication), for `lab status` and the drills."""
    with psycopg.connect(direct_dsn(port, passfile), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, state, sync_state, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes "
            "FROM pg_stat_replication ORDER BY application_name"
        ).fetchall()
    return [{"application_name": r[0], "state": r[1], "sync_state": r[2], "replay_lag_bytes": r[3]} for r in rows]


def bring_up(run_dir: Path, layout: SurvivalLayout, link_ports: Mapping[str, int], say: Say) -> None:
    """Clone and start every standby of a new survival lab, then make each primary's commits wait for them.

    Standbys are cloned a few at a time (each clone is a streamed copy of a small cluster); the quorum is
    set only once they stream, so that bring-up never waits on a commit.
    """
    jobs = []
    for info in layout.groups.values():
        for name in info.members:
            if name == info.primary:
                continue
            jobs.append((name, link_ports[link_name("standby", layout.servers[name].region, info.primary)]))
    say(f"{len(jobs)} standbys: pg_basebackup through their standby links")
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="movr-clone") as pool:
        for future in [pool.submit(clone, run_dir, layout, name, port) for name, port in jobs]:
            future.result()
    passfile = lab_passfile(run_dir)
    for group, info in layout.groups.items():
        primary = layout.servers[info.primary]
        names = set_quorum(primary.port, passfile, layout, group, primary.name)
        say(f"{group} ({info.goal} survival): {primary.name} commits wait for {names}")
        standbys = [layout.servers[m].app_name for m in info.members if m != primary.name]
        wait_streaming(primary.port, passfile, standbys)
