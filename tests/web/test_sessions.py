"""Sessions that really end: log-out, log out everywhere and account removal refuse every copy of a
cookie or token from then on, and checking that costs no statement of its own."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest

from movr.domain import errors, rules
from movr.store import actions, stats
from movr.web.auth import Rider, issue_token

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
COOKIE = "movr_session"


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def api_log_in(visitor, username: str):
    """A fresh client logged in through the API (bearer token and cookie)."""
    client = visitor()
    session = client.api("POST", "/sessions", json={"username": username, "password": PASSWORD})
    assert session.status_code == 201, session.get_json()
    client.token = session.get_json()["token"]
    return client


def replay(visitor, cookie: str):
    """Another browser holding a copy of someone's session cookie (a refusal clears a browser's cookie, so
    each replay is a fresh one, as an attacker who ignores Set-Cookie would send it)."""
    thief = visitor()
    thief.http.set_cookie(COOKIE, cookie)
    return thief


def add_vehicle(client, *, bearer: bool = True):
    headers = {} if bearer else {"X-CSRFToken": client.csrf()}
    return client.api("POST", "/vehicles", bearer=bearer, json={"type": "bike"}, headers=headers)


def is_login_redirect(response) -> bool:
    return response.status_code in (302, 303) and response.headers["Location"].startswith("/login")


# --- log-out ----------------------------------------------------------------------------------------


def test_after_log_out_the_same_bearer_token_is_refused_on_a_write(visitor, counts):
    ada = visitor()
    ada.api_join("ada", "rome")
    cookie = ada.http.get_cookie(COOKIE).value
    assert add_vehicle(ada).status_code == 201
    assert ada.api("DELETE", "/sessions").status_code == 204
    before = counts()
    assert error_of(add_vehicle(ada)) == (401, "session_ended")
    assert error_of(ada.api("GET", "/rides")) == (401, "session_ended")
    # the cookie set by the same log-in was the same session: a copy of it is refused too
    assert error_of(replay(visitor, cookie).api("GET", "/rides", bearer=False)) == (401, "session_ended")
    assert error_of(add_vehicle(replay(visitor, cookie), bearer=False)) == (401, "session_ended")
    assert counts() == before
    # logging in again is a new session, which works
    assert add_vehicle(api_log_in(visitor, "ada")).status_code == 201


def test_a_copy_of_the_session_cookie_is_refused_after_log_out(visitor, counts):
    ada = visitor().join("ada", "rome")
    cookie = ada.http.get_cookie(COOKIE).value
    thief = replay(visitor, cookie)
    assert thief.get("/rides").status_code == 200  # the copy works while the session lives
    assert ada.post("/logout").status_code == 303
    before = counts()
    page = thief.get("/rides")
    assert is_login_redirect(page) and "next=/rides" in page.headers["Location"]
    assert is_login_redirect(replay(visitor, cookie).post("/vehicles/new", {"type": "bike"}))
    assert error_of(replay(visitor, cookie).api("GET", "/users/me", bearer=False)) == (401, "session_ended")
    assert counts() == before
    # the refusal forgot the session in that browser: it is now simply logged out
    assert is_login_redirect(thief.get("/profile"))


def test_log_out_ends_only_that_session(visitor):
    visitor().api_join("ada", "rome")
    phone, laptop = api_log_in(visitor, "ada"), api_log_in(visitor, "ada")
    assert phone.api("DELETE", "/sessions").status_code == 204
    assert error_of(add_vehicle(phone)) == (401, "session_ended")
    assert add_vehicle(laptop).status_code == 201
    assert laptop.api("DELETE", "/sessions").status_code == 204
    assert laptop.api("DELETE", "/sessions").status_code == 204  # logging out twice is harmless


# --- log out everywhere -----------------------------------------------------------------------------


def test_log_out_everywhere_from_the_profile_page_ends_every_session_and_token(visitor, counts):
    browser = visitor().join("ada", "rome")
    copy = replay(visitor, browser.http.get_cookie(COOKIE).value)
    phone, script = api_log_in(visitor, "ada"), api_log_in(visitor, "ada")
    script_cookie = script.http.get_cookie(COOKIE).value
    bob = visitor()
    bob.api_join("bob", "rome")
    assert 'data-testid="logout-everywhere"' in browser.get("/profile").get_data(True)

    assert browser.post("/profile/logout-everywhere", {}, csrf=False).status_code == 400  # CSRF, as every form
    out = browser.post("/profile/logout-everywhere")
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    before = counts()
    assert is_login_redirect(browser.get("/profile"))
    assert is_login_redirect(copy.get("/rides"))
    assert error_of(add_vehicle(phone)) == (401, "session_ended")
    assert error_of(script.api("GET", "/users/me")) == (401, "session_ended")
    assert error_of(add_vehicle(replay(visitor, script_cookie), bearer=False)) == (401, "session_ended")
    assert counts() == before
    assert add_vehicle(bob).status_code == 201  # another user's sessions live on
    assert browser.log_in("ada").status_code == 303 and browser.get("/profile").status_code == 200


def test_log_out_everywhere_through_the_api(visitor, counts):
    visitor().api_join("ada", "rome")
    first, second = api_log_in(visitor, "ada"), api_log_in(visitor, "ada")
    cookie_of_first = first.http.get_cookie(COOKIE).value
    csrf_refused = first.api("DELETE", "/users/me/sessions", bearer=False)
    assert error_of(csrf_refused) == (403, "csrf_failed")  # with the cookie, a write needs the CSRF header
    assert first.api("DELETE", "/users/me/sessions").status_code == 204
    before = counts()
    for client in (first, second):
        assert error_of(add_vehicle(client)) == (401, "session_ended")
        assert error_of(client.api("DELETE", "/users/me")) == (401, "session_ended")
    assert error_of(replay(visitor, cookie_of_first).api("GET", "/rides", bearer=False)) == (401, "session_ended")
    assert error_of(second.api("DELETE", "/users/me/sessions")) == (401, "session_ended")  # no longer its to end
    assert counts() == before
    assert add_vehicle(api_log_in(visitor, "ada")).status_code == 201


# --- account removal --------------------------------------------------------------------------------


def test_after_account_removal_every_token_and_cookie_is_refused(visitor, counts):
    remover = visitor()
    remover.api_join("ada", "rome")
    other_token, browser = api_log_in(visitor, "ada"), visitor()
    assert browser.log_in("ada").status_code == 303
    assert remover.api("DELETE", "/users/me").status_code == 204
    assert counts()["users"] == 0
    for client in (remover, other_token):
        assert error_of(add_vehicle(client)) == (401, "session_ended")
        assert error_of(client.api("GET", "/users/me")) == (401, "session_ended")
        assert error_of(client.api("GET", "/rides")) == (401, "session_ended")
    assert is_login_redirect(browser.get("/rides"))
    assert counts()["vehicles"] == 0
    # a new account under the same name is someone else: the old tokens stay refused
    visitor().api_join("ada", "rome")
    assert error_of(add_vehicle(other_token)) == (401, "session_ended")


def test_a_session_past_its_lifetime_is_refused_without_the_database(app, visitor):
    v = visitor()
    joined = v.api_join("ada", "rome")["user"]
    lifetime = int(app.config["PERMANENT_SESSION_LIFETIME"].total_seconds())
    old = rules.new_session_id(time.time() - lifetime - 60)
    with app.app_context():
        token = issue_token(Rider("rome", uuid.UUID(joined["id"]), "ada", 0, old))
    with stats.measure() as measured:
        refused = v.api("GET", "/rides", bearer=False, headers={"Authorization": f"Bearer {token}"})
    assert error_of(refused) == (401, "unauthenticated") and measured.statements == 0


# --- costs ------------------------------------------------------------------------------------------


def test_checking_the_session_costs_no_statement(visitor, store):
    """Every authenticated request still costs its action's statements only (X-Movr-Statements)."""
    v = visitor()
    v.api_join("ada", "rome")
    statements = {}

    def call(name: str, method: str, path: str, **kwargs: Any) -> Any:
        response = v.api(method, path, **kwargs)
        assert response.status_code < 300, (name, response.get_json())
        statements[name] = int(response.headers["X-Movr-Statements"])
        return response.get_json(silent=True)

    vehicle = call("add vehicle", "POST", "/vehicles", json={"type": "bike"})
    call("my profile", "GET", "/users/me")
    other = actions.register(store, city="rome", username="bob", password=PASSWORD)
    ridden = actions.add_vehicle(store, city="rome", owner_id=other.id, type="bike")
    ride = call("start ride", "POST", "/rides", json={"vehicle_id": str(ridden.id)})
    call("promo code", "POST", f"/rides/rome/{ride['id']}/promo-code", json={"code": "WELCOME10"})
    call("end ride", "PATCH", f"/rides/rome/{ride['id']}", json={"location": "Station"})
    call("my rides", "GET", "/rides")
    call("remove vehicle", "DELETE", f"/vehicles/rome/{vehicle['id']}")
    v.token = call("log in", "POST", "/sessions", json={"username": "ada", "password": PASSWORD})["token"]
    call("log out", "DELETE", "/sessions")
    v.token = call("log in", "POST", "/sessions", json={"username": "ada", "password": PASSWORD})["token"]
    call("log out everywhere", "DELETE", "/users/me/sessions")
    assert statements == {name: 1 for name in statements}


