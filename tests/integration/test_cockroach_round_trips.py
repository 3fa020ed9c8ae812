"""CockroachBackend spends one protocol round trip on each single-statement action, counted on the wire.

The backend runs with a `cockroachdb://` URL (sqlalchemy-cockroachdb on psycopg 3) against the embedded
PostgreSQL stand-in, through a lab link with no delay: the link is the counting TCP proxy (it counts a
round trip each time the server answers after the client spoke). No CockroachDB runs here, so what is
checked is the client's side of the protocol: what the backend sends and how often it waits. The
server-side parts (CockroachDB retrying an implicit transaction itself, `gateway_region()`, follower
reads) are exercised by tests/cockroach against a real cluster.

What CockroachDB would answer with 40001 (restart) or 40003 (ambiguous result) is played by a trigger in
this test's own database, as `SET inject_retry_errors_enabled = true` does on a real cluster.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from movr.domain import errors, rules
from movr.geo import Preset
from movr.lab.links import LinkSpec, LinkThread, run_links_in_thread
from movr.lab.pgserver import conninfo
from movr.store import actions, stats
from movr.store.cockroach import MAX_RETRIES, CockroachBackend
from movr.store.work import Home, Statement, Work
from movr.web import create_app

pytestmark = pytest.mark.integration

DATABASE = "movr_cockroach_round_trips"
LINK = "gateway"
PASSWORD = "correct horse battery"
CITY = "new york"  # homed in us-east1, this app server's region

# Server-side stand-ins for CockroachDB's answers, keyed by the username being inserted.
FAULTS_SQL = """
CREATE SEQUENCE IF NOT EXISTS restart_attempts;
CREATE OR REPLACE FUNCTION movr_test_faults() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.username LIKE 'ambiguous%' THEN
        RAISE EXCEPTION 'result is ambiguous' USING ERRCODE = '40003';
    ELSIF NEW.username LIKE 'contended%' THEN
        RAISE EXCEPTION 'restart transaction' USING ERRCODE = '40001';
    ELSIF NEW.username LIKE 'restarted%' AND nextval('restart_attempts') % 2 = 1 THEN
        RAISE EXCEPTION 'restart transaction' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER movr_test_faults BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION movr_test_faults();
"""


@pytest.fixture(scope="module")
def database(pg_server) -> str:
    from movr.store.schema import create_schema

    pg_server.create_database(DATABASE)
    dsn = pg_server.dsn(DATABASE)
    create_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FAULTS_SQL)
    return dsn


@pytest.fixture(scope="module")
def link(pg_server) -> Iterator[LinkThread]:
    """The counting proxy: a lab link with zero delay in front of the PostgreSQL stand-in."""
    spec = LinkSpec(LINK, 0, pg_server.port, 0.0, "local", "app", "us-east1")
    with run_links_in_thread([spec]) as links:
        yield links


@pytest.fixture
def cockroach(database: str, link: LinkThread, pg_server, preset: Preset) -> Iterator[CockroachBackend]:
    # The stand-in's own URL, pointed at the link, read as CockroachDB's.
    url = conninfo(link.port(LINK), pg_server.passfile, DATABASE, sslmode="disable")
    url = url.replace("postgresql://", "cockroachdb://", 1)
    backend = CockroachBackend(url, preset, "us-east1")
    backend.truncate()  # also opens the pool's first connection, and SQLAlchemy's first-connect queries
    try:
        yield backend
    finally:
        backend.close()


class Wire:
    """What one call cost: protocol round trips and new connections on the link, and the store's figures."""

    def __init__(self, link: LinkThread) -> None:
        self.link = link

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int, stats.Stats]:
        self.link.reset_counters()
        with stats.measure() as measured:
            result = fn(*args, **kwargs)
        counters = self.link.counters()[LINK]
        assert counters["connections_total"] == 0, "a connection was opened: its set-up would hide in the count"
        return result, counters["round_trips"], measured


@pytest.fixture
def wire(link: LinkThread) -> Wire:
    return Wire(link)


def public_actions() -> set[str]:
    return {action.__name__ for action in actions.ACTIONS}


