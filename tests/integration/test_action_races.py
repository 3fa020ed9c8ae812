"""Start ride, end ride, remove vehicle and remove account, raced in every pair: the data stays whole.

Each scenario builds a fresh little world per round (an owner, two riders, two vehicles, and for the
scenarios that end a ride, an open ride), bulk-loaded up front, then two threads released by one barrier
run the two actions of that round through the real service functions. Afterwards:

- no vehicle is "in use" without an open ride, and no open ride lacks its rider or an "in use" vehicle;
- every answer was a result or a domain error (a lost race is a 409 with a reason), never anything else;
- the pair of answers is one that *some* serial order of the two actions gives.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from movr.domain import errors
from movr.geo import Preset
from movr.lab.links import LinkSpec, run_links_in_thread
from movr.lab.pgserver import conninfo
from movr.store import actions, stats
from movr.store.backend import PostgresBackend
from movr.store.regional import RegionalPostgresBackend
from regionalkit import one_server_regional

pytestmark = pytest.mark.integration

CITY = "rome"
ROUNDS = 200
HASH = "scrypt:stored-by-the-test"  # these tests race actions, not the password hasher

VEHICLES_IN_USE_WITHOUT_AN_OPEN_RIDE = """
    SELECT count(*) FROM vehicles v
     WHERE v.status = 'in_use'
       AND NOT EXISTS (SELECT 1 FROM rides r WHERE r.city = v.city AND r.vehicle_id = v.id AND r.end_time IS NULL)
"""
OPEN_RIDES_WITHOUT_RIDER_OR_VEHICLE_IN_USE = """
    SELECT count(*) FROM rides r
     WHERE r.end_time IS NULL
       AND (NOT EXISTS (SELECT 1 FROM users u WHERE u.city = r.city AND u.id = r.rider_id)
            OR NOT EXISTS (SELECT 1 FROM vehicles v
                            WHERE v.city = r.city AND v.id = r.vehicle_id AND v.status = 'in_use'))
"""


@dataclass(frozen=True)
class World:
    """One round's rows: `rider` rides `busy` (ride `ride`) when the scenario needs an open ride."""

    owner: uuid.UUID
    rider: uuid.UUID
    other: uuid.UUID
    free: uuid.UUID
    busy: uuid.UUID
    ride: uuid.UUID
    number: int

    def name(self, who: str) -> str:
        return f"{who}{self.number}"


def build_worlds(store, numbers: Iterable[int], *, open_ride: bool) -> list[World]:
    worlds = [World(*(uuid.uuid4() for _ in range(6)), number=n) for n in numbers]
    users, vehicles, rides = [], [], []
    now = dt.datetime.now(dt.UTC)
    for w in worlds:
        for who, user_id in (("owner", w.owner), ("rider", w.rider), ("other", w.other)):
            users.append(
                {
                    "city": CITY,
                    "id": user_id,
                    "username": w.name(who),
                    "password_hash": HASH,
                    "first_name": who,
                    "last_name": "",
                    "email": "",
                }
            )
        for vehicle_id, status in ((w.free, "available"), (w.busy, "in_use" if open_ride else "available")):
            vehicles.append(
                {
                    "city": CITY,
                    "id": vehicle_id,
                    "type": "bike",
                    "owner_id": w.owner,
                    "status": status,
                    "last_location": "Piazza",
                    "color": "red",
                    "brand": "Brompton",
                }
            )
        if open_ride:
            rides.append(
                {
                    "city": CITY,
                    "id": w.ride,
                    "rider_id": w.rider,
                    "vehicle_id": w.busy,
                    "start_location": "Piazza",
                    "start_time": now,
                }
            )
    store.load("users", users)
    store.load("vehicles", vehicles)
    if rides:
        store.load("rides", rides)
    return worlds


# --- the actions a round races ----------------------------------------------------------------------


def start(store, w: World, rider: str, vehicle: str) -> Any:
    return actions.start_ride(
        store, city=CITY, rider_id=getattr(w, rider), rider_city=CITY, vehicle_id=getattr(w, vehicle)
    )


def end(store, w: World) -> Any:
    return actions.end_ride(store, city=CITY, ride_id=w.ride, rider_id=w.rider)


def remove_vehicle(store, w: World, vehicle: str) -> Any:
    return actions.remove_vehicle(store, city=CITY, vehicle_id=getattr(w, vehicle), owner_id=w.owner)


def remove_account(store, w: World, who: str) -> Any:
    return actions.remove_user(store, city=CITY, user_id=getattr(w, who), username=w.name(who))


def not_both(a: bool, b: bool) -> bool:
    return not (a and b)


def first_needs_second(a: bool, b: bool) -> bool:
    """`a` can only succeed after `b` did (e.g. riding a vehicle that the other action frees)."""
    return b or not a


def second_needs_first(a: bool, b: bool) -> bool:
    return a or not b


def anything(a: bool, b: bool) -> bool:
    return True


