"""/metrics: label values stay bounded whatever clients invent, and a configured token restricts it."""

from __future__ import annotations

import random
import re
import string

import pytest

from movr.web import create_app
from movr.web.metrics import METHODS, OTHER_METHOD, UNMATCHED_ROUTE

pytestmark = pytest.mark.integration

LABEL = re.compile(r'(\w+)="([^"]*)"')
# One new (route, method) pair costs a histogram (13 buckets, sum, count, created) and a few counters:
# about 3 kB. Invented methods and paths may add that pair once, never once per request.
GROWTH_LIMIT = 8 * 1024


def label_values(exposition: str, name: str) -> set[str]:
    return {
        value
        for line in exposition.splitlines()
        if not line.startswith("#")
        for k, value in LABEL.findall(line)
        if k == name
    }


def invented(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def test_invented_methods_and_paths_leave_metrics_bounded(visitor):
    client = visitor()
    # Real traffic first: a known route and method, so the size measured before is a working server's.
    for path in ("/api/v1/cities", "/api/v1/promo-codes", "/cities/rome/vehicles"):
        assert client.get(path).status_code == 200
    before = client.get("/metrics").get_data(as_text=True)

    rng = random.Random(12)
    paths = ["/api/v1/cities", "/api/v1/users/me", "/", "/healthz"]
    for n in range(500):
        method = invented(rng, rng.randint(3, 12))
        path = rng.choice(paths) if n % 2 else f"/{invented(rng, 8).lower()}/{n}"
        response = client.http.open(path, method=method)
        assert response.status_code in (404, 405), (method, path, response.status_code)
        if n % 5 == 0:  # invented paths with real methods too
            assert client.get(f"/api/v1/{invented(rng, 6).lower()}-{n}").status_code == 404

    after = client.get("/metrics").get_data(as_text=True)
    assert len(after) - len(before) < GROWTH_LIMIT, (len(before), len(after))
    assert label_values(after, "method") <= METHODS | {OTHER_METHOD}
    assert OTHER_METHOD in label_values(after, "method")
    new_routes = label_values(after, "route") - label_values(before, "route")
    assert new_routes <= {UNMATCHED_ROUTE, "/metrics"}, new_routes


def test_without_a_token_metrics_are_public(visitor):
    response = visitor().get("/metrics")
    assert response.status_code == 200 and "movr_http_requests_total" in response.get_data(as_text=True)


@pytest.fixture
def guarded(store):
    app = create_app(
        {"SECRET_KEY": "test-secret-key", "MOVR_REGION": "us-east1", "MOVR_METRICS_TOKEN": "s3cret-metrics"},
        backend=store,
    )
    return app.test_client()


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", "Bearer s3cret-metric", "Bearer s3cret-metricsX", "Basic s3cret-metrics"],
)
def test_with_a_token_metrics_answer_401_json_to_anyone_else(guarded, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.get_json()["error"]
    assert error["code"] == "unauthenticated" and "MOVR_METRICS_TOKEN" in error["message"]
    assert "s3cret" not in response.get_data(as_text=True)


def test_with_a_token_metrics_answer_the_bearer(guarded):
    assert guarded.get("/healthz").status_code == 200  # only /metrics is restricted
    response = guarded.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert response.status_code == 200
    assert "movr_http_requests_total" in response.get_data(as_text=True)


def test_the_token_comes_from_the_environment_too(store, monkeypatch):
    monkeypatch.setenv("MOVR_METRICS_TOKEN", "from-env")
    client = create_app({"SECRET_KEY": "k", "MOVR_REGION": "us-east1"}, backend=store).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "bearer from-env"}).status_code == 200
