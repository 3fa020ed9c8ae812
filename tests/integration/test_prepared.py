"""A lone statement on a prepared statement (movr.store.prepared): one round trip on its first run and every
later one, counted on the wire by a lab link with no delay; what it answers, and how it survives psycopg
deallocating every prepared statement of the connection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from movr.geo import Preset
from movr.lab.links import LinkSpec, run_links_in_thread
from movr.lab.pgserver import conninfo
from movr.store import prepared
from movr.store.backend import ServerPool
from movr.store.transaction import constraint_of, sqlstate_of
from movr.store.work import Statement

OURS = "SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'movr\\_%%'"


@pytest.fixture
def counted(pg_server, movr_dsn: str, preset: Preset) -> Iterator[tuple[ServerPool, object]]:
    """A one-connection pool behind a counting link: every statement of a test meets the same connection."""
    spec = LinkSpec("db", 0, pg_server.port, 0.0, "local", "app", preset.primary_region)
    with run_links_in_thread([spec]) as links:
        pool = ServerPool(conninfo(links.port("db"), pg_server.passfile, "movr"), preset.primary_region, max_size=1)
        pool.wait_ready(10)
        try:
            yield pool, links
        finally:
            pool.close()


def round_trips(links, run) -> tuple[int, object]:
    links.reset_counters()
    answer = run()
    return links.counters()["db"]["round_trips"], answer


def test_a_lone_statement_is_one_round_trip_on_its_first_run_and_after(counted) -> None:
    pool, links = counted
    query = Statement("SELECT %(a)s::int + %(b)s::int AS sum, %(a)s::int AS a, 7 %% 4 AS rest", {"a": 2, "b": 3})
    first = round_trips(links, lambda: pool.execute("t", [query]))
    again = round_trips(links, lambda: pool.execute("t", [query]))
    assert first == again == (1, [[{"sum": 5, "a": 2, "rest": 3}]])
    # Prepared under our own name on the server, once for the one connection.
    assert pool.execute("t", [Statement(OURS)]) == [[{"n": 2}]]


def test_values_come_back_as_a_cursor_would_load_them(counted) -> None:
    pool, _ = counted
    user = uuid.uuid4()
    row = pool.execute(
        "t",
        [
            Statement(
                "SELECT %(id)s::uuid AS id, %(when)s::timestamptz AS at, %(nothing)s::text AS none",
                {
                    "id": user,
                    "when": "2026-12-01T10:00:00+00:00",
                    "nothing": None,
                },
            )
        ],
    )[0][0]
    assert row["id"] == user and row["at"].year == 2026 and row["none"] is None


def test_after_psycopg_deallocates_everything_the_statement_is_prepared_again(counted) -> None:
    """psycopg sends DEALLOCATE ALL after a rollback; a statement it did not see must still answer, and
    ServerPool's own rollback (a transaction that failed) tells this module at once (no extra round trip)."""
    pool, links = counted
    query = Statement("SELECT %(x)s::int AS x", {"x": 1})
    pool.execute("t", [query])
    with pool.pool.connection() as conn:
        conn.execute("DEALLOCATE ALL")  # behind prepared's back: the next run learns it from the server
    assert round_trips(links, lambda: pool.execute("t", [query])) == (2, [[{"x": 1}]])
    assert round_trips(links, lambda: pool.execute("t", [query])) == (1, [[{"x": 1}]])
    failing = [Statement("SELECT 1"), Statement("SELECT 1 / %(zero)s AS boom", {"zero": 0})]
    with pytest.raises(psycopg.errors.DivisionByZero):
        pool.execute("t", failing)
    assert round_trips(links, lambda: pool.execute("t", [query])) == (1, [[{"x": 1}]])


def test_what_the_server_refuses_is_psycopgs_error_with_its_diagnostics(counted, movr_dsn: str) -> None:
    pool, _ = counted
    insert = (
        "INSERT INTO promo_codes (code, description, discount_percent, expires_at) VALUES (%(code)s, 'x', 10, now())"
    )
    code = f"PREPARED-{uuid.uuid4().hex[:8]}"
    try:
        assert pool.execute("t", [Statement(insert, {"code": code})]) == [[]]
        for _ in range(2):  # on its first run (Parse in the same pipeline) and on a prepared one
            with pytest.raises(psycopg.errors.UniqueViolation) as refused:
                pool.execute("t", [Statement(insert.replace("'x'", "'y'"), {"code": code})])
            assert sqlstate_of(refused.value) == "23505" and constraint_of(refused.value) == "promo_codes_pkey"
        with pytest.raises(psycopg.errors.UniqueViolation):
            pool.execute("t", [Statement(insert, {"code": code})])
    finally:
        with psycopg.connect(movr_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM promo_codes WHERE code = %s", (code,))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT %(a)s, %(b)s, %(a)s", (b"SELECT $1, $2, $1", ("a", "b"))),
        ("SELECT '100%%' AS p", (b"SELECT '100%' AS p", ())),
        ("SELECT %s", None),
        ("SELECT %(a)b", None),
    ],
)
def test_only_named_placeholders_are_converted(sql: str, expected) -> None:
    assert prepared.converted(sql) == expected
    assert prepared.convertible(sql) is (expected is not None)


def test_a_pools_connections_plan_each_statement_once(counted) -> None:
    """PostgreSQL would plan each of a prepared statement's first five runs anew; our sessions keep one plan."""
    pool, _ = counted
    (rows,) = pool.execute("t", [Statement("SELECT current_setting('plan_cache_mode') AS mode")])
    assert rows == [{"mode": "force_generic_plan"}]
    query = Statement("SELECT count(*) AS n FROM vehicles WHERE city = %(city)s", {"city": "rome"})
    for _ in range(2):
        pool.execute("t", [query])
    plans_of = "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %(like)s"
    (plans,) = pool.execute("t", [Statement(plans_of, {"like": "%vehicles WHERE city%"})])
    assert plans == [{"generic_plans": 2, "custom_plans": 0}]
