"""Usernames are unique across regions by claims, on a running `multi` lab (movr.store.claims).

Coordinators here are backends in the test process that reach each server through the links laid out for
one region's app server, as that region's app does. Assertions count users, claims and the links' round
trips; the only waiting is polling, under a bound, for what the lab's own app servers do in the background.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import requests
from labkit import app_backend

from movr.domain import errors
from movr.geo import load_preset
from movr.lab.state import LabState
from movr.lab.supervisor import link_counters
from movr.store import actions, claims
from movr.store.regional import RegionalPostgresBackend
from movr.store.work import UniqueClaim

pytestmark = pytest.mark.lab

PRESET = load_preset("gcp-3")
ROME, NEW_YORK, WEST = "europe-west1", "us-east1", "us-west1"
CITIES = {ROME: "rome", NEW_YORK: "new york", WEST: "seattle"}
# A stored hash: these tests race sign-ups, not the password hasher.
HASH = "scrypt:stored-by-the-test"
# A bound on the lab's resolvers (lease + margin + a sweep or two), far above it: not a timing.
FREED_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabState:
    return lab_factory("multi")


@pytest.fixture(scope="module")
def lab_at_full_distance(lab_factory) -> LabState:
    """The WAN delays as the preset has them (`movr lab up`'s default): a race's windows as users meet them."""
    return lab_factory("multi", scale=1.0)


@pytest.fixture(scope="module")
def coordinators(lab: LabState) -> Iterator[dict[str, RegionalPostgresBackend]]:
    backends = {region: app_backend(lab, region) for region in CITIES}
    yield backends
    for backend in backends.values():
        backend.close()


def query(lab: LabState, region: str, sql: str, **params) -> list[tuple]:
    with psycopg.connect(lab.server_dsn(region), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def users_named(lab: LabState, username: str) -> list[str]:
    return [
        str(row[0])
        for region in lab.plan.servers
        for row in query(lab, region, "SELECT id FROM users WHERE username = %(u)s", u=username)
    ]


def claim_owners(lab: LabState, username: str) -> dict[str, list[str]]:
    """Each region's claims of the name, by owner."""
    sql = "SELECT user_id FROM username_directory WHERE username = %(u)s"
    return {region: [str(row[0]) for row in query(lab, region, sql, u=username)] for region in lab.plan.servers}


def least_round_trips(lab: LabState, links: dict[str, str], act: Callable[[], object], attempts: int = 3) -> dict:
    """Round trips per region that `act` cost on `links`, the least over a few attempts.

    The lab's own app servers sweep expired claims every second on these same links (movr.store.claims), so
    a window that happens to hold a sweep counts one more; an action that needs more round trips than
    asserted shows them in every attempt.
    """
    least: dict[str, int] = {}
    for _ in range(attempts):
        before = link_counters(lab)
        act()
        after = link_counters(lab)
        counted = {region: after[link]["round_trips"] - before[link]["round_trips"] for region, link in links.items()}
        least = {region: min(counted[region], least.get(region, counted[region])) for region in counted}
    return least


def sign_up(store: RegionalPostgresBackend, username: str, city: str):
    return actions.register(store, city=city, username=username, password="", password_hash=HASH)


def test_a_sign_up_from_rome_costs_one_round_trip_on_each_other_regions_link_whatever_the_name(
    lab: LabState, coordinators: dict[str, RegionalPostgresBackend]
) -> None:
    rome = coordinators[ROME]
    sign_up(rome, f"warm{uuid.uuid4().hex[:8]}", "rome")  # every pool has its connection open
    links = {region: f"app:{ROME}->{lab.plan.servers[region].name}" for region in lab.plan.servers}
    for n in range(6):
        counted = least_round_trips(lab, links, lambda n=n: sign_up(rome, f"perlink{n}{uuid.uuid4().hex[:6]}", "rome"))
        assert counted == {ROME: 1, NEW_YORK: 1, WEST: 1}, counted


def test_sign_ups_of_one_name_racing_from_three_regions_leave_exactly_one_user_each_time(
    lab: LabState, coordinators: dict[str, RegionalPostgresBackend]
) -> None:
    for round_ in range(10):
        name = f"race{round_}{uuid.uuid4().hex[:6]}"
        outcomes: list[str] = []
        barrier = threading.Barrier(len(CITIES))

        def contend(region: str, name: str = name, barrier: threading.Barrier = barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                sign_up(coordinators[region], name, CITIES[region])
                outcomes.append(region)
            except errors.UsernameTaken:  # taken, or pending: another sign-up holds it
                outcomes.append("lost")

        racers = [threading.Thread(target=contend, args=(region,)) for region in CITIES]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        winners = [o for o in outcomes if o != "lost"]
        (user_id,) = users_named(lab, name)
        assert len(winners) == 1 and len(outcomes) == 3, (name, outcomes)
        # The winner's claims, and only those, in every region.
        assert claim_owners(lab, name) == {region: [user_id] for region in lab.plan.servers}


def test_sign_ups_of_one_name_racing_through_the_balancer_leave_exactly_one_user_each_time(
    lab_at_full_distance: LabState,
) -> None:
    """The race as users run it: two sign-ups from each region's city at once, through the balancer and the
    app servers, passwords hashed, over the preset's full distances. Losers that claimed again before the
    sign-up they had yielded to finished could all run out of lease with no user (4 rounds in 12, before they
    waited for it)."""
    lab = lab_at_full_distance
    racers = [city for city in CITIES.values() for _ in range(2)]
    for round_ in range(10):
        name = f"http{round_}{uuid.uuid4().hex[:6]}"
        barrier = threading.Barrier(len(racers))
        answers: list[tuple[int, str]] = []

        def sign_up_over_http(city: str, name: str = name, barrier=barrier, answers=answers) -> None:
            body = {"city": city, "username": name, "password": "a racing password"}
            barrier.wait()
            response = requests.post(
                f"{lab.balancer_url}/api/v1/users",
                json=body,
                headers={"X-Client-City": city, "Accept": "application/json"},
                timeout=60,
            )
            code = "created" if response.status_code == 201 else response.json()["error"]["code"]
            answers.append((response.status_code, code))

        threads = [threading.Thread(target=sign_up_over_http, args=(city,)) for city in racers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers)[0] == (201, "created"), (name, answers)
        assert all(status == 409 for status, _ in sorted(answers)[1:]), (name, answers)
        assert len(users_named(lab, name)) == 1


def test_a_coordinator_killed_between_its_claims_and_its_insert_leaves_the_name_free_again(
    lab: LabState, coordinators: dict[str, RegionalPostgresBackend]
) -> None:
    """The coordinator in Rome claimed the name in every other region, then died: no user, and claims that
    the lab's app servers' resolvers clear once their lease has ended."""
    name = f"orphan{uuid.uuid4().hex[:8]}"
    dead = UniqueClaim("username", name, "rome", str(uuid.uuid4()))
    for region in (NEW_YORK, WEST):  # exactly what the coordinator sent before it died
        statement = claims.claim_statement(dead, ROME, ROME, claims.lease_until())
        coordinators[ROME].servers[region].execute("register_claim", [statement])
    with pytest.raises(errors.UsernamePending):
        sign_up(coordinators[NEW_YORK], name, "new york")  # told at once: the claims may yet commit
    assert users_named(lab, name) == []
    deadline = time.monotonic() + FREED_WITHIN_S
    while any(dead.owner_id in owners for owners in claim_owners(lab, name).values()):
        assert time.monotonic() < deadline, claim_owners(lab, name)
        time.sleep(0.2)  # polling for the resolvers, bounded by the deadline
    user = sign_up(coordinators[NEW_YORK], name, "new york")
    assert claim_owners(lab, name) == {region: [str(user.id)] for region in lab.plan.servers}


def test_log_in_of_a_user_homed_elsewhere_asks_only_the_users_region(
    lab: LabState, coordinators: dict[str, RegionalPostgresBackend]
) -> None:
    name = f"roamer{uuid.uuid4().hex[:8]}"
    password = "correct horse battery"
    user = actions.register(coordinators[NEW_YORK], city="new york", username=name, password=password)
    links = {region: f"app:{ROME}->{lab.plan.servers[region].name}" for region in lab.plan.servers}

    def log_in() -> None:
        assert actions.authenticate(coordinators[ROME], username=name.upper(), password=password).id == user.id

    counted = least_round_trips(lab, links, log_in)
    assert counted == {ROME: 1, NEW_YORK: 1, WEST: 0}, counted


def test_removing_an_account_releases_its_name_everywhere_and_only_once_removed(
    lab: LabState, coordinators: dict[str, RegionalPostgresBackend]
) -> None:
    """The action's own test decides: refused while a ride is open (user and claims stay), then done."""
    rome = coordinators[ROME]
    name = f"leaver{uuid.uuid4().hex[:8]}"
    user = sign_up(rome, name, "rome")
    vehicle = actions.add_vehicle(rome, city="rome", owner_id=user.id, type="scooter")
    ride = actions.start_ride(rome, city="rome", rider_id=user.id, rider_city="rome", vehicle_id=vehicle.id)

    with pytest.raises(errors.RideNotEnded):
        actions.remove_user(rome, city="rome", user_id=user.id, username=name)
    assert users_named(lab, name) == [str(user.id)]
    assert claim_owners(lab, name) == {region: [str(user.id)] for region in lab.plan.servers}

    actions.end_ride(rome, city="rome", ride_id=ride.id, rider_id=user.id, location="Colosseo")
    actions.remove_user(rome, city="rome", user_id=user.id, username=name)
    assert users_named(lab, name) == [] and claim_owners(lab, name) == {region: [] for region in lab.plan.servers}
    assert sign_up(coordinators[WEST], name, "seattle").username == name  # the name is free again
