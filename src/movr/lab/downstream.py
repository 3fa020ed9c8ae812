"""The balancer's side of its clients' connections: HTTP/1.1 parsed by httptools, answers written in one piece.

Every microsecond here is charged to "the lab" in every latency a benchmark reports, and aiohttp's server (its
request and response objects, routing, header multidicts, a write per part) was most of what the balancer's
forward path cost in Python. Forwarding needs little of a web framework: read a whole request, hand it to the
balancer, write the answer it encodes, keep the connection for the next request. So this is that: requests
parsed by httptools (the C parser uvicorn uses), answered one at a time per connection in the order they came,
bodies up to a limit, idle connections closed after a while. With it (and the access link's wait on the links'
timer), `movr bench path` measured the balancer's own cost on a read after 20 ms idle at 0.74 ms, against 1.52
ms with aiohttp's server (docs/lab.md, each hop's cost before and after).

Requests for the balancer itself (its control API and the lab console: `own`) are not forwarded: each goes whole
over an in-process socket pair, one per client connection, to the balancer's aiohttp application, and its answer
(streamed, as the console's event stream needs) comes back to the client byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import http
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, cast
from urllib.parse import unquote

import httptools

from movr.lab import stamped
from movr.lab.control import error_body
from movr.lab.stamped import StampedTransport
from movr.lab.upstream import NO_BODY_STATUSES, encode_request

log = logging.getLogger("movr.lab.balancer")

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; more is no client of ours
MAX_HEADERS = 100  # as many as a request may carry (Python's http.client takes no more in an answer)
IDLE_TIMEOUT_S = 75.0  # a kept-alive connection with nothing to do is closed after this (as aiohttp's server)
_SWEEP_S = 5.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# The app's error codes (movr.web.errors), so that a client reads the balancer's refusals as it reads the app's.
_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    413: "payload_too_large",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
}


@dataclass(slots=True)
class Request:
    """One whole request as the client sent it (a chunked body arrives de-chunked)."""

    method: str
    target: bytes  # path and query, as sent
    headers: list[tuple[bytes, bytes]]  # as sent, in order, repeats kept
    body: bytes
    peer: str  # the client's address
    local: bytes  # the address the client connected to, `host:port` (a Host header's stand-in)
    keep_alive: bool
    http_10: bool
    index: dict[bytes, bytes] = field(default_factory=dict)  # lower-case name -> its first value
    received_at: float = 0.0  # on time.monotonic()'s clock, when its last bytes reached the machine (0.0: not known)

    def header(self, name: bytes) -> bytes | None:
        """The first value of the header `name` (lower case); None if the client sent none."""
        return self.index.get(name)

    def joined(self, name: bytes) -> bytes | None:
        """Every value of a list-valued header `name` (lower case), joined by ", " (RFC 9110 5.3)."""
        if name not in self.index:
            return None
        return b", ".join(value for key, value in self.headers if key.lower() == name)

    @property
    def raw_path(self) -> str:
        """The path as sent, still percent-encoded (so a log line stays one line), without the query."""
        return self.target.partition(b"?")[0].decode("latin-1")

    @property
    def path(self) -> str:
        """The path, percent-decoded, without the query (as the console shows it)."""
        path = self.raw_path
        return unquote(path) if "%" in path else path


class Answer(NamedTuple):
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # neither Content-Length nor any hop-by-hop header
    body: bytes
    length: int | None  # the Content-Length to announce; None: none (a HEAD or 304 whose app announced none)


Send = Callable[[bytes], None]
# Forwards a request and calls `send` once with the answer, encoded (encode_answer), when it is due: perhaps
# after the coroutine has returned.
Forward = Callable[[Request, Send], Awaitable[None]]


def encode_answer(answer: Answer, request: Request | None) -> bytes:
    """An answer in one piece, for `request` (None: a refusal, after which the connection closes)."""
    status = answer.status
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, answer.reason)]
    parts += [b"%s: %s\r\n" % header for header in answer.headers]
    if answer.length is not None and status >= 200 and status != 204:
        parts.append(b"Content-Length: %d\r\n" % answer.length)
    if request is None or not request.keep_alive:
        parts.append(b"Connection: close\r\n")
    elif request.http_10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if status >= 200 and status not in NO_BODY_STATUSES and (request is None or request.method != "HEAD"):
        parts.append(answer.body)
    return b"".join(parts)


def error_answer(
    request: Request | None, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> Answer:
    """A short answer from the balancer itself: HTML for browsers, else JSON shaped as the app's errors."""
    accept = request.header(b"accept") if request is not None else None
    if accept is not None and b"text/html" in accept:
        body = f"<!doctype html><title>MovR balancer</title><h1>{status}</h1><p>{html.escape(message)}</p>\n"
        content_type = b"text/html; charset=utf-8"
    else:
        body = json.dumps(error_body(_ERROR_CODES.get(status, "error"), message))
        content_type = b"application/json; charset=utf-8"
    data = body.encode()
    reason = http.HTTPStatus(status).phrase.encode()
    return Answer(status, reason, [(b"Content-Type", content_type), *(headers or [])], data, len(data))


