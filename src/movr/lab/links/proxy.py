"""One link and the connections it carries: each accepted connection and the one opened to the target for
it, bytes held in a FIFO per direction until due (a TCP path, not a packet shuffler), and the counters.

Sockets are driven directly with ``add_reader``/``recvmsg``/``sendmsg`` (no transports): that gives access to
receive timestamps (movr.lab.links.timing) and skips a layer per chunk. A chunk is never delivered before it
is due; a reset is passed on at once (a simplification).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections import deque
from typing import Any

from movr.lab.links.spec import LinkSpec
from movr.lab.links.timing import RECEIVE_ANCILLARY_SIZE, Scheduler, arrival, tune

# Bytes held in one direction's delay queue before the link stops reading that side. It acts as a TCP
# window (throughput <= window / RTT) and keeps memory bounded when one side floods.
_QUEUE_HIGH_BYTES = 4 * 1024 * 1024
_QUEUE_LOW_BYTES = 1024 * 1024


_CLIENT, _SERVER = 0, 1
_READ_SIZE = 64 * 1024  # below malloc's mmap threshold: a larger read buffer costs an mmap per read
_IOV_MAX = 512


def _abort(sock: socket.socket) -> None:
    """Close with a reset (RST), as a dropped path would leave the peer: no orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Half:
    """One direction of a pipe: a FIFO of (due time, chunk), a chunk of None marking end of stream."""

    __slots__ = ("chunks", "dst", "eof_delivered", "eof_queued", "pipe", "queued_bytes", "scheduled", "src")

    def __init__(self, pipe: Pipe, src: int) -> None:
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


class Pipe:
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

    def __init__(self, link: Link, loop: asyncio.AbstractEventLoop, client: socket.socket) -> None:
        self.link = link
        self.loop = loop
        self.socks: list[socket.socket | None] = [client, None]
        tune(client)
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
        tune(sock)
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
        arrived = arrival(ancillary)
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


class Link:
    def __init__(self, spec: LinkSpec, scheduler: Scheduler) -> None:
        self.spec = spec
        self.scheduler = scheduler
        self.delay_s = spec.one_way_ms / 1000.0
        self.down = False
        self.listener: socket.socket | None = None
        self.pipes: set[Pipe] = set()
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
