"""The lab's geo load balancer: one HTTP front door standing in for a cloud global load balancer.

For each request it locates the client in a city, picks the nearest healthy region that runs an app server,
carries the client<->region round trip on the client's access link (the request reaches the app half of it
later, the answer reaches the client half of it after the app's: ``movr.lab.links_access``, the only waiting
here) and forwards the request to that region's app with location headers added. So a request from Rome costs
the client one Rome<->region round trip, counted per region (law 2), and nothing else in the balancer stands
in for distance (law 1). Its clients' connections are served by a lean front door (``movr.lab.downstream``),
its apps' by lean pools (``movr.lab.upstream``); its own endpoints by an aiohttp application.

Client city: read from the request exactly as the app reads it (``movr.geo.client_location``: the
``X-Client-City`` header, the city part of ``X-Client-Geo-Location``, the ``movr_browsing_from`` cookie;
URL-decoded, case-insensitive), else the configured ``default_city`` (null: the first city of the primary
region).

Config (JSON)::

    {"preset": "gcp-3",                   # packaged preset name, or a TOML path (relative: to the config file)
     "scale": 1.0,                        # multiplies every client RTT (law 7: scaled time is labelled time)
     "topology": "multi",                 # single | hybrid | multi; single routes everything to the primary
     "primary_region": "us-east1",        # optional, default: the preset's primary region
     "apps": {"us-east1": "http://127.0.0.1:8001", ...},   # region -> app server base URL
     "default_city": null}                # optional city for clients that say nothing

Run as a process: ``MOVR_LAB_TOKEN=... python -m movr.lab.balancer --config FILE.json --port N`` (127.0.0.1
only; port 0: any). On start it prints one JSON line ``{"event": "ready", "port": N}`` to stdout; it exits
cleanly on SIGTERM or SIGINT. Control API (never delayed, never forwarded; only with the lab's token, see
``movr.lab.control``): ``GET /_balancer/status``, ``POST /_balancer/regions/{region}`` with
``{"down": true|false}`` (failure drills), ``POST /_balancer/reset``. The token header is never forwarded.
Started by a lab (``MOVR_LAB_RUN_DIR`` in its environment) it also serves the lab console under ``/lab/``
(movr.lab.console) and records each forwarded request for it (an append to a bounded deque).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from multidict import CIMultiDict
from werkzeug.http import parse_cookie

from movr.geo.client_location import CITY_COOKIE, CITY_HEADER, GEO_HEADER, geo_header_value
from movr.lab import control
from movr.lab.balancer_config import (  # re-exported: the balancer's tests and callers name them here
    BalancerConfig,
    BalancerConfigError,
    choose_region,
    load_config,
    parse_config,
    resolve_city,
)
from movr.lab.console import PREFIX as CONSOLE_PREFIX
from movr.lab.console.recorder import FIGURE_HEADERS, RequestRecorder
from movr.lab.downstream import Answer, FrontDoor, Request, Send, encode_answer, error_answer
from movr.lab.links import new_event_loop
from movr.lab.links_access import AccessDelay, AccessLinkCounters
from movr.lab.processes import RUN_DIR_MARKER
from movr.lab.upstream import UpstreamError, UpstreamPool, UpstreamResponse, encode_request

log = logging.getLogger("movr.lab.balancer")

LISTEN_HOST = "127.0.0.1"  # the lab is one machine; the balancer never listens on another address

REGION_HEADER = "X-Movr-Balancer-Region"
RTT_HEADER = "X-Movr-Client-Rtt-Ms"
CONTROL_PREFIX = "/_balancer/"

HEALTH_PATH = "/healthz"
HEALTH_INTERVAL_S = 0.5
HEALTH_TIMEOUT_S = 1.0
FAILURES_TO_UNHEALTHY = 2  # one lost probe is noise; two in a row is an outage

_MAX_BODY_BYTES = 64 * 1024 * 1024
UPSTREAM_TIMEOUT_S = 120.0


# --- the server ---------------------------------------------------------------------------------------------


@dataclass
class _App:
    region: str
    base_url: str
    healthy: bool = True  # optimistic at start: the lab starts apps first, and a failed request marks it down
    failures: int = 0
    forced_down: bool = False

    @property
    def in_rotation(self) -> bool:
        return self.healthy and not self.forced_down


@dataclass(frozen=True)
class _Route:
    """Where a client in one city goes while the same regions are in rotation (made once per city and set)."""

    region: str | None
    rtt_ms: float
    location: list[tuple[bytes, bytes]]  # the client-location headers the app gets
    extra: list[tuple[bytes, bytes]]  # the headers the client gets: the region and the RTT it was carried


_CITY_CACHE_SIZE = 4096  # distinct ways of naming a city seen; past this the cache starts again
# Only short ways of naming a city are remembered: a city name is a few bytes, and longer keys (up to 64 KB each
# from any stranger) would let one hold hundreds of megabytes; they are resolved each time instead.
_CITY_KEY_MAX_BYTES = 256


class Balancer:
    """Routing state, health and counters of one balancer. `exchange` forwards a request (movr.lab.downstream's
    front door calls it); the control endpoints are aiohttp handlers."""

    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        self.apps = {region: _App(region, url) for region, url in config.apps.items()}
        # Requests go through lean keep-alive pools (movr.lab.upstream), health checks through pools of their own:
        # a check that held a request's connection would send the next request down another one, perhaps to
        # another of the app server's workers, whose database connections have yet to plan its statements.
        self.upstreams = {region: UpstreamPool(url) for region, url in config.apps.items()}
        self.health_checks = {region: UpstreamPool(url) for region, url in config.apps.items()}
        self.counters = AccessLinkCounters(list(self.apps))
        self._access: AccessDelay | None = None
        # The lab console's record of forwarded requests (movr.lab.console); None when no console is mounted.
        self.recorder: RequestRecorder | None = None
        self.console_mounted = False
        self.access_log = False
        # Routing is a pure function of the city and the regions in rotation: computed once for each.
        self._routes: dict[tuple[str, tuple[str, ...]], _Route] = {}
        self._cities: dict[tuple[bytes | None, bytes | None, str | None], str] = {}

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the access link's wake-ups and the health watcher; the pools closed at the end."""
        self._access = AccessDelay(asyncio.get_running_loop())
        watcher = asyncio.create_task(self._watch_health(), name="balancer-health")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._access.close()
            for pool in (*self.upstreams.values(), *self.health_checks.values()):
                pool.close()

    @property
    def access(self) -> AccessDelay:
        if self._access is None:
            raise RuntimeError("the balancer is not running")
        return self._access

    def regions_in_rotation(self) -> list[str]:
        return [region for region, app in self.apps.items() if app.in_rotation]

    def usual_region(self, city: str) -> str | None:
        """The region that serves a client in `city` when every region is healthy."""
        cfg = self.config
        return choose_region(cfg.preset, city, list(self.apps), cfg.topology, cfg.primary_region)

    def is_own(self, target: bytes) -> bool:
        """Whether a request target is for the balancer itself (its control API, the console), never forwarded."""
        path = target.partition(b"?")[0]
        if path.startswith(_CONTROL_PREFIX):
            return True
        return self.console_mounted and (path == _CONSOLE_PATH or path.startswith(_CONSOLE_PREFIX))

    # --- forwarding ---

    def _city(self, request: Request) -> str:
        """Where the client is (see resolve_city), remembered for each short way of naming it."""
        cookie = request.header(b"cookie")
        # Keyed on the city cookie's value, not the whole Cookie header: the rest (a session) changes often.
        browsing_from = None
        if cookie is not None and _CITY_COOKIE_NAME in cookie:
            browsing_from = parse_cookie(cookie.decode("latin-1")).get(CITY_COOKIE)
        key = (request.header(_CITY_HEADER_KEY), request.header(_GEO_HEADER_KEY), browsing_from)
        city = self._cities.get(key)
        if city is None:
            headers = {
                name: value.decode("latin-1")
                for name, value in ((CITY_HEADER, key[0]), (GEO_HEADER, key[1]))
                if value is not None
            }
            cookies = {CITY_COOKIE: browsing_from} if browsing_from is not None else {}
            city = resolve_city(self.config.preset, headers, cookies, self.config.default_city)
            if sum(len(part) for part in key if part is not None) < _CITY_KEY_MAX_BYTES:
                if len(self._cities) >= _CITY_CACHE_SIZE:
                    self._cities.clear()
                self._cities[key] = city
        return city

    def _route(self, city: str) -> _Route:
        rotation = tuple(self.regions_in_rotation())
        route = self._routes.get((city, rotation))
        if route is None:
            cfg = self.config
            region = choose_region(cfg.preset, city, list(rotation), cfg.topology, cfg.primary_region)
            rtt_ms = 0.0 if region is None else cfg.preset.client_rtt_ms(city, region) * cfg.scale
            location = [
                (CITY_HEADER.encode(), city.encode()),
                (GEO_HEADER.encode(), geo_header_value(cfg.preset.region_of(city), city).encode()),
            ]
            extra = [] if region is None else [(_REGION_KEY, region.encode()), (_RTT_KEY, b"%.3f" % rtt_ms)]
            route = self._routes[(city, rotation)] = _Route(region, rtt_ms, location, extra)
        return route

    async def exchange(self, request: Request, send: Send) -> None:
        """Forward one request to the app of the nearest region in rotation, carrying the client's round trip on
        the access link (half each way), and `send` the client the answer when it arrives."""
        started = time.perf_counter()
        city = self._city(request)
        route = self._route(city)
        region = route.region
        if region is None:
            send(encode_answer(error_answer(request, 503, f"no healthy region can serve a client in {city}"), request))
            self._record(request, started, city, None, 503, 0.0, None)
            return
        pool = self.upstreams[region]
        headers = _upstream_headers(request, route.location)
        message = encode_request(request.method, request.target, pool.host_header, headers, request.body)
        access, one_way_ms = self.access, route.rtt_ms / 2
        self.counters.count_request(region, len(request.body))
        arrival = access.due(one_way_ms, since=request.received_at or None)  # the request travels to the region
        try:
            upstream = await pool.send(
                message,
                head=request.method == "HEAD",
                timeout=UPSTREAM_TIMEOUT_S,
                deliver=functools.partial(access.deliver, arrival),
            )
        except (UpstreamError, TimeoutError, OSError) as err:
            self._request_failed(self.apps[region], err)
            answer = error_answer(request, 502, f"the app in {region} failed: {type(err).__name__}", route.extra)
            status, figures, answered_at = answer.status, None, None
        else:
            answer, figures = _downstream_answer(request, upstream, route.extra)
            status, answered_at = upstream.status, upstream.received_at
        data = encode_answer(answer, request)  # all made before the answer sets off: on arrival, only a write
        self.counters.count_response(region, len(answer.body))

        def answer_arrives() -> None:
            send(data)
            self._record(request, started, city, region, status, route.rtt_ms, figures)

        # The answer travels back; from the region, so not before the request got there (an app that cannot be
        # reached fails at once, but the client learns it only from the region).
        access.deliver(access.due(one_way_ms, since=answered_at, not_before=arrival), answer_arrives)

    def _record(
        self,
        request: Request,
        started: float,
        city: str,
        region: str | None,
        status: int,
        rtt_ms: float,
        figures: list[tuple[bytes, bytes]] | None,
    ) -> None:
        """For the lab console: one append to a bounded deque (movr.lab.console.recorder); the access log."""
        latency_ms = (time.perf_counter() - started) * 1000
        if self.recorder is not None:
            headers = None if figures is None else _figure_headers(figures)
            self.recorder.record(request.method, request.path, city, region, status, latency_ms, rtt_ms, headers)
        if self.access_log:  # the path as sent, without the query: the console's URLs carry the lab's token there
            log.info("%s %s %s %.1f ms", request.method, request.raw_path, status, latency_ms)

    def _request_failed(self, app: _App, err: BaseException) -> None:
        if app.healthy:
            log.warning(
                "app in %s failed mid-request (%s): out of rotation until a health check passes", app.region, err
            )
        app.healthy = False
        app.failures = max(app.failures, FAILURES_TO_UNHEALTHY)

    # --- health ---

    async def _watch_health(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(region) for region in self.apps))
            await asyncio.sleep(HEALTH_INTERVAL_S)  # a polling period, not a distance

    async def _probe(self, region: str) -> None:
        pool = self.health_checks[region]
        try:
            answer = await pool.send(_health_request(pool), head=False, timeout=HEALTH_TIMEOUT_S)
            ok = 200 <= answer.status < 300
        except (UpstreamError, TimeoutError, OSError):
            ok = False
        self.record_probe(region, ok)

    def record_probe(self, region: str, ok: bool) -> None:
        app = self.apps[region]
        if ok:
            if not app.healthy:
                log.info("app in %s passed a health check: back in rotation", region)
            app.healthy, app.failures = True, 0
            return
        app.failures += 1
        if app.healthy and app.failures >= FAILURES_TO_UNHEALTHY:
            log.warning("app in %s failed %d health checks: out of rotation", region, app.failures)
            app.healthy = False

    # --- control API ---

    def describe(self) -> dict[str, Any]:
        counts = self.counters.snapshot()
        return {
            "topology": self.config.topology,
            "scale": self.config.scale,
            "preset": self.config.preset.name,
            "primary_region": self.config.primary_region,
            "default_city": self.config.default_city,
            "regions": {
                region: {
                    "app": app.base_url,
                    "healthy": app.healthy,
                    "forced_down": app.forced_down,
                    **counts[region],
                }
                for region, app in self.apps.items()
            },
        }

    async def status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.describe())

    async def set_region(self, request: web.Request) -> web.Response:
        region = request.match_info["region"]
        if region not in self.apps:
            return web.json_response(control.error_body("not_found", f"no app in region {region!r}"), status=404)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("down"), bool):
            return web.json_response(control.error_body("bad_request", 'send {"down": true|false}'), status=400)
        self.apps[region].forced_down = body["down"]
        log.info("region %s forced %s", region, "down" if body["down"] else "back up")
        return web.json_response(self.describe()["regions"][region])

    async def reset(self, _request: web.Request) -> web.Response:
        self.counters.reset()
        return web.json_response(self.describe())

    async def no_such_endpoint(self, _request: web.Request) -> web.Response:
        return web.json_response(control.error_body("not_found", "no such balancer endpoint"), status=404)


