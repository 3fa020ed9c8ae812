"""TCP connections whose reads say when their bytes reached this machine: the balancer's two socket layers.

The balancer carries each request across the client's access link, and a leg sets off when its last byte
reached the balancer (movr.lab.links_access), as a link's does. A process woken by data after idling reads it
about 0.1 ms after the kernel received it (measured here: 0.10-0.11 ms at the median after 20 ms idle, a
raw socket read from the event loop), and that wake-up would be added to both legs of every request. So the
balancer reads with ``recvmsg`` and the kernel's receive timestamp (SO_TIMESTAMPNS, as the links do:
movr.lab.links.timing), which asyncio's and uvloop's transports cannot give.

`StampedTransport` is the part of asyncio's Transport the balancer's protocols use (write, close, pausing
reads, extra info), over a non-blocking socket driven with ``add_reader``/``add_writer``; `arrived` is when
the bytes of the latest ``data_received`` reached the socket, on ``time.monotonic``'s clock. `serve` listens,
`connect` dials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from movr.lab.links.timing import RECEIVE_ANCILLARY_SIZE, arrival, tune

log = logging.getLogger("movr.lab.balancer")

_READ_SIZE = 64 * 1024  # below malloc's mmap threshold: a larger read buffer costs an mmap per read
_ACCEPT_RETRY_S = 1.0  # out of file descriptors: stop accepting this long (as asyncio's servers do)
_ACCEPTS_PER_WAKE = 100  # a flood of connections must not keep the loop from serving the ones it has
# A connection closed while its peer may still be sending (a refused request's rest) first sends its end of
# stream and reads what comes for a while, as HTTP servers do: closing with unread bytes makes the kernel send
# a reset, which can reach the client before it has read the answer (RFC 9112 9.6).
_LINGER_S = 2.0
_LINGER_BYTES = 1024 * 1024


class StampedTransport:
    """One connection; its protocol (an ``asyncio.Protocol``) is told of it as asyncio's transports tell theirs."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol) -> None:
        self._stamped = tune(sock)
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._protocol = protocol
        self._extra = {"socket": sock, "peername": _address(sock.getpeername), "sockname": _address(sock.getsockname)}
        self._out = bytearray()  # what the socket has not taken yet
        self._reading = False
        self._writing = False
        self._closing = False
        self._told = False  # the protocol has been told the connection is lost
        self._linger: asyncio.TimerHandle | None = None
        self._lingered = 0
        self.arrived = time.monotonic()
        protocol.connection_made(self)  # type: ignore[arg-type]  # the subset of Transport protocols use
        if not self._closing:
            self.resume_reading()

    # --- what protocols call ---

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes) -> None:
        if self._closing or self._sock is None or not data:
            return  # as asyncio's transports: a write after close goes nowhere
        if not self._out:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._lose(error)
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._out += data
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._sock, self._on_writable)

    def pause_reading(self) -> None:
        if self._reading and self._sock is not None:
            self._reading = False
            self._loop.remove_reader(self._sock)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing and self._sock is not None:
            self._reading = True
            self._loop.add_reader(self._sock, self._on_readable)

    def close(self) -> None:
        """Write what is left, then end the stream (the protocol's `connection_lost` follows) and linger."""
        if self._closing:
            return
        self._closing = True
        if not self._out:
            self._end()

    def abort(self) -> None:
        self._closing = True
        self._lose(None)

    def _end(self) -> None:
        """Everything is written: send the end of stream, tell the protocol, and read (discarding) until the
        peer ends too, or for _LINGER_S or _LINGER_BYTES at most, before closing the socket."""
        sock = self._sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            self._lose(error)
            return
        self._loop.call_soon(self._protocol.connection_lost, None)
        self._told = True
        self._lingered = 0
        self._linger = self._loop.call_later(_LINGER_S, self._lose, None)
        if not self._reading:
            self._reading = True
            self._loop.add_reader(sock, self._on_readable)

    # --- the loop's callbacks ---

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(_READ_SIZE, RECEIVE_ANCILLARY_SIZE if self._stamped else 0)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lose(error)
            return
        if not data:  # the peer is done sending (and the end of a stream reads again and again: stop reading)
            self.pause_reading()
            if self._closing:
                if self._told:  # lingering, and the peer has ended too
                    self._lose(None)
                return  # still writing what is left: that ends the stream, and then this ends too
            # The balancer's protocols, as asyncio's default, then close (after writing what is left).
            if not getattr(self._protocol, "eof_received", lambda: None)():
                self.close()
            return
        if self._closing:  # closing: what the peer still sends is read only to be dropped
            self._lingered += len(data)
            if self._lingered > _LINGER_BYTES:
                self._lose(None)
            return
        self.arrived = arrival(ancillary)
        self._protocol.data_received(data)

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._lose(error)
            return
        del self._out[:sent]
        if not self._out:
            self._writing = False
            self._loop.remove_writer(sock)
            if self._closing:
                self._end()

    def _lose(self, error: Exception | None) -> None:
        """Close the socket now; the protocol hears of it on the loop's next turn, as from asyncio's transports."""
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._closing = True
        if self._linger is not None:
            self._linger.cancel()
        if self._reading:
            self._loop.remove_reader(sock)
        if self._writing:
            self._loop.remove_writer(sock)
        self._reading = self._writing = False
        self._out.clear()
        sock.close()
        if not self._told:
            self._told = True
            self._loop.call_soon(self._protocol.connection_lost, error)


def _address(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except OSError:
        return None


class StampedServer:
    """A listening socket whose connections are `StampedTransport`s, each with a protocol from `factory`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Any]) -> None:
        self._loop = loop
        self._factory = factory
        self.sockets = [sock]
        sock.setblocking(False)
        loop.add_reader(sock, self._accept)
        self._retry: asyncio.TimerHandle | None = None

    def _accept(self) -> None:
        listener = self.sockets[0]
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:  # out of file descriptors or memory: the clients wait in the backlog
                log.warning("cannot accept a connection (%s); trying again in %.0f s", error, _ACCEPT_RETRY_S)
                self._loop.remove_reader(listener)
                self._retry = self._loop.call_later(_ACCEPT_RETRY_S, self._loop.add_reader, listener, self._accept)
                return
            try:
                StampedTransport(self._loop, conn, self._factory())
            except Exception:
                log.exception("setting up a connection failed")
                conn.close()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock)
                sock.close()

    async def wait_closed(self) -> None:
        return None  # closing is immediate: nothing is left to wait for


async def serve(factory: Callable[[], Any], host: str, port: int) -> StampedServer:
    """Listen on host:port (0: a free port), as ``loop.create_server`` does for one address."""
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (
        await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return StampedServer(loop, sock, factory)


async def connect(factory: Callable[[], Any], host: str, port: int) -> tuple[StampedTransport, Any]:
    """A connection to host:port and its protocol, as ``loop.create_connection`` gives (OSError if it fails)."""
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        protocol = factory()
        transport = StampedTransport(loop, sock, protocol)
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return transport, protocol
