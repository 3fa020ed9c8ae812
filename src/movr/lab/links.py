"""Links: TCP proxies that carry the WAN delay of the latency matrix, and count what crosses them.

Every cross-region byte in the lab passes a link. A link listens on 127.0.0.1 only, opens one connection to
its target per accepted connection, and forwards each chunk in each direction ``one_way_ms`` after it read
it, keeping byte order (one FIFO per direction: a TCP path, not a packet shuffler). This module is the only
place in the product where waiting stands in for distance (ARCHITECTURE.md, law 1).

Links count, per link: connections (total and current), bytes each way, and *round trips*: request/response
turns, one each time data flows server->client after data has flowed client->server since the last turn, so a
pipelined burst counts once (law 2: count before you time).

Timing precision (target: added error p50 <= 0.3 ms, p99 <= 2 ms at 1,000 round trips/s; see
``movr bench links``). What it takes, each measured on the lab machine:
- the delivery timer: asyncio's default loop (epoll timeouts in whole milliseconds, rounded up) and uvloop
  (libuv's millisecond clock) wake ~0.4 ms late at the median. On Linux the timer is a ``timerfd`` armed at
  the absolute CLOCK_MONOTONIC due time of the earliest pending chunk and watched by the loop like a socket
  (still ~30-60 us late from idle, so it is armed early by the median lateness seen so far and waits out
  the rest on the clock, at most 150 us); elsewhere it falls back to ``loop.call_later``;
- the start of the delay: a chunk is due ``one_way_ms`` after the kernel received it (``SO_TIMESTAMPNS``),
  not after this process woke up to read it, which would add a wake-up (~40 us) to every hop;
- sockets driven directly with ``add_reader``/``recvmsg``/``sendmsg`` (no transports), and ``gc.freeze()``
  after start-up in the server process, whose full collections otherwise pause delivery for milliseconds.
A chunk is never delivered before it is due; a reset is passed on at once (a simplification).

Run as a process: ``MOVR_LAB_TOKEN=... python -m movr.lab.links --spec FILE.json --control-port N``. On start
it prints one JSON line ``{"event": "ready", "control_port": N, "links": {name: port}}`` to stdout, then serves
``GET /links``, ``POST /links/{name}`` (``{"one_way_ms": x}``, ``{"down": bool}`` or, to re-point it at another
server, ``{"target_port": n, "dst": name, "kind": "wan"|"local"}``) and ``POST /reset`` on
127.0.0.1:N, each only with the lab's token (``movr.lab.control``), and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import heapq
import itertools
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movr.lab import control

LISTEN_HOST = "127.0.0.1"  # links never listen on another address: the lab is one machine, not a network
LINK_KINDS = ("wan", "local")

# Bytes held in one direction's delay queue before the link stops reading that side. It acts as a TCP
# window (throughput <= window / RTT) and keeps memory bounded when one side floods.
_QUEUE_HIGH_BYTES = 4 * 1024 * 1024
_QUEUE_LOW_BYTES = 1024 * 1024
# The scheduler arms its timer early by its estimate of wake-up lateness, adjusted by this step per
# wake-up and never beyond the maximum (which also bounds how long it busy-waits for a due time).
_LEAD_STEP_S = 2e-6
_MAX_LEAD_S = 150e-6


@dataclass(frozen=True)
class LinkSpec:
    """One link: listen on 127.0.0.1:listen_port, forward to target, ``one_way_ms`` each direction.

    ``listen_port`` 0 asks for an ephemeral port (tests, benches); the server reports the port it bound.
    ``src``/``dst`` name the two ends (regions, or "client"/a region for a client link) and
    ``kind`` is "wan" (between regions) or "local" (within a region).
    """

    name: str
    listen_port: int
    target_port: int
    one_way_ms: float
    kind: str
    src: str
    dst: str
    target_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.kind not in LINK_KINDS:
            raise ValueError(f"link {self.name!r}: kind must be one of {LINK_KINDS}, not {self.kind!r}")
        if self.one_way_ms < 0:
            raise ValueError(f"link {self.name!r}: one_way_ms must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_specs(path: str | Path) -> list[LinkSpec]:
    """Read a spec file: a JSON list of link objects, or ``{"links": [...]}``."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data["links"]
    specs = [LinkSpec.from_dict(item) for item in data]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate link names in {path}")
    return specs


