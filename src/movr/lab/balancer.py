"""The lab's geo load balancer: one HTTP front door standing in for a cloud global load balancer.

For each request it locates the client in a city, picks the nearest healthy region that runs an app server,
carries the client<->region round trip on the client's access link (half before forwarding, half after the
app's response is read: ``movr.lab.links_access``, the only waiting here) and forwards the request to that
region's app with location headers added. So a request from Rome costs the client one Rome<->region round
trip, counted per region (law 2), and nothing else in the balancer stands in for distance (law 1).

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
import html
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
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger
from multidict import CIMultiDict, CIMultiDictProxy, istr

from movr.geo import Preset, PresetError, load_preset
from movr.geo.client_location import CITY_HEADER, GEO_HEADER, geo_header_value, match_city, resolve
from movr.lab import control
from movr.lab.console.recorder import RequestRecorder
from movr.lab.layout import TOPOLOGIES
from movr.lab.links import new_event_loop
from movr.lab.links_access import AccessLinkCounters, carry
from movr.lab.processes import RUN_DIR_MARKER
from movr.lab.upstream import UpstreamError, UpstreamPool

log = logging.getLogger("movr.lab.balancer")

LISTEN_HOST = "127.0.0.1"  # the lab is one machine; the balancer never listens on another address

REGION_HEADER = "X-Movr-Balancer-Region"
RTT_HEADER = "X-Movr-Client-Rtt-Ms"
CONTROL_PREFIX = "/_balancer/"

HEALTH_PATH = "/healthz"
HEALTH_INTERVAL_S = 0.5
HEALTH_TIMEOUT_S = 1.0
FAILURES_TO_UNHEALTHY = 2  # one lost probe is noise; two in a row is an outage

# Headers that describe one hop, not the message (RFC 9110 7.6.1), plus those the proxy recomputes itself.
_HOP_BY_HOP = frozenset(
    istr(name)
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
_RECOMPUTED_UPSTREAM = frozenset({hdrs.HOST, hdrs.CONTENT_LENGTH, hdrs.EXPECT})
_RECOMPUTED_DOWNSTREAM = frozenset({hdrs.CONTENT_LENGTH})
_MAX_BODY_BYTES = 64 * 1024 * 1024
UPSTREAM_TIMEOUT_S = 120.0


class BalancerConfigError(ValueError):
    """A balancer config that cannot be used."""


@dataclass(frozen=True)
class BalancerConfig:
    preset: Preset
    scale: float
    topology: str
    primary_region: str
    apps: dict[str, str]  # region -> app base URL, without a trailing slash
    default_city: str


def parse_config(data: Mapping[str, Any]) -> BalancerConfig:
    """Validate a config dict (the JSON file's content) against its preset."""
    if "preset" not in data:
        raise BalancerConfigError("config needs 'preset'")
    try:
        preset = load_preset(data["preset"])
    except PresetError as err:
        raise BalancerConfigError(str(err)) from None

    topology = data.get("topology", "multi")
    if topology not in TOPOLOGIES:
        raise BalancerConfigError(f"topology must be one of {TOPOLOGIES}, not {topology!r}")
    try:
        scale = float(data.get("scale", 1.0))
    except (TypeError, ValueError):
        raise BalancerConfigError(f"scale must be a number, not {data.get('scale')!r}") from None
    if scale < 0:
        raise BalancerConfigError("scale must not be negative")

    primary = data.get("primary_region") or preset.primary_region
    if primary not in preset.regions:
        raise BalancerConfigError(f"primary_region {primary!r} is not a region of preset {preset.name}")

    apps_in = data.get("apps") or {}
    if not isinstance(apps_in, Mapping):
        raise BalancerConfigError("apps must map region -> URL")
    for region in apps_in:
        if region not in preset.regions:
            raise BalancerConfigError(f"apps names {region!r}, not a region of preset {preset.name}")
    apps = {region: str(url).rstrip("/") for region, url in apps_in.items()}
    for region, url in apps.items():
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path or parts.query:
            raise BalancerConfigError(f"the app of {region} must be at http://host:port, not {url!r}")
    if topology == "single":
        # The seed article's "before": one app in the primary region serves the world.
        if primary not in apps:
            raise BalancerConfigError(f"topology single needs an app in the primary region {primary}")
        apps = {primary: apps[primary]}
    elif not apps:
        raise BalancerConfigError("apps is empty")

    default_city = data.get("default_city")
    if default_city is None:
        default_city = preset.regions[primary].cities[0]
    else:
        matched = match_city(preset, str(default_city))
        if matched is None:
            raise BalancerConfigError(f"default_city {default_city!r} is not a city of preset {preset.name}")
        default_city = matched
    return BalancerConfig(preset, scale, topology, primary, apps, default_city)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a JSON config; a relative preset path is taken relative to the config file."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise BalancerConfigError(f"{path}: config must be a JSON object")
    preset = data.get("preset")
    if isinstance(preset, str) and preset.endswith(".toml") and not Path(preset).is_absolute():
        beside = path.parent / preset
        if beside.exists():
            data["preset"] = str(beside)
    return data


# --- pure decisions -----------------------------------------------------------------------------------------


def resolve_city(preset: Preset, headers: Mapping[str, str], cookies: Mapping[str, str], default_city: str) -> str:
    """Where the client is, read as the app reads it (movr.geo.client_location), else the default city."""
    return resolve(preset, headers, cookies).city or default_city


def choose_region(preset: Preset, city: str, healthy_regions: list[str], topology: str, primary: str) -> str | None:
    """The region that serves a client in `city`: the nearest healthy one (the primary in `single`)."""
    if topology == "single":
        return primary if primary in healthy_regions else None
    if not healthy_regions:
        return None
    return preset.nearest_regions(city, list(healthy_regions))[0]


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


class Balancer:
    """Routing state, health and counters of one balancer; its methods are the aiohttp handlers."""

    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        self.apps = {region: _App(region, url) for region, url in config.apps.items()}
        # Requests go through lean keep-alive pools (movr.lab.upstream); health checks through aiohttp's client.
        self.upstreams = {region: UpstreamPool(url) for region, url in config.apps.items()}
        self.counters = AccessLinkCounters(list(self.apps))
        self._session: aiohttp.ClientSession | None = None
        # The lab console's record of forwarded requests (movr.lab.console); None when no console is mounted.
        self.recorder: RequestRecorder | None = None

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the health checks' session and watcher; the request pools closed at the end."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=256),
            # Clients' cookies must never leak between clients through a shared jar.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Bodies pass through byte for byte, compressed or not; Content-Encoding goes along unchanged.
            auto_decompress=False,
            # Send only the client's own headers: an added Accept-Encoding could make the app compress for
            # a client that never asked for it.
            skip_auto_headers=(hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE),
            timeout=aiohttp.ClientTimeout(total=120, sock_connect=2),
        )
        watcher = asyncio.create_task(self._watch_health(), name="balancer-health")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self._session.close()
            for pool in self.upstreams.values():
                pool.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the balancer is not running")
        return self._session

    def regions_in_rotation(self) -> list[str]:
        return [region for region, app in self.apps.items() if app.in_rotation]

    def usual_region(self, city: str) -> str | None:
        """The region that serves a client in `city` when every region is healthy."""
        cfg = self.config
        return choose_region(cfg.preset, city, list(self.apps), cfg.topology, cfg.primary_region)

    # --- forwarding ---

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return _error(request, 404, "no such balancer endpoint")
        started = time.perf_counter()
        cfg = self.config
        city = resolve_city(cfg.preset, request.headers, request.cookies, cfg.default_city)
        region = choose_region(cfg.preset, city, self.regions_in_rotation(), cfg.topology, cfg.primary_region)
        if region is None:
            response = _error(request, 503, f"no healthy region can serve a client in {city}")
            self._record(request, started, city, None, response.status, 0.0, None)
            return response
        app = self.apps[region]
        rtt_ms = cfg.preset.client_rtt_ms(city, region) * cfg.scale
        extra = {REGION_HEADER: region, RTT_HEADER: f"{rtt_ms:.3f}"}

        body = await request.read()
        headers = _upstream_headers(request, city, cfg.preset.region_of(city))
        self.counters.count_request(region, len(body))
        await carry(rtt_ms / 2)  # the request travels to the region
        try:
            upstream = await self.upstreams[region].request(
                request.method, request.raw_path, headers.items(), body, timeout=UPSTREAM_TIMEOUT_S
            )
        except (UpstreamError, TimeoutError, OSError) as err:
            self._request_failed(app, err)
            response = _error(request, 502, f"the app in {region} failed: {type(err).__name__}")
            await carry(rtt_ms / 2)  # the failure is found in the region; the answer still travels back
            self.counters.count_response(region, len(response.body or b""))
            response.headers.update(extra)
            self._record(request, started, city, region, response.status, rtt_ms, None)
            return response

        await carry(rtt_ms / 2)  # the response travels back
        payload = upstream.body
        up_headers = CIMultiDict(upstream.headers)
        self.counters.count_response(region, len(payload))
        response = web.Response(
            status=upstream.status,
            reason=upstream.reason or None,
            headers=_downstream_headers(up_headers),
            body=payload,
        )
        response.headers.update(extra)
        if request.method == hdrs.METH_HEAD and hdrs.CONTENT_LENGTH in up_headers:
            # A HEAD answer has no body but announces the length a GET would get; keep the app's figure.
            response.headers[hdrs.CONTENT_LENGTH] = up_headers[hdrs.CONTENT_LENGTH]
        self._record(request, started, city, region, upstream.status, rtt_ms, up_headers)
        return response

    def _record(
        self,
        request: web.Request,
        started: float,
        city: str,
        region: str | None,
        status: int,
        rtt_ms: float,
        headers: CIMultiDict[str] | None,
    ) -> None:
        """For the lab console: one append to a bounded deque (movr.lab.console.recorder), nothing more."""
        if self.recorder is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            self.recorder.record(request.method, request.path, city, region, status, latency_ms, rtt_ms, headers)

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
            await asyncio.gather(*(self._probe(app) for app in self.apps.values()))
            await asyncio.sleep(HEALTH_INTERVAL_S)  # a polling period, not a distance

    async def _probe(self, app: _App) -> None:
        try:
            async with self.session.get(
                app.base_url + HEALTH_PATH, timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
            ) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self.record_probe(app.region, ok)

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


