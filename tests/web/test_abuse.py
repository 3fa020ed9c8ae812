"""Abuse stays bounded: failed log-ins per username wherever they land, log-ins and sign-ups per client
address, X-Forwarded-For trusted only from the configured hops, usernames unique whatever their case."""

from __future__ import annotations

import re
from typing import Any

import pytest

from movr.domain.errors import ConfigError
from movr.store import actions
from movr.web import create_app

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
WRONG = "not the password"
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def address(n: int) -> dict[str, Any]:
    """Where a request comes from, as the WSGI server tells (no proxy in front)."""
    return {"environ_base": {"REMOTE_ADDR": f"10.0.0.{n}"}}


def app_in(store, region: str, **config: Any):
    return create_app({"SECRET_KEY": "test-secret-key", "MOVR_REGION": region, **config}, backend=store)


def api_log_in(client, username: str, password: str, n: int):
    return client.post("/api/v1/sessions", json={"username": username, "password": password}, **address(n))


def csrf_of(client) -> str:
    """The CSRF token of the client's session, as every page carries it."""
    return META_CSRF.search(client.get("/login").get_data(as_text=True))[1]


def test_failed_log_ins_for_one_username_lock_it_out_across_two_workers(store):
    """Two apps on one database stand in for two workers, or two regions' app servers: the count lives with
    the user's row. Every attempt comes from a new address, so the per-address limit is not what stops it."""
    actions.register(store, city="rome", username="ada", password=PASSWORD)
    actions.register(store, city="rome", username="bob", password=PASSWORD)
    rome, new_york = app_in(store, "europe-west1").test_client(), app_in(store, "us-east1").test_client()
    limit = 10  # MOVR_LOGIN_USER_LIMIT's default: 10 per 15 minutes
    for attempt in range(limit):
        client = (rome, new_york)[attempt % 2]
        failed = api_log_in(client, "ada", WRONG, attempt)
        assert failed.status_code == 401, attempt
        assert failed.headers["X-Movr-Statements"] == "2"  # the search, and one more failure on the row

    for client in (rome, new_york):
        locked = api_log_in(client, "ada", PASSWORD, 100)  # even the right password, from anywhere
        assert locked.status_code == 429 and locked.get_json()["error"]["code"] == "too_many_attempts"
        assert 800 < int(locked.headers["Retry-After"]) <= 900
        assert locked.headers["X-Movr-Statements"] == "1" and float(locked.headers["X-Movr-Cpu-Ms"]) == 0
        page = client.post("/login", data={"username": "ADA", "password": PASSWORD, "csrf_token": csrf_of(client)})
        assert page.status_code == 429 and "Too many failed log-ins" in page.get_data(as_text=True)
        assert int(page.headers["Retry-After"]) > 800
    for client in (rome, new_york):  # another username is unaffected
        ok = api_log_in(client, "bob", PASSWORD, 101)
        assert ok.status_code == 201 and ok.headers["X-Movr-Statements"] == "1"


def test_a_success_clears_the_failures_and_only_then_writes(store):
    actions.register(store, city="rome", username="ada", password=PASSWORD)
    client = app_in(store, "us-east1").test_client()
    for n in range(3):
        assert api_log_in(client, "ada", WRONG, n).status_code == 401
    cleared = api_log_in(client, "ada", PASSWORD, 4)
    assert cleared.status_code == 201 and cleared.headers["X-Movr-Statements"] == "2"  # the search, the reset
    again = api_log_in(client, "ada", PASSWORD, 5)
    assert again.status_code == 201 and again.headers["X-Movr-Statements"] == "1"  # nothing to reset: no write
    for n in range(9):  # the count started again from zero
        assert api_log_in(client, "ada", WRONG, 10 + n).status_code == 401
    assert api_log_in(client, "ada", PASSWORD, 30).status_code == 201


def test_unknown_usernames_cost_one_statement_and_lock_nothing(store):
    client = app_in(store, "us-east1").test_client()
    for n in range(12):
        failed = api_log_in(client, "nobody", WRONG, n)
        assert failed.status_code == 401 and failed.headers["X-Movr-Statements"] == "1"


def test_the_username_limit_is_a_setting(store):
    actions.register(store, city="rome", username="ada", password=PASSWORD)
    client = app_in(store, "us-east1", MOVR_LOGIN_USER_LIMIT="2 per hour").test_client()
    assert [api_log_in(client, "ada", WRONG, n).status_code for n in range(3)] == [401, 401, 429]
    assert 3500 < int(api_log_in(client, "ada", PASSWORD, 9).headers["Retry-After"]) <= 3600


# --- per client address -----------------------------------------------------------------------------


