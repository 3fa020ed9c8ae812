"""The web layer: a Flask app (pages in HTML, an API in JSON) that calls one store action per request.

`create_app` is imported lazily: `movr.web.serve` must be importable (by the `movr` CLI and the WSGI
master) without importing prometheus_client, which decides at import time whether it runs in
multiprocess mode — and `serve` sets that mode up before any worker imports the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from movr.store.backend import Backend

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None, backend: Backend | None = None) -> Flask:
    """The MovR web app; see `movr.web.app.create_app`."""
    from movr.web.app import create_app as factory  # on first use: see this module's docstring (prometheus_client)

    return factory(config, backend)
