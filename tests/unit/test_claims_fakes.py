"""Sign-up by claims on the lab's regional backend, counted on fake servers (tests/unit/fake_servers.py).

A sign-up claims its name in every other region in one parallel round, then commits the user with its local
claim in one local transaction; a lost race releases what it claimed; a resolver clears the claims of a
sign-up that never committed. Asserted by round trips per region and by outcomes, never by time.
"""

from __future__ import annotations

import uuid

import pytest
from fake_servers import FakeServer, fake_backend

from movr.domain.errors import StoreUnavailable
from movr.geo import load_preset
from movr.store import claims, stats
from movr.store.regional import NameTaken
from movr.store.work import Home, Statement, UniqueClaim, Work

PRESET = load_preset("gcp-3")
NEW_YORK, WEST, ROME = "us-east1", "us-west1", "europe-west1"
ME = "80000000-0000-4000-8000-000000000000"
OLDER = "00000000-0000-4000-8000-000000000001"  # a smaller user id: wins a race against ME (wait-die)
YOUNGER = "f0000000-0000-4000-8000-000000000001"
CLAIM_SQL = "ON CONFLICT (username) DO NOTHING"
UNCLAIM_SQL = "DELETE FROM username_directory WHERE username"


def sign_up(name: str = "Ada", city: str = "rome", owner: str = ME) -> Work:
    return Work(
        "register",
        [Statement("INSERT INTO users VALUES (1) RETURNING id")],
        Home.of_city(city),
        claims=[UniqueClaim("username", name, city, owner)],
    )


def trips(servers: dict[str, FakeServer]) -> dict[str, int]:
    return {region: server.round_trips for region, server in servers.items()}


def holder(user_id: str, region: str = NEW_YORK, *, expired: bool = False) -> dict:
    return {
        "user_id": user_id,
        "city": "new york" if region == NEW_YORK else "seattle",
        "region": region,
        "expired": expired,
    }


@pytest.mark.parametrize("name", [f"rider{i}" for i in range(8)])
def test_a_sign_up_from_rome_costs_one_round_trip_on_each_other_regions_link_whatever_the_name(name):
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[ROME].answer("INSERT INTO users", [{"id": 1}])
    with stats.measure() as measured:
        assert backend.run(sign_up(name)) == [[{"id": 1}]]  # the claims' rows are not the action's
    assert trips(servers) == {NEW_YORK: 1, WEST: 1, ROME: 1}
    for region in (NEW_YORK, WEST):
        (trip,) = servers[region].trips
        assert trip.action == "register_claim" and len(trip.sql) == 1 and CLAIM_SQL in trip.sql[0]
    (local,) = servers[ROME].trips  # the user and its local claim: one transaction, one round trip
    assert "INSERT INTO users" in local.sql[0] and "INSERT INTO username_directory" in local.sql[1]
    assert measured.wan_round_trips == 2 and measured.regions == set(PRESET.region_names)


def test_claims_record_the_users_home_where_they_were_made_from_and_their_lease():
    statement = claims.claim_statement(
        UniqueClaim("username", "Ada", "boston", ME), NEW_YORK, ROME, claims.lease_until()
    )
    assert statement.params["username"] == "ada"  # names ignore case
    assert (statement.params["region"], statement.params["claimed_from"], statement.params["city"]) == (
        NEW_YORK,
        ROME,
        "boston",
    )


def test_data_domiciling_keeps_claims_in_the_allowed_regions():
    backend, servers, _ = fake_backend(PRESET, ROME, directory_regions=[ROME])
    backend.run(sign_up())
    assert trips(servers) == {NEW_YORK: 0, WEST: 0, ROME: 1}


def test_a_claim_lost_to_a_user_that_exists_releases_the_claims_made_and_says_taken():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[WEST].answer(CLAIM_SQL, [holder(OLDER, NEW_YORK)])
    servers[NEW_YORK].answer("FROM users u", [{"id": OLDER}])  # the holder's user, asked in its home
    with pytest.raises(NameTaken):
        backend.run(sign_up())
    assert [t.action for t in servers[NEW_YORK].trips] == ["register_claim", "claims_check", "register_unclaim"]
    assert UNCLAIM_SQL in servers[NEW_YORK].trips[-1].sql[0]
    assert trips(servers)[WEST] == 1 and trips(servers)[ROME] == 0  # no user was inserted


HOLDER_SQL = "FROM username_directory WHERE username"


