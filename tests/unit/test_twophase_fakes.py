"""Two-phase commit across regions, and the resolver that finishes what a coordinator left, counted on fakes.

A sign-up in Rome whose username's directory entry lives in another region is one transaction over two
servers (movr.store.twophase): the directory's part PREPAREs, Rome's part records the decision with its own
statements and commits (the commit point), then the prepared part is told. These tests run the real
backend and the real actions on fake servers (tests/unit/fake_servers.py) and check, by round trips per
region and the statements sent, what commits where on each path, including the failures; the same
protocol on real servers is in tests/integration/test_twophase_decisions.py and tests/lab/test_two_phase.py.
"""

from __future__ import annotations

import datetime as dt
import types
import uuid

import psycopg
import pytest
from fake_servers import FakeServer, Sqlstate, fake_backend

from movr.domain import errors
from movr.geo import load_preset
from movr.store import actions, stats, twophase
from movr.store.regional import directory_region

PRESET = load_preset("gcp-3")
ROME, NEW_YORK, WEST = "europe-west1", "us-east1", "us-west1"
USER_ID = uuid.UUID("00000000-0000-4000-8000-00000000000b")
NAME = next(n for i in range(1000) if directory_region(PRESET, n := f"rider{i}") == WEST)  # homed away from Rome


def user_row(username: str = NAME) -> dict:
    """The row Rome's server answers the sign-up's statement with (no earlier answer to an idempotency key)."""
    return {
        "prior_request": None,
        "prior_answer": None,
        "city": "rome",
        "id": USER_ID,
        "username": username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }


def sign_up(backend) -> object:
    return actions.register(
        backend, city="rome", username=NAME, password="correct horse battery", password_hash="x", user_id=USER_ID
    )


@pytest.fixture
def rome():
    """A Rome app server's backend, with Rome's server ready to answer a sign-up."""
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[ROME].answer("INSERT INTO users", [user_row()])
    return backend, servers


def kinds(servers: dict[str, FakeServer]) -> dict[str, dict[str, int]]:
    return {region: dict(server.kinds()) for region, server in servers.items()}


class DecisionConflict(psycopg.errors.UniqueViolation):
    """What Rome's decision insert meets when a resolver recorded 'abort' for the same transaction first."""

    diag = types.SimpleNamespace(table_name=twophase.DECISIONS_TABLE)


# --- the coordinator -------------------------------------------------------------------------------------


def test_a_sign_up_whose_name_lives_elsewhere_commits_everywhere_in_two_wan_round_trips(rome):
    backend, servers = rome
    with stats.measure() as measured:
        user = sign_up(backend)
    assert user.id == USER_ID
    assert kinds(servers) == {
        ROME: {"deciding": 1, "decision": 1, "execute": 1},  # the user and the decision; then forgetting it
        WEST: {"prepare": 1, "commit_prepared": 1},
        NEW_YORK: {},
    }
    prepare, commit = servers[WEST].trips
    assert "INSERT INTO username_directory" in prepare.sql[0]
    assert prepare.gid == commit.gid and twophase.decision_region_of(prepare.gid) == ROME
    deciding, decision, forget = servers[ROME].trips
    assert "INSERT INTO users" in deciding.sql[0]
    assert decision.sql == (twophase.commit_decision(prepare.gid).sql,)
    assert forget.sql == (twophase.forget_decision(prepare.gid).sql,)
    # What the sign-up's response reports: the directory's PREPARE round and its COMMIT PREPARED round.
    assert measured.wan_round_trips == 2


def test_a_name_homed_in_the_users_own_region_needs_no_two_phase_commit():
    backend, servers, _ = fake_backend(PRESET, ROME)
    local = next(n for i in range(1000) if directory_region(PRESET, n := f"rider{i}") == ROME)
    servers[ROME].answer("INSERT INTO users", [user_row(local)])
    with stats.measure() as measured:
        actions.register(backend, city="rome", username=local, password="x" * 12, password_hash="x", user_id=USER_ID)
    assert kinds(servers) == {ROME: {"execute": 1}, WEST: {}, NEW_YORK: {}}
    assert measured.wan_round_trips == 0


def test_an_action_that_changes_nothing_commits_nothing_anywhere():
    """An account removal refused (an open ride) releases no name: both parts roll back."""
    backend, servers, _ = fake_backend(PRESET, ROME)
    servers[ROME].answer("DELETE FROM users", [{"session_live": True, "found": 1, "blockers": 1, "removed": 0}])
    with pytest.raises(errors.RideNotEnded):
        actions.remove_user(backend, city="rome", user_id=USER_ID, username=NAME)
    assert kinds(servers) == {
        ROME: {"deciding": 1, "rollback": 1},
        WEST: {"prepare": 1, "rollback_prepared": 1},
        NEW_YORK: {},
    }
    assert not any(twophase.DECISIONS_TABLE in sql for sql in servers[ROME].statements())


