"""Nothing waits without bound: every pool's sessions carry a statement, lock and idle-transaction timeout.

The case that matters: a username held by a real prepared transaction (what a two-phase sign-up whose
coordinator died leaves behind until a resolver finishes it). A sign-up for that name is told so at once
(409 username_pending), instead of waiting for the resolver; a vehicle held that way answers 503 busy.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from movr.domain import errors
from movr.geo import Preset
from movr.store import actions, claims
from movr.store.backend import PostgresBackend
from movr.store.cockroach import CockroachBackend
from movr.store.regional import DIRECTORY_DDL, RegionalPostgresBackend
from movr.store.work import Home, Statement, UniqueClaim, Work
from movr.web import create_app

pytestmark = pytest.mark.integration

HASH = "scrypt:stored-by-the-test"
PASSWORD = "correct horse battery"
TIMEOUTS_MS = {"statement_timeout": 30_000, "lock_timeout": 2_000, "idle_in_transaction_session_timeout": 60_000}
SHOW_TIMEOUTS = Statement(
    "SELECT name, setting::integer AS ms FROM pg_settings WHERE name = ANY(%(names)s)", {"names": list(TIMEOUTS_MS)}
)


def timeouts_of(backend) -> dict[str, int]:
    rows = backend.run(Work("show_timeouts", [SHOW_TIMEOUTS], Home.local(), readonly=True))[0]
    return {row["name"]: row["ms"] for row in rows}


def within_bound(call: Callable[[], Any], bound_s: float = 60.0) -> BaseException | Any:
    """Run `call` in a thread and return what it returned or raised; a call that never returns fails the
    test after `bound_s` (a bound on a hang, far above the lock timeout: not a timing)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(bound_s)
    assert not thread.is_alive(), "the call waited for the prepared transaction instead of answering"
    return outcome[0]


@pytest.fixture
def prepared(movr_dsn: str) -> Iterator[Callable[..., str]]:
    """Prepare a transaction of the given statements (its rows stay locked until it is finished); every
    one prepared is rolled back at the end."""
    gids: list[str] = []

    def prepare(*statements: Statement) -> str:
        gid = f"movr-test:{uuid.uuid4()}"  # not MovR's prefix: no resolver would touch it
        with psycopg.connect(movr_dsn) as conn:
            for statement in statements:
                conn.execute(statement.sql, statement.params)
            conn.execute(f"PREPARE TRANSACTION '{gid}'")
        gids.append(gid)
        return gid

    yield prepare
    with psycopg.connect(movr_dsn, autocommit=True) as conn:
        for gid in gids:
            if conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone():
                conn.execute(f"ROLLBACK PREPARED '{gid}'")


def user_row(username: str, city: str = "rome") -> Statement:
    return Statement(
        "INSERT INTO users (city, id, username, password_hash, first_name, last_name, email)"
        " VALUES (%(city)s, %(id)s, %(username)s, %(hash)s, '', '', '')",
        {"city": city, "id": uuid.uuid4(), "username": username, "hash": HASH},
    )


def sign_up(store, username: str, city: str = "rome"):
    return actions.register(store, city=city, username=username, password="", password_hash=HASH)


# --- every pool ------------------------------------------------------------------------------------------


def test_every_pool_sets_the_timeouts(store: PostgresBackend, movr_dsn: str, preset: Preset) -> None:
    assert timeouts_of(store) == TIMEOUTS_MS

    regional = RegionalPostgresBackend.from_urls(dict.fromkeys(preset.region_names, movr_dsn), preset, "us-east1")
    try:
        for region, server in regional.servers.items():
            rows = server.execute("show_timeouts", [SHOW_TIMEOUTS])[0]
            assert {row["name"]: row["ms"] for row in rows} == TIMEOUTS_MS, region
        # The GLOBAL writer's own setting comes on top of the timeouts.
        rows = regional.global_writer.execute(
            "show_timeouts", [SHOW_TIMEOUTS, Statement("SELECT current_setting('synchronous_commit') AS sync")]
        )
        assert {row["name"]: row["ms"] for row in rows[0]} == TIMEOUTS_MS
        assert rows[1] == [{"sync": "remote_apply"}]
    finally:
        regional.close()

    # CockroachDB takes them as connection options too; the embedded PostgreSQL stands in for it here.
    cockroach = CockroachBackend(movr_dsn.replace("postgresql://", "cockroachdb://", 1), preset, "us-east1")
    try:
        assert timeouts_of(cockroach) == TIMEOUTS_MS
    finally:
        cockroach.close()


