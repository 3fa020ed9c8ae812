"""`GET /lab/api/stream?token=`: server-sent events, one `update` about twice a second.

One ticker builds each update (in a worker thread: it reads the state file, the processes and the links'
control API) while at least one page listens, and every listener sends it on; the first event a listener
gets carries the last 50 requests, later ones the requests forwarded since the previous update. EventSource
cannot send headers, so the token comes in the query string, compared in constant time as the header is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from concurrent.futures import Executor
from typing import Any

from aiohttp import web

from movr.lab import control
from movr.lab.console.core import SHOWN, Console
from movr.lab.state import LabStateError

PERIOD_S = 0.5  # at least one update a second, with room for a slow tick
log = logging.getLogger("movr.lab.console")


class Hub:
    """The latest update, made while anyone listens, and a condition listeners wait on for the next one."""

    def __init__(self, console: Console, executor: Executor) -> None:
        self.console = console
        self.executor = executor
        self.latest: dict[str, Any] | None = None
        self.closing = False
        self._changed = asyncio.Condition()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None

    def join(self) -> None:
        self._listeners += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._tick(), name="lab-console-ticker")

    def leave(self) -> None:
        self._listeners -= 1

    async def close(self, _app: web.Application | None = None) -> None:
        """Let every listener end (the balancer is shutting down) and stop the ticker."""
        self.closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while self._listeners > 0 and not self.closing:
            started = loop.time()
            regions = self.console.balancer.describe()["regions"]  # read on the loop that changes it
            try:
                update = await loop.run_in_executor(self.executor, self.console.update, regions)
            except LabStateError as err:  # the lab is going down: say so once, stop
                log.info("console stream: %s", err)
                self.closing = True
                update = None
            async with self._changed:
                if update is not None:
                    self.latest = update
                self._changed.notify_all()
            await asyncio.sleep(max(0.05, PERIOD_S - (loop.time() - started)))  # a period, not a distance

    async def after(self, seq: int, since: float = 0.0) -> dict[str, Any] | None:
        """The first update newer than `seq` and begun at `since` or later (epoch seconds: a new listener must
        not get one read before it came); None once the hub is closing."""

        def fresh() -> bool:
            latest = self.latest
            return latest is not None and latest["seq"] > seq and latest["time"] >= since

        async with self._changed:
            await self._changed.wait_for(lambda: self.closing or fresh())
            return None if self.closing else self.latest


def token_refusal(request: web.Request, token: str) -> web.Response | None:
    sent = request.query.get("token", "")
    if not sent:
        body = control.error_body("unauthorized", "the stream wants the lab's token: ?token=...")
        return web.json_response(body, status=401)
    if not hmac.compare_digest(sent.encode(), token.encode()):
        return web.json_response(control.error_body("forbidden", "that is not this lab's control token"), status=403)
    return None


async def serve(request: web.Request, hub: Hub, token: str) -> web.StreamResponse:
    refused = token_refusal(request, token)
    if refused is not None:
        return refused
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    joined = time.time()
    try:
        backlog: list[dict[str, Any]] | None = await loop.run_in_executor(hub.executor, hub.console.recent, SHOWN)
    except LabStateError:
        backlog = []
    hub.join()
    seq = 0
    try:
        while (update := await hub.after(seq, joined)) is not None:
            seq = update["seq"]
            if backlog is not None:  # the first event: the last 50, then what came since
                merged = {request["id"]: request for request in [*backlog, *update["requests"]]}
                update = {**update, "requests": [merged[key] for key in sorted(merged)][-SHOWN:]}
                backlog = None
            await response.write(f"event: update\ndata: {json.dumps(update)}\n\n".encode())
    except (ConnectionResetError, ConnectionError):  # the page went away
        pass
    finally:
        hub.leave()
    return response