def _connection_listed(headers: Mapping[str, str]) -> set[istr]:
    """Headers the sender named in Connection: hop-by-hop too (RFC 9110 7.6.1)."""
    return {istr(name.strip()) for name in headers.get(hdrs.CONNECTION, "").split(",") if name.strip()}


def _upstream_headers(request: web.Request, city: str, city_region: str) -> CIMultiDict[str]:
    # The lab's control token is for the balancer alone: an app (and its logs) never sees it.
    drop = _HOP_BY_HOP | _RECOMPUTED_UPSTREAM | _connection_listed(request.headers) | {istr(control.TOKEN_HEADER)}
    headers: CIMultiDict[str] = CIMultiDict((k, v) for k, v in request.headers.items() if k not in drop)
    # Setting replaces every copy the client sent: the app must trust only what the balancer resolved.
    headers[CITY_HEADER] = city
    headers[GEO_HEADER] = geo_header_value(city_region, city)
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


def _downstream_headers(upstream: CIMultiDict[str] | CIMultiDictProxy[str]) -> CIMultiDict[str]:
    # A multidict copy keeps every Set-Cookie (a dict would keep only the last).
    drop = _HOP_BY_HOP | _RECOMPUTED_DOWNSTREAM | _connection_listed(upstream)
    return CIMultiDict((k, v) for k, v in upstream.items() if k not in drop)


