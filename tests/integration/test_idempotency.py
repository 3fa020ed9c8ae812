"""Idempotency-Key on the API's creating writes: a retry gets the first answer and changes nothing.

Through the app (Flask's test client) on the embedded PostgreSQL, counting rows to show that nothing
changed, and statements to show that a key costs no extra round trip.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from movr.domain import errors
from movr.geo import Preset
from movr.store import actions, stats
from movr.store.regional import RegionalPostgresBackend
from movr.web import create_app
from regionalkit import one_server_regional

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
HASH = "scrypt:stored-by-the-test"
KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


class Client:
    """An API client with a bearer token once signed up."""

    def __init__(self, app: Any) -> None:
        self.http = app.test_client()
        self.token: str | None = None

    def post(self, path: str, body: dict[str, Any], key: str | None = None):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.http.post("/api/v1" + path, json=body, headers=headers)

    def join(self, username: str, city: str = "rome") -> Client:
        assert self.post("/users", {"username": username, "password": PASSWORD, "city": city}).status_code == 201
        session = self.post("/sessions", {"username": username, "password": PASSWORD})
        self.token = session.get_json()["token"]
        return self


@pytest.fixture
def app(store) -> Any:
    return create_app({"SECRET_KEY": "test-secret-key", "MOVR_REGION": "us-east1"}, backend=store)


@pytest.fixture
def client(app) -> Client:
    return Client(app)


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        found = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("users", "vehicles", "rides", "idempotency_keys")
        }
        found["open_rides"] = conn.execute("SELECT count(*) FROM rides WHERE end_time IS NULL").fetchone()[0]
        return found


def same_answer(first, again) -> None:
    """Same status, same body; an open ride's `length_seconds` is how long it has lasted when answered."""
    if "length_seconds" not in (first.get_json() or {}):
        assert (again.status_code, again.get_data()) == (first.status_code, first.get_data())
        return
    assert again.status_code == first.status_code
    assert again.get_json()["length_seconds"] >= first.get_json()["length_seconds"]
    assert {**again.get_json(), "length_seconds": 0} == {**first.get_json(), "length_seconds": 0}


# --- a retry gets the first answer -------------------------------------------------------------------------


def test_a_retried_sign_up_gets_the_first_answer_and_signs_up_nobody(client: Client, movr_dsn: str) -> None:
    body = {"username": "ada", "password": PASSWORD, "city": "rome", "email": "ada@example.com"}
    first = client.post("/users", body, KEY)
    assert first.status_code == 201 and int(first.headers["X-Movr-Statements"]) == 1
    before = counts(movr_dsn)

    again = client.post("/users", body, KEY)
    same_answer(first, again)
    assert int(again.headers["X-Movr-Statements"]) == 1  # the retry is one statement too
    assert counts(movr_dsn) == before

    # Without the key the same request is a new sign-up, refused: the name is taken.
    assert client.post("/users", body).status_code == 409
    # Sign-up keys are per city: the same key in another city is another key.
    paris = client.post("/users", {**body, "username": "bea", "city": "paris"}, KEY)
    assert paris.status_code == 201 and paris.get_json()["username"] == "bea"


def test_a_retried_vehicle_is_added_once(app, movr_dsn: str) -> None:
    owner = Client(app).join("owner")
    body = {"type": "scooter", "brand": "Vespa", "location": "Piazza"}
    first = owner.post("/vehicles", body, KEY)
    assert first.status_code == 201 and int(first.headers["X-Movr-Statements"]) == 1
    before = counts(movr_dsn)

    for _ in range(3):
        same_answer(first, owner.post("/vehicles", body, KEY))
    assert counts(movr_dsn) == before
    assert owner.post("/vehicles", body, "another-key").status_code == 201
    assert counts(movr_dsn)["vehicles"] == before["vehicles"] + 1


