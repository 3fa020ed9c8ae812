"""Holding the CPUs awake for a benchmark's duration, as latency benchmarks such as cyclictest do.

While a process keeps `/dev/cpu_dma_latency` open with 0 written to it, the kernel's CPU latency QoS keeps
every CPU out of any idle state that takes time to leave: an idle CPU polls instead of halting, so a process
woken after a few idle milliseconds (every hop of a request, movr.bench.journey.machine_idle_cost) runs at
once. Closing the file releases the hold, and the kernel closes it when the process ends in any way, so a
benchmark killed mid-run leaves nothing held.

The price is a busy core: an idle CPU spins for the whole run. On a virtual machine (cpuidle driver
`haltpoll`) the host sees every vCPU busy. Hence off by default: `movr bench <experiment> --hold-cpus-awake`
(the runner, movr.bench.experiment), and every result says whether it was held.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

DEVICE = Path("/dev/cpu_dma_latency")
_VALUE = struct.Struct("=i")  # the kernel reads and answers a native 32-bit integer: microseconds


class AwakeError(Exception):
    """The CPUs cannot be held awake here (no such device, no permission): one line, exit status 2."""


def latency_in_force_us(device: Path | None = None) -> int:
    """The CPU latency limit the kernel enforces now: the least any holder of the device asked for (2e9 µs,
    i.e. none, when nobody holds it). Reading opens a request of its own that asks for nothing."""
    fd = os.open(device or DEVICE, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(_VALUE.unpack(os.read(fd, _VALUE.size))[0])
    finally:
        os.close(fd)


@contextlib.contextmanager
def cpus_held_awake(device: Path | None = None) -> Iterator[None]:
    """Hold every CPU's wake-up latency at 0 µs until the block ends (also on an error or Ctrl-C).

    Raises AwakeError, before the block runs, when the device cannot be opened for writing or is not a
    character device (a file of that name somewhere else would take the write and hold nothing)."""
    path = device or DEVICE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as error:
        hint = " (writing it needs root)" if isinstance(error, PermissionError) else ""
        raise AwakeError(f"--hold-cpus-awake: cannot open {path}: {error.strerror}{hint}") from None
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            raise AwakeError(f"--hold-cpus-awake: {path} is not the kernel's CPU latency device")
        try:
            os.write(fd, _VALUE.pack(0))
        except OSError as error:
            raise AwakeError(f"--hold-cpus-awake: cannot write 0 to {path}: {error.strerror}") from None
        yield
    finally:
        os.close(fd)
