"""Users: sign up, profiles, the list of a city's users, and removing an account."""

from __future__ import annotations

import uuid
from typing import Any

from movr.domain import errors, rules
from movr.domain.passwords import hash_password
from movr.domain.records import UserRecord
from movr.store import stats
from movr.store.actions._idempotency import ANSWER, FRESH, PRIOR, REMEMBER, Remembered, answer_of, run_remembering
from movr.store.actions._run import Session, check_session, known_city, run_in_city, run_work, session_params, user_of
from movr.store.actions._sql import LIST_LIMIT, SESSION_LIVE, UNIQUE_VIOLATION, USER_COLUMNS
from movr.store.backend import Backend
from movr.store.transaction import constraint_of, sqlstate_of
from movr.store.work import Home, Statement, UniqueClaim, Work

SIGN_UP_SCOPE = "signup"  # the idempotency keys of sign-ups: per city, as nobody is signed in yet


def register(
    store: Backend,
    *,
    city: str,
    username: str,
    password: str,
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    user_id: uuid.UUID | None = None,
    password_hash: str | None = None,
    idempotency_key: str | None = None,
) -> UserRecord:
    """Sign up: one INSERT; the username is claimed across every region. With `idempotency_key` (per city),
    a retry answers the first sign-up's user, and signs up nobody."""
    city = known_city(store, city)
    username = rules.check_username(username)
    if password_hash is None:
        with stats.cpu_work():
            password_hash = hash_password(rules.check_password(password))
    user_id = user_id or uuid.uuid4()
    params = {
        "city": city,
        "id": user_id,
        "username": username,
        "password_hash": password_hash,
        "first_name": rules.check_text(first_name, "first name"),
        "last_name": rules.check_text(last_name, "last name"),
        "email": rules.check_email(email),
    }
    request = {k: params[k] for k in ("city", "username", "first_name", "last_name", "email")}
    remembered = Remembered.of(idempotency_key, "register", request, user_id=user_id, scope=SIGN_UP_SCOPE)
    work = Work(
        "register",
        [
            Statement(
                remembered.statement(
                    f"""
                WITH {PRIOR}, created AS (
                    INSERT INTO users (city, id, username, password_hash, first_name, last_name, email)
                    SELECT %(city)s::varchar, %(id)s::uuid, %(username)s::varchar, %(password_hash)s::varchar,
                           %(first_name)s::varchar, %(last_name)s::varchar, %(email)s::varchar
                     WHERE {FRESH}
                    RETURNING {USER_COLUMNS}
                ), outcome AS (
                    SELECT * FROM created
                ), {REMEMBER}
                {ANSWER}
                """
                ),
                {**params, **remembered.params()},
            )
        ],
        Home.of_city(city),
        claims=[UniqueClaim("username", username, city, str(user_id))],
    )
    try:
        row = answer_of(run_remembering(store, work), remembered)
    except errors.Busy:
        # Only the name's unique entries can be held: by a sign-up not yet committed or rolled back, e.g.
        # the lab's claims of a sign-up whose coordinator died, until a resolver clears them.
        raise errors.UsernamePending(
            f"another sign-up for {username!r} has not finished yet; try again in a few seconds"
        ) from None
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION and "username" in (constraint_of(error) or "username"):
            # A retry on the lab's backend: the name's claims, which the backend makes before the statement,
            # meet the first sign-up's user; the first answer is still there to give.
            first = _first_answer(store, city, remembered) if remembered.key is not None else None
            if first is not None:
                return user_of(first)
            raise errors.UsernameTaken(f"the username {username!r} is taken") from None
        raise
    return user_of(row)


def _first_answer(store: Backend, city: str, remembered: Remembered) -> dict[str, Any] | None:
    """The stored answer to a key, read on its own (a second statement, on a retry's rare paths only)."""
    sql = f"WITH {PRIOR} SELECT request AS prior_request, answer AS prior_answer FROM prior"
    rows = run_in_city(store, "register", city, sql, **remembered.params())  # fresh: the first answer may be new
    return answer_of(rows[0], remembered) if rows else None


def get_user(store: Backend, *, city: str, user_id: uuid.UUID | str, session: Session | None = None) -> UserRecord:
    """A user's profile; with the user's own `session`, SessionEnded when it has ended (or the user is gone)."""
    city = known_city(store, city)
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE city = %(city)s AND id = %(id)s AND {SESSION_LIVE}"
    params = {"id": rules.check_uuid(user_id, "user id"), **session_params(session, city)}
    # Never a follower read for a session: its epoch and ended ids must be fresh.
    rows = run_in_city(store, "get_user", city, sql, readonly=session is None, **params)
    if not rows:
        raise errors.SessionEnded() if params["session_epoch"] is not None else errors.UnknownUser()
    return user_of(rows[0])


def list_users(store: Backend, *, city: str, limit: int = LIST_LIMIT) -> list[UserRecord]:
    city = known_city(store, city)
    sql = f"SELECT {USER_COLUMNS} FROM users WHERE city = %(city)s ORDER BY username LIMIT %(limit)s"
    rows = run_in_city(store, "list_users", city, sql, readonly=True, limit=max(1, min(limit, LIST_LIMIT)))
    return [user_of(row) for row in rows]


def remove_user(
    store: Backend, *, city: str, user_id: uuid.UUID | str, username: str, session: Session | None = None
) -> None:
    """Remove an account with its vehicles and rides; refused while a ride of theirs is open. Every session
    and token of the account ends with its row."""
    city = known_city(store, city)
    user_id = rules.check_uuid(user_id, "user id")
    username = rules.canonical_username(username)
    work = Work(
        "remove_user",
        [
            Statement(
                f"""
                WITH live AS (
                    SELECT {SESSION_LIVE} AS ok
                ), target AS (
                    SELECT id FROM users WHERE city = %(city)s AND id = %(id)s AND username = %(username)s
                ), blockers AS (
                    SELECT 1 FROM rides WHERE city = %(city)s AND rider_id = %(id)s AND end_time IS NULL
                    UNION ALL
                    SELECT 1 FROM vehicles
                     WHERE city = %(city)s AND owner_id = %(id)s AND status = 'in_use'
                ), removed AS (
                    DELETE FROM users
                     WHERE city = %(city)s AND id = %(id)s AND username = %(username)s
                       AND NOT EXISTS (SELECT 1 FROM blockers) AND (SELECT ok FROM live)
                    RETURNING id
                )
                SELECT (SELECT ok FROM live) AS session_live, (SELECT count(*) FROM target) AS found,
                       (SELECT count(*) FROM blockers) AS blockers,
                       (SELECT count(*) FROM removed) AS removed
                """,
                {"city": city, "id": user_id, "username": username, **session_params(session, city)},
            )
        ],
        Home.of_city(city),
        releases=[UniqueClaim("username", username, city, str(user_id))],
        commit_if=lambda results: bool(results[0][0]["removed"]),
        # The blockers check reads one snapshot, and a ride may start after it (on the user, or on one of
        # their vehicles). At REPEATABLE READ the cascade refuses (40001, retried by run_transaction) to
        # delete a ride or vehicle that changed after that snapshot, so the retry's check sees the ride;
        # at READ COMMITTED the cascade would delete the new ride and strand its vehicle "in use".
        isolation="repeatable read",
    )
    row = run_work(store, work)[0][0]
    if row["removed"]:
        return
    check_session(row)
    if not row["found"]:
        raise errors.UnknownUser()
    raise errors.RideNotEnded("end the open rides on you or your vehicles before removing your account")
