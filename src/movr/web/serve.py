"""`movr serve`: the web app under a production WSGI server (never Flask's development server).

    movr serve --port 8000 --workers 2 --database-url postgresql://... --region us-east1
    movr serve --server gunicorn ...        # gunicorn instead of granian (the default)
    python -m movr.web.serve ...            # the same, without the `movr` CLI

granian (a Rust HTTP server with a WSGI interface) is the default: measured side by side on one lab it
answers the same app's requests 0.16-0.34 ms sooner than gunicorn's gthread worker (docs/lab.md, "The app
server: granian instead of gunicorn"). gunicorn stays as the measured "before" and a fallback. Both run a
master and `--workers` worker processes of `--threads` Python threads.

Each worker builds its own app (and database pool) after the fork: a connection must never be shared by
two processes. It opens its pools at start (`worker_app`: connecting through a WAN link costs round trips
that belong to start-up, not to the first user's request) and closes them on its way out. The master
generates one random secret key when MOVR_SECRET_KEY is unset, so that every worker signs and checks
sessions with the same key. Metrics: the master points prometheus_client's multiprocess mode at a fresh
directory (removed on exit), so /metrics adds up all workers, and it marks every worker that is gone as
dead, so that a dead worker's live gauges are not added up.

Where granian differs from gunicorn: it has no worker timeout (a hung worker stays hung; gunicorn kills it
after 60 s); a worker that dies again within about 5 s of being respawned makes granian stop the whole
server (exit 1) rather than respawn it in a loop; and it starts each request's WSGI environ from a copy of
the process environment, so the master unsets every variable named like part of a request
(`unset_request_variables`, said on stderr) and each worker drops the rest (`WithoutServerEnvironment`).
The granian internals this module leans on (`MPServer._respawn_workers`, `_stop_workers`,
`_spawn_wsgi_worker`, `serve`'s loader arguments) are pinned by the dependency's range and exercised by
tests/web/test_serve.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

import click
from granian.constants import HTTPModes, Interfaces, RuntimeModes
from granian.log import LOGGING_CONFIG
from granian.server import MPServer
from gunicorn.app.base import BaseApplication

from movr.domain import errors
from movr.geo import PresetError, load_preset
from movr.lab.ports import free_port

# Not imported from movr.web.metrics: prometheus_client must not be imported before this is set.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DEFAULT_PRESET = "gcp-3"
SERVERS = ("granian", "gunicorn")
# Threads per worker: a request waiting on its database must not hold up the worker's other requests
# (8 clients on one lab: 2 workers x 1 thread answered 880 requests/s, 2 x 4 1,140; one at a time, the same).
DEFAULT_THREADS = 4
# How long a stopping worker may finish its requests before it is killed (both servers).
GRACEFUL_TIMEOUT_S = 10
# gunicorn >= 25 opens a control socket at one fixed per-user path: several app servers on one machine
# (the lab runs one per region) would fight over it, and nothing here uses it.
OPTIONAL_SETTINGS = {"control_socket_disable"}
# granian's log lines with a time and the process, as gunicorn's have (its access lines carry their own time).
GRANIAN_LOG_FORMATTERS = {
    **LOGGING_CONFIG["formatters"],
    "generic": {
        "()": "logging.Formatter",
        "fmt": "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
        "datefmt": "%Y-%m-%d %H:%M:%S %z",
    },
}
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class OptionError(click.UsageError):
    """A bad option: one line on stderr and exit status 2 (no usage dump)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"movr serve: {self.format_message()}", err=True)


class ServeCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:  # bad value, unknown or missing option
            raise OptionError(error.format_message().splitlines()[0]) from None


# --- what every worker does, whichever server runs it ----------------------------------------------------


def worker_app() -> Any:
    """This worker's app, built after the fork, its pools open and its housekeeping started."""
    # Imported here: the app imports prometheus_client, which must see the master's PROMETHEUS_MULTIPROC_DIR.
    from movr.web import current
    from movr.web.app import create_app

    app = create_app()
    with app.app_context():
        try:
            current.backend().warm()
        except Exception as error:  # the app still serves /healthz; /readyz reports the database
            app.logger.warning("database not reachable at start-up: %s", error)
        with contextlib.suppress(errors.StoreUnavailable):  # a misconfigured backend: /readyz says so
            current.backend().start_housekeeping()
    return app


def close_app(app: Any) -> None:
    """Close a worker's database pools on its way out."""
    from movr.web.current import BACKEND

    backend = getattr(app, "extensions", {}).get(BACKEND)
    if backend is not None:
        backend.close()


