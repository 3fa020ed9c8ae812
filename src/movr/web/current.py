"""The app's shared objects, reached from handlers: the backend (built lazily) and the preset."""

from __future__ import annotations

import atexit
import logging
import threading

from flask import current_app

from movr.domain import errors
from movr.geo import Preset, PresetError
from movr.store.backend import Backend
from movr.store.factory import backend_from_env
from movr.web.errors import UnknownCity

log = logging.getLogger("movr.web")
_build_lock = threading.Lock()

BACKEND = "movr_backend"
PRESET = "movr_preset"


def backend() -> Backend:
    """The app's backend; built from the environment on first use when create_app was given none."""
    app = current_app
    built = app.extensions.get(BACKEND)
    if built is not None:
        return built
    with _build_lock:
        built = app.extensions.get(BACKEND)
        if built is None:
            try:
                built = backend_from_env(app.config["MOVR_BACKEND_ENV"])
            except (errors.ConfigError, PresetError) as error:
                # A configuration mistake: say what it is in the log, and "unavailable" to users.
                log.error("cannot build the database backend: %s", error)
                raise errors.StoreUnavailable() from None
            app.extensions[BACKEND] = built
            atexit.register(built.close)  # the app built it, so the app closes its pools on the way out
    return built


def preset() -> Preset:
    return current_app.extensions[PRESET]


def known_city(city: str) -> str:
    """A city named in a URL path, or UnknownCity (404): a city MovR does not serve has no page."""
    if not preset().is_city(city):
        raise UnknownCity(f"MovR does not operate in {city[:64]!r}")
    return city


def region() -> str:
    """The region this app server runs in."""
    return current_app.config["MOVR_REGION"]
