"""The lab console: the whole lab live in a browser, at `<balancer URL>/lab/` (docs/lab.md, "Console").

Served by the lab's balancer (movr.lab.balancer mounts it when it runs for a lab), never by the MovR app.
Its API (`/lab/api/*`, listed in docs/lab.md) wants the lab's token like every control
endpoint (movr.lab.control). Modules: `recorder` (the forwarded requests, written on the balancer's forward
path), `traffic`, `health`, `topology`, `faults` and `predictions`, `observations`, `journeys`, `placement`,
`page`, `core` (the console's view of its lab), `stream` (server-sent events), `app` (the routes).

This package's `__init__` stays light: `movr lab placement` and the balancer import parts of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from movr.lab.console.core import BalancerView

PREFIX = "/lab"


def mount(app: web.Application, run_dir: Path, token: str, balancer: BalancerView) -> None:
    """Add the console under /lab/ to the balancer's application (before its catch-all forwarding route)."""
    # Here, not at the top: `movr lab placement` imports this package and needs neither aiohttp nor the app.
    from aiohttp import web

    from movr.lab.console.app import build

    async def to_page(_request: web.Request) -> web.Response:
        raise web.HTTPFound(PREFIX + "/")

    app.router.add_get(PREFIX, to_page)
    app.add_subapp(PREFIX + "/", build(run_dir, token, balancer))
