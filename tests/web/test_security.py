"""Refusals that must change nothing: missing CSRF tokens, other people's rides, oversized input; and the
cookie, rate-limit, header and secret-key rules."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from movr.domain.rules import new_session_id
from movr.web import create_app

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
HUGE = "a" * 10_240  # a 10 kB username


def ride_in_progress(visitor):
    """Ada owns a vehicle and rides it; returns her browser, her ride's id and her token-holding API client."""
    ada = visitor().join("ada", "rome")
    assert ada.post("/vehicles/new", {"type": "bike", "brand": "Brompton"}).status_code == 303
    vehicle_id = re.search(r'name="vehicle_id" value="([^"]+)"', ada.get("/cities/rome/vehicles").get_data(True))[1]
    assert ada.post("/rides", {"city": "rome", "vehicle_id": vehicle_id}).status_code == 303
    ride_id = re.search(r"/rides/rome/([0-9a-f-]{36})/end", ada.get("/rides").get_data(True))[1]
    return ada, ride_id, vehicle_id


# --- the three refusals the issue asks for -----------------------------------------------------------


def test_a_request_without_csrf_token_is_refused_and_changes_nothing(visitor, counts):
    ada, ride_id, vehicle_id = ride_in_progress(visitor)
    before = counts()
    for path, form in (
        (f"/rides/rome/{ride_id}/end", {}),
        ("/vehicles/new", {"type": "bike"}),
        ("/profile/remove", {"confirm": "ada"}),
        (f"/vehicles/rome/{vehicle_id}/remove", {}),
        ("/signup", {"username": "mallory", "password": PASSWORD, "city": "rome"}),
        ("/logout", {}),
    ):
        response = ada.post(path, form, csrf=False)
        assert response.status_code == 400, path
        assert "did not come from MovR" in response.get_data(True)
        forged = ada.post(path, {**form, "csrf_token": "forged"}, csrf=False)
        assert forged.status_code == 400, path
    assert counts() == before
    assert "Riding now" in ada.get("/rides").get_data(True)  # still logged in, ride still open

    # the API with the session cookie: the CSRF header is required for writes
    api = ada.api("PATCH", f"/rides/rome/{ride_id}", bearer=False, json={})
    assert api.status_code == 403 and api.get_json()["error"]["code"] == "csrf_failed"
    assert counts() == before


def test_a_second_user_cannot_end_the_first_users_ride(visitor, counts):
    ada, ride_id, _ = ride_in_progress(visitor)
    bob = visitor().join("bob", "rome")
    before = counts()
    page = bob.post(f"/rides/rome/{ride_id}/end", {"location": "Bob's garage"})
    assert page.status_code == 403 and "That is not your ride." in page.get_data(True)
    bob.api_join("bob2", "rome")
    api = bob.api("PATCH", f"/rides/rome/{ride_id}", json={"location": "Bob's garage"})
    assert api.status_code == 403 and api.get_json()["error"]["code"] == "not_your_ride"
    after = counts()
    assert after["open_rides"] == before["open_rides"] == 1
    assert {k: v for k, v in after.items() if k != "users"} == {k: v for k, v in before.items() if k != "users"}
    assert "Riding now" in ada.get("/rides").get_data(True)


def test_a_10kb_username_is_refused_and_changes_nothing(visitor, counts):
    v = visitor()
    before = counts()
    page = v.sign_up(HUGE)
    assert page.status_code == 422 and "between 3 and 32" in page.get_data(True)
    api = v.api("POST", "/users", json={"username": HUGE, "password": PASSWORD, "city": "rome"})
    assert api.status_code == 422 and api.get_json()["error"]["code"] == "invalid_input"
    assert v.log_in(HUGE).status_code == 422
    login = v.api("POST", "/sessions", json={"username": HUGE, "password": PASSWORD})
    assert login.status_code == 422
    assert counts() == before
    assert v.api("GET", "/cities/rome/users").get_json() == []


def test_bad_text_is_refused_before_the_database(visitor, counts):
    v = visitor()
    before = counts()
    for body in (
        {"username": "ada", "password": PASSWORD, "city": "rome", "first_name": "A\x00da"},
        {"username": "ada", "password": "\ud800" * 10, "city": "rome"},
        {"username": "ada", "password": PASSWORD, "city": "rome", "email": "not an email"},
        {"username": "ada", "password": PASSWORD, "city": "rome" * 100},
        {"username": 42, "password": PASSWORD, "city": "rome"},
    ):
        response = v.api("POST", "/users", json=body)
        assert response.status_code == 422, body
    assert v.api("POST", "/sessions", json={"username": "ada", "password": "\udfff"}).status_code == 422
    assert counts() == before


