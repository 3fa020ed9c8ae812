"""CPU per lab process during a measured window: who paid for the load, and what else used the machine.

A sampler thread reads, with psutil, the CPU time of every process the lab state names (with its children:
app server workers, link threads), of every PostgreSQL server (the postmaster and its backends), of this
bench client, and of the whole machine: per process, % of one core over the window; "rest of machine" is
what other work on the machine used meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from movr.lab.state import LabState, lab_server

CPU_SAMPLE_S = 1.0  # short-lived PostgreSQL backends are caught by sampling, not only at the window's ends


@dataclass
class _Group:
    name: str
    kind: str
    root: int
    first: dict[int, float] = field(default_factory=dict)  # pid -> CPU seconds when first seen in the window
    last: dict[int, float] = field(default_factory=dict)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _family(pid: int, children: bool) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return []


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class CpuSampler:
    """CPU time of each process group over the measured window, sampled in a thread.

    A pid already alive at the window's start counts from its CPU time then; one first seen later (a new
    PostgreSQL backend) from zero, since it began inside the window (or just before, a small overcount).
    """

    def __init__(self, groups: list[tuple[str, str, int]], start: float, end: float) -> None:
        self.groups = [_Group(name, kind, pid) for name, kind, pid in groups]
        self.start, self.end = start, end
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="throughput-cpu", daemon=True)
        self.machine_busy = (0.0, 0.0)
        self.loadavg: tuple[float, ...] = ()
        self.elapsed = 0.0

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _sample(self, baseline: bool) -> None:
        for group in self.groups:
            # The bench client's children are the lab's processes themselves: counted in their own groups.
            for process in _family(group.root, children=group.kind != "bench-client"):
                try:
                    seconds = _cpu_seconds(process)
                except psutil.Error:
                    continue
                if process.pid not in group.first:
                    group.first[process.pid] = seconds if baseline else 0.0
                group.last[process.pid] = seconds

    def _run(self) -> None:
        if self.stop.wait(max(0.0, self.start - time.monotonic())):
            return
        started = time.monotonic()
        busy_before = _busy_seconds()
        self._sample(baseline=True)
        # Until the window ends, or the load ends first (the users' last slots came before the end).
        while not self.stop.wait(min(CPU_SAMPLE_S, max(0.0, self.end - time.monotonic()))):
            if time.monotonic() >= self.end:
                break
            self._sample(baseline=False)
        self._sample(baseline=False)
        self.elapsed = time.monotonic() - started
        self.machine_busy = (busy_before, _busy_seconds())
        self.loadavg = os.getloadavg()

    def result(self) -> dict[str, Any]:
        if not self.elapsed:
            return {}
        processes = []
        for group in self.groups:
            seconds = sum(group.last[pid] - group.first[pid] for pid in group.last)
            processes.append(
                {
                    "name": group.name,
                    "kind": group.kind,
                    "pid": group.root,
                    "pids_seen": len(group.last),
                    "cpu_percent": 100 * seconds / self.elapsed,
                }
            )
        busy = self.machine_busy[1] - self.machine_busy[0]
        measured = sum(p["cpu_percent"] for p in processes)
        machine_percent = 100 * busy / self.elapsed
        return {
            "window_s": self.elapsed,
            "unit": "% of one core, averaged over the measured window",
            "processes": processes,
            "lab_percent": sum(p["cpu_percent"] for p in processes if p["kind"] != "bench-client"),
            "machine_percent": machine_percent,
            "machine_cores": psutil.cpu_count(),
            "rest_of_machine_percent": max(0.0, machine_percent - measured),
            "loadavg_at_end": list(self.loadavg),
        }


def cpu_groups(state: LabState) -> list[tuple[str, str, int]]:
    """(name, kind, root pid) of every lab process, every PostgreSQL server, and this client."""
    groups = [(record.name, record.kind, record.pid) for record in state.processes]
    for server in state.plan.servers.values():
        pid = lab_server(state.run_dir, server).pid
        if pid is not None:
            groups.append((f"postgres {server.name}", "postgres", pid))
    groups.append(("bench client", "bench-client", os.getpid()))
    return groups