def forget_workers(pids: list[int]) -> None:
    """These workers are gone: their live metrics files must not be added up any more."""
    if os.environ.get(MULTIPROC_ENV):
        # Here, not at the top: prometheus_client must not be imported before MULTIPROC_ENV is set.
        from prometheus_client import multiprocess

        for pid in pids:
            multiprocess.mark_process_dead(pid)


# --- granian ----------------------------------------------------------------------------------------------

_worker_app: Any = None  # the app of this process, when it is a granian worker


class GranianMaster(MPServer):
    """granian's master with worker processes (not its threaded server: pools and metrics files are per process).

    granian has no hook like gunicorn's `child_exit`; these two methods are where its master lets workers go
    (respawning one that died or was recycled, and stopping them all), so it forgets each one there.
    """

    def _respawn_workers(self, workers: list[int], *args: Any, **kwargs: Any) -> None:
        gone = [self.wrks[idx].inner.pid for idx in workers]
        super()._respawn_workers(workers, *args, **kwargs)
        forget_workers(gone)

    def _stop_workers(self) -> None:
        gone = [worker.inner.pid for worker in self.wrks]
        super()._stop_workers()
        forget_workers(gone)


def _die_with_master() -> None:
    """A granian worker outlives a master that was killed (gunicorn's workers notice and exit): have the
    kernel send this worker SIGTERM when the master ends. granian forks its workers from the master's main
    thread, which lives as long as the master does (the death signal follows the forking thread)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    master = multiprocessing.parent_process()
    if master is not None and os.getppid() != master.pid:  # the master died before prctl took effect
        os._exit(1)


# The names of a request's own parts in a WSGI environ (CGI's request variables; HTTP_* are its headers).
_REQUEST_VARIABLES = frozenset(
    {
        "AUTH_TYPE",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "GATEWAY_INTERFACE",
        "HTTPS",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "QUERY_STRING",
        "RAW_URI",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_PORT",
        "REMOTE_USER",
        "REQUEST_METHOD",
        "REQUEST_URI",
        "SCRIPT_NAME",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
    }
)


def unset_request_variables() -> list[str]:
    """granian starts every request's WSGI environ from a copy of the process environment, as CGI does: a
    variable named like a header (HTTP_AUTHORIZATION, HTTP_PROXY) would pass for one the client sent when it
    sent none. So the master unsets them before any worker starts; returns their names."""
    names = sorted(name for name in os.environ if name.startswith("HTTP_") or name in _REQUEST_VARIABLES)
    for name in names:
        del os.environ[name]
    return names


class WithoutServerEnvironment:
    """WSGI middleware: each request's environ without what granian copied into it from the process environment
    (the secret key, database URLs, tokens). Safe because the master unset every name a request itself uses
    (unset_request_variables): what is dropped never came from the client."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inherited = tuple(os.environ)  # at load, in the worker: what granian will copy into every environ

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        for name in self.inherited:
            environ.pop(name, None)
        return self.app(environ, start_response)


def _granian_app() -> Any:
    """granian's loader, run in each worker before it serves."""
    global _worker_app
    # The fork copied the master's handlers, which only set flags on the master's objects: until granian's
    # worker sets its own (once the app is loaded), SIGTERM and SIGINT must simply end a starting worker.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_DFL)
    _die_with_master()
    _worker_app = worker_app()
    return WithoutServerEnvironment(_worker_app)


def _granian_worker(*args: Any) -> None:
    """One granian worker process: granian's own WSGI worker, then the pools closed once it has stopped
    (the process ends without running atexit handlers)."""
    try:
        MPServer._spawn_wsgi_worker(*args)
    finally:
        if _worker_app is not None:
            close_app(_worker_app)


def run_granian(host: str, port: int, workers: int, threads: int, access_log: bool) -> None:
    server = GranianMaster(
        "movr.web.app:create_app",  # a label only: workers load the app with _granian_app
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,  # Python threads per worker; the Rust runtime does the network I/O
        # One single-threaded Rust runtime per worker: `mt` and two runtime threads measured no faster.
        runtime_mode=RuntimeModes.st,
        runtime_threads=1,
        http=HTTPModes.http1,  # HTTP/2 is the load balancer's business, not the app server's
        websockets=False,
        log_access=access_log,
        log_dictconfig={"formatters": GRANIAN_LOG_FORMATTERS},
        respawn_failed_workers=True,  # as gunicorn does: a worker that dies is replaced
        workers_kill_timeout=GRACEFUL_TIMEOUT_S,
    )
    server.serve(spawn_target=_granian_worker, target_loader=_granian_app, wrap_loader=False)


# --- gunicorn ---------------------------------------------------------------------------------------------