def dump_specs(specs: Iterable[LinkSpec], path: str | Path) -> None:
    Path(path).write_text(json.dumps({"links": [s.to_dict() for s in specs]}, indent=2) + "\n")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (lower per-event overhead, which is added latency here), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps the module importable
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


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


class _Scheduler:
    """Wakes each direction whose head chunk is due. One timer for every link in the process.

    Only a direction's head chunk is in the heap: chunks behind it are due no earlier (constant delay), or
    must wait for it anyway (byte order), so they are handled when the direction flushes.

    Even a timerfd wakes an idle process some tens of microseconds late (more the idler the machine). So the
    timer is armed ``lead`` early, ``lead`` tracking the median of how late wake-ups have been, and a wake-up
    that comes before the due time waits out the rest (at most ``lead``) on the clock: half the wake-ups
    are then on time to the microsecond, and the other half late by less than before.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, precise: bool = True) -> None:
        self._heap: list[tuple[float, int, _Half]] = []
        self._seq = itertools.count()
        self._armed_at = float("inf")  # due time the timer is armed for
        self._wake_at = float("inf")  # when it is armed to fire (due - lead)
        self.lead = 0.0
        self.precise = precise and _TimerFd.available()
        self._timer: _TimerFd | _LoopTimer = (
            _TimerFd(loop, self._fire) if self.precise else _LoopTimer(loop, self._fire)
        )

    def add(self, due: float, half: _Half) -> None:
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
            # Track the median lateness of wake-ups (a stochastic quantile estimate, bounded).
            if woke - self._wake_at > self.lead:
                self.lead = min(self.lead + _LEAD_STEP_S, _MAX_LEAD_S)
            else:
                self.lead = max(self.lead - _LEAD_STEP_S, 0.0)
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


# --- one proxied connection ------------------------------------------------------------------------------

_CLIENT, _SERVER = 0, 1
_READ_SIZE = 64 * 1024  # below malloc's mmap threshold: a larger read buffer costs an mmap per read
_IOV_MAX = 512

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


def _tune(sock: socket.socket) -> None:
    """Non-blocking, no Nagle, receive timestamps."""
    sock.setblocking(False)
    # Nagle would hold a small reply back for up to 40 ms waiting for an ACK: fatal to a latency model.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    enable_receive_timestamps(sock)


def _abort(sock: socket.socket) -> None:
    """Close with a reset (RST), as a dropped path would leave the peer: no orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Half:
    """One direction of a pipe: a FIFO of (due time, chunk), a chunk of None marking end of stream."""

    __slots__ = ("chunks", "dst", "eof_delivered", "eof_queued", "pipe", "queued_bytes", "scheduled", "src")

    def __init__(self, pipe: _Pipe, src: int) -> None:
        self.pipe = pipe
        self.src = src
        self.dst = 1 - src
        self.chunks: deque[tuple[float, bytes | None]] = deque()
        self.queued_bytes = 0
        self.scheduled = False
        self.eof_queued = False
        self.eof_delivered = False

    def push(self, data: bytes | None, due: float) -> None:
        self.chunks.append((due, data))
        if data is not None:
            self.queued_bytes += len(data)
        if not self.scheduled:
            self.scheduled = True
            self.pipe.link.scheduler.add(due, self)

    def flush(self, now: float) -> None:
        """Write every chunk due by ``now``, in order; reschedule for the next one."""
        self.scheduled = False
        pipe = self.pipe
        if pipe.socks[self.dst] is None:
            return  # the target connection is not up yet; connecting kicks this direction when it is
        chunks = self.chunks
        batch: list[bytes] = []
        eof = False
        while chunks and chunks[0][0] <= now:
            data = chunks.popleft()[1]
            if data is None:
                eof = True
                break
            self.queued_bytes -= len(data)
            batch.append(data)
        if batch:
            pipe.send(self.dst, batch)
        if eof:
            pipe.deliver_eof(self)
        if chunks:
            self.scheduled = True
            pipe.link.scheduler.add(chunks[0][0], self)
        pipe.update_reading(self.src)

    def kick(self) -> None:
        if self.chunks and not self.scheduled:
            self.scheduled = True
            self.pipe.link.scheduler.add(self.chunks[0][0], self)


