"""Precise wake-ups: links deliver each chunk when it is due, to the microsecond where Linux allows.

- the delivery timer: asyncio's default loop (epoll timeouts in whole milliseconds, rounded up) and uvloop
  (libuv's millisecond clock) wake ~0.4 ms late at the median. On Linux the timer is a ``timerfd`` armed at
  the absolute CLOCK_MONOTONIC due time of the earliest pending chunk and watched by the loop like a socket
  (still ~30-60 us late from idle, so it is armed early by the lateness seen so far and waits out
  the rest on the clock, at most 150 us); elsewhere it falls back to ``loop.call_later``;
- the start of the delay: a chunk is due ``one_way_ms`` after the kernel received it (``SO_TIMESTAMPNS``),
  not after this process woke up to read it, which would add a wake-up (~40 us) to every hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency (not on Windows); asyncio's loop stands in
    uvloop = None


class Due(Protocol):
    """What the scheduler wakes: one direction of a connection, whose head chunk is due (or, in the balancer,
    one leg of a request on the client's access link: movr.lab.links_access)."""

    def flush(self, now: float) -> None: ...


# The scheduler arms its timer early by its estimate of wake-up lateness: up a step after a late wake-up,
# down a ninth of one after an early one, which settles where nine in ten wake-ups are early (a stochastic
# quantile estimate), within a few dozen wake-ups of a lab starting, and never beyond the maximum (which
# also bounds how long it busy-waits for a due time).
_LEAD_UP_S = 9e-6
_LEAD_DOWN_S = 1e-6
_MAX_LEAD_S = 150e-6


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (lower per-event overhead, which is added latency in links and the balancer),
    else asyncio's."""
    return asyncio.new_event_loop() if uvloop is None else uvloop.new_event_loop()


# --- precise wake-ups ------------------------------------------------------------------------------------


class _TimerFd:
    """A Linux timerfd on CLOCK_MONOTONIC (the clock of ``time.monotonic``), armed at absolute due times."""

    _CLOCK_MONOTONIC = 1
    _TFD_TIMER_ABSTIME = 1
    _TFD_NONBLOCK = os.O_NONBLOCK
    _TFD_CLOEXEC = os.O_CLOEXEC

    _libc: Any = None

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        libc = self._load_libc()
        fd = libc.timerfd_create(self._CLOCK_MONOTONIC, self._TFD_NONBLOCK | self._TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._loop = loop
        self._callback = callback
        # One reusable struct: arming is on the per-chunk path, so no allocation there.
        self._spec = (ctypes.c_long * 4)(0, 0, 0, 0)  # it_interval (sec, nsec), it_value (sec, nsec)
        self._settime = libc.timerfd_settime
        loop.add_reader(fd, self._on_readable)

    @classmethod
    def _load_libc(cls) -> Any:
        if cls._libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)
            libc.timerfd_settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
            cls._libc = libc
        return cls._libc

    @classmethod
    def available(cls) -> bool:
        if not sys.platform.startswith("linux"):
            return False
        try:
            cls._load_libc()
        except (OSError, AttributeError):
            return False
        return True

    def arm(self, due: float) -> None:
        ns = int(due * 1e9)
        self._spec[2] = ns // 1_000_000_000
        self._spec[3] = ns % 1_000_000_000
        if self._settime(self.fd, self._TFD_TIMER_ABSTIME, self._spec, None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def disarm(self) -> None:
        self._spec[2] = self._spec[3] = 0  # an all-zero it_value disarms
        self._settime(self.fd, 0, self._spec, None)

    def _on_readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)  # clear the expiry count, or the loop would keep reporting it readable
        self._callback()

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


class _LoopTimer:
    """Fallback wake-up through the event loop's own timers (about a millisecond of granularity)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, due: float) -> None:
        self.disarm()
        self._handle = self._loop.call_later(max(0.0, due - time.monotonic()), self._callback)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self.disarm()


class Scheduler:
    """Wakes each direction whose head chunk is due. One timer for every link in the process.

    Only a direction's head chunk is in the heap: chunks behind it are due no earlier (constant delay), or
    must wait for it anyway (byte order), so they are handled when the direction flushes.

    Even a timerfd wakes an idle process some tens of microseconds late (more the idler the machine). So the
    timer is armed ``lead`` early, ``lead`` tracking the 90th percentile of how late wake-ups have been, and
    a wake-up that comes before the due time waits out the rest (at most ``lead``) on the clock: nine in ten
    wake-ups are then on time to the microsecond, the others late by less than before. The price is the
    wait: about the lead less the typical lateness, some tens of microseconds of a core per delivery.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, precise: bool = True) -> None:
        self._heap: list[tuple[float, int, Due]] = []
        self._seq = itertools.count()
        self._armed_at = float("inf")  # due time the timer is armed for
        self._wake_at = float("inf")  # when it is armed to fire (due - lead)
        self.lead = 0.0
        self.precise = precise and _TimerFd.available()
        self._timer: _TimerFd | _LoopTimer = (
            _TimerFd(loop, self._fire) if self.precise else _LoopTimer(loop, self._fire)
        )

    def add(self, due: float, half: Due) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), half))
        if due < self._armed_at:
            self._arm(due)

    def _arm(self, due: float) -> None:
        self._armed_at = due
        self._wake_at = due - self.lead
        self._timer.arm(self._wake_at)

    def _fire(self) -> None:
        heap = self._heap
        woke = time.monotonic()
        if self.precise and woke >= self._wake_at:
            # Track the 90th percentile of wake-ups' lateness (a stochastic quantile estimate, bounded).
            if woke - self._wake_at > self.lead:
                self.lead = min(self.lead + _LEAD_UP_S, _MAX_LEAD_S)
            else:
                self.lead = max(self.lead - _LEAD_DOWN_S, 0.0)
        if heap and 0.0 < heap[0][0] - woke <= _MAX_LEAD_S:
            due = heap[0][0]
            while time.monotonic() < due:
                pass  # at most _MAX_LEAD_S: cheaper than a second wake-up, and exact
        now = time.monotonic()  # never early: a chunk due a microsecond from now waits for its own wake-up
        while heap and heap[0][0] <= now:
            heapq.heappop(heap)[2].flush(now)
        if heap:
            self._arm(heap[0][0])
        else:
            self._armed_at = self._wake_at = float("inf")
            self._timer.disarm()

    def close(self) -> None:
        self._heap.clear()
        self._timer.close()


