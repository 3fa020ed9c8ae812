"""`movr serve`: bad options exit with status 2 and one line saying why; each WSGI server it can run (granian,
the default, and gunicorn) serves the app from worker processes whose metrics add up, replaces a worker that
dies without adding up its live gauges any more, and stops with every worker on SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from click.testing import CliRunner
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from movr.web.serve import SERVERS, serve_command
from servekit import serving

URL = ["--database-url", "postgresql://movr@127.0.0.1:1/movr"]
MOVR = [str(Path(sys.executable).with_name("movr")), "serve"]
HEALTH_REQUESTS = re.compile(r'^movr_http_requests_total\{[^}]*route="/healthz"[^}]*\} (\S+)$', re.MULTILINE)
LIVE_GAUGE = re.compile(r"^movr_test_live_gauge (\S+)$", re.MULTILINE)


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
        (["--server", "nginx", *URL], "--server"),
        (["--host", "192.0.2.1", *URL], "cannot listen on 192.0.2.1:8000"),  # TEST-NET-1: not this machine
    ],
)
def test_bad_options_exit_2_with_one_line(monkeypatch, args, reason):
    for name in ("MOVR_DATABASE_URL", "MOVR_REGION_DATABASE_URLS", "MOVR_REGION", "MOVR_PRESET"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(serve_command, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("movr serve: ") and reason in lines[0], result.stderr


def test_a_port_in_use_exits_2_with_one_line(monkeypatch):
    monkeypatch.delenv("MOVR_REGION_DATABASE_URLS", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(serve_command, ["--port", str(port), *URL])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"movr serve: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_help_lists_the_options():
    result = CliRunner().invoke(serve_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers", "--threads", "--server", "--database-url", "--region", "--preset"):
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


def server_args(server: str) -> list[str]:
    return [] if server == SERVERS[0] else ["--server", server]  # the default as a user types it: no option


@pytest.mark.slow  # a real `movr serve` with its workers
@pytest.mark.parametrize("server", SERVERS)
def test_movr_serve_serves_health_and_the_api(store, movr_dsn, tmp_path, server):
    """The command the README gives, as a user types it: the `movr` console script, a real WSGI server."""
    with serving(
        MOVR, movr_dsn, tmp_path / "serve.log", extra=["--workers", "1", "--threads", "2", *server_args(server)]
    ) as (base, master):
        # The lab proves a process it started by its command line (movr.lab.processes): the server keeps it.
        assert psutil.Process(master.pid).cmdline()[-(len(master.args) - 1) :] == list(master.args)[1:]
        health = requests.get(base + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok", "region": "us-east1"}
        cities = requests.get(base + "/api/v1/cities", timeout=10)
        assert cities.status_code == 200 and "new york" in cities.text
        promos = requests.get(base + "/api/v1/promo-codes", timeout=10)
        assert promos.status_code == 200 and promos.json()
    assert server in (tmp_path / "serve.log").read_text().splitlines()[0]  # "... with granian, 1 worker(s) ..."


def workers_of(master: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(master.pid).children(recursive=True)


def scrape(base: str, pattern: re.Pattern[str]) -> float | None:
    found = pattern.search(requests.get(base + "/metrics", timeout=10).text)
    return float(found[1]) if found else None


@contextlib.contextmanager
def two_workers(movr_dsn: str, tmp_path: Path, server: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`movr serve` with 2 workers whose temporary files (the metrics directory) go to `tmp_path`/tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    extra = ["--workers", "2", *server_args(server)]
    with serving(MOVR, movr_dsn, tmp_path / "serve.log", extra=extra, env={"TMPDIR": str(tmp)}) as served:
        yield served


def metrics_dir(tmp: Path) -> Path:
    (found,) = tmp.glob("movr-metrics-*")  # the master's, made with tempfile under the server's TMPDIR
    return found


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("end", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "stop"])
def test_metrics_add_up_across_workers_and_forget_a_gone_workers_live_gauges(store, movr_dsn, tmp_path, server, end):
    tmp = tmp_path / "tmp"
    with two_workers(movr_dsn, tmp_path, server) as (base, master):
        for _ in range(20):  # a connection each: the kernel or the workers share them out
            assert requests.get(base + "/healthz", timeout=10).status_code == 200
        directory = metrics_dir(tmp)
        counted = {int(path.stem.split("_")[-1]) for path in directory.glob("counter_*.db")}
        workers = {worker.pid for worker in workers_of(master)}
        assert len(workers) == 2 and counted <= workers
        victim = counted.pop()
        # A live gauge of that worker, as prometheus_client writes one for Gauge(multiprocess_mode="livesum").
        gauge = MmapedDict(str(directory / f"gauge_livesum_{victim}.db"))
        gauge.write_value(mmap_key("movr_test_live_gauge", "movr_test_live_gauge", [], [], "a test"), 7.0, 0)
        gauge.close()
        assert scrape(base, HEALTH_REQUESTS) == 20 and scrape(base, LIVE_GAUGE) == 7

        # A crash (no clean-up of its own) or a stop of that worker alone (it leaves through the code the master runs).
        psutil.Process(victim).send_signal(end)
        deadline = time.monotonic() + 30
        while len(now := {worker.pid for worker in workers_of(master)}) != 2 or victim in now:
            assert time.monotonic() < deadline, f"{server} did not replace worker {victim}: {now}"
            time.sleep(0.1)  # polling for the new worker, not a stand-in for distance
        assert master.poll() is None
        while scrape(base, LIVE_GAUGE) is not None:
            assert time.monotonic() < deadline, f"{server} still adds up the live gauge of dead worker {victim}"
            time.sleep(0.1)  # polling for the master's bookkeeping
        # The dead worker's requests are still counted: /metrics reads every worker's files, the dead one's too.
        assert scrape(base, HEALTH_REQUESTS) == 20


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_master_stops_every_worker_and_removes_the_metrics(store, movr_dsn, tmp_path, server, stop):
    tmp = tmp_path / "tmp"
    with two_workers(movr_dsn, tmp_path, server) as (base, master):
        workers = workers_of(master)
        assert len(workers) == 2
        directory = metrics_dir(tmp)
        master.send_signal(stop)
        assert master.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(workers, timeout=15)
        for orphan in alive:  # what a test starts, it stops, even when it fails
            orphan.kill()
        assert not alive, f"{server} left workers running: {[w.pid for w in alive]}"
        assert not directory.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/healthz", timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
def test_workers_do_not_outlive_a_killed_master(store, movr_dsn, tmp_path, server):
    extra = ["--workers", "2", *server_args(server)]
    with serving(MOVR, movr_dsn, tmp_path / "serve.log", extra=extra, env={"TMPDIR": str(tmp_path)}) as (_, master):
        workers = workers_of(master)
        assert len(workers) == 2
        master.kill()  # no chance to stop its workers itself
        master.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=20)  # gunicorn's look for their parent every second
        for orphan in alive:  # what a test starts, it stops, even when it fails
            orphan.kill()
        assert not alive, f"{server} workers outlived their master: {[w.pid for w in alive]}"


@pytest.mark.slow
def test_the_servers_environment_is_never_part_of_a_request(store, movr_dsn, tmp_path):
    """granian copies the process environment into every request's environ: a variable named like a header
    must not pass for one the client sent (here: the metrics token's bearer header)."""
    token = "a-metrics-token-for-this-test"
    env = {"MOVR_METRICS_TOKEN": token, "HTTP_AUTHORIZATION": f"Bearer {token}"}
    log = tmp_path / "serve.log"
    with serving(MOVR, movr_dsn, log, extra=["--workers", "1"], env=env) as (base, _master):
        assert requests.get(base + "/metrics", timeout=10).status_code == 401
        asked = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert asked.status_code == 200
    assert "HTTP_AUTHORIZATION unset for the server" in log.read_text()


def test_a_request_sees_none_of_the_variables_the_worker_inherited(monkeypatch):
    from movr.web.serve import WithoutServerEnvironment

    monkeypatch.setenv("MOVR_SECRET_KEY", "not for requests")
    seen: dict = {}

    def app(environ, start_response):
        seen.update(environ)
        return [b""]

    wrapped = WithoutServerEnvironment(app)
    wrapped({"MOVR_SECRET_KEY": "not for requests", "PATH_INFO": "/", "HTTP_ACCEPT": "*/*"}, None)
    assert "MOVR_SECRET_KEY" not in seen and seen["PATH_INFO"] == "/" and seen["HTTP_ACCEPT"] == "*/*"