def test_every_action_of_the_journey_is_one_round_trip(cockroach, wire):
    seen: set[str] = set()

    def once(fn: Callable[..., Any], **kwargs: Any) -> Any:
        result, round_trips, measured = wire(fn, cockroach, **kwargs)
        # One statement, one round trip: the journey's statement count is the wire's, and no WAN is
        # crossed by the app (the gateway is in its own region).
        assert (round_trips, measured.statements, measured.wan_round_trips) == (1, 1, 0), fn.__name__
        assert measured.regions == {"us-east1"}
        seen.add(fn.__name__)
        return result

    name = f"ada{uuid.uuid4().hex[:8]}"
    user = once(actions.register, city=CITY, username=name, password=PASSWORD, first_name="Ada")
    logged_in = once(actions.authenticate, username=name, password=PASSWORD)
    assert logged_in.id == user.id
    session = actions.Session(CITY, user.id, logged_in.session_epoch, rules.new_session_id(time.time()))
    assert once(actions.get_user, city=CITY, user_id=user.id, session=session).username == name
    assert [u.id for u in once(actions.list_users, city=CITY)] == [user.id]
    vehicle = once(actions.add_vehicle, city=CITY, owner_id=user.id, type="scooter", brand="Vespa")
    assert [v.id for v in once(actions.list_vehicles, city=CITY)] == [vehicle.id]
    assert [v.id for v in once(actions.list_user_vehicles, city=CITY, owner_id=user.id)] == [vehicle.id]
    ride = once(actions.start_ride, city=CITY, rider_id=user.id, rider_city=CITY, vehicle_id=vehicle.id)
    promo = once(
        actions.create_promo_code,
        code=f"RT{uuid.uuid4().hex[:6]}",
        description="round trips",
        discount_percent=5,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
    )
    assert promo.code in [p.code for p in once(actions.list_promo_codes)]
    assert once(actions.apply_promo_code, city=CITY, ride_id=ride.id, rider_id=user.id, code=promo.code).promo_code
    assert not once(actions.end_ride, city=CITY, ride_id=ride.id, rider_id=user.id, location="Dock 4").is_open
    assert [r.id for r in once(actions.list_rides, city=CITY, rider_id=user.id)] == [ride.id]
    once(actions.remove_vehicle, city=CITY, vehicle_id=vehicle.id, owner_id=user.id)
    assert once(actions.end_session, session=session, lifetime_s=3600)
    other = actions.Session(CITY, user.id, logged_in.session_epoch, rules.new_session_id(time.time()) + 1)
    once(actions.end_all_sessions, session=other)
    once(actions.remove_user, city=CITY, user_id=user.id, username=name)
    with pytest.raises(errors.UnknownUser):
        actions.get_user(cockroach, city=CITY, user_id=user.id)
    assert seen == public_actions(), "every action of movr.store.actions is counted here"


def test_a_refused_action_costs_a_round_trip_per_statement(cockroach, wire):
    """Domain errors come from the statements themselves: no second look, no rollback on the wire (a failed
    log-in writes its count in one more statement, which is one more round trip)."""
    name = f"bo{uuid.uuid4().hex[:8]}"
    actions.register(cockroach, city=CITY, username=name, password=PASSWORD)
    for fn, kwargs, error in [
        (actions.register, {"city": "boston", "username": name, "password": PASSWORD}, errors.UsernameTaken),
        (actions.authenticate, {"username": name, "password": "wrong password"}, errors.BadCredentials),
        (
            actions.start_ride,
            {"city": CITY, "rider_id": uuid.uuid4(), "rider_city": CITY, "vehicle_id": uuid.uuid4()},
            errors.UnknownUser,
        ),
    ]:

        def call(fn=fn, kwargs=kwargs, error=error) -> None:
            with pytest.raises(error):
                fn(cockroach, **kwargs)

        _, round_trips, measured = wire(call)
        assert round_trips == measured.statements and measured.statements in (1, 2), fn.__name__


def test_a_statement_run_again_and_again_stays_one_round_trip(cockroach, wire):
    """psycopg would prepare a statement the fifth time a connection runs it, a round trip of its own."""
    name = f"pr{uuid.uuid4().hex[:8]}"
    user = actions.register(cockroach, city=CITY, username=name, password=PASSWORD)
    for _ in range(8):
        found, round_trips, _ = wire(actions.get_user, cockroach, city=CITY, user_id=user.id)
        assert found.username == name and round_trips == 1


def test_an_idle_connection_the_gateway_closed_is_replaced_before_use(cockroach, link, database):
    """No pre-ping: the closed socket is noticed on checkout, so the statement goes on a fresh connection."""
    name = f"gw{uuid.uuid4().hex[:8]}"
    user = actions.register(cockroach, city=CITY, username=name, password=PASSWORD)
    link.reset_counters()
    with psycopg.connect(database, autocommit=True) as admin:
        closed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (DATABASE, "movr-us-east1"),
        ).fetchall()
    assert closed and all(row[0] for row in closed)
    deadline = time.monotonic() + 10
    while not link.counters()[LINK]["bytes_s2c"] and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the server's farewell to pass the link, not standing in for distance
    assert link.counters()[LINK]["bytes_s2c"], "the server's farewell reached the client"
    link.reset_counters()
    assert actions.get_user(cockroach, city=CITY, user_id=user.id).username == name
    assert link.counters()[LINK]["connections_total"] == 1