def test_a_younger_sign_up_that_meets_an_older_one_in_flight_releases_its_claims_and_tries_again_once_it_is_gone():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[WEST].answer(CLAIM_SQL, [holder(OLDER, WEST)], times=1)  # the older one then gave up the name
    servers[ROME].answer("INSERT INTO users", [{"id": 1}])
    assert backend.run(sign_up()) == [[{"id": 1}]]
    assert [t.action for t in servers[NEW_YORK].trips] == ["register_claim", "register_unclaim", "register_claim"]
    # Where it lost: the claim, whether the older's user exists, who holds the name now (nobody), the claim.
    actions = [t.action for t in servers[WEST].trips]
    assert actions == ["register_claim", "claims_check", "register_claim", "register_claim"]
    assert HOLDER_SQL in servers[WEST].trips[2].sql[0] and CLAIM_SQL in servers[WEST].trips[3].sql[0]


def test_a_younger_sign_up_claims_nothing_again_while_the_older_one_is_in_flight_and_answers_taken_once_it_commits():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[WEST].answer(CLAIM_SQL, [holder(OLDER, WEST)], times=1)
    servers[WEST].answer(HOLDER_SQL, [holder(OLDER, WEST)])  # the older one holds the name throughout
    servers[WEST].answer("FROM users u", [], times=2)  # in flight: asked at the loss, and once more looking
    servers[WEST].answer("FROM users u", [{"id": OLDER}])  # then its user exists
    with pytest.raises(NameTaken):
        backend.run(sign_up())
    claimed = [sql for server in servers.values() for sql in server.statements() if CLAIM_SQL in sql]
    assert len(claimed) == 2  # the first round only: taking the name back would only delay the older one
    assert "INSERT INTO users" not in " ".join(servers[ROME].statements())


def test_a_claim_met_by_a_holder_too_recent_to_read_looks_again_and_keeps_it_when_it_is_its_own():
    """Regions sharing one server (as in tests): the sign-up's two claims make one row, and the later one meets
    the earlier after its snapshot. The second look finds the sign-up itself: the name is ours, nothing retried."""
    backend, servers, _ = fake_backend(PRESET, ROME)
    too_recent = {"user_id": None, "city": None, "region": None, "expired": False}
    servers[WEST].answer(CLAIM_SQL, [too_recent], times=1)
    servers[WEST].answer(HOLDER_SQL, [holder(ME, WEST)])
    servers[ROME].answer("INSERT INTO users", [{"id": 1}])
    assert backend.run(sign_up()) == [[{"id": 1}]]
    assert [t.action for t in servers[WEST].trips] == ["register_claim", "register_claim"]
    assert HOLDER_SQL in servers[WEST].trips[1].sql[0]
    assert [t.action for t in servers[NEW_YORK].trips] == ["register_claim"]  # kept, never released


def test_a_region_lost_while_looking_again_at_a_holder_releases_the_claims_made():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[WEST].answer(CLAIM_SQL, [{"user_id": None, "city": None, "region": None, "expired": False}])
    servers[WEST].answer(HOLDER_SQL, raises=StoreUnavailable("the database in us-west1 is not reachable"))
    with pytest.raises(StoreUnavailable):
        backend.run(sign_up())
    assert UNCLAIM_SQL in servers[NEW_YORK].trips[-1].sql[0]  # the claim won in New York, released
    assert trips(servers)[ROME] == 0


def test_an_older_sign_up_that_meets_a_younger_one_keeps_its_claims_and_asks_again_where_it_lost():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[WEST].answer(CLAIM_SQL, [holder(YOUNGER, WEST)], times=1)
    backend.run(sign_up())
    assert [t.action for t in servers[NEW_YORK].trips] == ["register_claim"]  # kept, not asked twice
    assert [t.action for t in servers[WEST].trips] == ["register_claim", "claims_check", "register_claim"]


def test_a_claim_whose_lease_ended_without_a_user_is_cleared_by_the_sign_up_that_meets_it():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[WEST].answer(CLAIM_SQL, [holder(OLDER, NEW_YORK, expired=True)], times=1)
    backend.run(sign_up())
    actions = [t.action for t in servers[WEST].trips]
    assert actions == ["register_claim", "register_clear", "register_claim"]
    assert "lease_until < now()" in servers[WEST].trips[1].sql[0]


def test_a_local_claim_lost_to_another_sign_up_is_settled_as_a_race_too():
    backend, servers, _ = fake_backend(PRESET, ROME)
    conflict = Exception("another's claim")
    conflict.sqlstate = "23502"  # type: ignore[attr-defined]
    servers[ROME].answer("INSERT INTO users", raises=conflict, times=1)
    servers[ROME].answer("FROM username_directory WHERE username", [holder(OLDER, NEW_YORK)])
    servers[NEW_YORK].answer("FROM users u", [{"id": OLDER}])
    with pytest.raises(NameTaken):
        backend.run(sign_up())
    assert all(UNCLAIM_SQL in servers[r].trips[-1].sql[0] for r in (NEW_YORK, WEST))