def test_session_checks_inside_the_actions_one_statement_each(store):
    user = actions.register(store, city="rome", username="ada", password=PASSWORD)
    logged_in = actions.authenticate(store, username="ada", password=PASSWORD)
    session = actions.Session("rome", user.id, logged_in.session_epoch, rules.new_session_id(time.time()))
    owner = actions.register(store, city="rome", username="owner", password=PASSWORD)
    ridden = actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike")

    def counted(fn, **kwargs):
        with stats.measure() as measured:
            result = fn(store, session=session, **kwargs)
        assert measured.statements == 1, fn.__name__
        return result

    vehicle = counted(actions.add_vehicle, city="rome", owner_id=user.id, type="scooter")
    assert [v.id for v in counted(actions.list_user_vehicles, city="rome", owner_id=user.id)] == [vehicle.id]
    ride = counted(actions.start_ride, city="rome", rider_id=user.id, rider_city="rome", vehicle_id=ridden.id)
    counted(actions.apply_promo_code, city="rome", ride_id=ride.id, rider_id=user.id, code="WELCOME10")
    counted(actions.end_ride, city="rome", ride_id=ride.id, rider_id=user.id)
    assert [r.id for r in counted(actions.list_rides, city="rome", rider_id=user.id)] == [ride.id]
    assert counted(actions.get_user, city="rome", user_id=user.id).username == "ada"
    assert counted(actions.list_rides, city="rome", rider_id=owner.id) == []  # an empty list is not an ended session

    with stats.measure() as measured:
        assert actions.end_session(store, session=session, lifetime_s=3600) is True
    assert measured.statements == 1
    for action, kwargs in (
        (actions.add_vehicle, {"city": "rome", "owner_id": user.id, "type": "bike"}),
        (actions.list_user_vehicles, {"city": "rome", "owner_id": user.id}),
        (actions.list_rides, {"city": "rome", "rider_id": user.id}),
        (actions.get_user, {"city": "rome", "user_id": user.id}),
        (actions.remove_vehicle, {"city": "rome", "vehicle_id": vehicle.id, "owner_id": user.id}),
        (actions.remove_vehicle, {"city": "rome", "vehicle_id": uuid.uuid4(), "owner_id": user.id}),
        (actions.start_ride, {"city": "rome", "rider_id": user.id, "rider_city": "rome", "vehicle_id": ridden.id}),
        (actions.end_ride, {"city": "rome", "ride_id": ride.id, "rider_id": user.id}),
        (actions.end_ride, {"city": "rome", "ride_id": uuid.uuid4(), "rider_id": user.id}),
        (actions.apply_promo_code, {"city": "rome", "ride_id": ride.id, "rider_id": user.id, "code": "WELCOME10"}),
        (actions.remove_user, {"city": "rome", "user_id": user.id, "username": "ada"}),
    ):
        with stats.measure() as measured, pytest.raises(errors.SessionEnded):
            action(store, session=session, **kwargs)
        assert measured.statements == 1, action.__name__
    assert actions.get_user(store, city="rome", user_id=user.id).username == "ada"  # nothing was removed
    assert [v.id for v in actions.list_user_vehicles(store, city="rome", owner_id=user.id)] == [vehicle.id]


