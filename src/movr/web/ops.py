"""Health and metrics for orchestrators and Prometheus (not part of the API document)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from movr.domain import errors
from movr.web import current

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> tuple[dict, int]:
    """The process is up (no database involved: a slow database must not get a live server killed)."""
    return {"status": "ok", "region": current.region()}, 200


@ops.get("/readyz")
def readyz() -> tuple[dict, int]:
    """Ready to serve: the database this server needs answers."""
    try:
        ready = current.backend().ping()
    except errors.MovrError:
        ready = False
    return {"status": "ready" if ready else "unavailable", "region": current.region()}, 200 if ready else 503


@ops.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions["movr_metrics"]
    return Response(registry.exposition(), content_type=registry.content_type)
