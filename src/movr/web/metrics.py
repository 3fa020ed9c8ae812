"""Prometheus metrics: request latency by route and region, SQL statements, WAN round trips.

Under `movr serve` (granian or gunicorn) every worker is a process with its own counters. When
`PROMETHEUS_MULTIPROC_DIR` is set (`movr serve` sets it to a fresh directory it removes on exit)
prometheus_client keeps the values in files there and `/metrics` adds up every worker; without it,
`/metrics` shows the worker that answered.

Label values are bounded: a method outside HTTP's standard ones counts as "other", and a request that
matched no route counts under one route, so that nobody can grow the series (and every worker's files)
by inventing methods or paths. With `MOVR_METRICS_TOKEN` set, `/metrics` answers only to
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Flask, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from movr.web.errors import error_json
from movr.web.figures import Figures

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TOKEN_SETTING = "MOVR_METRICS_TOKEN"
ENDPOINT = "ops.metrics"
# RFC 9110's methods and PATCH; anything else a client invents is one label value.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "<unmatched>"


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


def route_label(rule: Any) -> str:
    """The URL rule a request matched (its pattern, never the path itself), or one value for no match."""
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").strip().partition(" ")
    # compare_digest: how long the comparison takes must not tell an attacker how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # One registry per app, so that several apps in one process (tests) never collide. In
        # multiprocess mode values live in files and are collected from there, not from a registry.
        self.registry = CollectorRegistry()
        target = None if multiprocess_mode() else self.registry
        self.latency = Histogram(
            "movr_http_request_duration_seconds",
            "Time to answer a request, by route and serving region",
            ["route", "method", "region"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.requests = Counter(
            "movr_http_requests", "Requests answered", ["route", "method", "status", "region"], registry=target
        )
        self.statements = Counter(
            "movr_sql_statements", "SQL statements run for requests", ["route", "region"], registry=target
        )
        self.sql_seconds = Counter(
            "movr_sql_seconds", "Time spent waiting for SQL statements", ["route", "region"], registry=target
        )
        self.wan_round_trips = Counter(
            "movr_wan_round_trips",
            "WAN round trips to databases in other regions",
            ["route", "region"],
            registry=target,
        )
        self._by_labels: dict[tuple[str, str, int, str], tuple[Any, ...]] = {}

    def observe(self, route: str, method: str, status: int, figures: Figures) -> None:
        """`route` is a rule pattern or UNMATCHED_ROUTE (see `route_label`); `method` may be anything."""
        series = self._series(route, method_label(method), status, figures.served_by)
        latency, requests, statements, sql_seconds, wan_round_trips = series
        latency.observe(figures.app_ms / 1000)
        requests.inc()
        if figures.statements:
            statements.inc(figures.statements)
            sql_seconds.inc(figures.sql_ms / 1000)
        if figures.wan_round_trips:
            wan_round_trips.inc(figures.wan_round_trips)

    def _series(self, route: str, method: str, status: int, region: str) -> tuple[Any, ...]:
        """A request's five labelled series, looked up once per label set: `labels()` validates and locks on
        every call, which is most of what observing costs (the label values are bounded, so is this)."""
        key = (route, method, status, region)
        series = self._by_labels.get(key)
        if series is None:
            series = self._by_labels[key] = (
                self.latency.labels(route, method, region),
                self.requests.labels(route, method, str(status), region),
                self.statements.labels(route, region),
                self.sql_seconds.labels(route, region),
                self.wan_round_trips.labels(route, region),
            )
        return series

    def exposition(self) -> bytes:
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def restrict(app: Flask) -> None:
    """With a token configured (the app's config, else the environment), `/metrics` needs it as a bearer token."""
    token = app.config.get(TOKEN_SETTING) or os.environ.get(TOKEN_SETTING) or ""
    if not token:
        return

    @app.before_request
    def require_token() -> Any:
        if request.endpoint == ENDPOINT and not bearer_matches(request.headers.get("Authorization"), token):
            message = f"metrics need Authorization: Bearer <the {TOKEN_SETTING} of this server>"
            return error_json("unauthenticated", message, 401, {"WWW-Authenticate": 'Bearer realm="metrics"'})
        return None
