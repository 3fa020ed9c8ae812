"""The lab's regional backend routes each piece of work to the servers that home its data, counted on fakes.

RegionalPostgresBackend is handed a fake server per region (tests/unit/fake_servers.py) that records every
round trip and answers from a script, as cosmicpython tests its service layer with a fake unit of work: the
routing, locality-optimized search, unique claims and bulk loading are checked by what was sent where and how
many round trips each region cost, never by time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fake_servers import FakeServer, Sqlstate, fake_backend

from movr.domain import errors
from movr.domain.passwords import hash_password
from movr.domain.rules import canonical_username
from movr.geo import load_preset
from movr.store import actions, stats
from movr.store.regional import RegionalPostgresBackend
from movr.store.work import Home, Statement, Work

PRESET = load_preset("gcp-3")
NEW_YORK, ROME = "us-east1", "europe-west1"
USER_ID = uuid.UUID("00000000-0000-4000-8000-00000000000a")


def trips(servers: dict[str, FakeServer]) -> dict[str, int]:
    return {region: server.round_trips for region, server in servers.items()}


def work(home: Home, *sql: str, readonly: bool = False, **kwargs) -> Work:
    return Work("test", [Statement(text) for text in sql], home, readonly=readonly, **kwargs)


# --- routing by home -------------------------------------------------------------------------------------


@pytest.mark.parametrize("city", PRESET.cities)
def test_work_that_names_a_city_runs_on_that_citys_region_only_in_one_round_trip(city: str):
    backend, servers, _ = fake_backend(PRESET, NEW_YORK)
    home = PRESET.region_of(city)
    with stats.measure() as measured:
        backend.run(work(Home.of_city(city), "SELECT 1 AS a", "SELECT 2 AS b"))
    assert trips(servers) == {region: int(region == home) for region in PRESET.region_names}
    assert servers[home].statements() == ["SELECT 1 AS a", "SELECT 2 AS b"]  # both in that one round trip
    assert (measured.statements, measured.regions) == (2, {home})
    assert measured.wan_round_trips == (0 if home == NEW_YORK else 1)


def test_reads_of_global_tables_stay_in_the_serving_region():
    backend, servers, writers = fake_backend(PRESET, ROME)
    with stats.measure() as measured:
        backend.run(work(Home.local(), "SELECT code FROM promo_codes", readonly=True))
    assert trips(servers) == {NEW_YORK: 0, "us-west1": 0, ROME: 1}
    assert measured.wan_round_trips == 0 and not writers


def test_global_writes_go_to_the_global_writer_opened_once_on_first_use():
    backend, servers, writers = fake_backend(PRESET, ROME)
    assert not writers  # nothing opened until a GLOBAL write needs it
    with stats.measure() as measured:
        for code in ("A", "B"):
            backend.run(work(Home.global_write(), f"INSERT INTO promo_codes VALUES ('{code}')"))
    (writer,) = writers
    assert writer.region == PRESET.primary_region and writer.kinds() == {"execute": 2}
    assert sum(trips(servers).values()) == 0
    assert measured.wan_round_trips == 2  # from Rome, the primary region's server is across the WAN
    backend.close()
    assert writer.closed and all(server.closed for server in servers.values())


def test_without_its_own_global_writer_the_backend_writes_on_the_primarys_server_and_closes_it_once():
    servers = {name: FakeServer(name) for name in PRESET.region_names}
    backend = RegionalPostgresBackend(servers, PRESET, ROME)
    backend.run(work(Home.global_write(), "INSERT INTO promo_codes VALUES ('A')"))
    assert trips(servers) == {NEW_YORK: 1, "us-west1": 0, ROME: 0}
    backend.close()
    assert all(server.closed for server in servers.values())


def test_a_serialization_failure_runs_the_work_again_on_the_same_server_and_a_constraint_does_not():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[NEW_YORK].answer("FROM vehicles", raises=Sqlstate("40001"), times=1)
    servers[NEW_YORK].answer("FROM vehicles", [{"id": 1}])
    assert backend.run(work(Home.of_city("boston"), "SELECT id FROM vehicles")) == [[{"id": 1}]]
    assert trips(servers) == {NEW_YORK: 2, "us-west1": 0, ROME: 0}
    servers[ROME].answer("INSERT INTO rides", raises=Sqlstate("23505"))
    with pytest.raises(Sqlstate):
        backend.run(work(Home.of_city("rome"), "INSERT INTO rides VALUES (1)"))
    assert servers[ROME].round_trips == 1


# --- locality-optimized search ---------------------------------------------------------------------------


def test_a_search_found_locally_asks_no_other_region():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[ROME].answer("FROM users", [{"id": 1}])
    with stats.measure() as measured:
        assert backend.run(work(Home.search(), "SELECT id FROM users WHERE username = 'x'")) == [[{"id": 1}]]
    assert trips(servers) == {NEW_YORK: 0, "us-west1": 0, ROME: 1}
    assert measured.wan_round_trips == 0


def test_a_search_not_found_locally_asks_every_other_region_once_and_answers_with_what_was_found():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers["us-west1"].answer("FROM users", [{"id": 2}])
    with stats.measure() as measured:
        assert backend.run(work(Home.search(), "SELECT id FROM users WHERE username = 'x'")) == [[{"id": 2}]]
    assert trips(servers) == {NEW_YORK: 1, "us-west1": 1, ROME: 1}
    assert measured.wan_round_trips == 2  # sent at once: one WAN round trip of time, two of traffic


def test_a_search_that_finds_nothing_costs_one_round_trip_per_region_and_answers_empty():
    backend, servers, _ = fake_backend(PRESET, ROME)
    assert backend.run(work(Home.search(), "SELECT id FROM users WHERE username = 'x'")) == [[]]
    assert trips(servers) == {NEW_YORK: 1, "us-west1": 1, ROME: 1}


def test_the_parallel_search_counts_the_same_on_threads_and_each_thread_adds_to_the_requests_figures():
    servers = {name: FakeServer(name, wan=name != ROME) for name in PRESET.region_names}
    servers[NEW_YORK].answer("FROM users", [{"id": 3}])
    with ThreadPoolExecutor(max_workers=4) as pool:
        backend = RegionalPostgresBackend(servers, PRESET, ROME, executor=pool)
        with stats.measure() as measured:
            assert backend.run(work(Home.search(), "SELECT id FROM users WHERE username = 'x'")) == [[{"id": 3}]]
    assert trips(servers) == {NEW_YORK: 1, "us-west1": 1, ROME: 1}
    assert measured.wan_round_trips == 2 and measured.regions == set(PRESET.region_names)


def test_log_in_from_rome_finds_a_new_york_user_by_its_local_claim_and_counts_a_failure_in_new_york():
    backend, servers, _ = fake_backend(PRESET, ROME)
    user = {
        "city": "new york",
        "id": USER_ID,
        "username": "ada",
        "first_name": "",
        "last_name": "",
        "email": "",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "password_hash": hash_password("correct horse battery"),
        "session_epoch": 3,
        "failed_logins": 0,
        "counting": False,
        "retry_after": None,
    }
    servers[ROME].answer("FROM username_directory", [{"city": "new york", "region": NEW_YORK}])
    servers[NEW_YORK].answer("FROM users WHERE username", [user])
    logged_in = actions.authenticate(backend, username="Ada", password="correct horse battery")
    assert (logged_in.id, logged_in.city, logged_in.session_epoch) == (USER_ID, "new york", 3)
    assert trips(servers) == {NEW_YORK: 1, "us-west1": 0, ROME: 1}  # no fan-out
    assert servers[ROME].trips[0].sql[-1].startswith("SELECT city, region FROM username_directory")
    with pytest.raises(errors.BadCredentials):
        actions.authenticate(backend, username="ada", password="wrong password!")
    # The lookup again, then the failure counted on the user's row, in its home region only.
    assert trips(servers) == {NEW_YORK: 3, "us-west1": 0, ROME: 2}
    assert "UPDATE users SET" in servers[NEW_YORK].statements()[-1]


# --- unique claims -----------------------------------------------------------------------------------------


def test_a_region_that_keeps_no_claims_finds_a_user_by_searching():
    # Data domiciling keeps claims in Rome only: New York holds the claims of its own users alone.
    backend, servers, _ = fake_backend(PRESET, NEW_YORK, directory_regions=[ROME])
    servers[ROME].answer("FROM users", [{"id": 1}])
    found = backend.run(work(Home.search("ada"), "SELECT id FROM users WHERE username = 'ada'"))
    assert found == [[{"id": 1}]]
    assert trips(servers) == {NEW_YORK: 1, "us-west1": 1, ROME: 1}
    with pytest.raises(ValueError, match="mars-1"):
        fake_backend(PRESET, ROME, directory_regions=["mars-1"])


def test_every_region_needs_a_server():
    servers = {name: FakeServer(name) for name in (NEW_YORK, ROME)}
    with pytest.raises(ValueError, match="us-west1"):
        RegionalPostgresBackend(servers, PRESET, ROME)
    with pytest.raises(ValueError, match="us-west1"):
        RegionalPostgresBackend.from_urls({NEW_YORK: "postgresql://", ROME: "postgresql://"}, PRESET, ROME)


# --- bulk loading and housekeeping -------------------------------------------------------------------------


def test_loading_puts_each_row_on_its_home_server_and_each_name_settled_in_every_region():
    backend, servers, _ = fake_backend(PRESET, NEW_YORK)
    users = [{"city": city, "id": uuid.uuid4(), "username": f"Rider{i}"} for i, city in enumerate(PRESET.cities)]
    backend.load("users", users)
    backend.load("promo_codes", [{"code": "SPRING"}])
    for region, server in servers.items():
        assert server.copied["users"] == [row for row in users if PRESET.region_of(row["city"]) == region]
        entries = server.copied["username_directory"]
        assert {entry["username"] for entry in entries} == {canonical_username(row["username"]) for row in users}
        assert all(entry["settled"] and entry["region"] == PRESET.region_of(entry["city"]) for entry in entries)
        assert ("promo_codes" in server.copied) == (region == PRESET.primary_region)  # GLOBAL: replication copies it
    assert sum(trips(servers).values()) == 0  # COPY streams, not request round trips


def test_ping_asks_the_local_server_and_a_lost_one_is_not_ready():
    backend, servers, _ = fake_backend(PRESET, ROME)
    assert backend.ping() and trips(servers) == {NEW_YORK: 0, "us-west1": 0, ROME: 1}
    servers[ROME].fail_next["execute"] = errors.StoreUnavailable()
    assert not backend.ping()