def test_a_retried_ride_is_the_first_ride_even_after_it_ended(app, movr_dsn: str) -> None:
    rider = Client(app).join("rider")
    vehicle = rider.post("/vehicles", {"type": "bike"}).get_json()
    body = {"vehicle_id": vehicle["id"], "city": "rome"}
    first = rider.post("/rides", body, KEY)
    assert first.status_code == 201 and first.get_json()["is_open"]
    ride = first.get_json()["id"]
    ended = rider.http.patch(f"/api/v1/rides/rome/{ride}", json={}, headers={"Authorization": f"Bearer {rider.token}"})
    assert ended.status_code == 200
    before = counts(movr_dsn)

    # The answer is the first one (an open ride), and no second ride starts on the vehicle now free.
    same_answer(first, rider.post("/rides", body, KEY))
    assert counts(movr_dsn) == before and before["open_rides"] == 0


def test_a_write_without_a_key_leaves_the_keys_table_out_of_its_statement(app, monkeypatch) -> None:
    """The usual write has no key: its one statement names no idempotency_keys, whose table and indexes it
    would otherwise open on every write (0.14-0.19 ms after idling, docs/lab.md)."""
    from movr.store.actions import _idempotency

    sent: list[str] = []
    run_work = _idempotency.run_work

    def recording(store, work):
        sent.extend(statement.sql for statement in work.statements)
        return run_work(store, work)

    monkeypatch.setattr(_idempotency, "run_work", recording)
    rider = Client(app).join("keyless")
    vehicle = rider.post("/vehicles", {"type": "bike"})
    assert vehicle.status_code == 201
    assert rider.post("/rides", {"vehicle_id": vehicle.get_json()["id"]}).status_code == 201
    keyed = Client(app).post("/users", {"username": "keyed", "password": PASSWORD, "city": "rome"}, KEY)
    assert keyed.status_code == 201
    assert len(sent) == 4  # sign-up, vehicle, ride without a key; the last sign-up with one
    assert ["idempotency_keys" in sql for sql in sent] == [False, False, False, True]


def test_a_refusal_is_the_first_answer_too(app, movr_dsn: str) -> None:
    owner = Client(app).join("owner")
    rider = Client(app).join("rider")
    vehicle = owner.post("/vehicles", {"type": "bike"}).get_json()
    body = {"vehicle_id": vehicle["id"], "city": "rome"}
    taken = owner.post("/rides", body)
    assert taken.status_code == 201

    refused = rider.post("/rides", body, KEY)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "vehicle_not_available"
    owner.http.patch(
        f"/api/v1/rides/rome/{taken.get_json()['id']}", json={}, headers={"Authorization": f"Bearer {owner.token}"}
    )
    before = counts(movr_dsn)
    # The vehicle is free now, but this key's request was answered already.
    same_answer(refused, rider.post("/rides", body, KEY))
    assert counts(movr_dsn) == before


# --- what a key is scoped to, and what is refused ------------------------------------------------------------


def test_keys_belong_to_their_user(app, movr_dsn: str) -> None:
    ada, bea = Client(app).join("ada"), Client(app).join("bea")
    first = ada.post("/vehicles", {"type": "bike"}, KEY)
    other = bea.post("/vehicles", {"type": "bike"}, KEY)
    assert first.status_code == other.status_code == 201
    assert first.get_json()["owner_id"] != other.get_json()["owner_id"]
    assert counts(movr_dsn)["vehicles"] == 2


def test_a_key_reused_for_another_request_is_refused(app, movr_dsn: str) -> None:
    owner = Client(app).join("owner")
    assert owner.post("/vehicles", {"type": "bike"}, KEY).status_code == 201
    before = counts(movr_dsn)
    reused = owner.post("/vehicles", {"type": "scooter"}, KEY)
    assert reused.status_code == 409 and reused.get_json()["error"]["code"] == "idempotency_key_reused"
    # ... for another action, too.
    ride = owner.post("/rides", {"vehicle_id": str(uuid.uuid4()), "city": "rome"}, KEY)
    assert ride.status_code == 409 and ride.get_json()["error"]["code"] == "idempotency_key_reused"
    assert counts(movr_dsn) == before