class _Pipe:
    """One accepted client connection and the connection the link opened to the target for it.

    Sockets are driven directly (``add_reader``/``add_writer``, ``recvmsg``/``sendmsg``) rather than
    through transports: that is what gives access to receive timestamps, and it skips a layer per chunk.
    """

    __slots__ = (
        "awaiting_reply",
        "closed",
        "connect_task",
        "halves",
        "link",
        "loop",
        "out",
        "out_bytes",
        "reading",
        "socks",
        "writing",
    )

    def __init__(self, link: _Link, loop: asyncio.AbstractEventLoop, client: socket.socket) -> None:
        self.link = link
        self.loop = loop
        self.socks: list[socket.socket | None] = [client, None]
        _tune(client)
        self.halves = (_Half(self, _CLIENT), _Half(self, _SERVER))
        self.out: tuple[deque[memoryview | bytes], deque[memoryview | bytes]] = (deque(), deque())
        self.out_bytes = [0, 0]
        self.reading = [False, False]
        self.writing = [False, False]
        self.awaiting_reply = False  # data went client->server since the last counted round trip
        self.closed = False
        link.pipes.add(self)
        link.connections_total += 1
        self._read(_CLIENT, True)
        self.connect_task = loop.create_task(self._connect())

    async def _connect(self) -> None:
        link = self.link
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await self.loop.sock_connect(sock, (link.spec.target_host, link.spec.target_port))
        except OSError:
            sock.close()
            link.connect_errors += 1
            self.connect_task = None  # this task: nothing to cancel
            self.abort()
            return
        except asyncio.CancelledError:
            sock.close()
            raise
        if self.closed:
            _abort(sock)
            return
        self.socks[_SERVER] = sock
        _tune(sock)
        self._read(_SERVER, True)
        self.halves[_CLIENT].kick()  # client bytes that arrived while connecting may be due already

    def _read(self, side: int, on: bool) -> None:
        sock = self.socks[side]
        if sock is None or on == self.reading[side]:
            return
        self.reading[side] = on
        if on:
            self.loop.add_reader(sock, self._on_readable, side)
        else:
            self.loop.remove_reader(sock)

    def _on_readable(self, side: int) -> None:
        sock = self.socks[side]
        if sock is None:
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(_READ_SIZE, RECEIVE_ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # Reset by the peer: pass the reset on at once rather than after the delay (a simplification;
            # nothing in the lab relies on when a reset arrives).
            self.abort()
            return
        wall = time.time()
        arrived = time.monotonic() - receive_age(ancillary, wall) if ancillary else time.monotonic()
        half = self.halves[side]
        link = self.link
        if not data:
            self._read(side, False)
            if not half.eof_queued:
                half.eof_queued = True  # the end of stream travels the link like the bytes before it
                half.push(None, arrived + link.delay_s)
            return
        if side == _CLIENT:
            link.bytes_c2s += len(data)
            self.awaiting_reply = True
        else:
            link.bytes_s2c += len(data)
            if self.awaiting_reply:
                link.round_trips += 1
                self.awaiting_reply = False
        if link.delay_s == 0.0 and not half.chunks and self.socks[half.dst] is not None:
            self.send(half.dst, [data])  # no delay and nothing ahead of it: skip the timer's wake-up
        else:
            half.push(data, arrived + link.delay_s)
        if half.queued_bytes > _QUEUE_HIGH_BYTES:
            self.update_reading(side)

    def send(self, side: int, chunks: list[bytes]) -> None:
        """Write chunks to a side now, keeping what the socket does not take for when it is writable."""
        out = self.out[side]
        if not out and len(chunks) == 1:
            # The common case, a small chunk and an empty socket buffer: one syscall, no bookkeeping.
            sock = self.socks[side]
            assert sock is not None
            data = chunks[0]
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.abort()
                return
            if sent == len(data):
                return
            chunks = [memoryview(data)[sent:]]
        writing = bool(out)
        out.extend(chunks)
        self.out_bytes[side] += sum(len(c) for c in chunks)
        if not writing:
            self._on_writable(side)

    def _on_writable(self, side: int) -> None:
        """Write what a side's socket has not taken yet; called at once by send, then by the loop."""
        sock = self.socks[side]
        if sock is None:
            return
        out = self.out[side]
        while out:
            # sendmsg gathers without copying, at most _IOV_MAX buffers per call (the kernel's limit).
            batch = list(itertools.islice(out, _IOV_MAX))
            try:
                sent = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.abort()
                return
            self.out_bytes[side] -= sent
            full = sent < sum(len(c) for c in batch)
            while sent:
                head = out[0]
                if sent >= len(head):
                    sent -= len(head)
                    out.popleft()
                else:
                    out[0] = memoryview(head)[sent:]
                    sent = 0
            if full:
                break  # the socket's buffer is full: wait until the loop says it is writable
        if out and not self.writing[side]:
            self.writing[side] = True
            self.loop.add_writer(sock, self._on_writable, side)
        elif not out:
            if self.writing[side]:
                self.writing[side] = False
                self.loop.remove_writer(sock)
            if self.halves[1 - side].eof_delivered:
                self._shut(side)
        self.update_reading(1 - side)

    def update_reading(self, src: int) -> None:
        """Stop reading a side while what it sent piles up (delay queue or unsent bytes): backpressure."""
        if self.halves[src].eof_queued or self.closed:
            return
        backlog = self.halves[src].queued_bytes + self.out_bytes[1 - src]
        if self.reading[src]:
            if backlog > _QUEUE_HIGH_BYTES:
                self._read(src, False)
        elif backlog < _QUEUE_LOW_BYTES:
            self._read(src, True)

    def deliver_eof(self, half: _Half) -> None:
        """End of stream reached the far side: half-close it once its unsent bytes are out."""
        half.eof_delivered = True
        if not self.out[half.dst]:
            self._shut(half.dst)

    def _shut(self, side: int) -> None:
        """Everything bound for ``side`` has been written, end of stream included."""
        if self.halves[side].eof_delivered and not self.out[1 - side]:
            self._release(reset=False)  # the other way has ended too: an orderly close
            return
        sock = self.socks[side]
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_WR)  # half-close: the other way may still carry bytes
            except OSError:
                self.abort()

    def abort(self) -> None:
        """Drop the connection both ways at once (a reset, a failed target, a link going down)."""
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self._release(reset=True)

    def _release(self, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for side, sock in enumerate(self.socks):
            if sock is None:
                continue
            if self.reading[side]:
                self.loop.remove_reader(sock)
            if self.writing[side]:
                self.loop.remove_writer(sock)
            if reset:
                _abort(sock)
            else:
                sock.close()
            self.socks[side] = None
        for half in self.halves:
            half.chunks.clear()
            half.queued_bytes = 0
        self.link.pipes.discard(self)


# --- links and the server that runs them -----------------------------------------------------------------


class _Link:
    def __init__(self, spec: LinkSpec, scheduler: _Scheduler) -> None:
        self.spec = spec
        self.scheduler = scheduler
        self.delay_s = spec.one_way_ms / 1000.0
        self.down = False
        self.listener: socket.socket | None = None
        self.pipes: set[_Pipe] = set()
        self.reset()

    def reset(self) -> None:
        self.connections_total = 0
        self.connect_errors = 0
        self.bytes_c2s = 0
        self.bytes_s2c = 0
        self.round_trips = 0

    def counters(self) -> dict[str, int]:
        return {
            "connections_total": self.connections_total,
            "connections_current": len(self.pipes),
            "connect_errors": self.connect_errors,
            "bytes_c2s": self.bytes_c2s,
            "bytes_s2c": self.bytes_s2c,
            "round_trips": self.round_trips,
        }

    def describe(self) -> dict[str, Any]:
        spec = self.spec.to_dict()
        spec["one_way_ms"] = self.delay_s * 1000.0
        return {**spec, "down": self.down, "counters": self.counters()}


class LinkServer:
    """Runs a set of links in the current event loop.

    Counters, per link: ``connections_total``, ``connections_current``, ``connect_errors``,
    ``bytes_c2s`` (client->server, i.e. towards the target), ``bytes_s2c``, ``round_trips``.
    """

    def __init__(self, specs: Iterable[LinkSpec], *, precise_timer: bool = True) -> None:
        self._specs = list(specs)
        names = [s.name for s in self._specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate link names")
        self._precise_timer = precise_timer
        self._links: dict[str, _Link] = {}
        self._scheduler: _Scheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._scheduler = _Scheduler(self._loop, precise=self._precise_timer)
        try:
            for spec in self._specs:
                link = _Link(spec, self._scheduler)
                self._links[spec.name] = link
                self._listen(link)
                if spec.listen_port == 0:
                    assert link.listener is not None
                    link.spec = dataclasses.replace(spec, listen_port=link.listener.getsockname()[1])
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every listener and every connection."""
        for link in self._links.values():
            self._close_listener(link)
            self._drop_connections(link)
        await asyncio.sleep(0)  # let cancelled connection attempts finish
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None

    @property
    def precise_timer(self) -> bool:
        return self._scheduler is not None and self._scheduler.precise

    def names(self) -> list[str]:
        return list(self._links)

    def spec(self, name: str) -> LinkSpec:
        """The link's spec, with the port actually bound (differs from the input when it asked for 0)."""
        return self._link(name).spec

    def port(self, name: str) -> int:
        return self._link(name).spec.listen_port

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: link.counters() for name, link in self._links.items()}

    def describe(self) -> list[dict[str, Any]]:
        """Every link: its spec (current delay), whether it is down, and its counters."""
        return [link.describe() for link in self._links.values()]

    def reset_counters(self) -> None:
        for link in self._links.values():
            link.reset()

    def set_delay(self, name: str, one_way_ms: float) -> None:
        """Change the one-way delay; bytes already in flight keep the delay they were read with."""
        if one_way_ms < 0:
            raise ValueError("one_way_ms must be >= 0")
        self._link(name).delay_s = one_way_ms / 1000.0

    def set_target(self, name: str, target_port: int, *, dst: str | None = None, kind: str | None = None) -> None:
        """Point the link at another server (failover re-routing); its name and listening port stay.

        Connections it carries go to the old target, so they are dropped (a reset), as a client of a
        failed-over database would see; new connections reach the new target. ``dst``/``kind`` describe the
        new far end (the caller sets the delay that goes with it through ``set_delay``).
        """
        if not 0 < int(target_port) < 65536:
            raise ValueError("target_port must be a TCP port")
        link = self._link(name)
        changes: dict[str, Any] = {"target_port": int(target_port)}
        if dst is not None:
            changes["dst"] = str(dst)
        if kind is not None:
            changes["kind"] = kind
        link.spec = dataclasses.replace(link.spec, **changes)  # validates kind
        self._drop_connections(link)

    def set_down(self, name: str, down: bool) -> None:
        """A down link refuses new connections (its port is closed) and drops the ones it carries."""
        link = self._link(name)
        if down == link.down:
            return
        if down:
            link.down = True
            self._close_listener(link)
            self._drop_connections(link)
        else:
            self._listen(link)  # raises OSError if the port was taken meanwhile; the link stays down
            link.down = False

    def _link(self, name: str) -> _Link:
        try:
            return self._links[name]
        except KeyError:
            raise KeyError(f"no link named {name!r}") from None

    def _listen(self, link: _Link) -> None:
        spec = link.spec
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Reuse: set_down(False) must re-listen on the port while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LISTEN_HOST, spec.listen_port))
            sock.listen(512)
        except OSError as exc:
            sock.close()
            message = f"link {spec.name!r}: cannot listen on {LISTEN_HOST}:{spec.listen_port}: {exc}"
            raise OSError(exc.errno, message) from exc
        sock.setblocking(False)
        link.listener = sock
        assert self._loop is not None
        self._loop.add_reader(sock, self._accept, link)

    def _accept(self, link: _Link) -> None:
        listener = link.listener
        assert self._loop is not None
        for _ in range(64):  # bounded, so a connection storm cannot starve delivery
            if listener is None:
                return
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. the peer reset before we accepted; nothing to carry
            _Pipe(link, self._loop, client)

    def _close_listener(self, link: _Link) -> None:
        if link.listener is not None:
            assert self._loop is not None
            self._loop.remove_reader(link.listener)
            link.listener.close()  # closed port: new connections are refused, as for a down path
            link.listener = None

    @staticmethod
    def _drop_connections(link: _Link) -> None:
        for pipe in list(link.pipes):
            pipe.abort()


