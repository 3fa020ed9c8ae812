"""Where each request was served and what it cost: headers, footer, client location, health and metrics."""

from __future__ import annotations

import re

import pytest

from movr.domain.errors import ConfigError
from movr.web import create_app

pytestmark = pytest.mark.integration

SERVER_TIMING = re.compile(
    r'^app;dur=\d+\.\d, sql;dur=\d+\.\d;desc="(?P<n>\d+) statements", wan;desc="(?P<k>\d+) round trips"$'
)
FIGURE_HEADERS = (
    "X-Movr-Region",
    "X-Movr-Statements",
    "X-Movr-Sql-Ms",
    "X-Movr-App-Ms",
    "X-Movr-Wan-Round-Trips",
    "X-Movr-Data-Regions",
    "X-Movr-Client-City",
)


@pytest.mark.parametrize(
    "path", ["/", "/cities/rome/vehicles", "/api/v1/cities/rome/users", "/api/v1/nothing", "/nothing", "/healthz"]
)
def test_every_response_carries_its_figures(visitor, path):
    response = visitor().get(path)
    for header in FIGURE_HEADERS:
        assert header in response.headers, header
    timing = SERVER_TIMING.match(response.headers["Server-Timing"])
    assert timing, response.headers["Server-Timing"]
    assert timing["n"] == response.headers["X-Movr-Statements"]
    assert timing["k"] == response.headers["X-Movr-Wan-Round-Trips"]
    assert response.headers["X-Movr-Region"] == "us-east1"
    sql_ms, app_ms = float(response.headers["X-Movr-Sql-Ms"]), float(response.headers["X-Movr-App-Ms"])
    assert 0 <= sql_ms <= app_ms  # the app's time includes its SQL


def test_figures_count_the_action_and_name_the_data_region(visitor):
    page = visitor().get("/cities/rome/vehicles")
    assert page.headers["X-Movr-Statements"] == "1"
    assert page.headers["X-Movr-Data-Regions"] == "us-east1"  # one server homes everything in this test
    assert page.headers["X-Movr-Wan-Round-Trips"] == "0"
    footer = page.get_data(as_text=True).split('data-testid="latency-footer"')[1]
    assert "us-east1" in footer and 'data-testid="statements">1<' in footer and 'data-testid="wan">0<' in footer
    home = visitor().get("/")
    assert home.headers["X-Movr-Statements"] == "0" and home.headers["X-Movr-Data-Regions"] == ""


def test_client_city_resolution_order(visitor):
    v = visitor()
    assert v.get("/").headers["X-Movr-Client-City"] == ""
    v.join("ada", "boston")
    assert v.get("/").headers["X-Movr-Client-City"] == "boston"  # the home city, last
    v.http.set_cookie("movr_browsing_from", "new%20york")
    assert v.get("/").headers["X-Movr-Client-City"] == "new york"  # the cookie beats the home city
    geo = {"X-Client-Geo-Location": "IT,Rome"}
    assert v.get("/", headers=geo).headers["X-Movr-Client-City"] == "rome"  # the geo header beats the cookie
    both = {**geo, "X-Client-City": " PARIS "}
    assert v.get("/", headers=both).headers["X-Movr-Client-City"] == "paris"  # the city header beats all
    unknown = {"X-Client-City": "Atlantis", "X-Client-Geo-Location": "XX,Nowhere"}
    assert v.get("/", headers=unknown).headers["X-Movr-Client-City"] == "new york"  # unknown names fall through
    assert v.get("/", headers={"X-Client-City": "x" * 5000}).headers["X-Movr-Client-City"] == "new york"


def test_browsing_from_selector_sets_the_cookie_the_balancer_reads(visitor):
    v = visitor()
    chosen = v.post("/browsing-from", {"city": "Washington DC", "next": "/cities/rome/users"})
    assert chosen.status_code == 303 and chosen.headers["Location"] == "/cities/rome/users"
    assert v.http.get_cookie("movr_browsing_from").value == "washington%20dc"
    page = v.get("/")
    assert page.headers["X-Movr-Client-City"] == "washington dc"
    assert "Washington DC" in page.get_data(as_text=True)
    assert v.post("/browsing-from", {"city": "atlantis"}).status_code == 422
    for evil in ("https://evil.example/", "//evil.example", "/a\r\nSet-Cookie: x=1"):
        response = v.post("/browsing-from", {"city": "rome", "next": evil})
        assert response.status_code == 303 and response.headers["Location"] == "/"
    cleared = v.post("/browsing-from", {"city": ""})
    assert cleared.status_code == 303 and v.http.get_cookie("movr_browsing_from") is None