def test_a_part_that_cannot_prepare_aborts_the_sign_up_and_is_told_nothing(rome):
    backend, servers = rome
    servers[WEST].fail_next["prepare"] = Sqlstate("23505")  # the name is in the directory already
    with pytest.raises(errors.UsernameTaken):
        sign_up(backend)
    assert kinds(servers) == {ROME: {"deciding": 1, "rollback": 1}, WEST: {"prepare": 1}, NEW_YORK: {}}


def test_losing_the_users_region_before_deciding_rolls_the_prepared_parts_back(rome):
    backend, servers = rome
    servers[ROME].fail_next["deciding"] = errors.StoreUnavailable()
    with pytest.raises(errors.StoreUnavailable):
        sign_up(backend)
    assert kinds(servers) == {ROME: {"deciding": 1}, WEST: {"prepare": 1, "rollback_prepared": 1}, NEW_YORK: {}}


def test_losing_it_while_the_decision_commits_leaves_the_prepared_part_to_its_resolver(rome):
    backend, servers = rome
    servers[ROME].fail_next["decision"] = errors.StoreUnavailable()
    with pytest.raises(errors.StoreUnavailable):
        sign_up(backend)
    # The commit may have happened: neither COMMIT PREPARED nor ROLLBACK PREPARED may be guessed here.
    assert kinds(servers) == {ROME: {"deciding": 1, "decision": 1}, WEST: {"prepare": 1}, NEW_YORK: {}}


def test_a_resolvers_abort_rolls_the_attempt_back_and_the_sign_up_runs_again(rome):
    backend, servers = rome
    servers[ROME].fail_next["decision"] = DecisionConflict("a resolver decided first")
    assert sign_up(backend).id == USER_ID
    assert kinds(servers) == {
        ROME: {"deciding": 2, "decision": 2, "execute": 1},
        WEST: {"prepare": 2, "rollback_prepared": 1, "commit_prepared": 1},
        NEW_YORK: {},
    }
    first, second = (trip.gid for trip in servers[WEST].trips if trip.kind == "prepare")
    assert first != second  # the second attempt is a new transaction
    assert [trip.gid for trip in servers[WEST].trips if trip.kind != "prepare"] == [first, second]


def test_a_part_that_misses_phase_two_is_left_to_its_resolver_and_the_decision_is_kept(rome):
    backend, servers = rome
    servers[WEST].fail_next["commit_prepared"] = errors.StoreUnavailable()
    assert sign_up(backend).id == USER_ID  # committed: Rome's decision row says so
    assert kinds(servers) == {
        ROME: {"deciding": 1, "decision": 1},
        WEST: {"prepare": 1, "commit_prepared": 1},
        NEW_YORK: {},
    }


# --- the resolver ----------------------------------------------------------------------------------------


def in_doubt_servers(*gids: str) -> dict[str, FakeServer]:
    """us-west1 holds prepared parts `gids`; Rome recorded 'commit' decisions, New York records 'abort'."""
    servers = {name: FakeServer(name) for name in PRESET.region_names}
    servers[WEST].answer("FROM pg_prepared_xacts", [{"gid": gid} for gid in gids])
    servers[ROME].answer(f"SELECT outcome FROM {twophase.DECISIONS_TABLE}", [{"outcome": "commit"}])
    servers[NEW_YORK].answer(f"SELECT outcome FROM {twophase.DECISIONS_TABLE}", [{"outcome": "abort"}])
    return servers


def test_the_resolver_finishes_each_part_as_its_decision_region_decides():
    committed, aborted, foreign = twophase.new_gid(ROME), twophase.new_gid(NEW_YORK), twophase.new_gid("mars-1")
    servers = in_doubt_servers(committed, aborted, foreign)
    resolved = twophase.resolve_in_doubt(servers, WEST)
    assert resolved == [
        twophase.Resolution(committed, WEST, "commit"),
        twophase.Resolution(aborted, WEST, "abort"),
    ]  # a part that names no region of this lab is left alone
    assert [(trip.kind, trip.gid) for trip in servers[WEST].trips[1:]] == [
        ("commit_prepared", committed),
        ("rollback_prepared", aborted),
    ]
    # One round trip per decision: 'abort' unless a 'commit' is there, then read back, in one pipeline.
    for region in (ROME, NEW_YORK):
        (trip,) = servers[region].trips
        assert len(trip.sql) == 2 and "ON CONFLICT (gid) DO NOTHING" in trip.sql[0]


def test_the_resolver_skips_a_part_whose_decision_region_is_unreachable_or_that_is_already_finished():
    waiting, finished = twophase.new_gid(ROME), twophase.new_gid(NEW_YORK)
    servers = in_doubt_servers(waiting, finished)
    servers[ROME].fail_next["execute"] = errors.StoreUnavailable()
    servers[WEST].fail_next["rollback_prepared"] = psycopg.errors.UndefinedObject("no such prepared transaction")
    assert twophase.resolve_in_doubt(servers, WEST) == []
    assert dict(servers[WEST].kinds()) == {"execute": 1, "rollback_prepared": 1}  # no guess for `waiting`
