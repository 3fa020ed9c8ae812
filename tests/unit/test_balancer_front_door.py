"""The balancer's front door (movr.lab.downstream) byte for byte: what reaches the app, what reaches the client.

The client and the stand-in app speak raw HTTP/1.1 here, so that what a general client or server would tidy up
(hop-by-hop headers, chunking, repeated headers, compressed bodies, pipelining, malformed requests) is seen as
the balancer passes it on.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import pytest
from aiohttp import web
from aiohttp_apps import BalancerServer

from movr.geo import Preset
from movr.lab import balancer as balancer_module
from movr.lab import control, downstream
from movr.lab.balancer import BALANCER_KEY, build_app

TOKEN = control.new_token()
BODY = gzip.compress(b'{"a": 1}' * 100)  # compressed: it must arrive as it left, never decoded


@dataclass
class Message:
    """A request the app got, or an answer the client got."""

    first: bytes = b""  # the target of a request, the status and reason of an answer
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    came_from: int = 0  # of a request: the port of the balancer's connection it came on

    def all(self, name: str) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name.lower().encode()]

    def one(self, name: str) -> bytes:
        (value,) = self.all(name)
        return value


class _Reader:
    """Collects the messages an httptools parser reads off a stream."""

    def __init__(self, parser_class: type) -> None:
        self.parser = parser_class(self)
        self.done: deque[Message] = deque()
        self._current = Message()

    def on_url(self, url: bytes) -> None:
        self._current.first += url

    def on_status(self, status: bytes) -> None:
        self._current.first += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_message_complete(self) -> None:
        if isinstance(self.parser, httptools.HttpResponseParser):
            self._current.first = b"%d %s" % (self.parser.get_status_code(), self._current.first)
        self.done.append(self._current)
        self._current = Message()


@dataclass
class HealthGate:
    """Holds the stand-in app's answers to health checks while `open` is clear; `arrived` is set by each check."""

    open: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def raw_app(
    answer: Callable[[Message], bytes], health: HealthGate | None = None
) -> AsyncIterator[tuple[str, list[Message]]]:
    """A stand-in app server answering each request with the raw bytes `answer` makes; the requests it got."""
    seen: list[Message] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests = _Reader(httptools.HttpRequestParser)
        while data := await reader.read(65536):
            requests.parser.feed_data(data)
            while requests.done:
                request = requests.done.popleft()
                request.came_from = writer.get_extra_info("peername")[1]
                if request.first == b"/healthz":  # the balancer's health checks
                    if health is not None:
                        health.arrived.set()
                        await health.open.wait()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:
                    seen.append(request)
                    writer.write(answer(request))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        server.close()
        await server.wait_closed()


