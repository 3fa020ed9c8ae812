"""Finding, stopping and killing a lab's postmasters by their data directory.

The postmaster and all its children chdir into the data directory, which identifies them even after a crash
has orphaned them and even if the pid in postmaster.pid has been reused by something else: a process is
signalled only once proven to be a PostgreSQL process of that directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

STOP_SIGNALS: Mapping[str, signal.Signals] = {
    # The postmaster's own shutdown modes, as pg_ctl sends them.
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
POLL_SECONDS = 0.05
_KILL_WAIT_SECONDS = 10.0


def read_postmaster_pid(data_dir: Path) -> tuple[int, str] | None:
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


def live_postmaster(data_dir: Path) -> int | None:
    """The pid of the postmaster running on `data_dir`, if one is running."""
    found = read_postmaster_pid(data_dir)
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
        time.sleep(POLL_SECONDS)
    return True


def kill_postmaster(data_dir: Path, pid: int | None) -> None:
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


def stop_postmaster(data_dir: Path, pid: int, mode: str, timeout: float) -> None:
    """Ask the postmaster to shut down in `mode`; SIGKILL everything if it has not within `timeout`."""
    try:
        sig = STOP_SIGNALS[mode]
    except KeyError:
        raise ValueError(f"unknown shutdown mode {mode!r}; use one of {', '.join(STOP_SIGNALS)}") from None
    postmaster = _proven_postmaster(data_dir, pid)
    if postmaster is not None:
        try:
            postmaster.send_signal(sig)
        except psutil.NoSuchProcess:
            postmaster = None
    if postmaster is None or not _wait_gone([postmaster], timeout):
        kill_postmaster(data_dir, pid)
    elif _processes_of(data_dir):
        # An orderly shutdown waits for all children; anything left here is debris of an older crash.
        kill_postmaster(data_dir, None)


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
        pid = live_postmaster(data_dir)
        if pid is not None:
            stop_postmaster(data_dir, pid, "fast", timeout)
            stopped.append(data_dir)
        elif _processes_of(data_dir):
            kill_postmaster(data_dir, None)
            stopped.append(data_dir)
    return stopped