def test_sign_up_is_limited_per_client_address(store, counts):
    client = app_in(store, "us-east1", MOVR_SIGNUP_RATE_LIMIT="3/minute").test_client()

    def api_sign_up(name: str, n: int):
        body = {"username": name, "password": PASSWORD, "city": "rome"}
        return client.post("/api/v1/users", json=body, **address(n))

    assert api_sign_up("ada", 1).status_code == 201
    form = {"username": "bob", "password": PASSWORD, "city": "rome", "csrf_token": csrf_of(client)}
    assert client.post("/signup", data=form, **address(1)).status_code == 303  # pages and API: one budget
    assert api_sign_up("carol", 1).status_code == 201
    before = counts()
    refused = api_sign_up("dave", 1)
    assert refused.status_code == 429
    assert refused.get_json() == {
        "error": {"code": "too_many_requests", "message": refused.get_json()["error"]["message"]}
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    page = client.post("/signup", data={**form, "username": "erin"}, **address(1))
    assert page.status_code == 429 and 1 <= int(page.headers["Retry-After"]) <= 60
    text = page.get_data(as_text=True)
    assert "Too many attempts from your address" in text and 'name="username"' in text  # the form, with why
    assert counts() == before
    assert api_sign_up("dave", 2).status_code == 201  # another address has its own budget


def test_client_sent_x_forwarded_for_does_not_change_the_key_without_trusted_hops(store):
    """MOVR_PROXY_HOPS=0: the address is the peer's, whatever X-Forwarded-For says."""
    client = app_in(store, "us-east1", MOVR_LOGIN_RATE_LIMIT="3/minute").test_client()

    def attempt(forwarded: str):
        return client.post(
            "/api/v1/sessions",
            json={"username": "nobody", "password": WRONG},
            headers={"X-Forwarded-For": forwarded},
            **address(1),
        )

    assert [attempt(f"192.0.2.{n}").status_code for n in range(4)] == [401, 401, 401, 429]
    # behind one trusted proxy, the address that proxy adds is the client's
    behind = app_in(store, "us-east1", MOVR_LOGIN_RATE_LIMIT="3/minute", MOVR_PROXY_HOPS="1").test_client()
    statuses = [
        behind.post(
            "/api/v1/sessions",
            json={"username": "nobody", "password": WRONG},
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
            **address(1),
        ).status_code
        for n in range(4)
    ]
    assert statuses == [401, 401, 401, 401]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("MOVR_LOGIN_RATE_LIMIT", "lots"), ("MOVR_SIGNUP_RATE_LIMIT", ""), ("MOVR_LOGIN_USER_LIMIT", "10")],
)
def test_a_bad_limit_setting_is_a_configuration_error(store, setting, value):
    with pytest.raises(ConfigError, match=setting):
        app_in(store, "us-east1", **{setting: value})


# --- usernames ignore case --------------------------------------------------------------------------


def test_usernames_are_unique_whatever_their_case_and_log_in_ignores_case(visitor, counts):
    v = visitor()
    created = v.api("POST", "/users", json={"username": "Mallory", "password": PASSWORD, "city": "rome"})
    assert created.status_code == 201 and created.get_json()["username"] == "mallory"
    before = counts()
    taken = v.api("POST", "/users", json={"username": "mallory", "password": PASSWORD, "city": "paris"})
    assert taken.status_code == 409 and taken.get_json()["error"]["code"] == "username_taken"
    page = v.sign_up("MALLORY", "boston")
    assert page.status_code == 409 and "taken" in page.get_data(as_text=True)
    assert counts() == before
    session = v.api("POST", "/sessions", json={"username": "MALLORY", "password": PASSWORD})
    assert session.status_code == 201 and session.get_json()["user"]["username"] == "mallory"
    assert v.log_in("mAlLoRy").status_code == 303
    assert "mallory" in v.get("/profile").get_data(as_text=True)


def test_the_limits_come_from_the_environment(store, monkeypatch):
    monkeypatch.setenv("MOVR_SIGNUP_RATE_LIMIT", "1/hour")
    monkeypatch.setenv("MOVR_LOGIN_RATE_LIMIT", "1/hour")
    monkeypatch.setenv("MOVR_LOGIN_USER_LIMIT", "1 per 15 minutes")
    actions.register(store, city="rome", username="ada", password=PASSWORD)
    client = create_app({"SECRET_KEY": "k"}, backend=store).test_client()
    body = {"username": "bob", "password": PASSWORD, "city": "rome"}
    assert [client.post("/api/v1/users", json=body).status_code for _ in range(2)] == [201, 429]
    assert api_log_in(client, "ada", WRONG, 1).status_code == 401
    assert api_log_in(client, "ada", PASSWORD, 1).status_code == 429  # this address's budget
    locked = api_log_in(client, "ada", PASSWORD, 2)  # another address: the username's own limit
    assert locked.status_code == 429 and locked.get_json()["error"]["code"] == "too_many_attempts"