class Client:
    """A raw connection to the balancer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answers = _Reader(httptools.HttpResponseParser)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> Message:
        while not self.answers.done:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the balancer closed the connection"
            self.answers.parser.feed_data(data)
        return self.answers.done.popleft()

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(65536), 10) == b""


@asynccontextmanager
async def balancer_for(app_url: str) -> AsyncIterator[tuple[BalancerServer, Callable[[], Client]]]:
    config = {"preset": "gcp-3", "scale": 0.01, "topology": "multi", "apps": {"europe-west1": app_url}}
    server = BalancerServer(build_app(config, TOKEN))
    await server.start_server()
    clients: list[Client] = []

    async def connect() -> Client:
        client = Client(*await asyncio.open_connection("127.0.0.1", server.port))
        clients.append(client)
        return client

    try:
        yield server, connect
    finally:
        for client in clients:
            client.writer.close()
        await server.close()


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


APP_ANSWER = (
    b"HTTP/1.1 201 Made\r\n"
    b"Connection: keep-alive, X-Hop-Answer\r\n"
    b"X-Hop-Answer: for the balancer only\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Set-Cookie: a=1; Path=/\r\n"
    b"Set-Cookie: b=2; Path=/\r\n"
    b"Content-Encoding: gzip\r\n"
    b"X-Movr-Balancer-Region: forged by the app\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY)
)


async def _passes_the_message(preset: Preset) -> None:
    async with raw_app(lambda _request: APP_ANSWER) as (url, seen), balancer_for(url) as (server, connect):
        client = await connect()
        client.send(
            b"POST /a%0Ab/c?token=SECRET HTTP/1.1\r\n"
            b"Host: front.example\r\n"
            b"Connection: keep-alive, X-Hop-Request\r\n"
            b"X-Hop-Request: for the balancer only\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"TE: trailers\r\n"
            b"Proxy-Authorization: Basic eDp5\r\n"
            + f"{control.TOKEN_HEADER}: {TOKEN}\r\n".encode()
            + b"X-Client-City: Rome\r\n"
            b"X-Client-City: paris\r\n"
            b"X-Client-Geo-Location: us-east1,boston\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\n"
            b"X-Forwarded-Proto: https\r\n"
            b"Content-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY)
        )
        answer = await client.answer()

        (request,) = seen
        assert request.first == b"/a%0Ab/c?token=SECRET"  # the target byte for byte, encoded newline and all
        assert request.body == BODY and request.one("Content-Length") == b"%d" % len(BODY)
        assert request.one("Content-Encoding") == b"gzip"
        for name in ("Connection", "X-Hop-Request", "Keep-Alive", "TE", "Proxy-Authorization", "Transfer-Encoding"):
            assert request.all(name) == [], f"{name} belongs to one hop"
        assert request.all(control.TOKEN_HEADER) == []  # the lab's token is the balancer's alone
        # The client's location headers are replaced (every copy) by what the balancer resolved.
        assert request.one("X-Client-City") == b"rome"
        assert request.one("X-Client-Geo-Location") == b"europe-west1,rome"
        assert request.one("X-Forwarded-For") == b"10.0.0.1, 127.0.0.1"
        assert request.one("X-Forwarded-Proto") == b"http"
        assert request.one("X-Forwarded-Host") == b"front.example"
        assert request.one("Host") == url.removeprefix("http://").encode()

        assert answer.first == b"201 Made"
        assert answer.body == BODY and answer.one("Content-Length") == b"%d" % len(BODY)
        assert answer.one("Content-Encoding") == b"gzip"
        assert answer.all("Set-Cookie") == [b"a=1; Path=/", b"b=2; Path=/"]
        for name in ("X-Hop-Answer", "Keep-Alive", "Transfer-Encoding"):
            assert answer.all(name) == [], f"{name} belongs to one hop"
        assert answer.one("X-Movr-Balancer-Region") == b"europe-west1"
        rtt_ms = preset.client_rtt_ms("rome", "europe-west1") * 0.01
        assert float(answer.one("X-Movr-Client-Rtt-Ms")) == pytest.approx(rtt_ms, abs=0.001)

        counts = server.app[BALANCER_KEY].counters.snapshot()["europe-west1"]
        assert (counts["bytes_in"], counts["bytes_out"], counts["client_round_trips"]) == (len(BODY), len(BODY), 1)


def test_forwarding_passes_the_message_and_keeps_what_belongs_to_one_hop_to_that_hop(preset: Preset):
    asyncio.run(_passes_the_message(preset))


def _by_target(request: Message) -> bytes:
    if request.first.startswith(b"/head"):
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n"
    body = request.first + b" " + request.body
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _one_connection() -> None:
    async with raw_app(_by_target) as (url, seen), balancer_for(url) as (_server, connect):
        # A HEAD answer announces the length a GET would get, and the connection carries on after it.
        client = await connect()
        client.send(b"HEAD /head HTTP/1.1\r\nHost: x\r\nX-Client-City: rome\r\n\r\n")
        head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nContent-Length: 1234\r\n" in head

        # Forwarded requests and the balancer's own, one after the other on the same connection.
        status = f"GET /_balancer/status HTTP/1.1\r\nHost: x\r\n{control.TOKEN_HEADER}: {TOKEN}\r\n\r\n".encode()
        client.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.answer()).body == b"/one "
        client.send(status)
        own = await client.answer()
        assert own.first == b"200 OK" and json.loads(own.body)["regions"]["europe-west1"]["requests"] == 2
        client.send(status.replace(b"GET", b"HEAD", 1))  # no body, though it announces one
        own_head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
        assert own_head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: " in own_head
        client.send(b"GET /_balancer/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        missing = await client.answer()
        assert missing.first == b"404 Not Found" and json.loads(missing.body)["error"]["code"] == "not_found"

        # Pipelined: sent together, answered in order.
        client.send(b"POST /two HTTP/1.1\r\nContent-Length: 1\r\n\r\n2GET /three HTTP/1.1\r\n\r\n" + status)
        assert (await client.answer()).body == b"/two 2"
        assert (await client.answer()).body == b"/three "
        assert (await client.answer()).first == b"200 OK"

        # Expect: 100-continue is met before the body is sent.
        client.send(b"PUT /four HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"four")
        assert (await client.answer()).body == b"/four four"

        # A client that says it is done gets its answer, and then the connection closes.
        client.send(b"GET /five HTTP/1.1\r\nConnection: close\r\n\r\n")
        last = await client.answer()
        assert last.body == b"/five " and last.one("Connection") == b"close"
        assert await client.closed()

        # A request to switch protocols is answered as a plain one (Upgrade is hop-by-hop); what follows is not
        # HTTP, so the connection closes.
        client = await connect()
        client.send(b"GET /six HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
        assert (await client.answer()).body == b"/six "
        assert await client.closed()
    assert [request.first for request in seen] == [b"/head", b"/one", b"/two", b"/three", b"/four", b"/five", b"/six"]
    assert seen[-1].all("Upgrade") == [] and seen[-1].all("Connection") == []


def test_one_connection_carries_forwarded_and_own_requests_pipelined_head_expect_continue_and_upgrade():
    asyncio.run(_one_connection())


async def _refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    async with raw_app(_by_target) as (url, seen), balancer_for(url) as (_server, connect):
        refusals = [
            # (what the client sends, status, error code)
            (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"),
            (b"POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (64 * 1024 * 1024 + 1), 413, "payload_too_large"),
            (b"GET / HTTP/1.1\r\nX-Long: " + b"x" * 70_000 + b"\r\n\r\n", 431, "headers_too_large"),
            (b"GET / HTTP/1.1\r\n" + b"a: 1\r\n" * 101 + b"\r\n", 431, "headers_too_large"),
            (b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nExpect: something\r\n\r\n", 417, "expectation_failed"),
        ]
        for sent, status, code in refusals:
            client = await connect()
            client.send(sent)
            answer = await client.answer()
            assert int(answer.first.split()[0]) == status, answer
            assert json.loads(answer.body)["error"]["code"] == code  # the app's error shape, never a traceback
            assert await client.closed()
        assert seen == []

        # Empty headers count for what they take on the wire (`a:` and CRLF), whatever their number.
        monkeypatch.setattr(downstream, "MAX_HEADERS", 1_000_000)
        client = await connect()
        client.send(b"GET / HTTP/1.1\r\n" + b"a:\r\n" * 20_000 + b"\r\n")
        answer = await client.answer()
        assert answer.first.startswith(b"431 ") and await client.closed()
        assert seen == []

        # A chunked body is held to the limit too, as it comes (here a small one).
        door_limit = 1024
        monkeypatch.setattr(balancer_module, "_MAX_BODY_BYTES", door_limit)
    async with raw_app(_by_target) as (url, seen), balancer_for(url) as (_server, connect):
        client = await connect()
        client.send(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"y" * (door_limit + 1)))
        answer = await client.answer()
        assert answer.first.startswith(b"413 ") and await client.closed()
        client = await connect()
        client.send(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"y" * door_limit))
        assert (await client.answer()).body == b"/x " + b"y" * door_limit
        assert len(seen) == 1


def test_what_cannot_be_forwarded_is_refused_in_the_apps_error_shape_and_the_connection_closed(monkeypatch):
    asyncio.run(_refusals(monkeypatch))


async def _nowhere_to_go() -> None:
    async with raw_app(_by_target) as (url, _seen), balancer_for(url) as (server, connect):
        server.app[BALANCER_KEY].apps["europe-west1"].forced_down = True
        client = await connect()
        client.send(b"GET / HTTP/1.1\r\nAccept: text/html\r\nX-Client-City: <rome>\r\n\r\n")
        page = await client.answer()
        assert page.first == b"503 Service Unavailable" and page.one("Content-Type").startswith(b"text/html")
        assert b"no healthy region" in page.body and b"<rome>" not in page.body
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        error = await client.answer()  # the same connection: a refusal of the request, not of the client
        assert json.loads(error.body)["error"]["code"] == "unavailable"


def test_with_no_region_in_rotation_a_browser_gets_a_page_and_an_api_client_json():
    asyncio.run(_nowhere_to_go())


async def _health_and_log() -> None:
    async with raw_app(_by_target) as (url, _seen), balancer_for(url) as (server, connect):
        balancer = server.app[BALANCER_KEY]
        await balancer._probe("europe-west1")
        assert balancer.regions_in_rotation() == ["europe-west1"]
        client = await connect()
        balancer.access_log = True
        client.send(b"GET /lab/x%0Ay?token=SECRET HTTP/1.1\r\nX-Client-City: rome\r\n\r\n")
        await client.answer()
    # The app is gone: it leaves the rotation after two failed checks.
    await balancer._probe("europe-west1")
    await balancer._probe("europe-west1")
    assert balancer.regions_in_rotation() == []


def test_health_checks_use_the_pool_and_the_access_log_leaves_queries_out(caplog):
    with caplog.at_level(logging.INFO, logger="movr.lab.balancer"):
        asyncio.run(_health_and_log())
    assert "GET /lab/x%0Ay 200" in caplog.text and "SECRET" not in caplog.text


async def _health_beside_requests() -> None:
    gate = HealthGate()
    gate.open.set()
    async with raw_app(_by_target, gate) as (url, seen), balancer_for(url) as (server, connect):
        client = await connect()
        client.send(b"GET /before HTTP/1.1\r\nX-Client-City: rome\r\n\r\n")
        await client.answer()
        gate.open.clear()
        gate.arrived.clear()
        check = asyncio.create_task(server.app[BALANCER_KEY]._probe("europe-west1"))
        await asyncio.wait_for(gate.arrived.wait(), 10)
        client.send(b"GET /during HTTP/1.1\r\nX-Client-City: rome\r\n\r\n")
        await client.answer()
        gate.open.set()
        await check
    assert [request.first for request in seen] == [b"/before", b"/during"]
    assert seen[0].came_from == seen[1].came_from


def test_a_health_check_in_flight_leaves_the_requests_on_their_connection():
    """A check that took the requests' connection would send the next request down another, perhaps to another
    of the app server's workers, cold to it (its database connections have yet to plan its statements)."""
    asyncio.run(_health_beside_requests())


