"""Run a real `movr serve` process for a test (granian by default, gunicorn with `--server gunicorn`): on a free
port, ready when /readyz says so, and always stopped (SIGTERM: the master stops its workers gracefully; then
SIGKILL to its session if it lingers)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import requests

from movr.lab.ports import free_port


@contextlib.contextmanager
def served(
    command: Sequence[str], database_url: str, log_path: Path, *, extra: Sequence[str] = (), ready_timeout: float = 60
) -> Iterator[str]:
    """`command` is how to invoke `movr serve` (e.g. [".../bin/movr", "serve"]); yields the base URL."""
    with serving(command, database_url, log_path, extra=extra, ready_timeout=ready_timeout) as (base, _master):
        yield base


@contextlib.contextmanager
def serving(
    command: Sequence[str],
    database_url: str,
    log_path: Path,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`served`, with more environment for the server (`env`); yields the base URL and the server's master."""
    port = free_port()
    environment = {**os.environ, "MOVR_SECRET_KEY": secrets.token_urlsafe(32), "PYTHONUNBUFFERED": "1"}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    environment.update(env or {})
    argv = [
        *command, "--host", "127.0.0.1", "--port", str(port),
        "--database-url", database_url, "--region", "us-east1", "--preset", "gcp-3", *extra,
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with running(argv, environment, log_path, base, ready_timeout=ready_timeout) as master:
        yield base, master


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    base: str,
    *,
    cwd: Path | None = None,
    ready_timeout: float = 60,
) -> Iterator[subprocess.Popen]:
    """Run a server command until the block ends; ready when `base`/readyz answers 200. Yields its process."""
    with log_path.open("w") as log:
        # Its own session, so that the last resort (SIGKILL to the session) reaches the master and its workers.
        process = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{argv[0]} exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):  # a worker is still importing the app
                if requests.get(base + "/readyz", timeout=10).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[0]} did not become ready: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)  # polling for readiness, not a stand-in for distance
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