# --- cookies, headers, secrets ------------------------------------------------------------------------


def test_cookies_are_httponly_and_samesite_lax_and_secure_on_request(store):
    for secure in (False, True):
        app = create_app({"SECRET_KEY": "k", "MOVR_SECURE_COOKIES": "1" if secure else "0"}, backend=store)
        client = app.test_client()
        client.get("/")  # a CSRF token in the session
        cookies = [client.get_cookie("movr_session")]
        token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(True))[1]
        response = client.post("/browsing-from", data={"city": "paris", "csrf_token": token})
        set_cookies = response.headers.getlist("Set-Cookie")
        browsing = next(c for c in set_cookies if c.startswith("movr_browsing_from="))
        assert browsing.startswith("movr_browsing_from=paris;")
        for header in [browsing, *[c for c in set_cookies if c.startswith("movr_session=")]]:
            assert "HttpOnly" in header and "SameSite=Lax" in header
            assert ("Secure" in header) is secure
        assert all(c is not None and c.http_only and c.same_site == "Lax" for c in cookies)


def test_security_headers(visitor):
    v = visitor()
    page = v.get("/")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert v.api("GET", "/cities").headers["Cache-Control"] == "no-store"


def test_secret_key_is_never_hard_coded(store, caplog, monkeypatch):
    monkeypatch.delenv("MOVR_SECRET_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="movr.web"):
        first = create_app(backend=store)
        second = create_app(backend=store)
    assert first.secret_key and first.secret_key != second.secret_key
    assert "MOVR_SECRET_KEY is not set" in caplog.text
    monkeypatch.setenv("MOVR_SECRET_KEY", "from-the-environment")
    assert create_app(backend=store).secret_key == "from-the-environment"
    assert create_app({"SECRET_KEY": "from-config"}, backend=store).secret_key == "from-config"


def test_sessions_signed_with_another_key_are_ignored(store):
    ours = create_app({"SECRET_KEY": "ours"}, backend=store)
    theirs = create_app({"SECRET_KEY": "theirs"}, backend=store)
    client = theirs.test_client()
    facts = ["rome", "00000000-0000-0000-0000-000000000001", "ada", 0, new_session_id(time.time())]
    with client.session_transaction() as session:
        session["_user_id"] = json.dumps(facts)
    assert client.get("/vehicles/new").status_code == 200  # theirs trusts its own signature
    stolen = client.get_cookie("movr_session").value
    other = ours.test_client()
    other.set_cookie("movr_session", stolen)
    assert other.get("/vehicles/new").status_code == 302  # ours does not


# --- log-in rate limiting ----------------------------------------------------------------------------


def test_login_is_rate_limited_per_client_address_pages_and_api_together_and_can_be_reset(app, visitor):
    v = visitor()
    v.sign_up("ada")
    for number in range(5):  # one password tried on many usernames: the address's budget, not theirs
        assert v.log_in(f"user{number}", "wrong password!").status_code == 401
        assert v.api("POST", "/sessions", json={"username": f"api{number}", "password": "x"}).status_code == 401
    limited = v.log_in("ada")
    assert limited.status_code == 429 and "Too many attempts from your address" in limited.get_data(True)
    assert 'name="username"' in limited.get_data(True)  # the form again, with why
    too_many = v.api("POST", "/sessions", json={"username": "ada", "password": PASSWORD})
    assert too_many.status_code == 429 and too_many.get_json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(too_many.headers["Retry-After"]) <= 60  # when the oldest attempt leaves the minute
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    app.extensions["movr_limiter"].reset()
    assert v.log_in("ada").status_code == 303


def test_rate_limiting_can_be_disabled(store, visitor):
    app = create_app({"SECRET_KEY": "k", "RATELIMIT_ENABLED": False}, backend=store)
    client = app.test_client()
    for _ in range(12):
        response = client.post("/api/v1/sessions", json={"username": "nobody", "password": "whatever-pw"})
        assert response.status_code == 401