# --- a link server on a background thread (tests, in-process benches) ------------------------------------


class LinkThread:
    """A LinkServer on its own thread and event loop; every method is safe to call from other threads."""

    def __init__(self, specs: Iterable[LinkSpec], *, precise_timer: bool = True) -> None:
        self._loop = new_event_loop()
        self.server = LinkServer(specs, precise_timer=precise_timer)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="movr-links", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            self._loop.close()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self.server.stop())
            self._loop.close()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def counters(self) -> dict[str, dict[str, int]]:
        return self._call(self.server.counters)

    def describe(self) -> list[dict[str, Any]]:
        return self._call(self.server.describe)

    def port(self, name: str) -> int:
        return self._call(self.server.port, name)

    def set_delay(self, name: str, one_way_ms: float) -> None:
        self._call(self.server.set_delay, name, one_way_ms)

    def set_down(self, name: str, down: bool) -> None:
        self._call(self.server.set_down, name, down)

    def set_target(self, name: str, target_port: int, *, dst: str | None = None, kind: str | None = None) -> None:
        self._call(lambda: self.server.set_target(name, target_port, dst=dst, kind=kind))

    def reset_counters(self) -> None:
        self._call(self.server.reset_counters)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> LinkThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_links_in_thread(specs: Iterable[LinkSpec], *, precise_timer: bool = True) -> LinkThread:
    """Start links on a background thread; returns a handle with counters/set_delay/set_down/close."""
    return LinkThread(specs, precise_timer=precise_timer)


