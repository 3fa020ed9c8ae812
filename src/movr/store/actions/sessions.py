"""Sessions: log in (with failed log-ins limited per username), log out, log out everywhere."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from movr.domain import errors, rules
from movr.domain.passwords import verify_password
from movr.domain.records import UserRecord
from movr.store import stats
from movr.store.actions._run import Session, run_statement
from movr.store.actions._sql import USER_COLUMNS
from movr.store.backend import Backend
from movr.store.work import Home

# A user with more ended sessions than this within a session's lifetime is logged out everywhere instead
# (the list on their row stays small whatever they do).
ENDED_SESSIONS_KEPT = 64
DEFAULT_LOGIN_LIMIT = rules.LoginLimit()


@dataclass(frozen=True)
class LoggedIn(UserRecord):
    """A user whose password was just verified, with the session epoch a new session must carry."""

    session_epoch: int = 0


def authenticate(
    store: Backend, *, username: str, password: str, limit: rules.LoginLimit = DEFAULT_LOGIN_LIMIT
) -> LoggedIn:
    """Log in by username, in any case. The username names no home: the backend finds it (a search, or
    where a local index of names says the user lives).

    Failed log-ins are counted on the user's row, in its home region, wherever the attempt lands, and the
    search reads the count: a username with `limit.failures` failures in the window is refused
    (TooManyAttempts) at no further cost, not even a password check. A failure costs one more statement
    (the count, in the home region); a success none, unless it clears a count of recent failures.
    """
    if not isinstance(username, str) or not rules.USERNAME_RE.fullmatch(username) or not isinstance(password, str):
        verify_password(None, "x")
        raise errors.BadCredentials()
    username = rules.canonical_username(username)
    rows = run_statement(
        store,
        "authenticate",
        Home.search(username),
        f"SELECT {USER_COLUMNS}, password_hash, session_epoch, failed_logins,"
        " COALESCE(failed_since > now() - %(window)s * INTERVAL '1 second', false) AS counting,"
        " ceil(extract(epoch FROM failed_since + %(window)s * INTERVAL '1 second' - now()))::integer AS retry_after"
        " FROM users WHERE username = %(username)s",
        readonly=True,
        username=username,
        window=limit.window_s,
    )
    row = rows[0] if rows else None
    if row is not None and row["counting"] and row["failed_logins"] >= limit.failures:
        raise errors.TooManyAttempts(retry_after=row["retry_after"])
    with stats.cpu_work():
        verified = verify_password(row["password_hash"] if row else None, password[: rules.MAX_PASSWORD])
    if not verified:
        if row is not None:
            _count_failed_login(store, row, limit)
        raise errors.BadCredentials()
    assert row is not None
    if row["counting"] and row["failed_logins"]:
        run_statement(
            store,
            "clear_failed_logins",
            Home.of_city(row["city"]),
            "UPDATE users SET failed_logins = 0, failed_since = NULL WHERE city = %(city)s AND id = %(id)s",
            city=row["city"],
            id=row["id"],
        )
    return LoggedIn(**{k: row[k] for k in LoggedIn.__dataclass_fields__ if k in row})


def _count_failed_login(store: Backend, row: dict[str, Any], limit: rules.LoginLimit) -> None:
    """One more failure on the user's row (in its home region); a window that has passed starts again."""
    run_statement(
        store,
        "count_failed_login",
        Home.of_city(row["city"]),
        """
        UPDATE users SET
            failed_logins = CASE WHEN failed_since > now() - %(window)s * INTERVAL '1 second'
                                 THEN failed_logins + 1 ELSE 1 END,
            failed_since = CASE WHEN failed_since > now() - %(window)s * INTERVAL '1 second'
                                THEN failed_since ELSE now() END
         WHERE city = %(city)s AND id = %(id)s
        """,
        city=row["city"],
        id=row["id"],
        window=limit.window_s,
    )


def end_session(store: Backend, *, session: Session, lifetime_s: int) -> bool:
    """Log out: the session (and the bearer token issued with it) is listed as ended on the user's row.

    Ids of sessions older than `lifetime_s` (refused anyway) leave the list. False when the session
    had ended already."""
    rows = run_statement(
        store,
        "end_session",
        Home.of_city(session.city),
        """
        UPDATE users SET
            session_epoch = session_epoch + CASE WHEN cardinality(ended_sessions) >= %(kept)s THEN 1 ELSE 0 END,
            ended_sessions = CASE WHEN cardinality(ended_sessions) >= %(kept)s THEN '{}'::bigint[]
                ELSE array_append(ARRAY(SELECT s FROM unnest(ended_sessions) AS s WHERE s >= %(live_from)s::bigint),
                                  %(session_id)s::bigint) END
         WHERE city = %(city)s AND id = %(id)s AND session_epoch = %(epoch)s
           AND NOT (%(session_id)s::bigint = ANY (ended_sessions))
        RETURNING id
        """,
        city=session.city,
        id=session.user_id,
        epoch=session.epoch,
        session_id=session.id,
        kept=ENDED_SESSIONS_KEPT,
        live_from=rules.first_session_id_since(time.time() - lifetime_s),
    )
    return bool(rows)


def end_all_sessions(store: Backend, *, session: Session) -> None:
    """Log out everywhere: a new epoch ends every session and token of the user, this one included."""
    rows = run_statement(
        store,
        "end_all_sessions",
        Home.of_city(session.city),
        "UPDATE users SET session_epoch = session_epoch + 1, ended_sessions = '{}'::bigint[]"
        " WHERE city = %(city)s AND id = %(id)s AND session_epoch = %(epoch)s"
        " AND NOT (%(session_id)s::bigint = ANY (ended_sessions)) RETURNING id",
        city=session.city,
        id=session.user_id,
        epoch=session.epoch,
        session_id=session.id,
    )
    if not rows:
        raise errors.SessionEnded()
