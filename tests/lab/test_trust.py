"""A lab trusts nothing it did not start: recorded pids are proven before they are signalled, the control
endpoints want the lab's token, the PostgreSQL servers a password.

The first tests write state files by hand (no servers: quick); the last stands a small lab up.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from movr.geo import load_preset
from movr.lab import control
from movr.lab.faults import fail_region
from movr.lab.layout import plan_lab
from movr.lab.pgserver import read_password
from movr.lab.processes import RUN_DIR_MARKER, is_alive, launch, processes_left
from movr.lab.state import STATE_FILE, LabState, ProcessRecord
from movr.lab.supervisor import lab_down

MOVR = str(Path(sys.executable).with_name("movr"))
SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def settled(pid: int, argv: list[str]) -> psutil.Process:
    """The process once it shows its command line (just after a spawn its exec may not be finished)."""
    process = psutil.Process(pid)
    for _ in range(500):
        if process.cmdline() == argv:
            return process
        time.sleep(0.01)  # polling the exec, not distance
    raise AssertionError(f"pid {pid} never showed {argv}")


@pytest.fixture
def stranger() -> Iterator[psutil.Process]:
    """An unrelated process (not started for any lab), stopped at the end whatever happens."""
    process = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        yield settled(process.pid, ["sleep", "300"])
    finally:
        process.kill()
        process.wait(10)


def _state(run_dir: Path, processes: list[ProcessRecord], topology: str = "single") -> LabState:
    preset = load_preset("gcp-3")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    state = LabState(run_dir.resolve(), plan_lab(preset, topology, 0.05, "gcp-3"))
    state.processes = processes
    state.write()
    return state


def _in_place_of(record: ProcessRecord, pid: int) -> ProcessRecord:
    """The record as a crash and a reboot leave it: the lab's proof, and a pid that now runs something else."""
    return ProcessRecord(record.name, record.kind, pid, record.log, record.port, record.started, record.cmdline)


def test_lab_down_stops_its_own_process_and_spares_a_stranger_holding_a_recorded_pid(tmp_path, stranger) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    own, own_record = launch(run_dir.resolve(), "links", "links", SLEEPER, None)
    try:
        _, balancer = launch(run_dir.resolve(), "balancer", "balancer", SLEEPER, None)
        psutil.Process(balancer.pid).kill()  # the lab's balancer died; its pid went to the stranger
        _state(run_dir, [own_record, _in_place_of(balancer, stranger.pid)])
        assert is_alive(own_record) and not is_alive(_in_place_of(balancer, stranger.pid))

        result = subprocess.run([MOVR, "lab", "down", "--run-dir", str(run_dir)], capture_output=True, text=True)

        assert result.returncode == 0, result.stderr
        assert stranger.is_running() and stranger.status() != psutil.STATUS_ZOMBIE
        (skipped,) = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
        assert f"balancer (pid {stranger.pid})" in skipped and "sleep 300" in skipped
        assert own.wait(10) is not None  # the lab's own process was stopped
        assert not (run_dir / STATE_FILE).exists()
    finally:
        if own.poll() is None:
            own.kill()
            own.wait(10)


def test_each_half_of_the_proof_is_needed(tmp_path, stranger) -> None:
    """Same command line but another start (the pid was reused by a new `sleep 300`), or the same start with
    another command line, or no proof at all (an older state file): never signalled."""
    foreign = ProcessRecord(
        "app-us-east1", "app", stranger.pid, "log", None, stranger.create_time() - 60, ["sleep", "300"]
    )
    assert not is_alive(foreign)
    rewritten = ProcessRecord("app-us-east1", "app", stranger.pid, "log", None, stranger.create_time(), ["sleep", "30"])
    assert not is_alive(rewritten)
    assert not is_alive(ProcessRecord("app-us-east1", "app", stranger.pid, "log"))
    assert is_alive(ProcessRecord("x", "app", stranger.pid, "log", None, stranger.create_time(), ["sleep", "300"]))

    said: list[str] = []
    _state(tmp_path / "run", [foreign, rewritten])
    lab_down(tmp_path / "run", say=said.append)
    assert stranger.is_running()
    assert len(said) == 2 and all(line.startswith(f"skipped app-us-east1 (pid {stranger.pid})") for line in said)