# --- the control API -------------------------------------------------------------------------------------


def make_control_app(server: LinkServer, token: str) -> Any:
    """The HTTP control API of a link server process (aiohttp, on the links' own loop), behind `token`."""
    from aiohttp import web

    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(control.error_body(code, message), status=status)

    async def list_links(request: web.Request) -> web.Response:
        return web.json_response(server.describe())

    async def change_link(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in server.names():
            return error(404, "not_found", f"no link named {name!r}")
        try:
            body = await request.json()
            if not isinstance(body, dict) or not ({"one_way_ms", "down", "target_port"} & body.keys()):
                raise ValueError('expected {"one_way_ms": x}, {"down": true|false} or {"target_port": n}')
            if "target_port" in body:
                server.set_target(name, int(body["target_port"]), dst=body.get("dst"), kind=body.get("kind"))
            if "one_way_ms" in body:
                server.set_delay(name, float(body["one_way_ms"]))
            if "down" in body:
                if not isinstance(body["down"], bool):
                    raise ValueError('"down" must be true or false')
                server.set_down(name, body["down"])
        except (ValueError, TypeError) as exc:
            return error(400, "bad_request", str(exc))
        except OSError as exc:
            return error(409, "conflict", str(exc))
        return web.json_response(next(link for link in server.describe() if link["name"] == name))

    async def reset(request: web.Request) -> web.Response:
        server.reset_counters()
        return web.json_response({"reset": True})

    guarded = control.guard(token)
    app = web.Application()
    app.router.add_get("/links", guarded(list_links))
    app.router.add_post("/links/{name}", guarded(change_link))
    app.router.add_post("/reset", guarded(reset))
    return app


def _control_request(control_port: int, path: str, token: str, body: Any = None, timeout: float = 5.0) -> Any:
    return control.call(f"http://{LISTEN_HOST}:{control_port}{path}", token, body, timeout)


def fetch_links(control_port: int, *, token: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """``GET /links`` of a link server process: every link's spec, state and counters."""
    return _control_request(control_port, "/links", token, timeout=timeout)


def fetch_counters(control_port: int, *, token: str, timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """The counters of every link of a link server process, by link name."""
    return {link["name"]: link["counters"] for link in fetch_links(control_port, token=token, timeout=timeout)}


def post_link(
    control_port: int,
    name: str,
    *,
    token: str,
    one_way_ms: float | None = None,
    down: bool | None = None,
    timeout: float = 5.0,
    target_port: int | None = None,
    dst: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Change a link of a link server process at run time; returns the link as the server now sees it.

    ``target_port`` (with ``dst`` and ``kind`` describing the new far end) re-points the link at another
    server, dropping the connections it carries; it is applied before a delay given in the same call.
    """
    body: dict[str, Any] = {}
    if target_port is not None:
        body["target_port"] = target_port
        if dst is not None:
            body["dst"] = dst
        if kind is not None:
            body["kind"] = kind
    if one_way_ms is not None:
        body["one_way_ms"] = one_way_ms
    if down is not None:
        body["down"] = down
    return _control_request(control_port, f"/links/{name}", token, body, timeout)


def reset_counters(control_port: int, *, token: str, timeout: float = 5.0) -> None:
    _control_request(control_port, "/reset", token, {}, timeout)


# --- the link server process -----------------------------------------------------------------------------


async def serve(specs: list[LinkSpec], control_port: int, token: str) -> None:
    """Run links and their control API (behind `token`) until SIGTERM or SIGINT."""
    from aiohttp import web

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = LinkServer(specs)
    await server.start()
    runner = web.AppRunner(make_control_app(server, token), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LISTEN_HOST, control_port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else control_port
        ready = {
            "event": "ready",
            "pid": os.getpid(),
            "control_port": bound,
            "precise_timer": server.precise_timer,
            "links": {name: server.port(name) for name in server.names()},
        }
        print(json.dumps(ready), flush=True)
        # Everything allocated so far (aiohttp, the links) lives as long as the process: keep it out of
        # the cyclic collector's full passes, which would otherwise pause delivery for milliseconds.
        gc.freeze()
        await stop.wait()
    finally:
        await server.stop()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m movr.lab.links", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="JSON file: a list of links, or {'links': [...]}")
    parser.add_argument("--control-port", type=int, required=True, help="HTTP control API port (0: any)")
    args = parser.parse_args(argv)
    try:
        token = control.token_from_env()
    except control.ControlTokenError as exc:
        print(f"movr.lab.links: {exc}", file=sys.stderr)
        return 2
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(load_specs(args.spec), args.control_port, token))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # A taken port or a bad spec: one line for the supervisor's log, not a traceback.
        print(f"movr.lab.links: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
