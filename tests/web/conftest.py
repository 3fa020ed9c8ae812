"""The web app on a fresh database, driven through Flask's test client as a browser or an API client would."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from movr.web import create_app

PASSWORD = "correct horse battery"
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class Visitor:
    """One browser (cookie jar) on the app: pages and API calls, CSRF tokens taken from pages."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.http = app.test_client()
        self.headers = dict(headers or {})
        self.token: str | None = None

    # --- plumbing --------------------------------------------------------------------------------
    def get(self, path: str, **kwargs: Any):
        return self.http.get(path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def csrf(self) -> str:
        page = self.get("/")
        match = META_CSRF.search(page.get_data(as_text=True))
        assert match, "every page carries the CSRF token in a meta tag"
        return match.group(1)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any):
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf())
        return self.http.post(path, data=form, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def api(self, method: str, path: str, *, bearer: bool = True, **kwargs: Any):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        if bearer and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.http.open("/api/v1" + path, method=method, headers=headers, **kwargs)

    # --- journeys --------------------------------------------------------------------------------
    def sign_up(self, username: str, city: str = "rome", password: str = PASSWORD, **extra: str):
        return self.post(
            "/signup",
            {"username": username, "password": password, "city": city, "first_name": "", "last_name": "", **extra},
        )

    def log_in(self, username: str, password: str = PASSWORD):
        return self.post("/login", {"username": username, "password": password})

    def join(self, username: str, city: str = "rome") -> Visitor:
        """Sign up and log in through the pages."""
        assert self.sign_up(username, city).status_code == 303
        assert self.log_in(username).status_code == 303
        return self

    def api_join(self, username: str, city: str = "rome") -> dict[str, Any]:
        """Sign up and log in through the API; keeps the bearer token."""
        created = self.api("POST", "/users", json={"username": username, "password": PASSWORD, "city": city})
        assert created.status_code == 201, created.get_json()
        session = self.api("POST", "/sessions", json={"username": username, "password": PASSWORD})
        assert session.status_code == 201, session.get_json()
        self.token = session.get_json()["token"]
        return session.get_json()


@pytest.fixture
def app(store) -> Iterator[Any]:
    """The app on an emptied database (the `store` fixture), its region the preset's primary."""
    yield create_app({"SECRET_KEY": "test-secret-key", "MOVR_REGION": "us-east1"}, backend=store)


@pytest.fixture
def visitor(app) -> Callable[..., Visitor]:
    return lambda headers=None: Visitor(app, headers)


@pytest.fixture
def counts(movr_dsn: str) -> Callable[[], dict[str, Any]]:
    """Rows in every table, and the open rides: what "the database is unchanged" means."""

    def snapshot() -> dict[str, Any]:
        with psycopg.connect(movr_dsn) as conn:
            result: dict[str, Any] = {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("users", "vehicles", "rides")
            }
            result["open_rides"] = conn.execute("SELECT count(*) FROM rides WHERE end_time IS NULL").fetchone()[0]
            result["available"] = conn.execute("SELECT count(*) FROM vehicles WHERE status = 'available'").fetchone()[0]
        return result

    return snapshot