def test_lab_down_also_stops_a_process_started_for_the_lab_that_its_state_file_lost(tmp_path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    orphan, _ = launch(run_dir.resolve(), "app-us-east1", "app", SLEEPER, None)
    try:
        assert settled(orphan.pid, SLEEPER).environ()[RUN_DIR_MARKER] == str(run_dir.resolve())
        _state(run_dir, [])  # recorded nowhere
        lab_down(run_dir)
        assert orphan.wait(10) is not None
        assert processes_left(run_dir) == []
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait(10)


def test_a_region_drill_does_not_kill_a_stranger_holding_the_app_servers_pid(tmp_path, capfd, stranger) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    _, app = launch(run_dir.resolve(), "app-europe-west1", "app", SLEEPER, None)
    psutil.Process(app.pid).kill()
    _state(run_dir, [_in_place_of(app, stranger.pid)], topology="multi")

    killed = fail_region(run_dir, "europe-west1")

    assert "app-europe-west1" not in killed
    assert stranger.is_running() and stranger.status() != psutil.STATUS_ZOMBIE
    assert f"skipped app-europe-west1 (pid {stranger.pid})" in capfd.readouterr().err
    lab_down(run_dir)


# --- a live lab ---------------------------------------------------------------------------------------------


def _post(url: str, headers: dict[str, str], body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.lab
def test_a_live_lab_wants_its_token_and_password_and_lab_down_spares_a_stranger(lab_factory, stranger) -> None:
    state = lab_factory("single")
    run_dir = state.run_dir

    # Private files: the state (session secret, control token) and the passfile 0600, the run directory 0700
    # (root adds only o+x, so that PostgreSQL's own user can pass through to its folder).
    assert stat.S_IMODE((run_dir / STATE_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.passfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) & 0o077 in (0, 0o001)

    # A web page's cross-site POST cannot take the region down; the lab's own client can.
    region = state.preset.primary_region
    drill = f"{state.balancer_url}/_balancer/regions/{region}"
    assert _post(drill, {"Content-Type": "text/plain"}, {"down": True}) == 401
    links = f"http://127.0.0.1:{state.links_control_port}/links/{state.plan.links[0].name}"
    assert _post(links, {"Content-Type": "text/plain"}, {"down": True}) == 401
    status = control.call(f"{state.balancer_url}/_balancer/status", state.control_token)
    assert status["regions"][region]["forced_down"] is False

    # TCP to a lab server needs the lab's password; the connection strings the lab hands out name the
    # passfile, and no process of the lab shows the token or the password on its command line.
    port = state.primary_port(region)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="movr", password="", connect_timeout=5)
    with psycopg.connect(state.server_dsn(region)) as conn:
        assert conn.execute("SELECT system_user").fetchone() == ("scram-sha-256:postgres",)
    password = read_password(state.passfile)
    for process in processes_left(run_dir):
        try:
            text = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        assert password not in text and state.control_token not in text

    # The balancer's pid now belongs to a stranger (as after a crash): `lab down` skips it, and says so.
    def swap(current: LabState) -> None:
        current.processes = [_in_place_of(p, stranger.pid) if p.name == "balancer" else p for p in current.processes]

    LabState.update(run_dir, swap)
    result = subprocess.run([MOVR, "lab", "down", "--run-dir", str(run_dir)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"skipped balancer (pid {stranger.pid})" in result.stderr
    assert stranger.is_running() and stranger.status() != psutil.STATUS_ZOMBIE
    assert processes_left(run_dir) == []  # the real balancer still went: it carries the lab's marker
