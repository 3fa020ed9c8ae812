"""THE MovR API client: the requests the JSON API takes, the journey through them, and two transports.

- `Request` and one function per API call (`sign_up`, `log_in`, ...): method, path under /api/v1, body.
- `Journey`: the tutorial's eight steps (`STEPS`) for one user: the request each step sends, built from what
  the earlier steps returned, and what each step keeps from its answer. `movr bench journey`, `movr demo`
  and `movr bench throughput` all walk this one definition.
- `Client`: the synchronous transport, one kept-alive connection (the journey, the demo, failover riders,
  `movr bench path`). A socket and httptools (the C parser the balancer uses), nothing more: `http.client`
  (which parses each answer's headers with the email package) took 0.43 ms a request after 20 ms idle where
  this takes 0.16 ms (a canned answer of the app's headers from a local socket server, median of 300).
  Each `Reply` also says when its request went out (just before the socket took it) and when its last bytes
  reached the client's socket (the kernel's receive stamp, as the lab's links and balancer time their legs):
  `Reply.latency_ms`, what a capture on the client's wire would show. The client process's own wake-up
  and parsing after the answer arrived are not in it; a caller that times around `send` still sees them.
- `open_session` / `send_async`: the asyncio transport (aiohttp) for an open-loop load, where many users
  share one connection pool and a blocking client could not keep the schedule.
- `Reply` and `Figures.from_headers`: an answer, and what its `X-Movr-*` headers say about where and how it
  was served (the names come from movr.telemetry_headers, which the app writes them by).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httptools
from multidict import CIMultiDict

from movr import telemetry_headers as names
from movr.lab.links.timing import RECEIVE_ANCILLARY_SIZE, arrival, enable_receive_timestamps
from movr.web.location import CITY_HEADER

API = "/api/v1"
PASSWORD = "journey-password-1"
# A server may close a kept-alive connection that idled; these say so on the next request over it.
_CLOSED_WHILE_IDLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # under API
    body: dict[str, Any] | None = None

    def encode(self, headers: Mapping[str, str]) -> tuple[bytes | None, dict[str, str]]:
        """The body as bytes and the headers to send with it."""
        if self.body is None:
            return None, dict(headers)
        return json.dumps(self.body).encode(), {**headers, "Content-Type": "application/json"}


def sign_up(city: str, username: str, password: str, first_name: str = "", last_name: str = "") -> Request:
    body = {"city": city, "username": username, "password": password}
    body.update({key: value for key, value in (("first_name", first_name), ("last_name", last_name)) if value})
    return Request("POST", "/users", body)


def log_in(username: str, password: str) -> Request:
    return Request("POST", "/sessions", {"username": username, "password": password})


def view_vehicles(city: str) -> Request:
    return Request("GET", f"/cities/{urllib.parse.quote(city)}/vehicles")


def add_vehicle(brand: str = "Vespa", location: str = "Main St", kind: str = "scooter", color: str = "red") -> Request:
    return Request("POST", "/vehicles", {"type": kind, "brand": brand, "color": color, "location": location})


def start_ride(city: str, vehicle_id: str) -> Request:
    return Request("POST", "/rides", {"city": city, "vehicle_id": vehicle_id})


def end_ride(ride: Mapping[str, Any], location: str = "Station") -> Request:
    return Request("PATCH", f"/rides/{urllib.parse.quote(ride['city'])}/{ride['id']}", {"location": location})


def view_rides() -> Request:
    return Request("GET", "/rides")


def log_out() -> Request:
    return Request("DELETE", "/sessions")


def caller_headers(city: str, token: str = "") -> dict[str, str]:
    """What every request of a user in `city` carries: where it comes from (as a geo load balancer would
    say), and its bearer token once logged in."""
    headers = {CITY_HEADER: city, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@dataclass(frozen=True)
class Figures:
    """What a response's `X-Movr-*` headers say; a header that is absent (an answer that did not come from
    the app, such as a balancer's 502) reads as empty or zero."""

    served_by: str = ""
    statements: int = 0
    sql_ms: float = 0.0
    app_ms: float = 0.0
    cpu_ms: float = 0.0  # deliberate local work (password hashing): part of the floor
    wan_round_trips: int = 0
    data_regions: tuple[str, ...] = ()
    client_city: str = ""

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Figures:
        """Raises ValueError when a figure is present but not a number: the app never sends one."""

        def number(name: str, kind: Callable[[str], Any]) -> Any:
            return kind(headers.get(name) or 0)

        return cls(
            served_by=headers.get(names.REGION) or "",
            statements=number(names.STATEMENTS, int),
            sql_ms=number(names.SQL_MS, float),
            app_ms=number(names.APP_MS, float),
            cpu_ms=number(names.CPU_MS, float),
            wan_round_trips=number(names.WAN_ROUND_TRIPS, int),
            data_regions=tuple(r for r in (headers.get(names.DATA_REGIONS) or "").split(",") if r),
            client_city=headers.get(names.CLIENT_CITY) or "",
        )


