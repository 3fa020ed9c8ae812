"""What each request cost and where it was served (law 2: count before you time).

Every request opens a `stats.measure()` scope; the store adds each statement, its SQL time, its WAN round
trips and the region of the server it ran on. Pages show the figures in their footer (read at render time:
the action has run by then), and every response carries them in `Server-Timing` and `X-Movr-*` headers,
which the journey benchmark reads.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_login import current_user

from movr import telemetry_headers as names
from movr.store import stats
from movr.web import location
from movr.web.figures import Figures
from movr.web.metrics import Metrics, restrict, route_label

STARTED_KEY = "movr.started"


class StartClock:
    """WSGI middleware, outermost: the app's time starts when the server hands the request over, so that
    Flask's own work before the first hook (request context, session, routing) is the app's, not the path's."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ[STARTED_KEY] = time.perf_counter()
        return self.wsgi_app(environ, start_response)


def figures() -> Figures:
    """This request's figures so far."""
    measured: stats.Stats = g.get("movr_stats") or stats.Stats()
    started = request.environ.get(STARTED_KEY) or g.get("movr_started", time.perf_counter())
    return Figures(
        served_by=current_app.config["MOVR_REGION"],
        data_regions=tuple(sorted(measured.regions)),
        statements=measured.statements,
        sql_ms=measured.sql_ms,
        wan_round_trips=measured.wan_round_trips,
        app_ms=(time.perf_counter() - started) * 1000,
        # Only deliberate local work (password hashing, timed by the store): the rest of the app's CPU is
        # overhead that benchmarks must see, not fold into the physical floor.
        cpu_ms=measured.cpu_seconds * 1000,
    )


def client_location() -> location.ClientLocation:
    """Where this request comes from (computed once per request)."""
    if "movr_location" not in g:
        preset = current_app.extensions["movr_preset"]
        found = location.resolve(preset, request.headers, request.cookies)
        if found.city is None:
            # Only then the rider's home: loading the session's user is most of this function's cost.
            rider = g.get("movr_rider") or (current_user if current_user.is_authenticated else None)
            if rider is not None:
                found = location.resolve(preset, {}, {}, rider.city)
        g.movr_location = found
    return g.movr_location


def init_app(app: Flask, metrics: Metrics) -> None:
    """Register first, so the scope is open before any other extension's before_request hook runs;
    `/metrics` is restricted here too, if the app is told to (`metrics.restrict`)."""

    @app.before_request
    def open_scope() -> None:
        g.movr_started = time.perf_counter()
        scope = stats.measure()
        g.movr_stats = scope.__enter__()
        g.movr_scope = scope

    @app.after_request
    def add_figures(response: Response) -> Response:
        done = figures()
        # Added, not set: no view writes these, and setting each would scan every header already there.
        response.headers.extend(
            [
                ("Server-Timing", done.server_timing),
                (names.REGION, done.served_by),
                (names.STATEMENTS, str(done.statements)),
                (names.SQL_MS, f"{done.sql_ms:.3f}"),
                (names.APP_MS, f"{done.app_ms:.3f}"),
                (names.WAN_ROUND_TRIPS, str(done.wan_round_trips)),
                (names.DATA_REGIONS, ",".join(done.data_regions)),
                (names.CLIENT_CITY, client_location().city or ""),
                # Deliberate local work (argon2 on sign-up and log-in): part of a request's physical floor.
                (names.CPU_MS, f"{done.cpu_ms:.3f}"),
            ]
        )
        metrics.observe(route_label(request.url_rule), request.method, response.status_code, done)
        return response

    @app.teardown_request
    def close_scope(_error: BaseException | None) -> None:
        scope = g.pop("movr_scope", None)
        if scope is not None:
            scope.__exit__(None, None, None)

    restrict(app)