def test_work_of_several_statements_keeps_the_client_side_retry_protocol(cockroach, wire):
    """BEGIN, SAVEPOINT cockroach_restart, the statements, RELEASE, COMMIT: each a round trip."""
    work = Work("two", [Statement("SELECT 1 AS one"), Statement("SELECT 2 AS two")], Home.local(), readonly=True)
    rows, round_trips, measured = wire(cockroach.run, work)
    assert rows == [[{"one": 1}], [{"two": 2}]]
    assert round_trips == 6 and measured.statements == 2


def test_the_follower_read_shape_is_one_round_trip(cockroach, link, wire):
    """BEGIN; SET TRANSACTION ...; SELECT; COMMIT in one pipeline. The stand-in has no AS OF SYSTEM TIME,
    so a SET TRANSACTION it knows takes the place of follower_read_timestamp()'s."""

    class StandIn(CockroachBackend):
        def follower_read_statement(self, work: Work) -> str | None:
            return "SET TRANSACTION READ ONLY"

    standin = StandIn(cockroach.url, cockroach.preset, "us-east1")
    try:
        standin.truncate()
        # A pipeline's messages leave one after the other without waiting; with no delay at all the
        # server may answer the first before the last has reached it, which the link would count as a
        # turn of its own. A millisecond each way, as on any network, keeps the count to the client's waits.
        link.set_delay(LINK, 1.0)
        work = Work("list_vehicles", [Statement("SELECT 1 AS one")], Home.of_city("rome"), readonly=True)
        rows, round_trips, measured = wire(standin.run, work)
        assert rows == [[{"one": 1}]] and round_trips == 1 and measured.statements == 1
    finally:
        link.set_delay(LINK, 0.0)
        standin.close()


def test_a_restart_that_reaches_the_client_is_retried(cockroach, wire):
    name = f"restarted{uuid.uuid4().hex[:6]}"
    user, round_trips, measured = wire(actions.register, cockroach, city=CITY, username=name, password=PASSWORD)
    assert user.username == name
    assert round_trips == 2 and measured.statements == 2  # the statement was sent twice, and counted twice


def test_restarts_are_retried_a_bounded_number_of_times(cockroach, wire):
    def register() -> None:
        with pytest.raises(errors.RetriesExhausted, match="40001"):
            actions.register(cockroach, city=CITY, username=f"contended{uuid.uuid4().hex[:6]}", password=PASSWORD)

    _, round_trips, measured = wire(register)
    assert round_trips == MAX_RETRIES and measured.statements == MAX_RETRIES


def test_an_ambiguous_result_is_a_clear_error_and_never_retried(cockroach, wire):
    def register() -> None:
        with pytest.raises(errors.ResultAmbiguous, match="may have been"):
            actions.register(cockroach, city=CITY, username=f"ambiguous{uuid.uuid4().hex[:6]}", password=PASSWORD)

    _, round_trips, _ = wire(register)
    assert round_trips == 1


def test_the_api_answers_an_ambiguous_result_with_a_json_503(cockroach):
    app = create_app({"SECRET_KEY": "test-secret-key", "MOVR_REGION": "us-east1"}, backend=cockroach)
    response = app.test_client().post(
        "/api/v1/users", json={"username": f"ambiguous{uuid.uuid4().hex[:6]}", "password": PASSWORD, "city": CITY}
    )
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "result_ambiguous"
    assert "may have been" in error["message"] and "Traceback" not in response.get_data(as_text=True)


def test_the_api_journey_reports_what_the_wire_saw(cockroach, link):
    """Each request's X-Movr-Statements is its round trips to the gateway, and it crossed no WAN link:
    the stmts/WAN figures `movr bench journey` prints are true of this backend."""
    app = create_app({"SECRET_KEY": "test-secret-key", "MOVR_REGION": "us-east1"}, backend=cockroach)
    http = app.test_client()
    headers: dict[str, str] = {}
    name = f"cy{uuid.uuid4().hex[:8]}"

    def request(method: str, path: str, expected: int, **kwargs: Any) -> Any:
        link.reset_counters()
        response = http.open("/api/v1" + path, method=method, headers=headers, **kwargs)
        assert response.status_code == expected, response.get_json()
        counters = link.counters()[LINK]
        assert int(response.headers["X-Movr-Statements"]) == counters["round_trips"], path
        assert response.headers["X-Movr-Wan-Round-Trips"] == "0"
        return response.get_json() if response.data else None

    request("POST", "/users", 201, json={"username": name, "password": PASSWORD, "city": CITY})
    headers["Authorization"] = (
        "Bearer " + request("POST", "/sessions", 201, json={"username": name, "password": PASSWORD})["token"]
    )
    request("GET", "/cities/new york/vehicles", 200)
    vehicle = request("POST", "/vehicles", 201, json={"type": "bike"})
    ride = request("POST", "/rides", 201, json={"vehicle_id": vehicle["id"]})
    request("PATCH", f"/rides/{CITY}/{ride['id']}", 200, json={"location": "Pier 17"})
    assert len(request("GET", "/rides", 200)) == 1
    request("DELETE", "/sessions", 204)