class ApiError(RuntimeError):
    """The app answered a request with an error status."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    # On time.monotonic's clock, where the transport knows them (`Client`; 0.0 otherwise): the request went
    # out, and the answer's last bytes reached the client's socket.
    sent_at: float = 0.0
    arrived_at: float = 0.0

    @property
    def latency_ms(self) -> float:
        """From the request leaving the client to the answer's last bytes reaching it."""
        return (self.arrived_at - self.sent_at) * 1000

    @property
    def failed(self) -> bool:
        return self.status >= 400

    @property
    def figures(self) -> Figures:
        return Figures.from_headers(self.headers)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def error_code(self) -> str:
        """The app's error code (`{"error": {"code": ...}}`), or "" when the body is not an app error."""
        try:
            error = self.json().get("error")
        except (ValueError, AttributeError):
            return ""
        return str(error.get("code", "")) if isinstance(error, dict) else ""

    def raise_for_status(self, request: Request) -> Reply:
        if self.failed:
            raise ApiError(f"{request.method} {request.path} -> {self.status}: {self.body[:300]!r}")
        return self


@dataclass
class Journey:
    """One user's way through the tutorial's eight steps (`STEPS`, in order: a step needs what the ones
    before it returned)."""

    city: str
    username: str
    password: str = PASSWORD
    first_name: str = "Journey"
    last_name: str = "Bench"
    token: str = ""
    vehicle_id: str = ""
    ride: dict[str, Any] = field(default_factory=dict)

    def request(self, step: str) -> Request:
        try:
            return _STEP_REQUESTS[step](self)
        except KeyError:
            raise ValueError(f"unknown step {step!r}") from None

    def keep(self, step: str, reply: Reply) -> None:
        """What a step's answer gives the steps after it (the body is parsed only where it does)."""
        if step == "log in":
            self.token = reply.json().get("token") or ""
        elif step == "add vehicle":
            self.vehicle_id = reply.json()["id"]
        elif step == "start ride":
            self.ride = reply.json()
        elif step == "log out":
            self.token = ""

    def headers(self) -> dict[str, str]:
        return caller_headers(self.city, self.token)


_STEP_REQUESTS: dict[str, Callable[[Journey], Request]] = {
    "sign up": lambda j: sign_up(j.city, j.username, j.password, j.first_name, j.last_name),
    "log in": lambda j: log_in(j.username, j.password),
    "view vehicles": lambda j: view_vehicles(j.city),
    "add vehicle": lambda j: add_vehicle(),
    "start ride": lambda j: start_ride(j.city, j.vehicle_id),
    "end ride": lambda j: end_ride(j.ride),
    "view rides": lambda j: view_rides(),
    "log out": lambda j: log_out(),
}
STEPS: tuple[str, ...] = tuple(_STEP_REQUESTS)