# The app's error codes (movr.web.errors), so that a client reads the balancer's failures as it reads the app's.
_ERROR_CODES = {404: "not_found", 502: "bad_gateway", 503: "unavailable"}


def _error(request: web.Request, status: int, message: str) -> web.Response:
    """A short answer from the balancer itself: HTML for browsers, else JSON shaped as the app's errors."""
    if "text/html" in request.headers.get(hdrs.ACCEPT, ""):
        page = f"<!doctype html><title>MovR balancer</title><h1>{status}</h1><p>{html.escape(message)}</p>\n"
        return web.Response(status=status, text=page, content_type="text/html")
    body = {"error": {"code": _ERROR_CODES.get(status, "error"), "message": message}}
    return web.json_response(body, status=status)


BALANCER_KEY = web.AppKey("balancer", Balancer)


def build_app(config: Mapping[str, Any], token: str, run_dir: Path | None = None) -> web.Application:
    """The balancer as an aiohttp application (not yet listening), its control API behind `token`; raises
    BalancerConfigError on a bad config. With the `run_dir` of its lab it also serves the lab console under
    /lab/ (movr.lab.console), and records the requests it forwards for it."""
    balancer = Balancer(parse_config(config))
    # Request bodies pass through as the client sent them, compressed or not.
    app = web.Application(client_max_size=_MAX_BODY_BYTES, handler_args={"auto_decompress": False})
    app[BALANCER_KEY] = balancer
    app.cleanup_ctx.append(balancer.lifecycle)
    guarded = control.guard(token)
    app.router.add_get(CONTROL_PREFIX + "status", guarded(balancer.status))
    app.router.add_post(CONTROL_PREFIX + "regions/{region}", guarded(balancer.set_region))
    app.router.add_post(CONTROL_PREFIX + "reset", guarded(balancer.reset))
    if run_dir is not None:
        from movr.lab.console import mount  # the console's modules load only in a lab's balancer

        balancer.recorder = RequestRecorder()
        mount(app, run_dir, token, balancer)  # before the catch-all: /lab/ is never forwarded
    app.router.add_route("*", "/{path:[\\s\\S]*}", balancer.forward)  # any path, encoded newlines too
    return app


# --- process entry point ------------------------------------------------------------------------------------


class PathOnlyAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without query strings: the console's URLs carry the lab's token there."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1f ms", request.method, request.path, response.status, time * 1000)


async def serve(app: web.Application, port: int, *, access_log: bool = False) -> None:
    """Listen on 127.0.0.1:port until SIGTERM or SIGINT, then close everything."""
    runner = web.AppRunner(
        app, access_log=log if access_log else None, access_log_class=PathOnlyAccessLogger, shutdown_timeout=2.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, LISTEN_HOST, port)
        await site.start()
        bound = runner.addresses[0][1]
        print(json.dumps({"event": "ready", "port": bound}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: shutting down")
    finally:
        await runner.cleanup()  # runs the cleanup context: stops the health watcher, closes the session


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
