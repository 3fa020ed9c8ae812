"""Usernames are unique across regions, and a two-phase commit whose coordinator is gone is finished.

Coordinators here are backends in the test process that reach each server through the links laid out for
one region's app server, as that region's app does. Assertions count users, directory entries and prepared
transactions; the only waiting is polling for what the lab's own app servers do in the background.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from movr.domain import errors
from movr.geo import load_preset
from movr.lab.state import LabState
from movr.lab.status import collect_status
from movr.store import actions, twophase
from movr.store.regional import RegionalPostgresBackend, claim_statement, directory_region
from movr.store.work import Statement, UniqueClaim

pytestmark = pytest.mark.lab

PRESET = load_preset("gcp-3")
ROME, NEW_YORK = "europe-west1", "us-east1"
# A stored hash: these tests race sign-ups, not the password hasher.
HASH = "scrypt:stored-by-the-test"


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabState:
    return lab_factory("multi")


def backend_of(lab: LabState, region: str) -> RegionalPostgresBackend:
    """What `region`'s app server uses: every server reached through that region's app links."""
    urls = {
        server_region: lab.server_dsn(server_region, via_link=f"app:{region}->{server.name}")
        for server_region, server in lab.plan.servers.items()
    }
    return RegionalPostgresBackend.from_urls(urls, PRESET, region)


@pytest.fixture(scope="module")
def rome(lab: LabState) -> Iterator[RegionalPostgresBackend]:
    backend = backend_of(lab, ROME)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def new_york(lab: LabState) -> Iterator[RegionalPostgresBackend]:
    backend = backend_of(lab, NEW_YORK)
    yield backend
    backend.close()


def names_homed_in(region: str, prefix: str, count: int) -> list[str]:
    return [name for n in range(5_000) if directory_region(PRESET, name := f"{prefix}{n}") == region][:count]


def query(lab: LabState, region: str, sql: str, **params) -> list[tuple]:
    with psycopg.connect(lab.server_dsn(region), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def users_named(lab: LabState, username: str) -> int:
    return sum(
        query(lab, region, "SELECT count(*) FROM users WHERE username = %(u)s", u=username)[0][0]
        for region in lab.plan.servers
    )


def directory_entries(lab: LabState, username: str) -> int:
    region = directory_region(PRESET, username)
    return query(lab, region, "SELECT count(*) FROM username_directory WHERE username = %(u)s", u=username)[0][0]


def prepared_gids(lab: LabState) -> set[str]:
    return {row[0] for region in lab.plan.servers for row in query(lab, region, "SELECT gid FROM pg_prepared_xacts")}


def in_doubt_by_region(lab: LabState) -> dict[str, int | None]:
    """What `movr lab status` reports."""
    return {server["region"]: server["in_doubt"] for server in collect_status(lab)["servers"]}


def sign_up(store: RegionalPostgresBackend, username: str, city: str):
    return actions.register(store, city=city, username=username, password="", password_hash=HASH)


@pytest.mark.parametrize("directory", ["us-west1", ROME])
def test_two_sign_ups_for_one_name_in_two_regions_at_once_leave_exactly_one_user(
    lab: LabState, rome: RegionalPostgresBackend, new_york: RegionalPostgresBackend, directory: str
) -> None:
    """`us-west1`: both are two-phase commits to a third region; Rome: one is local, one two-phase."""
    names = names_homed_in(directory, f"race{directory[:4]}", 12)
    outcomes: dict[str, list[str]] = {name: [] for name in names}

    def contend(store: RegionalPostgresBackend, city: str, barrier: threading.Barrier, name: str) -> None:
        barrier.wait()
        try:
            sign_up(store, name, city)
            outcomes[name].append(city)
        except errors.UsernameTaken:
            outcomes[name].append("taken")

    for name in names:
        barrier = threading.Barrier(2)
        racers = [
            threading.Thread(target=contend, args=(rome, "rome", barrier, name)),
            threading.Thread(target=contend, args=(new_york, "new york", barrier, name)),
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()

    for name, results in outcomes.items():
        assert sorted(results) in (["rome", "taken"], ["new york", "taken"]), (name, results)
        assert users_named(lab, name) == 1 and directory_entries(lab, name) == 1, name
    assert not any(gid.startswith(twophase.GID_PREFIX) for gid in prepared_gids(lab))


def test_a_part_prepared_by_a_coordinator_that_died_is_rolled_back_and_frees_the_name(
    lab: LabState, rome: RegionalPostgresBackend
) -> None:
    """The coordinator prepared the directory entry in us-west1 and died before deciding."""
    (name,) = names_homed_in("us-west1", "orphan", 1)
    gid = twophase.new_gid(ROME)
    claim = UniqueClaim("username", name, "rome", str(uuid.uuid4()))
    rome.servers["us-west1"].prepare(gid, "register", [claim_statement(claim)])
    assert gid in prepared_gids(lab)
    assert in_doubt_by_region(lab)["us-west1"] == 1  # the lab's resolvers leave it alone for IN_DOUBT_AFTER_S

    resolved = twophase.resolve_in_doubt(rome.servers, "us-west1", older_than_s=0)

    assert gid not in prepared_gids(lab) and in_doubt_by_region(lab)["us-west1"] == 0
    # The lab's own resolver may have come first; either way the decision is a recorded abort.
    assert [r for r in resolved if r.gid == gid] in ([], [twophase.Resolution(gid, "us-west1", "abort")])
    assert query(lab, ROME, f"SELECT outcome FROM {twophase.DECISIONS_TABLE} WHERE gid = %(g)s", g=gid) == [("abort",)]
    assert sign_up(rome, name, "rome").username == name
    assert users_named(lab, name) == 1 and directory_entries(lab, name) == 1


def test_a_commit_whose_coordinator_died_after_deciding_is_finished_by_the_app_servers(
    lab: LabState, rome: RegionalPostgresBackend, new_york: RegionalPostgresBackend
) -> None:
    """The user and the commit decision are committed in Rome, the directory entry is still prepared in
    us-west1: the us-west1 app server's resolver commits it, and the name stays taken."""
    (name,) = names_homed_in("us-west1", "decided", 1)
    gid = twophase.new_gid(ROME)
    user_id = str(uuid.uuid4())
    rome.servers["us-west1"].prepare(gid, "register", [claim_statement(UniqueClaim("username", name, "rome", user_id))])
    rome.servers[ROME].execute(
        "register",
        [
            Statement(
                "INSERT INTO users (city, id, username, password_hash, first_name, last_name, email)"
                " VALUES ('rome', %(id)s, %(u)s, %(h)s, '', '', '')",
                {"id": user_id, "u": name, "h": HASH},
            ),
            twophase.commit_decision(gid),
        ],
    )

    deadline = time.monotonic() + 60
    while gid in prepared_gids(lab):
        assert time.monotonic() < deadline, "no app server resolved the in-doubt transaction"
        time.sleep(0.2)  # polling for the lab's resolver, not standing in for distance

    assert directory_entries(lab, name) == 1 and users_named(lab, name) == 1
    with pytest.raises(errors.UsernameTaken):
        sign_up(new_york, name, "new york")


def test_removing_an_account_whose_name_lives_in_another_region_is_all_or_nothing(
    lab: LabState, rome: RegionalPostgresBackend
) -> None:
    """The action's own test decides: refused while a ride is open (user and name stay), then done (both go)."""
    (name,) = names_homed_in("us-west1", "leaver", 1)
    user = sign_up(rome, name, "rome")
    vehicle = actions.add_vehicle(rome, city="rome", owner_id=user.id, type="scooter")
    ride = actions.start_ride(rome, city="rome", rider_id=user.id, rider_city="rome", vehicle_id=vehicle.id)

    with pytest.raises(errors.RideNotEnded):
        actions.remove_user(rome, city="rome", user_id=user.id, username=name)
    assert users_named(lab, name) == 1 and directory_entries(lab, name) == 1

    actions.end_ride(rome, city="rome", ride_id=ride.id, rider_id=user.id, location="Colosseo")
    actions.remove_user(rome, city="rome", user_id=user.id, username=name)
    assert users_named(lab, name) == 0 and directory_entries(lab, name) == 0
    assert not any(gid.startswith(twophase.GID_PREFIX) for gid in prepared_gids(lab))
