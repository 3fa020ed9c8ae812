"""The console's routes: an aiohttp application the balancer mounts under /lab/ (movr.lab.console.mount).

Handlers are thin: each reads its input, runs the work in a worker thread (the state file, signals, SQL, a
journey: never on the event loop that forwards MovR's traffic) and answers JSON. Every /lab/api/* route but
the stream is wrapped by the lab's control guard (token; JSON for a state change); refusals and errors use
the app's shape `{"error": {"code", "message"}}`. Shapes: docs/console-api.md.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from aiohttp import web

from movr.lab import control
from movr.lab.console import journeys, page, placement, predictions, stream, topology
from movr.lab.console.core import BalancerView, Console
from movr.lab.console.faults import Fault, Refused, apply, check, parse
from movr.lab.faults import FaultError
from movr.lab.pgsetup import PostgresStartError
from movr.lab.processes import LabError
from movr.lab.standbys import StandbyError
from movr.lab.state import LabState, LabStateError
from movr.lab.survival import current_primaries, lost_servers, promise

log = logging.getLogger("movr.lab.console")
T = TypeVar("T")
MAX_BODY_BYTES = 16 * 1024  # the API's bodies are a few names


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(control.error_body(code, message), status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Every answer of the console in the app's error shape, even aiohttp's own (no such route, method)."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return _error(err.status, "not_found" if err.status == 404 else "bad_request", err.reason)
    except Refused as refused:
        return _error(refused.status, refused.code, refused.message)
    except LabStateError as err:
        return _error(503, "unavailable", str(err))
    except Exception:  # never aiohttp's plain-text 500: the page shows the message, the log the traceback
        log.exception("console request %s %s failed", request.method, request.path)
        return _error(500, "internal", "the console failed: see the balancer's log (logs/balancer.log)")


class Handlers:
    def __init__(self, console: Console) -> None:
        self.console = console
        # Two pools: the stream's ticks never wait behind a heal or a journey.
        self.ticks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-console-tick")
        self.work = ThreadPoolExecutor(max_workers=3, thread_name_prefix="lab-console-work")
        self.hub = stream.Hub(console, self.ticks)
        self.fault_lock = asyncio.Lock()
        self.journey_lock = asyncio.Lock()

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        yield
        self.ticks.shutdown(wait=False, cancel_futures=True)
        self.work.shutdown(wait=False, cancel_futures=True)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.work, functools.partial(work, *args))

    async def _body(self, request: web.Request) -> Any:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise Refused(413, "too_large", f"a console request body is at most {MAX_BODY_BYTES} bytes")
        try:
            return await request.json()
        except ValueError:
            raise Refused(400, "bad_request", "the body is not JSON") from None

    # --- pages ---

    async def page(self, request: web.Request) -> web.Response:
        offered = request.query.get("token")
        if offered is not None:
            if not self._is_token(offered):
                return _error(403, "forbidden", "that link's token is not this lab's: see `movr lab status`")
            opened = web.HTTPSeeOther("/lab/", headers=page.SECURITY_HEADERS)
            opened.set_cookie(page.COOKIE, offered, path="/lab/", httponly=True, samesite="Strict")
            raise opened
        unlocked = self._is_token(request.cookies.get(page.COOKIE, ""))
        state = await self._run(self.console.state)
        text = page.render(state, self.console.token if unlocked else "")
        return web.Response(text=text, content_type="text/html", headers=page.SECURITY_HEADERS)

    def _is_token(self, offered: str) -> bool:
        return bool(offered) and hmac.compare_digest(offered.encode(), self.console.token.encode())

    async def not_found(self, request: web.Request) -> web.Response:
        return _error(404, "not_found", f"no console page or endpoint {request.path}")

    # --- data ---

    async def topology(self, _request: web.Request) -> web.Response:
        state = await self._run(self.console.state)
        return web.json_response(topology.describe(state))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        return await stream.serve(request, self.hub, self.console.token)

    async def requests(self, _request: web.Request) -> web.Response:
        return web.json_response({"requests": await self._run(self.console.recent)})

    async def placement(self, _request: web.Request) -> web.Response:
        state = await self._run(self.console.state)
        return web.json_response(await self._run(placement.describe, state))

    # --- faults ---

    async def predict(self, request: web.Request) -> web.Response:
        fault, text, _state = await self._run(self._predict, await self._body(request))
        return web.json_response({"prediction": text, "fault": fault.as_dict()})

    def _predict(self, body: Any) -> tuple[Fault, str, LabState]:
        state = LabState.read(self.console.run_dir)  # fresh: a fault may have just changed it
        fault = parse(body, state)
        check(fault, state)
        return fault, predictions.predict(fault, state), state

    async def fault(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if self.fault_lock.locked():
            raise Refused(409, "conflict", "another fault is being applied: wait for it to finish")
        try:
            async with self.fault_lock:
                return web.json_response(await self._run(self._apply, body))
        except FaultError as err:
            return _error(409, "conflict", str(err))
        except (LabError, StandbyError, PostgresStartError, psycopg.Error, OSError) as err:
            log.warning("console fault failed: %s", err)
            return _error(503, "unavailable", f"the lab could not carry the fault out: {err}")

    def _apply(self, body: Any) -> dict[str, Any]:
        fault, text, state = self._predict(body)  # refuses (nothing changed) before anything is done
        at = time.time()
        observation = self.console.observations.start(
            fault.as_dict(), at, text, watched_groups(fault, state), self.console.recorder.latest_seq
        )
        done = apply(fault, self.console.run_dir)
        applied = {"id": observation.id, "at": at, "took_s": round(time.time() - at, 3), "done": done}
        return {"prediction": text, "fault": fault.as_dict(), "applied": applied}

    # --- journeys ---

    async def journey(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("city"), str):
            raise Refused(400, "bad_request", 'send {"city": "<a city of the preset>"}')
        state = await self._run(self.console.state)
        try:
            city = journeys.city_of(state, body["city"])
        except journeys.JourneyRefused as err:
            return _error(404, "not_found", str(err))
        if self.journey_lock.locked():
            return _error(409, "conflict", "a journey is running: wait for its table")
        async with self.journey_lock:
            return web.json_response(await self._run(journeys.run, state, city))

    async def saved(self, _request: web.Request) -> web.Response:
        path = journeys.saved_path()
        found = await self._run(journeys.load_saved, path)
        if found is None:
            return _error(404, "not_found", f"no saved journey comparison at {path}: run `movr bench journey` there")
        return web.json_response(found)


def watched_groups(fault: Fault, state: LabState) -> set[str]:
    """The regions whose cities' writes a fault stops until a failover or a heal: what its observation times."""
    if fault.action != "kill":
        return set()
    preset, layout = state.preset, state.plan.survival
    target = str(fault.target)
    if layout is not None:
        lost = lost_servers(layout, preset, target) if fault.kind == "region" else {target}
        promised = promise(layout, current_primaries(state), lost, region_fault=fault.kind == "region")
        return {*promised.fail_over, *promised.unavailable}
    if fault.kind == "region" and target not in state.plan.servers:
        return set()  # nothing of the data runs there
    if state.topology != "multi":
        return set(preset.region_names)  # all the data lives on the primary region's one server
    if fault.kind == "region":
        return {target}
    return {next(region for region, server in state.plan.servers.items() if server.name == target)}