class MovrServer(BaseApplication):
    """gunicorn with MovR's app factory and our options (no gunicorn command line or config file)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without that setting
            self.cfg.set(key, value)

    def load(self):
        return worker_app()


def _child_exit(_server: Any, worker: Any) -> None:
    forget_workers([worker.pid])


def _worker_exit(_server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    if app is not None:
        close_app(app)


def run_gunicorn(host: str, port: int, workers: int, threads: int, access_log: bool, region: str) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": f"movr-{region}",
        "timeout": 60,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "child_exit": _child_exit,
        "worker_exit": _worker_exit,
        "control_socket_disable": True,
    }
    MovrServer(options).run()


# --- the command ------------------------------------------------------------------------------------------


def validate(database_url: str | None, region: str | None, preset: str | None) -> tuple[str, str]:
    """The preset and region to serve, or OptionError with the reason."""
    name = preset or os.environ.get("MOVR_PRESET") or DEFAULT_PRESET
    try:
        chosen = load_preset(name)
    except PresetError as error:
        raise OptionError(str(error)) from None
    region = region or os.environ.get("MOVR_REGION") or chosen.primary_region
    if region not in chosen.regions:
        raise OptionError(f"region {region!r} is not one of {', '.join(chosen.regions)} (preset {chosen.name})")
    if not (database_url or os.environ.get("MOVR_DATABASE_URL") or os.environ.get("MOVR_REGION_DATABASE_URLS")):
        raise OptionError("no database: pass --database-url or set MOVR_DATABASE_URL")
    if database_url is not None and not database_url.strip():
        raise OptionError("--database-url is empty")
    return name, region


def listen_on(host: str, port: int) -> tuple[str, int]:
    """The numeric address (granian takes no names) and the port to listen on, once a socket could be bound
    there: a name that does not resolve, an address not on this machine or a port in use is a one-line error.
    Port 0: a free port (outside the ephemeral range on IPv4, movr.lab.ports; the kernel's choice on IPv6)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            # As the servers bind: a port whose old connections linger in TIME_WAIT is free, a listened one not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            chosen = probe.getsockname()[1]
        if port == 0 and family == socket.AF_INET:
            chosen = free_port(address[0])
    except OSError as error:
        raise OptionError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return address[0], chosen


@click.command("serve", cls=ServeCommand)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker processes.")
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=DEFAULT_THREADS,
    show_default=True,
    help="Python threads per worker (granian's blocking threads).",
)
@click.option(
    "--server", type=click.Choice(SERVERS), default=SERVERS[0], show_default=True, help="The WSGI server to run."
)
@click.option("--database-url", help="Sets MOVR_DATABASE_URL (postgresql://... or cockroachdb://...).")
@click.option("--region", help="Sets MOVR_REGION: the region this server runs in.")
@click.option("--preset", help=f"Sets MOVR_PRESET (default {DEFAULT_PRESET}).")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
def serve_command(
    host: str,
    port: int,
    workers: int,
    threads: int,
    server: str,
    database_url: str | None,
    region: str | None,
    preset: str | None,
    access_log: bool,
) -> None:
    """Serve the MovR web app (pages, API, health, metrics) with granian (default) or gunicorn."""
    if not host.strip():
        raise OptionError("--host is empty")
    preset_name, region = validate(database_url, region, preset)
    address, port = listen_on(host, port)
    if database_url:
        os.environ["MOVR_DATABASE_URL"] = database_url
    os.environ["MOVR_REGION"] = region
    os.environ["MOVR_PRESET"] = preset_name
    if not os.environ.get("MOVR_SECRET_KEY"):
        click.echo("movr serve: MOVR_SECRET_KEY is not set; sessions end when this server stops", err=True)
        os.environ["MOVR_SECRET_KEY"] = secrets.token_urlsafe(32)
    metrics_dir, master = None, os.getpid()
    if not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="movr-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    click.echo(
        f"movr serve: MovR ({region}, preset {preset_name}) on http://{f'[{host}]' if ':' in host else host}:{port} "
        f"with {server}, {workers} worker(s) x {threads} thread(s)"
    )
    sys.stdout.flush()
    try:
        if server == "granian":
            for name in unset_request_variables():
                click.echo(
                    f"movr serve: {name} unset for the server: granian would present it as part of every request",
                    err=True,
                )
            run_granian(address, port, workers, threads, access_log)
        else:
            run_gunicorn(host, port, workers, threads, access_log, region)
    finally:
        # Only the master: a gunicorn worker leaves through here too (SystemExit), while the others still count.
        if metrics_dir and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    serve_command(prog_name="movr serve")
