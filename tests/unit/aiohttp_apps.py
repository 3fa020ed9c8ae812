"""Stand-in HTTP servers for the balancer's tests (any aiohttp handler, on a free 127.0.0.1 port), and the
balancer itself served in a test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from movr.lab.balancer import serving as balancer_serving
from movr.lab.ports import free_port


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """(base URL, runner) of a server answering every path with `handler`; cleaning the runner up kills it."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", runner
    finally:
        await runner.cleanup()


class BalancerServer:
    """A balancer application served in this event loop as the process serves it (front door and all), used as
    aiohttp's TestServer is: `await start_server()`, `make_url(path)`, `await close()`."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.host = "127.0.0.1"
        self.port = 0
        self._serving = balancer_serving(app, 0)

    async def start_server(self) -> None:
        self.port = await self._serving.__aenter__()

    def make_url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def close(self) -> None:
        await self._serving.__aexit__(None, None, None)