def test_healthz_needs_no_database_and_readyz_pings_it(visitor):
    v = visitor()
    health = v.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"status": "ok", "region": "us-east1"}
    assert health.headers["X-Movr-Statements"] == "0"
    ready = v.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_readyz_is_503_without_a_database(monkeypatch):
    monkeypatch.delenv("MOVR_DATABASE_URL", raising=False)
    monkeypatch.delenv("MOVR_REGION_DATABASE_URLS", raising=False)
    app = create_app({"SECRET_KEY": "k"})  # no backend, no URL: building it fails
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"
    page = client.get("/cities/rome/vehicles")
    assert page.status_code == 503
    api = client.get("/api/v1/cities/rome/vehicles")
    assert api.status_code == 503 and api.get_json()["error"]["code"] == "store_unavailable"


def test_the_backend_is_built_lazily_from_the_settings(store, movr_dsn):
    app = create_app({"SECRET_KEY": "k", "MOVR_DATABASE_URL": movr_dsn, "MOVR_REGION": "europe-west1"})
    assert app.extensions["movr_backend"] is None
    try:
        response = app.test_client().get("/api/v1/cities/rome/vehicles")
        assert response.status_code == 200 and response.headers["X-Movr-Region"] == "europe-west1"
        backend = app.extensions["movr_backend"]
        assert backend is not None and backend.region == "europe-west1"
    finally:
        app.extensions["movr_backend"].close()


def test_unknown_region_is_a_configuration_error(store):
    with pytest.raises(ConfigError, match="mars"):
        create_app({"SECRET_KEY": "k", "MOVR_REGION": "mars"}, backend=store)


def test_metrics_by_route_and_region(visitor):
    v = visitor()
    v.get("/cities/rome/vehicles")
    v.get("/cities/paris/vehicles")
    text = v.get("/metrics").get_data(as_text=True)
    route = 'route="/cities/<city>/vehicles"'
    assert re.search(r"movr_http_request_duration_seconds_count\{[^}]*" + re.escape(route), text)
    assert re.search(r'movr_http_request_duration_seconds_bucket\{[^}]*region="us-east1"', text)
    counted = [line for line in text.splitlines() if line.startswith("movr_sql_statements_total{") and route in line]
    assert len(counted) == 1 and 'region="us-east1"' in counted[0] and float(counted[0].split()[-1]) == 2.0
    assert "# TYPE movr_wan_round_trips_total counter" in text


def test_wan_round_trips_are_counted_and_shown(movr_dsn, preset, store):
    from movr.store.backend import PostgresBackend

    far = PostgresBackend(movr_dsn, preset, "europe-west1", wan=True)  # as if the database were in us-east1
    try:
        app = create_app({"SECRET_KEY": "k"}, backend=far)
        client = app.test_client()
        page = client.get("/cities/rome/users")
        assert page.headers["X-Movr-Region"] == "europe-west1" and page.headers["X-Movr-Wan-Round-Trips"] == "1"
        assert page.headers["Server-Timing"].endswith('wan;desc="1 round trips"')
        assert 'data-testid="wan">1<' in page.get_data(as_text=True)
        metrics = client.get("/metrics").get_data(as_text=True)
        assert re.search(r'movr_wan_round_trips_total\{[^}]*region="europe-west1"[^}]*\} 1\.0', metrics)
    finally:
        far.close()


def test_a_bearer_token_tells_the_home_city_too(visitor):
    ada = visitor()
    ada.api_join("ada", "seattle")
    fresh = visitor()  # no session cookie: only the token says who this is
    fresh.token = ada.token
    assert fresh.api("GET", "/rides").headers["X-Movr-Client-City"] == "seattle"
    located = fresh.api("GET", "/rides", headers={"X-Client-City": "rome"})
    assert located.headers["X-Movr-Client-City"] == "rome"
