"""The application factory: one APIFlask app with three blueprints.

- `pages`: HTML for people (Jinja + Bootstrap 5 served from this server, no CDN)
- `api`: JSON under /api/v1, documented at /api/v1/openapi.json (the only blueprint in the document)
- `ops`: /healthz, /readyz, /metrics
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from apiflask import APIFlask
from flask import Response, request
from flask_bootstrap import Bootstrap5
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from movr import __version__
from movr.domain.errors import ConfigError
from movr.domain.models import VEHICLE_TYPES
from movr.domain.rules import LoginLimit
from movr.geo import load_preset
from movr.store.backend import Backend
from movr.web import current, errors, location, telemetry
from movr.web.api import api, document_cities, document_contract
from movr.web.auth import CSRF_HEADER, init_login
from movr.web.config import backend_env, load_config
from movr.web.metrics import Metrics
from movr.web.ops import ops
from movr.web.pages import THROTTLED_PAGES, pages
from movr.web.schemas import ERROR_SCHEMA
from movr.web.signing import SessionInterface
from movr.web.throttle import Throttle, parse_rate

log = logging.getLogger("movr.web")

SPEC_PATH = "/api/v1/openapi.json"
# Per client address budgets (movr.web.throttle): the page and the API view of one thing share one.
RATE_LIMITED = {
    "pages.login": "log-in",
    "api.create_session": "log-in",
    "pages.signup": "sign-up",
    "api.create_user": "sign-up",
}
RATE_SETTINGS = {"log-in": "MOVR_LOGIN_RATE_LIMIT", "sign-up": "MOVR_SIGNUP_RATE_LIMIT"}
VEHICLE_ICONS = {"bike": "bicycle", "scooter": "scooter", "skateboard": "lightning-charge-fill"}
# Everything from this server: no CDN, no inline script (Bootstrap's JS styles through the CSSOM).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
API_DESCRIPTION = f"""MovR: share vehicles in cities served from the region nearest you.

**Auth.** `POST /api/v1/sessions` returns a bearer token (send `Authorization: Bearer <token>`) and sets
the session cookie. Writes authenticated by the cookie must send the session's CSRF token (returned by
log-in as `csrf_token`) in the `{CSRF_HEADER}` header; writes with a bearer token need none.

**Errors.** Every 4xx and 5xx answer is `{{"error": {{"code": "...", "message": "..."}}}}`.

**Cost.** Every response carries `Server-Timing` and `X-Movr-Region`, `X-Movr-Statements`, `X-Movr-Sql-Ms`,
`X-Movr-App-Ms`, `X-Movr-Wan-Round-Trips`, `X-Movr-Data-Regions`, `X-Movr-Client-City`."""


def create_app(config: Mapping[str, Any] | None = None, backend: Backend | None = None) -> APIFlask:
    """The MovR app. `config` overrides the environment; without `backend`, the first request that needs
    the database builds one from the settings (`movr.store.factory.backend_from_env`)."""
    settings = load_config(config)
    preset = backend.preset if backend is not None else load_preset(settings["MOVR_PRESET"])
    region = settings.get("MOVR_REGION") or (backend.region if backend is not None else preset.primary_region)
    if region not in preset.regions:
        raise ConfigError(f"MOVR_REGION {region!r} is not a region of preset {preset.name}")
    settings["MOVR_REGION"] = region
    settings["MOVR_BACKEND_ENV"] = backend_env(settings)
    try:
        rates = {scope: parse_rate(settings[name], name) for scope, name in RATE_SETTINGS.items()}
        per_user = parse_rate(settings["MOVR_LOGIN_USER_LIMIT"], "MOVR_LOGIN_USER_LIMIT")
    except ValueError as error:
        raise ConfigError(str(error)) from None

    app = APIFlask(__name__, title="MovR API", version=__version__, spec_path=SPEC_PATH, docs_path=None)
    app.config.update(settings)
    app.session_interface = SessionInterface()
    app.config.update(
        DESCRIPTION=API_DESCRIPTION,
        VALIDATION_ERROR_SCHEMA=ERROR_SCHEMA,
        HTTP_ERROR_SCHEMA=ERROR_SCHEMA,
        SECURITY_SCHEMES={
            "BearerAuth": {"type": "http", "scheme": "bearer", "description": "token from POST /api/v1/sessions"},
            "SessionCookie": {"type": "apiKey", "in": "cookie", "name": app.config["SESSION_COOKIE_NAME"]},
        },
        SERVERS=None,
        AUTO_SERVERS=False,
        AUTO_OPERATION_ID=True,  # links between operations name them (api.LINKS)
    )
    app.extensions[current.PRESET] = preset
    app.extensions[current.BACKEND] = backend
    metrics = Metrics()
    app.extensions["movr_metrics"] = metrics

    telemetry.init_app(app, metrics)  # first: its scope must be open before any other hook runs
    if app.config["MOVR_PROXY_HOPS"]:
        hops = app.config["MOVR_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    Bootstrap5(app)
    csrf = CSRFProtect(app)
    init_login(app, LoginLimit(per_user.amount, per_user.get_expiry()))
    errors.init_app(app)

    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.register_blueprint(ops)
    csrf.exempt(api)  # the API checks CSRF itself, by how the request is authenticated (movr.web.auth)
    csrf.exempt(ops)

    throttle = Throttle(rates, app.config["RATELIMIT_STORAGE_URI"], enabled=bool(app.config["RATELIMIT_ENABLED"]))
    for endpoint, scope in RATE_LIMITED.items():
        view = app.view_functions[endpoint]
        app.view_functions[endpoint] = throttle.guard(scope, view, THROTTLED_PAGES.get(endpoint))
    app.extensions["movr_limiter"] = throttle  # tests: .reset(), or RATELIMIT_ENABLED=False

    app.spec_processor(lambda spec: document_contract(document_cities(spec, preset.cities)))
    _template_helpers(app)
    app.after_request(_security_headers)
    app.wsgi_app = telemetry.StartClock(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    if request.path.startswith("/api/") or response.mimetype == "text/html":
        headers.setdefault("Cache-Control", "no-store")  # personal data: never from a shared cache
    return response


def _template_helpers(app: APIFlask) -> None:
    preset = app.extensions[current.PRESET]
    by_region = {name: list(region.cities) for name, region in preset.regions.items()}
    region_classes = {name: f"region-{number % 5}" for number, name in enumerate(preset.regions)}

    @app.context_processor
    def movr_context() -> dict[str, Any]:
        return {
            "figures": telemetry.figures,  # a function: the footer reads the figures at render time
            "client_location": telemetry.client_location,
            "serving_region": app.config["MOVR_REGION"],
            "cities_by_region": by_region,
            "region_of": preset.region_of,
            "region_class": lambda region: region_classes.get(region, "region-none"),
            "vehicle_types": VEHICLE_TYPES,
        }

    app.add_template_filter(location.display, "city")

    @app.template_filter("vehicle_icon")
    def vehicle_icon(kind: str) -> str:
        return VEHICLE_ICONS.get(kind, "geo-alt")

    @app.template_filter("when")
    def when(moment: Any) -> str:
        return moment.astimezone(dt.UTC).strftime("%d %b %Y, %H:%M UTC") if moment is not None else ""