def test_ended_sessions_are_pruned_and_bounded(store, movr_dsn):
    user = actions.register(store, city="rome", username="ada", password=PASSWORD)

    def ended() -> list[int]:
        with psycopg.connect(movr_dsn) as conn:
            return conn.execute("SELECT ended_sessions FROM users WHERE id = %s", (user.id,)).fetchone()[0]

    def session(issued_at: float, epoch: int = 0) -> actions.Session:
        return actions.Session("rome", user.id, epoch, rules.new_session_id(issued_at))

    week = 7 * 24 * 3600
    stale = session(time.time() - week - 60)  # older than a session may live: refused before any SQL
    assert actions.end_session(store, session=stale, lifetime_s=week)
    assert actions.end_session(store, session=session(time.time()), lifetime_s=week)
    assert stale.id not in ended() and len(ended()) == 1

    live = session(time.time())
    for _ in range(actions.ENDED_SESSIONS_KEPT - 1):
        assert actions.end_session(store, session=session(time.time()), lifetime_s=week)
    assert len(ended()) == actions.ENDED_SESSIONS_KEPT
    assert actions.get_user(store, city="rome", user_id=user.id, session=live).id == user.id
    # one more: rather than grow, the list empties and the epoch moves on (every session ends)
    assert actions.end_session(store, session=session(time.time()), lifetime_s=week)
    assert ended() == []
    with pytest.raises(errors.SessionEnded):
        actions.get_user(store, city="rome", user_id=user.id, session=live)
    assert actions.authenticate(store, username="ada", password=PASSWORD).session_epoch == 1
