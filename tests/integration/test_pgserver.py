"""Lab PostgreSQL servers: start, connect, stay on loopback, stop, crash, clean up."""

from __future__ import annotations

import stat
from pathlib import Path

import psutil
import psycopg
import pytest

from movr.lab.pgserver import PostgresServer, PostgresStartError, read_password, running_server
from movr.lab.postmasters import stop_stray_servers

pytestmark = pytest.mark.integration


def is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """Live postgres processes of `data_dir`: the postmaster and its children all chdir into it."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.name() == "postgres"
                and process.status() != psutil.STATUS_ZOMBIE
                and Path(process.cwd()) == data_dir
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_server_runs_postgres_18_on_loopback_only_and_stops(tmp_path: Path) -> None:
    with running_server(tmp_path / "pg") as server:
        pid = server.pid
        assert pid is not None and server.is_running()
        with psycopg.connect(server.dsn()) as conn:
            version = conn.execute("SELECT version()").fetchone()
            listen = conn.execute("SHOW listen_addresses").fetchone()
            wal_level = conn.execute("SHOW wal_level").fetchone()
        assert version is not None and version[0].startswith("PostgreSQL 18")
        assert listen == ("127.0.0.1",)
        assert wal_level == ("logical",)
        # Not just configured: the postmaster's listening TCP sockets are all on 127.0.0.1.
        listening = [c for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
        assert server.url("movr") == (
            f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/movr?passfile={server.base_dir}/pgpass"
        )

        server.stop()
        assert server.pid is None and not server.is_running()
        assert not is_alive(pid)
        assert postgres_processes(server.data_dir) == []
        server.stop()  # idempotent


def test_stop_is_safe_on_a_server_never_started(tmp_path: Path) -> None:
    server = PostgresServer("idle", tmp_path / "idle")
    server.stop()
    server.kill()
    assert server.pid is None


def test_broken_config_raises_start_error_quoting_the_log(tmp_path: Path) -> None:
    server = PostgresServer("broken", tmp_path / "broken")
    server.init({"shared_buffers": "nonsense"})
    with pytest.raises(PostgresStartError) as raised:
        server.start(timeout=15)
    message = str(raised.value)
    assert str(server.log_path) in message
    assert "shared_buffers" in message  # the FATAL line from the log
    assert server.pid is None
    assert postgres_processes(server.data_dir) == []


def test_listen_addresses_cannot_be_widened(tmp_path: Path) -> None:
    server = PostgresServer("open", tmp_path / "open")
    with pytest.raises(ValueError, match="listen_addresses"):
        server.write_config({"listen_addresses": "*"})


def test_kill_leaves_no_postgres_process_and_the_server_recovers(tmp_path: Path) -> None:
    with running_server(tmp_path / "victim") as server:
        server.create_database("movr")
        server.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)", database="movr")
        assert len(postgres_processes(server.data_dir)) > 1  # postmaster and its children

        server.kill()
        assert server.pid is None
        assert postgres_processes(server.data_dir) == []

        server.start()  # crash recovery from the WAL
        assert server.psql("SELECT x FROM t", database="movr") == "1"


def test_two_servers_at_once_get_different_ports(tmp_path: Path) -> None:
    with running_server(tmp_path / "a", "a") as a, running_server(tmp_path / "b", "b") as b:
        assert a.port != b.port
        assert a.psql("SHOW port") == str(a.port)
        assert b.psql("SHOW port") == str(b.port)


def test_context_manager_stops_the_server_when_the_body_raises(tmp_path: Path) -> None:
    pid = None
    with pytest.raises(RuntimeError, match="boom"), running_server(tmp_path / "pg") as server:
        pid = server.pid
        raise RuntimeError("boom")
    assert pid is not None and not is_alive(pid)


def test_create_database_is_idempotent(tmp_path: Path) -> None:
    with running_server(tmp_path / "pg") as server:
        server.create_database("movr")
        server.create_database("movr")
        with psycopg.connect(server.dsn("movr")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("movr",)


def test_stop_stray_servers_finds_servers_left_by_a_crashed_starter(tmp_path: Path) -> None:
    left = PostgresServer("left", tmp_path / "run" / "left")
    left.init()
    left.start()
    # Another process (a fresh object) knows only the run directory.
    assert stop_stray_servers(tmp_path / "run") == [left.data_dir]
    assert postgres_processes(left.data_dir) == []
    assert left.pid is None
    assert stop_stray_servers(tmp_path / "run") == []


def test_tcp_needs_the_password_and_only_the_passfile_holds_it(tmp_path: Path) -> None:
    with running_server(tmp_path / "pg") as server:
        tcp = {"host": "127.0.0.1", "port": server.port, "user": "postgres", "dbname": "postgres"}
        # No password (and no passfile): refused, as is a wrong one; a local user is no longer a superuser.
        empty = tmp_path / "empty-passfile"
        empty.touch(mode=0o600)
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(**tcp, passfile=str(empty), connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(**tcp, password="postgres", connect_timeout=5)
        # The passfile's password is the one: the connection string names the file, never the password.
        password = read_password(server.passfile)
        assert password not in server.dsn() and "passfile=" in server.dsn()
        with psycopg.connect(**tcp, password=password) as conn:
            # system_user: how this session authenticated (NULL under trust).
            assert conn.execute("SELECT system_user").fetchone() == ("scram-sha-256:postgres",)
            assert conn.execute("SHOW unix_socket_permissions").fetchone() == ("0700",)
        # Private: the passfile 0600, the server's folder (which holds its trusting Unix socket) 0700.
        assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(server.base_dir.stat().st_mode) == 0o700


def test_a_cluster_made_without_a_password_gets_the_passfiles(tmp_path: Path) -> None:
    server = PostgresServer("old", tmp_path / "old")
    server.init()
    # As a cluster made before servers had passwords: its superuser has none, and it has no passfile.
    server.start()
    server.psql("ALTER ROLE postgres PASSWORD NULL")
    server.stop()
    server.passfile.unlink()
    server.init()
    assert server.passfile.exists()
    try:
        server.start()
        assert server.psql("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'") == "t"
    finally:
        server.stop()