# --- a name held by a prepared transaction ---------------------------------------------------------------


def test_a_sign_up_for_a_name_held_by_a_prepared_transaction_is_told_at_once(store, prepared) -> None:
    prepared(user_row("held"))

    outcome = within_bound(lambda: sign_up(store, "held"))
    assert isinstance(outcome, errors.UsernamePending), outcome
    assert outcome.status == 409 and "try again" in outcome.message

    # Through the API: a 409 with the reason, in the app's error shape.
    app = create_app({"SECRET_KEY": "test-secret-key", "MOVR_REGION": "us-east1"}, backend=store)
    body = {"username": "held", "password": PASSWORD, "city": "rome"}
    response = within_bound(lambda: app.test_client().post("/api/v1/users", json=body))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "username_pending"


def test_once_the_prepared_transaction_is_rolled_back_the_name_is_free(store, prepared, movr_dsn: str) -> None:
    gid = prepared(user_row("freed"))
    assert isinstance(within_bound(lambda: sign_up(store, "freed")), errors.UsernamePending)
    with psycopg.connect(movr_dsn, autocommit=True) as conn:
        conn.execute(f"ROLLBACK PREPARED '{gid}'")
    assert sign_up(store, "freed").username == "freed"


def test_a_regional_sign_up_for_a_name_claimed_by_a_sign_up_in_flight_is_told_it_is_pending(
    store, movr_dsn: str, preset: Preset
) -> None:
    """The lab's shape: another sign-up holds the name's claim within its lease and has no user yet (it is in
    flight, or its coordinator died): this one is told at once, and gets the name once the claim is gone."""
    with psycopg.connect(movr_dsn, autocommit=True) as conn:
        conn.execute(DIRECTORY_DDL)
        conn.execute("TRUNCATE username_directory")
    home = preset.region_of("rome")
    regional = RegionalPostgresBackend.from_urls(dict.fromkeys(preset.region_names, movr_dsn), preset, home)
    older = UniqueClaim("username", "pending", "paris", "00000000-0000-4000-8000-000000000001")
    regional.servers["us-east1"].execute("t", [claims.claim_statement(older, home, home, claims.lease_until())])
    try:
        outcome = within_bound(lambda: sign_up(regional, "pending"))
        assert isinstance(outcome, errors.UsernamePending), outcome
        with psycopg.connect(movr_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM users WHERE username = 'pending'").fetchone()[0] == 0
            # Only the other sign-up's claim is left: this one released what it claimed.
            assert conn.execute("SELECT user_id::text FROM username_directory").fetchall() == [(older.owner_id,)]
            conn.execute("TRUNCATE username_directory")  # as a resolver does once its lease has ended
        assert sign_up(regional, "pending").username == "pending"
    finally:
        regional.close()
        with psycopg.connect(movr_dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE username_directory")


def test_a_vehicle_held_by_a_prepared_transaction_answers_busy(store, prepared) -> None:
    owner = sign_up(store, "owner")
    rider = sign_up(store, "rider")
    vehicle = actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike")
    prepared(Statement("UPDATE vehicles SET color = 'red' WHERE id = %(id)s", {"id": vehicle.id}))

    outcome = within_bound(
        lambda: actions.start_ride(store, city="rome", rider_id=rider.id, rider_city="rome", vehicle_id=vehicle.id)
    )
    assert isinstance(outcome, errors.Busy) and outcome.status == 503, outcome
    assert actions.list_rides(store, city="rome", rider_id=rider.id) == []