async def _city_cache() -> None:
    async with raw_app(_by_target) as (url, seen), balancer_for(url) as (server, connect):
        cities = server.app[BALANCER_KEY]._cities
        client = await connect()
        # A browser's session cookie changes, the city it browses from does not: one way of naming a city.
        for session in (b"1", b"2"):
            client.send(b"GET / HTTP/1.1\r\nCookie: session=%s; movr_browsing_from=rome\r\n\r\n" % session)
            await client.answer()
        assert list(cities.items()) == [((None, None, "rome"), "rome")]
        # Long ways (any stranger may send 64 KB of each) are resolved each time, never remembered.
        for junk in range(3):
            client.send(
                b"GET / HTTP/1.1\r\nX-Client-City: %s\r\nCookie: movr_browsing_from=rome; s=%d\r\n\r\n"
                % (b"z" * 1000, junk)
            )
            await client.answer()
        assert len(cities) == 1
    assert [request.one("X-Client-City") for request in seen] == [b"rome"] * 5


def test_the_city_cache_keeps_the_city_cookie_not_the_session_and_only_short_keys():
    asyncio.run(_city_cache())


async def _own_application_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(_pipe: object, _request: object) -> bool:
        raise RuntimeError("a bug in passing on a request")

    async with raw_app(_by_target) as (url, _seen), balancer_for(url) as (_server, connect):
        monkeypatch.setattr(downstream._OwnPipe, "exchange", fail)
        client = await connect()
        client.send(f"GET /_balancer/status HTTP/1.1\r\n{control.TOKEN_HEADER}: {TOKEN}\r\n\r\n".encode())
        answer = await client.answer()
        assert answer.first == b"500 Internal Server Error"
        assert json.loads(answer.body)["error"]["code"] == "internal_error"
        assert await client.closed()  # not left busy (and so never swept) forever