class _Answer:
    """One answer as httptools reads it: its headers and body as they arrive."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.complete = False
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # asked now: the parser forgets it once done


class Client:
    """One kept-alive HTTP/1.1 connection to the app (through the balancer's one URL). Not for HEAD requests.

    `reconnect`: when the server closed the connection while it idled, send the request once more on a new
    one. Only for callers that may repeat a request (the journey); a failover rider must not, since a write
    whose answer was lost stays unknown until the rider reads what happened.
    """

    def __init__(self, base_url: str, *, timeout: float = 60.0, reconnect: bool = False) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self.reconnect = reconnect
        self._socket: socket.socket | None = None

    def send(self, request: Request, headers: Mapping[str, str]) -> Reply:
        """The answer to an API request, whatever its status; raises OSError or http.client.HTTPException
        when none came."""
        body, sent = request.encode(headers)
        return self.exchange(request.method, API + request.path, body, sent)

    def exchange(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]) -> Reply:
        """The answer to `method target` (any path on the server), whatever its status; raises OSError or
        http.client.HTTPException when none came."""
        message = _encode(method, target, f"{self.host}:{self.port}", body, headers)
        retried = False
        while True:
            try:
                return self._round_trip(message)
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if retried or not self.reconnect or not isinstance(error, _CLOSED_WHILE_IDLE):
                    raise
                retried = True

    def _round_trip(self, message: bytes) -> Reply:
        if self._socket is None:
            self._socket = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_receive_timestamps(self._socket)  # without them, `arrival` is when the read returned
        connection = self._socket
        sent_at = time.monotonic()
        connection.sendall(message)
        answer = _Answer()
        received = False
        arrived_at = sent_at
        while not answer.complete:
            data, ancillary, _flags, _address = connection.recvmsg(65536, RECEIVE_ANCILLARY_SIZE)
            arrived_at = arrival(ancillary)
            if not data:
                if not received:  # the server had closed the idle connection: nothing of this answer came
                    raise http.client.RemoteDisconnected("the server closed the connection without answering")
                raise http.client.IncompleteRead(b"".join(answer.body))
            received = True
            try:
                answer.parser.feed_data(data)
            except httptools.HttpParserError as error:
                raise http.client.HTTPException(f"unreadable answer from {self.host}:{self.port}: {error}") from None
        if not answer.keep_alive:
            self.close()
        status = answer.parser.get_status_code()
        return Reply(status, CIMultiDict(answer.headers), b"".join(answer.body), sent_at, arrived_at)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")  # in a request target: it would end it early or split it
_LINE_BREAK = re.compile(r"[\r\n]")  # in a header: it would smuggle in another one


def _encode(method: str, target: str, host: str, body: bytes | None, headers: Mapping[str, str]) -> bytes:
    """The whole request in one piece (one write, so no segment waits on another's acknowledgement).
    Raises http.client.InvalidURL or ValueError, before anything is sent, for what would not be one request."""
    if _UNSENDABLE.search(target) or _UNSENDABLE.search(method):
        raise http.client.InvalidURL(f"not a request target: {target!r}")
    if any(_LINE_BREAK.search(f"{name}{value}") for name, value in headers.items()):
        raise ValueError("a header name or value holds a line break")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def open_session() -> aiohttp.ClientSession:
    """One connection pool for many users (open it inside the running event loop)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),  # users authenticate by bearer token; a shared jar would mix them
        skip_auto_headers=("User-Agent",),
    )


async def send_async(
    session: aiohttp.ClientSession, base_url: str, request: Request, headers: Mapping[str, str], timeout_s: float
) -> Reply:
    """The answer, whatever its status; raises TimeoutError or aiohttp.ClientError when none came in time."""
    body, sent = request.encode(headers)
    async with session.request(
        request.method,
        base_url + API + request.path,
        data=body,
        headers=sent,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as response:
        return Reply(response.status, response.headers, await response.read())