class _Refusal(Exception):
    """A request this door answers itself, with `status`, and then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _ClientConnection(asyncio.Protocol):
    """One client's connection: its requests, parsed as they come and answered in their order."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._parser = httptools.HttpRequestParser(self)
        self.transport: StampedTransport | None = None
        self._peer = ""
        self._local = b""
        self._queue: deque[Request | bytes] = deque()  # requests, or a refusal's answer (the last item)
        self.busy = False  # an answer is being made or streamed
        self._done_reading = False  # after a refusal or an upgrade: nothing more is HTTP to us
        self.last_active = self._arrived = time.monotonic()
        self._pipe: _OwnPipe | None = None
        self._last: Request | None = None  # the latest request read
        self._passed_through = False  # some of the own application's answer has been passed on
        self._new_message()

    def _new_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._index: dict[bytes, bytes] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(StampedTransport, transport)  # FrontDoor's server makes these
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self._peer = str(peer[0]) if peer else ""
        self._local = f"{local[0]}:{local[1]}".encode() if local else b""
        self._door.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        # When these bytes reached the machine (the kernel's stamp): when the requests they complete arrived.
        self._arrived = self.transport.arrived if self.transport is not None else self.last_active
        if self._done_reading:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Answered as a plain request (Upgrade is hop-by-hop: never forwarded), and then the connection
            # closes: what follows it is not HTTP.
            self._done_reading = True
            if self._last is not None:
                self._last.keep_alive = False
            self._next()
        except httptools.HttpParserCallbackError as error:
            refusal = error.__context__
            if not isinstance(refusal, _Refusal):
                log.error("reading a request failed", exc_info=refusal)
                refusal = _Refusal(500, "the balancer failed to read the request: see its log")
            self._refuse(refusal.status, str(refusal))
        except httptools.HttpParserError as error:
            self._refuse(400, f"that is not a readable HTTP/1.1 request: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._door.forget(self)
        self._queue.clear()
        if self._pipe is not None:
            self._pipe.close()

    # --- httptools callbacks ---

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # with its ": " and CRLF, so that empty ones count too
        if len(self._headers) >= MAX_HEADERS:
            raise _Refusal(431, f"a request carries at most {MAX_HEADERS} headers")
        self._headers.append((name, value))
        self._index.setdefault(name.lower(), value)

    def on_headers_complete(self) -> None:
        declared = self._index.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._door.max_body:
            raise _Refusal(413, f"a request body is at most {self._door.max_body} bytes")
        expect = self._index.get(b"expect")
        if expect is not None:
            if expect.lower() != b"100-continue":
                raise _Refusal(417, "the only expectation this balancer meets is 100-continue")
            if (
                not self.busy
                and not self._queue
                and self.transport is not None
                and self._parser.get_http_version() == "1.1"
            ):
                # Only when nothing is answered before it: an interim answer must not overtake a final one. Never
                # to an HTTP/1.0 client, which cannot read one (RFC 9110 15.2.1).
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._door.max_body:
            raise _Refusal(413, f"a request body is at most {self._door.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        request = Request(
            parser.get_method().decode("ascii"),
            self._url,
            self._headers,
            b"".join(self._body),
            self._peer,
            self._local,
            parser.should_keep_alive(),
            parser.get_http_version() == "1.0",
            self._index,
            self._arrived,
        )
        self._new_message()
        self._last = request
        self._queue.append(request)
        if len(self._queue) > 1 and self.transport is not None:
            self.transport.pause_reading()  # a client that sends ahead waits for its answers
        self._next()

    def _count_head(self, nbytes: int) -> None:
        self._head_bytes += nbytes
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _Refusal(431, f"a request line and headers are at most {MAX_HEAD_BYTES} bytes")

    # --- answering ---

    def _refuse(self, status: int, message: str) -> None:
        self._done_reading = True
        self._queue.append(encode_answer(error_answer(None, status, message), None))
        self._next()

    def _next(self) -> None:
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        if not self._queue:
            if self._done_reading:  # everything read has been answered, and nothing more will be
                self.transport.close()
            return
        item = self._queue.popleft()
        if isinstance(item, bytes):
            self.transport.write(item)
            self.transport.close()
            return
        self.busy = True
        serve = self._serve_own(item) if self._door.own(item.target) else self._serve(item)
        self._door.track(asyncio.get_running_loop().create_task(serve))

    async def _serve(self, request: Request) -> None:
        answered = False

        def send(data: bytes) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self._write(data, request.keep_alive)
                self._answered()

        try:
            await self._door.forward(request, send)  # it may send after it returns: when the answer is due
        except Exception:
            log.exception("forwarding %s %s failed", request.method, request.path)
            send(encode_answer(error_answer(request, 500, "the balancer failed: see its log"), request))

    async def _serve_own(self, request: Request) -> None:
        keep = False
        self._passed_through = False
        try:
            if self._pipe is None or self._pipe.closed:
                self._pipe = await self._door.open_pipe(self)
            keep = await self._pipe.exchange(request)
        except OSError as error:
            log.warning("the balancer's own application could not be reached: %s", error)
            self._refuse_own(request, 503, "the balancer is shutting down")
        except Exception:
            log.exception("serving %s %s failed", request.method, request.path)
            self._refuse_own(request, 500, "the balancer failed: see its log")
        finally:
            # Whatever happened, the connection is no longer busy: else the idle sweep would never close it.
            if not (keep and request.keep_alive) and self.transport is not None:
                self.transport.close()
            self._answered()

    def _refuse_own(self, request: Request, status: int, message: str) -> None:
        if self._pipe is not None:
            self._pipe.close()  # in an unknown state: the next request gets a new one
        if not self._passed_through:  # else part of an answer is out: closing the connection is all that is left
            self._write(encode_answer(error_answer(request, status, message), None), False)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the client left; the answer has nowhere to go
        transport.write(data)
        if not keep_alive:
            transport.close()

    def write_through(self, data: bytes) -> None:
        """Bytes of an answer from the balancer's own application, passed on as they come."""
        self._passed_through = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _answered(self) -> None:
        self.busy = False
        self.last_active = time.monotonic()
        if self._door.closing:
            self.close()
            return
        if self.transport is not None and len(self._queue) <= 1 and not self._done_reading:
            self.transport.resume_reading()
        self._next()

    def close_if_idle(self, idle_since: float) -> None:
        if not self.busy and not self._queue and self.last_active < idle_since and self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _OwnPipe(asyncio.Protocol):
    """A client connection's line to the balancer's own application: requests re-sent whole, answers streamed."""

    def __init__(self, client: _ClientConnection) -> None:
        self._client = client
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._head = False
        self._done: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._client.write_through(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(keep=False)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(keep=False)

    def on_headers_complete(self) -> None:
        if self._head:
            # A HEAD answer announces a length but carries no body: the parser cannot know, so it ends here and
            # this pipe (whose parser now expects a body) is not used again.
            self._finish(keep=self._parser.should_keep_alive())
            self.close()

    def on_message_complete(self) -> None:
        if not self._head:
            self._finish(keep=self._parser.should_keep_alive())

    async def exchange(self, request: Request) -> bool:
        """Send `request` and stream its answer to the client; whether the connection may carry another."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("the balancer's own application closed the line")
        drop = (b"content-length", b"transfer-encoding", b"expect")  # the body is whole: its length is known
        headers = [(name, value) for name, value in request.headers if name.lower() not in drop]
        # An HTTP/1.0 client may send no Host; the request goes on as HTTP/1.1, which needs one: the address the
        # client connected to stands in.
        authority = request.local if request.header(b"host") is None else None
        self._head = request.method == "HEAD"
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(encode_request(request.method, request.target, authority, headers, request.body))
        return await self._done

    def _finish(self, *, keep: bool) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(keep)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class FrontDoor:
    """The balancer's listening socket: forwarded requests to `forward`, its own (`own(target)`) to `own_server`,
    an aiohttp protocol factory (a `web.Server`) that serves them over socket pairs."""

    def __init__(
        self,
        forward: Forward,
        own: Callable[[bytes], bool],
        own_server: Callable[[], asyncio.BaseProtocol],
        *,
        max_body: int,
    ) -> None:
        self.forward = forward
        self.own = own
        self.max_body = max_body
        self._own_server = own_server
        self.connections: set[_ClientConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: stamped.StampedServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.closing = False
        self._drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); the port bound."""
        loop = asyncio.get_running_loop()
        self._server = await stamped.serve(lambda: _ClientConnection(self), host, port)
        self._sweeper = loop.create_task(self._sweep_idle(), name="balancer-idle-connections")
        return int(self._server.sockets[0].getsockname()[1])

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open_pipe(self, client: _ClientConnection) -> _OwnPipe:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            their_end, _ = await loop.connect_accepted_socket(self._own_server, theirs)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        try:
            _, pipe = await loop.create_connection(lambda: _OwnPipe(client), sock=ours)
        except BaseException:
            ours.close()
            their_end.close()  # and with it `theirs`, which its transport now owns
            raise
        return pipe

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)  # a polling period, not a distance
            idle_since = time.monotonic() - IDLE_TIMEOUT_S
            for connection in list(self.connections):
                connection.close_if_idle(idle_since)

    def forget(self, connection: _ClientConnection) -> None:
        self.connections.discard(connection)
        if self.closing and not self.connections and not self._drained.done():
            self._drained.set_result(None)

    async def close(self, timeout: float) -> None:
        """Stop listening, give requests in flight `timeout` seconds to be answered, then close every connection."""
        self.closing = True  # from now on, a connection closes once its answer is out
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for connection in list(self.connections):
            if not connection.busy:
                connection.close()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
