"""Username claims on a real server: what a lease, a resolver and a late coordinator may and may not do."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from movr.geo import Preset
from movr.store import claims
from movr.store.backend import ServerPool
from movr.store.regional import RegionalPostgresBackend
from movr.store.work import UniqueClaim

pytestmark = pytest.mark.integration
ROME = "europe-west1"


@pytest.fixture
def servers(store, movr_dsn: str, preset: Preset) -> Iterator[dict[str, ServerPool]]:
    """Every region on the one test server (the `store` fixture empties the users)."""
    with psycopg.connect(movr_dsn, autocommit=True) as conn:
        conn.execute(claims.DIRECTORY_DDL)
        conn.execute(f"TRUNCATE {claims.DIRECTORY_TABLE}")
    pools = {name: ServerPool(movr_dsn, name) for name in preset.region_names}
    yield pools
    for pool in pools.values():
        pool.close()


def claim(server: ServerPool, name: str, *, lease_ago_s: float) -> str:
    """A claim as a sign-up from Rome made it, its lease ended `lease_ago_s` seconds ago (negative: to come)."""
    owner = str(uuid.uuid4())
    until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=lease_ago_s)
    # Made before its lease ended: its claimed_at is set to just before `until`.
    with psycopg.connect(server.conninfo, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {claims.DIRECTORY_TABLE} (username, user_id, city, region, claimed_from, claimed_at,"
            " lease_until) VALUES (%s, %s, 'rome', %s, %s, %s, %s)",
            (name, owner, ROME, ROME, until - dt.timedelta(seconds=1), until),
        )
    return owner


def names(server: ServerPool) -> dict[str, bool]:
    rows = server.execute("t", [claims.Statement(f"SELECT username, settled FROM {claims.DIRECTORY_TABLE}")])[0]
    return {row["username"]: row["settled"] for row in rows}


def test_the_resolver_clears_a_claim_only_once_its_lease_and_margin_passed_and_no_user_exists(servers) -> None:
    server = servers["us-east1"]
    claim(server, "orphan", lease_ago_s=claims.CLOCK_MARGIN_S + 5)
    claim(server, "inflight", lease_ago_s=-claims.CLAIM_LEASE_S)  # a sign-up still within its lease
    resolution = claims.resolve_claims(servers, "us-east1")
    assert resolution.cleared == ["orphan"] and resolution.settled == 0
    assert names(server) == {"inflight": False}


def test_the_resolver_settles_a_claim_whose_user_exists(servers, store) -> None:
    from movr.store import actions

    user = actions.register(store, city="rome", username="kept", password="correct horse battery")
    server = servers["us-east1"]
    with psycopg.connect(server.conninfo, autocommit=True) as conn:  # a remote claim of that user, expired
        conn.execute(
            f"INSERT INTO {claims.DIRECTORY_TABLE} (username, user_id, city, region, claimed_from, claimed_at,"
            " lease_until) VALUES ('kept', %s, 'rome', %s, %s, now() - interval '1 minute', now() - interval '50s')",
            (user.id, ROME, ROME),
        )
    assert claims.resolve_claims(servers, "us-east1") == claims.Resolution(settled=1, cleared=[])
    assert names(server) == {"kept": True}
    assert claims.resolve_claims(servers, "us-east1") == claims.Resolution(0, [])  # never looked at again


def test_a_claim_made_after_its_lease_is_refused(servers) -> None:
    late = claims.claim_statement(
        UniqueClaim("username", "late", "rome", str(uuid.uuid4())), ROME, ROME, dt.datetime.now(dt.UTC)
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        servers["us-east1"].execute("register_claim", [late])


def test_a_claim_meets_its_holder_and_a_local_claim_refuses_anothers(servers) -> None:
    server = servers["us-east1"]
    until = claims.lease_until()
    first, second = (UniqueClaim("username", "Ada", "rome", str(uuid.uuid4())) for _ in range(2))
    assert server.execute("c", [claims.claim_statement(first, ROME, ROME, until)])[0] == []  # won
    assert server.execute("c", [claims.claim_statement(first, ROME, ROME, until)])[0] == []  # ours already
    (holder,) = server.execute("c", [claims.claim_statement(second, ROME, ROME, until)])[0]
    assert (holder["user_id"], holder["region"], holder["expired"]) == (first.owner_id, ROME, False)
    with pytest.raises(psycopg.errors.NotNullViolation):
        server.execute("c", [claims.local_claim_statement(second, ROME, until)])
    server.execute("c", [claims.local_claim_statement(first, ROME, until)])  # ours: settled in place
    assert names(server) == {"ada": True}


def test_the_resolver_sweeps_on_connections_of_its_own(servers, movr_dsn: str, preset: Preset) -> None:
    """A sweep never waits for, nor takes, a connection of the requests' pools: with the one connection of Rome's
    pool held by a request, Rome's resolver still clears an orphaned claim."""
    claim(servers[ROME], "orphan", lease_ago_s=claims.CLOCK_MARGIN_S + 5)
    backend = RegionalPostgresBackend.from_urls(dict.fromkeys(preset.region_names, movr_dsn), preset, ROME, pool_size=1)
    requests_pool = backend.servers[ROME].pool
    held = requests_pool.getconn()
    try:
        backend.start_housekeeping()
        deadline = time.monotonic() + 5 * claims.SWEEP_INTERVAL_S
        while "orphan" in names(servers[ROME]) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the sweep, which runs every SWEEP_INTERVAL_S
        assert "orphan" not in names(servers[ROME])
        assert requests_pool.get_stats()["requests_num"] == 1  # ours: the resolver asked it for none
    finally:
        requests_pool.putconn(held)
        backend.close()