# Lower-case header names, as movr.lab.downstream indexes them.
_CITY_HEADER_KEY = CITY_HEADER.lower().encode()
_GEO_HEADER_KEY = GEO_HEADER.lower().encode()
_CITY_COOKIE_NAME = CITY_COOKIE.encode()
_REGION_KEY = REGION_HEADER.encode()
_RTT_KEY = RTT_HEADER.encode()
_CONTROL_PREFIX = CONTROL_PREFIX.encode()
_CONSOLE_PATH = CONSOLE_PREFIX.encode()
_CONSOLE_PREFIX = _CONSOLE_PATH + b"/"

# Headers that describe one hop, not the message (RFC 9110 7.6.1), plus those the proxy recomputes itself.
_HOP_BY_HOP = frozenset(
    name.lower().encode()
    for name in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Never forwarded as the client sent them: recomputed for the app, or set by the balancer (replacing every copy,
# since the app must trust only what the balancer resolved); the lab's control token is the balancer's alone,
# so an app (and its logs) never sees it.
_NOT_FORWARDED = _HOP_BY_HOP | {
    name.lower().encode()
    for name in (
        "Host",
        "Content-Length",
        "Expect",
        control.TOKEN_HEADER,
        CITY_HEADER,
        GEO_HEADER,
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    )
}
_NOT_RETURNED = _HOP_BY_HOP | {b"content-length", _REGION_KEY.lower(), _RTT_KEY.lower()}
_FIGURE_KEYS = frozenset(name.lower().encode() for name in FIGURE_HEADERS)


def _connection_listed(value: bytes | None) -> set[bytes]:
    """Headers the sender named in Connection: hop-by-hop too (RFC 9110 7.6.1)."""
    if not value:
        return set()
    return {name.strip().lower() for name in value.split(b",") if name.strip()}


def _upstream_headers(request: Request, location: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    listed = _connection_listed(request.joined(b"connection"))
    headers = [
        (name, value)
        for name, value in request.headers
        if (key := name.lower()) not in _NOT_FORWARDED and key not in listed
    ]
    prior = request.joined(b"x-forwarded-for")
    peer = request.peer.encode()
    headers += location
    headers.append((b"X-Forwarded-For", prior + b", " + peer if prior else peer))
    headers.append((b"X-Forwarded-Proto", b"http"))
    headers.append((b"X-Forwarded-Host", request.header(b"host") or request.local))
    return headers


def _downstream_answer(
    request: Request, upstream: UpstreamResponse, extra: list[tuple[bytes, bytes]]
) -> tuple[Answer, list[tuple[bytes, bytes]]]:
    """The app's answer as the client gets it (every Set-Cookie kept, hop-by-hop headers dropped, the body
    untouched), and the app's figures among its headers (for the console). One pass over the headers."""
    headers: list[tuple[bytes, bytes]] = []
    figures: list[tuple[bytes, bytes]] = []
    listed: set[bytes] = set()
    announced: int | None = None
    for name, value in upstream.headers:
        key = name.lower()
        if key in _NOT_RETURNED:
            if key == b"connection":
                listed |= _connection_listed(value)
            elif key == b"content-length" and value.isdigit():
                announced = int(value)
            continue
        headers.append((name, value))
        if key in _FIGURE_KEYS:
            figures.append((name, value))
    if listed - _NOT_RETURNED:  # the app named more hop-by-hop headers than the standard ones
        headers = [(name, value) for name, value in headers if name.lower() not in listed]
    headers += extra
    # A HEAD answer (and a 304) has no body but may announce the length a GET would get: keep the app's figure.
    bodiless = request.method == "HEAD" or upstream.status == 304
    length = announced if bodiless else len(upstream.body)
    return Answer(upstream.status, upstream.reason, headers, upstream.body, length), figures


def _figure_headers(figures: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """The app's X-Movr-* figures as the console's recorder reads them (only those: decoding the rest is wasted)."""
    return CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in figures)


def _health_request(pool: UpstreamPool) -> bytes:
    return encode_request("GET", HEALTH_PATH.encode(), pool.host_header, [], b"")


BALANCER_KEY = web.AppKey("balancer", Balancer)


def build_app(config: Mapping[str, Any], token: str, run_dir: Path | None = None) -> web.Application:
    """The balancer's own application (not yet listening): its control API behind `token`, and with the
    `run_dir` of its lab the lab console under /lab/ (movr.lab.console), which is fed the requests it forwards.
    Forwarded requests never reach it: `serving` puts the front door (movr.lab.downstream) before it. Raises
    BalancerConfigError on a bad config."""
    balancer = Balancer(parse_config(config))
    app = web.Application()
    app[BALANCER_KEY] = balancer
    app.cleanup_ctx.append(balancer.lifecycle)
    guarded = control.guard(token)
    app.router.add_get(CONTROL_PREFIX + "status", guarded(balancer.status))
    app.router.add_post(CONTROL_PREFIX + "regions/{region}", guarded(balancer.set_region))
    app.router.add_post(CONTROL_PREFIX + "reset", guarded(balancer.reset))
    if run_dir is not None:
        from movr.lab.console import mount  # the console's modules load only in a lab's balancer

        balancer.recorder = RequestRecorder()
        balancer.console_mounted = True
        mount(app, run_dir, token, balancer)
    app.router.add_route("*", "/{path:[\\s\\S]*}", balancer.no_such_endpoint)
    return app


# --- process entry point ------------------------------------------------------------------------------------


class PathOnlyAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without query strings (the console's URLs carry the lab's token there), its paths
    still percent-encoded (an encoded newline stays in its line)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.raw_path.partition("?")[0]
        self.logger.info("%s %s %s %.1f ms", request.method, path, response.status, time * 1000)


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int, *, access_log: bool = False) -> AsyncIterator[int]:
    """The balancer listening on 127.0.0.1:port (0: any free port): yields the port; closes everything after."""
    runner = web.AppRunner(
        app, access_log=log if access_log else None, access_log_class=PathOnlyAccessLogger, shutdown_timeout=2.0
    )
    await runner.setup()  # runs the cleanup context's start: the access link, the health watcher
    balancer = app[BALANCER_KEY]
    balancer.access_log = access_log
    assert runner.server is not None
    door = FrontDoor(balancer.exchange, balancer.is_own, runner.server, max_body=_MAX_BODY_BYTES)
    try:
        yield await door.start(LISTEN_HOST, port)
    finally:
        await door.close(timeout=2.0)
        await runner.cleanup()  # stops the health watcher, closes the pools


async def serve(app: web.Application, port: int, *, access_log: bool = False) -> None:
    """Listen on 127.0.0.1:port until SIGTERM or SIGINT, then close everything."""
    async with serving(app, port, access_log=access_log) as bound:
        print(json.dumps({"event": "ready", "port": bound}), flush=True)
        # Everything allocated so far lives as long as the process: keep it out of the cyclic collector's full
        # passes, which would otherwise pause forwarding for milliseconds (as in the links' process).
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: shutting down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m movr.lab.balancer", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON config file (see the module docstring)")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--access-log", action="store_true", help="log every request (slows benchmarks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_dir = os.environ.get(RUN_DIR_MARKER)  # set by the lab that started this process
        app = build_app(load_config(args.config), control.token_from_env(), Path(run_dir) if run_dir else None)
    except (BalancerConfigError, OSError, ValueError, control.ControlTokenError) as err:
        print(f"balancer: {err}", file=sys.stderr)
        return 2
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(app, args.port, access_log=args.access_log))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