# Kernel receive timestamps (SO_TIMESTAMPNS, Linux; TCP since 4.13). A chunk's delay counts from when its
# bytes reached the link's socket, not from when the link got round to reading them: the wake-up of an
# idle process is tens of microseconds, which would otherwise be added to every hop.
_SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS; the socket module does not export it
_TIMESPEC = struct.Struct("@ll")
RECEIVE_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_MAX_ARRIVAL_AGE_S = 0.05  # beyond this the timestamp is not believable (clock step): use the read time


def enable_receive_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received data (read with ``recvmsg(n, RECEIVE_ANCILLARY_SIZE)``)."""
    if not RECEIVE_ANCILLARY_SIZE or not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def tune(sock: socket.socket) -> bool:
    """A socket for a latency path: non-blocking, no Nagle (it would hold a small reply back for up to 40 ms
    waiting for an ACK), received data stamped by the kernel; returns whether the stamps are on."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return enable_receive_timestamps(sock)


def arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When the data of a ``recvmsg`` reached the socket, on ``time.monotonic``'s clock; now if not known."""
    wall = time.time()  # first (see receive_age): bytes may come out delivered a little late, never early
    return time.monotonic() - receive_age(ancillary, wall)


def receive_age(ancillary: list[tuple[int, int, bytes]], wall: float) -> float:
    """How long ago (seconds, by wall clock ``wall``) the data of a ``recvmsg`` reached the socket; 0 if
    unknown. Read ``wall = time.time()`` before the monotonic time this age is subtracted from: if the
    process is preempted between the two reads the age comes out too small (bytes delivered a little
    late), never too large (bytes delivered early)."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            age = wall - (sec + nsec * 1e-9)  # the stamp is wall-clock time, so only its age is usable
            if 0.0 <= age < _MAX_ARRIVAL_AGE_S:
                return age
    return 0.0
