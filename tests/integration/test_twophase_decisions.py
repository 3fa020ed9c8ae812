"""The decision protocol on a real server: a resolver and a committing coordinator never disagree."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from movr.store import twophase
from movr.store.backend import ServerPool

pytestmark = pytest.mark.integration


@pytest.fixture
def server(movr_dsn: str) -> Iterator[ServerPool]:
    with psycopg.connect(movr_dsn, autocommit=True) as conn:
        conn.execute(twophase.DECISIONS_DDL)
    pool = ServerPool(movr_dsn, "europe-west1")
    yield pool
    pool.close()


def test_no_decision_means_abort_and_then_the_coordinator_cannot_commit(server: ServerPool) -> None:
    gid = twophase.new_gid("europe-west1")
    assert twophase.decide(server, gid) == "abort"
    with pytest.raises(psycopg.errors.UniqueViolation) as raised:
        server.execute("register", [twophase.commit_decision(gid)])
    assert twophase.is_decision_conflict(raised.value)
    assert twophase.decide(server, gid) == "abort"


def test_a_recorded_commit_is_what_a_resolver_decides(server: ServerPool) -> None:
    gid = twophase.new_gid("europe-west1")
    server.execute("register", [twophase.commit_decision(gid)])
    assert twophase.decide(server, gid) == "commit"


def test_a_resolver_waits_for_a_commit_in_flight_and_then_sees_it(server: ServerPool, movr_dsn: str) -> None:
    gid = twophase.new_gid("europe-west1")
    decided: list[str] = []
    with psycopg.connect(movr_dsn) as coordinator:
        statement = twophase.commit_decision(gid)
        coordinator.execute(statement.sql, statement.params)  # uncommitted: the coordinator is mid-commit
        resolver = threading.Thread(target=lambda: decided.append(twophase.decide(server, gid)))
        resolver.start()
        resolver.join(timeout=1.0)
        assert resolver.is_alive() and decided == [], "the resolver must wait on the uncommitted decision"
        coordinator.commit()
    resolver.join(timeout=10)
    assert decided == ["commit"]
