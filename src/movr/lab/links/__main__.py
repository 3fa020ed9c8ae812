"""The links process: ``MOVR_LAB_TOKEN=... python -m movr.lab.links --spec FILE.json --control-port N``.

On start it prints one JSON line ``{"event": "ready", "control_port": N, "links": {name: port}}`` to stdout,
then serves ``GET /links``, ``POST /links/{name}`` (``{"one_way_ms": x}``, ``{"down": bool}`` or, to re-point
it at another server, ``{"target_port": n, "dst": name, "kind": "wan"|"local"}``) and ``POST /reset`` on
127.0.0.1:N, each only with the lab's token (``movr.lab.control``), and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys

from aiohttp import web

from movr.lab import control
from movr.lab.links.server import LinkServer
from movr.lab.links.spec import LISTEN_HOST, LinkSpec, load_specs
from movr.lab.links.timing import new_event_loop


def make_control_app(server: LinkServer, token: str) -> web.Application:
    """The HTTP control API of a link server process (aiohttp, on the links' own loop), behind `token`."""

    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(control.error_body(code, message), status=status)

    async def list_links(request: web.Request) -> web.Response:
        return web.json_response(server.describe())

    async def change_link(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in server.names():
            return error(404, "not_found", f"no link named {name!r}")
        try:
            body = await request.json()
            if not isinstance(body, dict) or not ({"one_way_ms", "down", "target_port"} & body.keys()):
                raise ValueError('expected {"one_way_ms": x}, {"down": true|false} or {"target_port": n}')
            if "target_port" in body:
                server.set_target(name, int(body["target_port"]), dst=body.get("dst"), kind=body.get("kind"))
            if "one_way_ms" in body:
                server.set_delay(name, float(body["one_way_ms"]))
            if "down" in body:
                if not isinstance(body["down"], bool):
                    raise ValueError('"down" must be true or false')
                server.set_down(name, body["down"])
        except (ValueError, TypeError) as exc:
            return error(400, "bad_request", str(exc))
        except OSError as exc:
            return error(409, "conflict", str(exc))
        return web.json_response(next(link for link in server.describe() if link["name"] == name))

    async def reset(request: web.Request) -> web.Response:
        server.reset_counters()
        return web.json_response({"reset": True})

    guarded = control.guard(token)
    app = web.Application()
    app.router.add_get("/links", guarded(list_links))
    app.router.add_post("/links/{name}", guarded(change_link))
    app.router.add_post("/reset", guarded(reset))
    return app


async def serve(specs: list[LinkSpec], control_port: int, token: str) -> None:
    """Run links and their control API (behind `token`) until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = LinkServer(specs)
    await server.start()
    runner = web.AppRunner(make_control_app(server, token), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LISTEN_HOST, control_port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else control_port
        ready = {
            "event": "ready",
            "pid": os.getpid(),
            "control_port": bound,
            "precise_timer": server.precise_timer,
            "links": {name: server.port(name) for name in server.names()},
        }
        print(json.dumps(ready), flush=True)
        # Everything allocated so far (aiohttp, the links) lives as long as the process: keep it out of
        # the cyclic collector's full passes, which would otherwise pause delivery for milliseconds.
        gc.freeze()
        await stop.wait()
    finally:
        await server.stop()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m movr.lab.links", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="JSON file: a list of links, or {'links': [...]}")
    parser.add_argument("--control-port", type=int, required=True, help="HTTP control API port (0: any)")
    args = parser.parse_args(argv)
    try:
        token = control.token_from_env()
    except control.ControlTokenError as exc:
        print(f"movr.lab.links: {exc}", file=sys.stderr)
        return 2
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(load_specs(args.spec), args.control_port, token))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # A taken port or a bad spec: one line for the supervisor's log, not a traceback.
        print(f"movr.lab.links: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
