"""`movr serve`: the web app under gunicorn (a production server; never Flask's development server).

    movr serve --port 8000 --workers 2 --database-url postgresql://... --region us-east1
    python -m movr.web.serve ...            # the same, without the `movr` CLI

Each worker builds its own app (and database pool) after the fork: a connection must never be shared by
two processes. The master generates one random secret key when MOVR_SECRET_KEY is unset, so that every
worker signs and checks sessions with the same key. Metrics: the master points prometheus_client's
multiprocess mode at a fresh directory (removed on exit), so /metrics adds up all workers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from movr.domain import errors
from movr.geo import PresetError, load_preset
from movr.lab.ports import free_port

# Not imported from movr.web.metrics: prometheus_client must not be imported before this is set.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DEFAULT_PRESET = "gcp-3"
# gunicorn >= 25 opens a control socket at one fixed per-user path: several app servers on one machine
# (the lab runs one per region) would fight over it, and nothing here uses it.
OPTIONAL_SETTINGS = {"control_socket_disable"}


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
        # Fork safety: each worker imports the app after the fork, with the master's PROMETHEUS_MULTIPROC_DIR
        # already set (the app imports prometheus_client) and builds its own pools (never shared by processes).
        from movr.web import current
        from movr.web.app import create_app

        app = create_app()
        # Open this worker's pools now: connecting through a WAN link costs round trips that belong
        # to start-up, not to the first user's request (which would otherwise pay them).
        with app.app_context():
            try:
                current.backend().warm()
            except Exception as error:  # the app still serves /healthz; /readyz reports the database
                app.logger.warning("database not reachable at start-up: %s", error)
            with contextlib.suppress(errors.StoreUnavailable):  # a misconfigured backend: /readyz says so
                current.backend().start_housekeeping()
        return app


def _child_exit(_server: Any, worker: Any) -> None:
    """A worker is gone: its live metrics files must not be added up any more."""
    if os.environ.get(MULTIPROC_ENV):
        # Here, not at the top: prometheus_client must not be imported before MULTIPROC_ENV is set.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _worker_exit(_server: Any, worker: Any) -> None:
    """Close the worker's database pool on the way out."""
    app = getattr(worker, "wsgi", None)
    backend = getattr(app, "extensions", {}).get("movr_backend") if app is not None else None
    if backend is not None:
        backend.close()


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


@click.command("serve", cls=ServeCommand)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker processes.")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="Threads per worker.")
@click.option("--database-url", help="Sets MOVR_DATABASE_URL (postgresql://... or cockroachdb://...).")
@click.option("--region", help="Sets MOVR_REGION: the region this server runs in.")
@click.option("--preset", help=f"Sets MOVR_PRESET (default {DEFAULT_PRESET}).")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
def serve_command(
    host: str,
    port: int,
    workers: int,
    threads: int,
    database_url: str | None,
    region: str | None,
    preset: str | None,
    access_log: bool,
) -> None:
    """Serve the MovR web app (pages, API, health, metrics) with gunicorn."""
    if not host.strip():
        raise OptionError("--host is empty")
    preset_name, region = validate(database_url, region, preset)
    if database_url:
        os.environ["MOVR_DATABASE_URL"] = database_url
    os.environ["MOVR_REGION"] = region
    os.environ["MOVR_PRESET"] = preset_name
    if not os.environ.get("MOVR_SECRET_KEY"):
        click.echo("movr serve: MOVR_SECRET_KEY is not set; sessions end when this server stops", err=True)
        os.environ["MOVR_SECRET_KEY"] = secrets.token_urlsafe(32)
    if port == 0:
        port = free_port(host)
    metrics_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="movr-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
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
        "graceful_timeout": 10,
        "child_exit": _child_exit,
        "worker_exit": _worker_exit,
        "control_socket_disable": True,
    }
    click.echo(f"movr serve: MovR ({region}, preset {preset_name}) on http://{host}:{port} with {workers} worker(s)")
    sys.stdout.flush()
    try:
        MovrServer(options).run()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    serve_command(prog_name="movr serve")