def test_a_region_that_cannot_be_reached_fails_the_sign_up_and_the_claims_made_are_released():

    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[WEST].fail_next["execute"] = StoreUnavailable()
    with pytest.raises(StoreUnavailable):
        backend.run(sign_up())
    assert [t.action for t in servers[NEW_YORK].trips] == ["register_claim", "register_unclaim"]
    assert trips(servers)[ROME] == 0


# --- log-in and removal ------------------------------------------------------------------------------------


def test_log_in_of_a_user_homed_elsewhere_is_a_local_lookup_plus_one_statement_routed_home():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[ROME].answer("SELECT city, region FROM username_directory", [{"city": "new york", "region": NEW_YORK}])
    servers[NEW_YORK].answer("FROM users WHERE username", [{"id": 1}])
    work = Work("authenticate", [Statement("SELECT id FROM users WHERE username = 'ada'")], Home.search("ada"))
    with stats.measure() as measured:
        assert backend.run(work) == [[{"id": 1}]]
    assert trips(servers) == {NEW_YORK: 1, WEST: 0, ROME: 1}
    assert measured.wan_round_trips == 1


def test_log_in_of_a_local_user_or_an_unknown_name_stays_local():
    backend, servers, _ = fake_backend(PRESET, ROME)
    work = Work("authenticate", [Statement("SELECT id FROM users WHERE username = 'nobody'")], Home.search("nobody"))
    assert backend.run(work) == [[]]  # no claim here: nobody has the name anywhere
    assert trips(servers) == {NEW_YORK: 0, WEST: 0, ROME: 1}


def test_removing_an_account_releases_its_claims_everywhere_once_the_user_is_gone():
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[ROME].answer("DELETE FROM users", [{"removed": 1}])
    work = Work(
        "remove_user",
        [Statement("DELETE FROM users RETURNING 1 AS removed")],
        Home.of_city("rome"),
        releases=[UniqueClaim("username", "ada", "rome", ME)],
        commit_if=lambda results: bool(results[0]),
    )
    backend.run(work)
    (local,) = servers[ROME].trips
    assert "NOT EXISTS (SELECT 1 FROM users" in local.sql[1]  # the local claim goes with the user, atomically
    assert all([t.action for t in servers[r].trips] == ["remove_user"] for r in (NEW_YORK, WEST))
    servers[ROME].script.clear()  # now the account is not removed (e.g. a ride is open): nothing released
    backend.run(work)
    assert trips(servers) == {NEW_YORK: 1, WEST: 1, ROME: 2}


# --- the resolver ------------------------------------------------------------------------------------------


def test_the_resolver_settles_claims_of_users_that_exist_and_clears_the_others():
    servers = {name: FakeServer(name, wan=name != WEST) for name in PRESET.region_names}
    orphan, kept = str(uuid.uuid4()), str(uuid.uuid4())
    servers[WEST].answer(
        "WHERE NOT settled AND lease_until",
        [
            {"username": "ghost", "user_id": orphan, "city": "new york", "region": NEW_YORK},
            {"username": "ada", "user_id": kept, "city": "new york", "region": NEW_YORK},
        ],
    )
    servers[NEW_YORK].answer("FROM users u", [{"id": kept}])
    resolution = claims.resolve_claims(servers, WEST)
    assert resolution == claims.Resolution(settled=1, cleared=["ghost"])
    assert trips(servers) == {NEW_YORK: 1, WEST: 2, ROME: 0}  # one question per home region, batched
    resolve = servers[WEST].trips[-1]
    assert "SET settled = true" in resolve.sql[0] and "DELETE FROM username_directory" in resolve.sql[1]
    assert "NOT d.settled" in resolve.sql[1]  # a claim settled meanwhile is never deleted


def test_the_resolver_leaves_claims_whose_home_cannot_be_reached_and_asks_nothing_when_none_expired():

    servers = {name: FakeServer(name) for name in PRESET.region_names}
    assert claims.resolve_claims(servers, WEST) == claims.Resolution(0, [])
    assert trips(servers) == {NEW_YORK: 0, WEST: 1, ROME: 0}
    servers[WEST].answer("WHERE NOT settled", [{"username": "x", "user_id": ME, "city": "rome", "region": ROME}])
    servers[ROME].fail_next["execute"] = StoreUnavailable()
    assert claims.resolve_claims(servers, WEST) == claims.Resolution(0, [])
    assert trips(servers)[WEST] == 2  # nothing deleted
