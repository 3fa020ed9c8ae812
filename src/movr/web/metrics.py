"""Prometheus metrics: request latency by route and region, SQL statements, WAN round trips.

Under gunicorn every worker is a process with its own counters. When `PROMETHEUS_MULTIPROC_DIR` is set
(`movr serve` sets it to a fresh directory it removes on exit) prometheus_client keeps the values in files
there and `/metrics` adds up every worker; without it, `/metrics` shows the worker that answered.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

if TYPE_CHECKING:
    from movr.web.telemetry import Figures

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


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

    def observe(self, route: str, method: str, status: int, figures: Figures) -> None:
        region = figures.served_by
        self.latency.labels(route, method, region).observe(figures.app_ms / 1000)
        self.requests.labels(route, method, str(status), region).inc()
        if figures.statements:
            self.statements.labels(route, region).inc(figures.statements)
            self.sql_seconds.labels(route, region).inc(figures.sql_ms / 1000)
        if figures.wan_round_trips:
            self.wan_round_trips.labels(route, region).inc(figures.wan_round_trips)

    def exposition(self) -> bytes:
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
