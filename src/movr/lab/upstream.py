"""The balancer's side of its connections to app servers: HTTP/1.1 over kept-alive connections, no more.

A general HTTP client library costs the balancer about as much per request again as its own server side (on a
small machine, most of a millisecond), and every microsecond here is charged to "the lab" in every latency the
benchmarks report. The balancer needs little of what such a client offers: it talks to app servers it started,
on 127.0.0.1, sends bodies it has already read, and reads whole responses. So this is that and only that:
a pool of idle connections per app, requests encoded in one piece before they are sent (the balancer encodes a
request before it carries it across the access link, so that only a write is left once it is due), responses
parsed by httptools (the C parser uvicorn uses), chunked bodies decoded, and a connection that the server closed
while idle replaced at once. Header names and values stay bytes, as they came: a proxy has no need to decode them.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from movr.lab import stamped
from movr.lab.stamped import StampedTransport

NO_BODY_STATUSES = frozenset({204, 304})  # answers that never carry a body (RFC 9112 6.3)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

Deliver = Callable[[Callable[[], None]], None]


class UpstreamError(ConnectionError):
    """The app server could not be reached, closed the connection mid-answer, or sent something unreadable."""


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # as the app sent them, in order, repeats kept (Set-Cookie)
    body: bytes
    received_at: float  # on time.monotonic()'s clock, when its last bytes reached the machine (movr.lab.stamped)


class _Connection(asyncio.Protocol):
    """One kept-alive connection to an app server, carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: StampedTransport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._head = False
        self._received = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._read_at = 0.0

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(StampedTransport, transport)  # UpstreamPool connects with these

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._read_at = cast(StampedTransport, self.transport).arrived  # when these bytes reached the machine
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("the app server switched protocols"))
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"unreadable answer from the app server: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._fail(UpstreamError("the app server closed the connection" + (f": {exc}" if exc else "")))

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._headers, self._body = [], []

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head:
            # A HEAD answer announces a length but carries no body: the parser cannot know, so it ends here,
            # and the connection (whose parser now expects a body) is not used again.
            self.reusable = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._head:
            return
        self.reusable = self.parser.should_keep_alive()
        self._finish()

    # --- the request ---

    def send(self, request: bytes, *, head: bool, deliver: Deliver | None) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._head, self._received, self._reason = head, False, b""
        self.reusable = False
        write = functools.partial(self._write, request)
        if deliver is None:
            write()
        else:
            deliver(write)
        return self._waiter

    def _write(self, request: bytes) -> None:
        if not self.closed:  # a connection lost (or given up) before its request was due gets nothing
            cast(StampedTransport, self.transport).write(request)

    @property
    def answered_nothing(self) -> bool:
        return not self._received

    def _finish(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            status = self.parser.get_status_code()
            body = b"" if status in NO_BODY_STATUSES else b"".join(self._body)
            self._waiter.set_result(UpstreamResponse(status, self._reason, self._headers, body, self._read_at))

    def _fail(self, error: UpstreamError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class UpstreamPool:
    """Kept-alive connections to one app server (`http://host:port`), opened as requests need them."""

    def __init__(self, base_url: str, *, max_idle: int = 64, connect_timeout: float = 2.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"app URL must be http://host:port, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.authority = f"{self.host}:{self.port}"
        self.host_header = self.authority.encode()  # what `encode_request` names the app's authority with
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: collections.deque[_Connection] = collections.deque()

    async def send(
        self, message: bytes, *, head: bool, timeout: float, deliver: Deliver | None = None
    ) -> UpstreamResponse:
        """Send one request (made by `encode_request`) and read the whole answer; UpstreamError if the app cannot
        answer. `head`: the request is a HEAD (its answer announces a length but has no body). `deliver`: given
        the write that sends the request, runs it when the request is due (the balancer's access link); without
        it the request is written at once."""
        async with asyncio.timeout(timeout):
            while True:
                connection, reused = await self._connection()
                try:
                    response = await connection.send(message, head=head, deliver=deliver)
                except UpstreamError:
                    # An idle connection the server closed just as we wrote: it saw nothing, so send again
                    # on a new one. A fresh connection that fails is a failed app.
                    if reused and connection.answered_nothing:
                        continue
                    raise
                except BaseException:
                    connection.close()  # cancelled or timed out mid-answer: the connection is out of step
                    raise
                if connection.reusable and len(self._idle) < self.max_idle:
                    self._idle.append(connection)
                else:
                    connection.close()
                return response

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the likeliest to be alive
            if not connection.closed:
                return connection, True
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await stamped.connect(_Connection, self.host, self.port)
        except (OSError, TimeoutError) as error:
            raise UpstreamError(f"cannot connect to the app server at {self.authority}: {error}") from error
        return connection, False

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def encode_request(
    method: str, target: bytes, authority: bytes | None, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """One HTTP/1.1 request in one piece: `Host: authority` first (None: a Host is among `headers`), the headers as
    given, then the length of `body` (which is whole: a proxy that read it sends it with its length)."""
    parts = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)]
    if authority is not None:
        parts.append(b"Host: %s\r\n" % authority)
    parts += [b"%s: %s\r\n" % header for header in headers]
    if body or method in _BODY_METHODS:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)