Action = Callable[[Any, World], Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    open_ride: bool
    first: Action
    second: Action
    serial: Callable[[bool, bool], bool]
    """Is this pair of successes one that running the two actions one after the other can give?"""


SCENARIOS = [
    Scenario(
        "start-ride/remove-its-rider",
        False,
        lambda s, w: start(s, w, "other", "free"),
        lambda s, w: remove_account(s, w, "other"),
        not_both,
    ),
    Scenario(
        "start-ride/remove-the-vehicle-owner",
        False,
        lambda s, w: start(s, w, "other", "free"),
        lambda s, w: remove_account(s, w, "owner"),
        not_both,
    ),
    Scenario(
        "start-ride/remove-the-vehicle",
        False,
        lambda s, w: start(s, w, "other", "free"),
        lambda s, w: remove_vehicle(s, w, "free"),
        not_both,
    ),
    Scenario(
        "start-ride/end-the-ride-that-holds-the-vehicle",
        True,
        lambda s, w: start(s, w, "other", "busy"),
        end,
        first_needs_second,
    ),
    Scenario(
        "end-ride/remove-the-vehicle",
        True,
        end,
        lambda s, w: remove_vehicle(s, w, "busy"),
        second_needs_first,
    ),
    Scenario(
        "end-ride/remove-its-rider",
        True,
        end,
        lambda s, w: remove_account(s, w, "rider"),
        second_needs_first,
    ),
    Scenario(
        "end-ride/remove-the-vehicle-owner",
        True,
        end,
        lambda s, w: remove_account(s, w, "owner"),
        second_needs_first,
    ),
    Scenario(
        "remove-vehicle/remove-its-owner",
        False,
        lambda s, w: remove_vehicle(s, w, "free"),
        lambda s, w: remove_account(s, w, "owner"),
        anything,
    ),
]


def outcome(action: Action, store, world: World) -> str:
    try:
        action(store, world)
    except errors.MovrError as error:
        return error.code if error.status < 500 else f"UNEXPECTED {error.status} {error.code}: {error}"
    except Exception as error:  # exactly what this test looks for
        return f"UNEXPECTED {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return "ok"


def race(store, scenario: Scenario, worlds: list[World]) -> list[tuple[str, str]]:
    """Both actions of every round at once: two threads that meet at a barrier before each round."""
    barrier = threading.Barrier(2)
    answers: list[list[str]] = [[], []]

    def worker(side: int, action: Action) -> None:
        for world in worlds:
            barrier.wait()
            answers[side].append(outcome(action, store, world))

    threads = [
        threading.Thread(target=worker, args=(0, scenario.first)),
        threading.Thread(target=worker, args=(1, scenario.second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a racing action never returned"
    return list(zip(answers[0], answers[1], strict=True))


def broken_rows(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            "vehicles in use without an open ride": conn.execute(VEHICLES_IN_USE_WITHOUT_AN_OPEN_RIDE).fetchone()[0],
            "open rides without their rider or an in-use vehicle": conn.execute(
                OPEN_RIDES_WITHOUT_RIDER_OR_VEHICLE_IN_USE
            ).fetchone()[0],
        }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_racing_actions_leave_the_data_whole(store, movr_dsn: str, scenario: Scenario) -> None:
    worlds = build_worlds(store, range(ROUNDS), open_ride=scenario.open_ride)
    assert set(broken_rows(movr_dsn).values()) == {0}
    assert_whole_after_races(store, movr_dsn, scenario, worlds)


def assert_whole_after_races(store, movr_dsn: str, scenario: Scenario, worlds: list[World]) -> None:
    answers = race(store, scenario, worlds)

    unexpected = [pair for pair in answers if any(a.startswith("UNEXPECTED") for a in pair)]
    not_serial = [pair for pair in answers if not scenario.serial(pair[0] == "ok", pair[1] == "ok")]
    found = {
        "races answered with a non-domain error": len(unexpected),
        "races with outcomes no serial order gives": len(not_serial),
        **broken_rows(movr_dsn),
    }
    assert found == dict.fromkeys(found, 0), f"{len(worlds)} races; first odd answers: {(unexpected + not_serial)[:3]}"
    assert any("ok" in pair for pair in answers), "no race let either action act: nothing was raced"


# --- the lab's regional backend: removing an account releases its claims in every region ----------------


@pytest.fixture
def regional(store, movr_dsn: str, preset: Preset) -> Iterator[RegionalPostgresBackend]:
    """The lab's backend with every region on the one test server: sign-ups claim names, removals release them."""
    with one_server_regional(movr_dsn, preset, preset.region_of(CITY)) as backend:
        yield backend
    with psycopg.connect(movr_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()[0] == 0


@pytest.mark.parametrize("scenario", SCENARIOS[:2], ids=[s.name for s in SCENARIOS[:2]])
def test_regional_account_removals_race_rides_too(
    regional: RegionalPostgresBackend, movr_dsn: str, preset: Preset, scenario: Scenario
) -> None:
    worlds = build_worlds(regional, list(range(ROUNDS // 2)), open_ride=scenario.open_ride)
    with stats.measure() as measured:
        remove_account(regional, worlds[0], "rider")
    # The user with its local claim in its region, then its claims in every other region, released.
    assert measured.regions == set(preset.region_names)
    assert_whole_after_races(regional, movr_dsn, scenario, worlds[1:])


def test_an_account_removal_at_repeatable_read_is_still_one_round_trip(store, pg_server, preset: Preset) -> None:
    """BEGIN ISOLATION LEVEL ... goes in the statement's own pipeline: counted on the wire by a lab link
    (a counting TCP proxy) with no delay, in front of the test server."""
    spec = LinkSpec("db", 0, pg_server.port, 0.0, "local", "app", preset.primary_region)
    with run_links_in_thread([spec]) as links:
        backend = PostgresBackend(conninfo(links.port("db"), pg_server.passfile, "movr"), preset)
        try:
            (world,) = build_worlds(backend, [0], open_ride=False)
            backend.warm()
            links.reset_counters()
            with stats.measure() as measured:
                remove_account(backend, world, "other")
            counted = links.counters()["db"]
        finally:
            backend.close()
    assert (counted["round_trips"], counted["connections_total"], measured.statements) == (1, 0, 1)
    with pytest.raises(errors.UnknownUser):
        actions.get_user(store, city=CITY, user_id=world.other)