@pytest.mark.parametrize(
    "key",
    ["", "k" * 256, "tab\tinside", "space inside", "clé"],
    ids=["empty", "too-long", "control-character", "space", "not-ascii"],
)
def test_a_malformed_key_is_a_400_and_changes_nothing(app, movr_dsn: str, key: str) -> None:
    owner = Client(app).join("owner")
    before = counts(movr_dsn)
    for path, body in (
        ("/vehicles", {"type": "bike"}),
        ("/rides", {"vehicle_id": str(uuid.uuid4())}),
        ("/users", {"username": "newbie", "password": PASSWORD, "city": "rome"}),
    ):
        answer = owner.post(path, body, key)
        assert answer.status_code == 400, (path, answer.get_json())
        assert answer.get_json() == {
            "error": {"code": "bad_idempotency_key", "message": answer.get_json()["error"]["message"]}
        }
    assert counts(movr_dsn) == before
    assert owner.post("/vehicles", {"type": "bike"}, "k" * 255).status_code == 201  # the longest key


def test_the_openapi_document_describes_the_header(client: Client) -> None:
    spec = client.http.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/users", "/api/v1/vehicles", "/api/v1/rides"):
        (header,) = [p for p in spec["paths"][path]["post"]["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and not header["required"]
        assert header["schema"]["maxLength"] == 255 and "400" in spec["paths"][path]["post"]["responses"]


# --- races, expiry, removal -----------------------------------------------------------------------------------


def test_concurrent_requests_with_one_key_write_once(store, movr_dsn: str) -> None:
    owner = actions.register(store, city="rome", username="owner", password="", password_hash=HASH)

    def add(barrier: threading.Barrier, key: str, answers: list[Any]) -> None:
        barrier.wait()
        answers.append(actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike", idempotency_key=key))

    for round_number in range(20):
        barrier, answers = threading.Barrier(4), []
        threads = [threading.Thread(target=add, args=(barrier, f"race-{round_number}", answers)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == 4 and len(set(answers)) == 1
    assert counts(movr_dsn)["vehicles"] == 20


def test_keys_expire_after_a_day_and_are_cleaned_up_lazily(store, movr_dsn: str) -> None:
    owner = actions.register(store, city="rome", username="owner", password="", password_hash=HASH)
    first = actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike", idempotency_key=KEY)
    for n in range(3):
        actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike", idempotency_key=f"old-{n}")
    with psycopg.connect(movr_dsn) as conn:
        conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    assert counts(movr_dsn)["idempotency_keys"] == 4

    later = actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike", idempotency_key=KEY)
    assert later.id != first.id  # an expired key is a new key
    # The write also took the expired keys of its city away: only the fresh one is left.
    with psycopg.connect(movr_dsn) as conn:
        assert conn.execute("SELECT key FROM idempotency_keys").fetchall() == [(KEY,)]


def test_removing_an_account_removes_its_keys(store, movr_dsn: str) -> None:
    user = actions.register(store, city="rome", username="ada", password="", password_hash=HASH, idempotency_key=KEY)
    actions.add_vehicle(store, city="rome", owner_id=user.id, type="bike", idempotency_key=KEY)
    assert counts(movr_dsn)["idempotency_keys"] == 2
    actions.remove_user(store, city="rome", user_id=user.id, username="ada")
    assert counts(movr_dsn)["idempotency_keys"] == 0


# --- the lab's regional backend ------------------------------------------------------------------------------


@pytest.fixture
def regional(store, movr_dsn: str, preset: Preset) -> Iterator[RegionalPostgresBackend]:
    """Every region on the one test server: a sign-up claims its name in every region, as in the lab."""
    with one_server_regional(movr_dsn, preset, "europe-west1") as backend:
        yield backend


def test_a_retried_sign_up_on_the_regional_backend(regional: RegionalPostgresBackend, movr_dsn: str) -> None:
    name = "retry0"
    first = actions.register(regional, city="rome", username=name, password="", password_hash=HASH, idempotency_key=KEY)
    before = counts(movr_dsn)
    with stats.measure() as measured:
        again = actions.register(
            regional, city="rome", username=name, password="", password_hash=HASH, idempotency_key=KEY
        )
    assert again == first and counts(movr_dsn) == before
    # The name's claims meet the first sign-up's user: one more statement reads the answer.
    assert measured.statements_by_action["register"] == 1 and measured.statements_by_action["register_claim"] >= 1
    with pytest.raises(errors.UsernameTaken):
        actions.register(regional, city="rome", username=name, password="", password_hash=HASH, idempotency_key="k2")
