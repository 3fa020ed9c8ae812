"""Usernames ignore case and failed log-ins are counted on the user's row: the actions on a real server."""

from __future__ import annotations

import psycopg
import pytest

from movr.domain import errors, rules
from movr.store import actions, claims, stats
from movr.store.sample import generate
from movr.store.work import UniqueClaim

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
LIMIT = rules.LoginLimit(failures=3, window_s=600)


def counted(fn, *args, **kwargs):
    with stats.measure() as measured:
        try:
            return fn(*args, **kwargs), measured
        except errors.MovrError as error:
            return error, measured


def test_usernames_are_stored_in_lower_case_and_unique_whatever_the_case(store, movr_dsn):
    user = actions.register(store, city="rome", username="Mallory", password=PASSWORD)
    assert user.username == "mallory"
    for spelling, city in (("mallory", "rome"), ("MALLORY", "boston"), ("mAlLoRy", "paris")):
        with pytest.raises(errors.UsernameTaken):
            actions.register(store, city=city, username=spelling, password=PASSWORD)
    assert actions.authenticate(store, username="MALLORY", password=PASSWORD).id == user.id
    row = "('rome', gen_random_uuid(), 'Eve', 'x', '', '', '')"
    with psycopg.connect(movr_dsn) as conn, pytest.raises(psycopg.errors.CheckViolation):  # every row, any writer
        conn.execute(
            f"INSERT INTO users (city, id, username, password_hash, first_name, last_name, email) VALUES {row}"
        )


def test_the_lab_directory_uses_the_canonical_form(preset):
    until = claims.lease_until()
    for statement in (
        claims.claim_statement(UniqueClaim("username", "Mallory", "rome", "id"), "europe-west1", "us-east1", until),
        claims.local_claim_statement(UniqueClaim("username", "MaLLory", "rome", "id"), "europe-west1", until),
        claims.release_local_statement(UniqueClaim("username", "MALLORY", "rome", "id")),
        claims.unclaim_statement("MALLORY", "id"),
        claims.lookup_statement("Mallory"),
    ):
        assert statement.params["username"] == "mallory"


def test_sample_users_obey_the_canonical_form(preset):
    data = generate(preset, users=50, vehicles=0, rides=0, seed=7, password_hash="x")
    assert all(row["username"] == rules.check_username(row["username"]) for row in data.users)


def test_failed_log_ins_lock_the_username_until_the_window_ends(store, movr_dsn):
    actions.register(store, city="rome", username="ada", password=PASSWORD)
    actions.register(store, city="rome", username="bob", password=PASSWORD)
    for _ in range(LIMIT.failures):
        error, measured = counted(actions.authenticate, store, username="ada", password="wrong", limit=LIMIT)
        assert isinstance(error, errors.BadCredentials) and measured.statements == 2
    locked, measured = counted(actions.authenticate, store, username="Ada", password=PASSWORD, limit=LIMIT)
    assert isinstance(locked, errors.TooManyAttempts) and 590 <= locked.retry_after <= 600
    assert measured.statements == 1 and measured.cpu_seconds == 0  # no write, no password check
    assert actions.authenticate(store, username="bob", password=PASSWORD, limit=LIMIT).username == "bob"
    with psycopg.connect(movr_dsn) as conn:  # the window passes (moved back rather than waited for)
        conn.execute("UPDATE users SET failed_since = failed_since - interval '601 seconds' WHERE username = 'ada'")
    user, measured = counted(actions.authenticate, store, username="ada", password=PASSWORD, limit=LIMIT)
    assert user.username == "ada" and measured.statements == 1  # a stale count needs no write
    error, _ = counted(actions.authenticate, store, username="ada", password="wrong", limit=LIMIT)
    with psycopg.connect(movr_dsn) as conn:
        assert conn.execute("SELECT failed_logins FROM users WHERE username = 'ada'").fetchone()[0] == 1


def test_concurrent_failures_are_all_counted(store, movr_dsn):
    import threading

    actions.register(store, city="rome", username="ada", password=PASSWORD)
    limit = rules.LoginLimit(failures=100, window_s=600)
    threads = [
        threading.Thread(
            target=counted,
            args=(actions.authenticate, store),
            kwargs={"username": "ada", "password": "x", "limit": limit},
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with psycopg.connect(movr_dsn) as conn:
        assert conn.execute("SELECT failed_logins FROM users WHERE username = 'ada'").fetchone()[0] == 8
