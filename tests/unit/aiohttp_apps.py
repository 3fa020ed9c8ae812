"""Stand-in HTTP servers for the balancer's tests: any aiohttp handler, on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

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
