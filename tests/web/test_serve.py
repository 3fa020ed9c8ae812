"""`movr serve` options: bad ones exit with status 2 and one line saying why (the browser test runs a real server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from movr.web.serve import serve_command
from servekit import served

URL = ["--database-url", "postgresql://movr@127.0.0.1:1/movr"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--workers", "0", *URL], "--workers"),
        (["--workers", "many", *URL], "--workers"),
        (["--port", "70000", *URL], "--port"),
        (["--region", "mars", *URL], "region 'mars' is not one of"),
        (["--preset", "no-such-preset", *URL], "no preset named"),
        (["--preset", "gcp-3", "--region", "us-west1"], "no database"),
        (["--database-url", "", "--region", "us-west1"], "no database"),
        (["--host", " ", *URL], "--host is empty"),
        (["--no-such-option"], "No such option"),
    ],
)
def test_bad_options_exit_2_with_one_line(monkeypatch, args, reason):
    for name in ("MOVR_DATABASE_URL", "MOVR_REGION_DATABASE_URLS", "MOVR_REGION", "MOVR_PRESET"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(serve_command, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("movr serve: ") and reason in lines[0], result.stderr


def test_help_lists_the_options():
    result = CliRunner().invoke(serve_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers", "--database-url", "--region", "--preset"):
        assert option in result.output


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "movr.web.serve", "--workers", "0"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and result.stderr.startswith("movr serve: ")


def test_importing_serve_does_not_import_prometheus_client():
    # The master must set up multiprocess metrics before prometheus_client is imported anywhere.
    code = "import sys, movr.web.serve; sys.exit('prometheus_client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.slow  # a real `movr serve` with its workers
def test_movr_serve_serves_health_and_the_api(store, movr_dsn, tmp_path):
    """The command the README gives, as a user types it: the `movr` console script, a real gunicorn."""
    movr = Path(sys.executable).with_name("movr")
    with served([str(movr), "serve"], movr_dsn, tmp_path / "serve.log", extra=["--workers", "1"]) as base:
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        cities = requests.get(base + "/api/v1/cities", timeout=10)
        assert cities.status_code == 200 and "new york" in cities.text
        promos = requests.get(base + "/api/v1/promo-codes", timeout=10)
        assert promos.status_code == 200 and promos.json()