def test_a_failure_serving_the_balancers_own_endpoint_is_a_500_and_the_connection_closes(monkeypatch, caplog):
    with caplog.at_level(logging.ERROR, logger="movr.lab.balancer"):
        asyncio.run(_own_application_fails(monkeypatch))
    assert "serving GET /_balancer/status failed" in caplog.text


async def _pipe_not_made(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[socket.socket] = []
    socketpair = socket.socketpair

    def recorded() -> tuple[socket.socket, socket.socket]:
        pair = socketpair()
        made.extend(pair)
        return pair

    async def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("no connection for you")

    async def answer(_request: web.BaseRequest) -> web.Response:
        return web.Response()

    async def forward(_request: downstream.Request, _send: downstream.Send) -> None:
        return None

    monkeypatch.setattr(socket, "socketpair", recorded)
    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", refuse)
    own = web.Server(answer)
    door = downstream.FrontDoor(forward, lambda _target: True, own, max_body=1)
    with pytest.raises(OSError, match="no connection for you"):
        await door.open_pipe(cast(Any, None))
    for _ in range(3):
        await asyncio.sleep(0)  # not a distance: the loop's turns in which a closed transport closes its socket
    assert len(made) == 2 and [sock.fileno() for sock in made] == [-1, -1]
    await own.shutdown()


def test_a_pipe_to_the_own_application_that_cannot_be_made_leaves_no_socket_open(monkeypatch):
    asyncio.run(_pipe_not_made(monkeypatch))


async def _http_10() -> None:
    async with raw_app(_by_target) as (url, seen), balancer_for(url) as (_server, connect):
        # No Host header (HTTP/1.0 needs none): the balancer's own application answers all the same.
        client = await connect()
        client.send(f"GET /_balancer/status HTTP/1.0\r\n{control.TOKEN_HEADER}: {TOKEN}\r\n\r\n".encode())
        own = await client.answer()
        assert own.first == b"200 OK" and "europe-west1" in json.loads(own.body)["regions"]
        assert await client.closed()
        # An HTTP/1.0 client cannot read an interim answer: it gets only the final one.
        client = await connect()
        client.send(b"PUT /seven HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nseven")
        answer = await client.answer()
        assert answer.first == b"200 OK" and answer.body == b"/seven seven"
        assert await client.closed()
    assert [request.first for request in seen] == [b"/seven"]


def test_an_http_10_client_without_host_reaches_the_own_endpoints_and_gets_no_100_continue(caplog):
    with caplog.at_level(logging.ERROR):
        asyncio.run(_http_10())
    # Neither aiohttp (which refused a Host-less HTTP/1.1 request with a traceback) nor the balancer logged one.
    errors = [record for record in caplog.records if record.name.startswith(("aiohttp", "movr"))]
    assert errors == []
