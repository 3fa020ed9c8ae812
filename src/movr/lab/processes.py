"""The lab's processes: start one with the record that proves it later, wait until it answers, and stop it.

A lab trusts nothing it did not start. A recorded pid is signalled only while it still runs the process the
lab started - same start time, same command line (`stop_process_tree`, the one place that signals them);
after a crash or a reboot the pid may belong to anything, and that is skipped, and said. Every process the
lab starts carries RUN_DIR_MARKER in its environment (inherited by its children), so that `lab down` finds
what a lost state file no longer names, and `processes_left` proves that nothing was left running.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from movr.lab import control
from movr.lab.state import LabState, ProcessRecord

RUN_DIR_MARKER = "MOVR_LAB_RUN_DIR"
READY_TIMEOUT = 60.0
Say = Callable[[str], None]
# psutil's create_time adds the boot time, which moves when the wall clock is stepped: allow a little of that.
# (A pid reused within a second by a process with the very same command line is as good as the lab's own.)
_START_TIME_SLACK_S = 1.0


class LabError(RuntimeError):
    """The lab could not be stood up; the message says which part and where its log is."""


def on_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def launch(
    run_dir: Path, name: str, kind: str, argv: list[str], port: int | None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, ProcessRecord]:
    """Start a lab process, and the record that will prove it is still this process (start time, argv)."""
    log_path = run_dir / "logs" / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # The marker lets processes_left find this process and its children by the run directory even
            # when neither their command line nor their working directory names it (app servers).
            env={**os.environ, **(env or {}), RUN_DIR_MARKER: str(run_dir.resolve())},
            start_new_session=True,  # Ctrl-C reaches us, and we stop children in order
        )
    try:
        started: float | None = psutil.Process(process.pid).create_time()  # our unreaped child: still its pid
    except psutil.NoSuchProcess:
        started = None
    return process, ProcessRecord(name, kind, process.pid, str(log_path), port, started, list(argv))


def spawn(
    state: LabState, name: str, kind: str, argv: list[str], port: int | None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start a lab process and record it in the state file at once (so `lab down` finds even a half-started lab)."""
    process, record = launch(state.run_dir, name, kind, argv, port, env)
    state.processes.append(record)
    state.write()
    return process


def start_guarded(state: LabState, name: str, argv: list[str], port: int, ready_path: str) -> None:
    """Start a process whose control endpoints want the lab's token (the links, the balancer): the token goes
    in its environment (a command line is readable by every user); ready once `ready_path` answers it."""
    process = spawn(state, name, name, argv, port, {control.TOKEN_ENV: state.control_token})
    wait_http(
        f"http://127.0.0.1:{port}{ready_path}",
        process,
        name,
        state.run_dir / "logs" / f"{name}.log",
        headers={control.TOKEN_HEADER: state.control_token},
    )


def wait_http(
    url: str,
    process: subprocess.Popen,
    name: str,
    log: Path,
    timeout: float = READY_TIMEOUT,
    headers: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"{name} exited with status {process.returncode}; its log:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
                if response.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # polling for readiness, not distance
    raise LabError(f"{name} did not become ready at {url} within {timeout:.0f} s; its log:\n{log_tail(log)}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def started_for(run_dir: Path) -> list[psutil.Process]:
    """Live processes the lab started for `run_dir`: RUN_DIR_MARKER in their environment (their children
    inherit it). Never this process or its ancestors."""
    marker = str(Path(run_dir).resolve())
    ours = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    found = []
    for process in psutil.process_iter(["environ"]):
        try:
            if (
                process.pid not in ours
                and (process.info["environ"] or {}).get(RUN_DIR_MARKER) == marker
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def processes_left(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory names the run directory, or that the lab
    started for it (RUN_DIR_MARKER in their environment, inherited by their children): after `lab down`
    (or any command that stood a lab up), the proof that it stopped everything it started."""
    marker = str(Path(run_dir).resolve())
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "environ"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
            spawned_for_it = (process.info["environ"] or {}).get(RUN_DIR_MARKER) == marker
            if (marker in text or spawned_for_it) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def prove(record: ProcessRecord) -> tuple[psutil.Process | None, str | None]:
    """Is `record.pid` still the process the lab started? (process, None) if so - signal only that object:
    psutil refuses to signal it once its pid is reused; (None, None) if nothing runs there any more;
    (None, why) if something else does, or if the record holds no proof (a state file from an older lab)."""
    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None, None
        started, cmdline = process.create_time(), _cmdline(process)
    except psutil.NoSuchProcess:  # a zombie too, on some calls
        return None, None
    except psutil.AccessDenied:
        return None, "it belongs to another user"
    if record.started is None or not record.cmdline:
        return None, "the state file does not record its start time and command line"
    if cmdline != record.cmdline:
        return None, f"it runs {shlex.join(cmdline)!r}, not what the lab started"
    if abs(started - record.started) > _START_TIME_SLACK_S:
        return None, f"it runs the same command, but started at {_clock(started)}, not {_clock(record.started)}"
    return process, None


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _cmdline(process: psutil.Process, settle: float = 1.0) -> list[str]:
    """The process's command line. Empty only for a moment while it execs (the kernel sets the new one up
    after the old is gone): read again until it shows, rather than take a lab process for a stranger."""
    deadline = time.monotonic() + settle
    while not (cmdline := process.cmdline()) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the exec, not distance
    return cmdline


def is_alive(record: ProcessRecord) -> bool:
    """Does the recorded process still run (a zombie does not; nor does whatever reused its pid)?"""
    return prove(record)[0] is not None


def stop_process_tree(
    record: ProcessRecord, timeout: float, first: signal.Signals = signal.SIGTERM, say: Say = on_stderr
) -> bool:
    """The one place that signals a recorded process: prove it (`prove`), then send `first` to it and its
    children (SIGTERM: a clean stop; SIGKILL: a crash, for fault drills), then SIGKILL what is left after
    `timeout`. False when it was already gone, or is not the lab's any more (skipped, and said to `say`)."""
    process, foreign = prove(record)
    if process is None:
        if foreign is not None:
            say(f"skipped {record.name} (pid {record.pid}): {foreign}; not signalled")
        return False
    return stop_family(process, timeout, first)


def stop_family(process: psutil.Process, timeout: float, first: signal.Signals) -> bool:
    try:
        family = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(first)
    for member in _wait_gone(family, timeout):
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    _wait_gone(family, timeout)
    return True


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (reaping our own children); those still running after `timeout`.

    A zombie counts as gone: when another process started it (`lab up --no-serve` in an earlier command, then
    `lab down`) only that parent can reap it, and waiting for that would only run out the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [process for process in processes if not _exited(process)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)  # polling for an exit, not distance


def _exited(process: psutil.Process) -> bool:
    try:
        process.wait(timeout=0)  # reaps it if it is our child
        return True
    except psutil.TimeoutExpired:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    except psutil.NoSuchProcess:
        return True