def build(run_dir: Path, token: str, balancer: BalancerView) -> web.Application:
    console = Console(run_dir, token, balancer)
    handlers = Handlers(console)
    app = web.Application(middlewares=[json_errors])
    app.cleanup_ctx.append(handlers.lifecycle)
    app.on_shutdown.append(handlers.hub.close)
    guarded = control.guard(token)
    app.router.add_get("/", handlers.page)
    app.router.add_get("/api/topology", guarded(handlers.topology))
    app.router.add_get("/api/stream", handlers.stream)  # its token in the query: see movr.lab.console.stream
    app.router.add_get("/api/requests", guarded(handlers.requests))
    app.router.add_post("/api/faults/predict", guarded(handlers.predict))
    app.router.add_post("/api/faults", guarded(handlers.fault))
    app.router.add_post("/api/journeys", guarded(handlers.journey))
    app.router.add_get("/api/journeys/saved", guarded(handlers.saved))
    app.router.add_get("/api/placement", guarded(handlers.placement))
    app.router.add_static("/static/", page.STATIC_DIR)
    app.router.add_static("/vendor/movr/", page.MOVR_STATIC_DIR)
    bootstrap = page.bootstrap_dir()
    if bootstrap is not None:
        app.router.add_static("/vendor/bootstrap/", bootstrap)
    app.router.add_route("*", "/{tail:.*}", handlers.not_found)
    return app
