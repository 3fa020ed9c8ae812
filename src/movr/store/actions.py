"""One service function per user action: the only place that knows each action's SQL.

Every action is one transaction of the fewest statements SQL allows (law 5). Most are a single
statement: data-modifying CTEs do the write and return, in the same round trip, what the action needs
to tell a user *why* nothing changed (unknown vehicle, lost race, not yours...). A statement that
changed nothing is harmless, so the classification runs after it, in Python.

Actions do not know which backend runs them (law 4): they hand the backend `Work` that names where
the data lives, and the backend routes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from movr.domain import errors, rules
from movr.domain.passwords import hash_password, verify_password
from movr.domain.records import PromoCodeRecord, RideRecord, UserRecord, VehicleRecord
from movr.store import stats
from movr.store.backend import Backend
from movr.store.transaction import constraint_of, sqlstate_of
from movr.store.work import Home, Rows, Statement, UniqueClaim, Work

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout (movr.store.backend.SESSION_TIMEOUTS)
QUERY_CANCELED = "57014"  # statement_timeout
LIST_LIMIT = 200

USER_COLUMNS = "city, id, username, first_name, last_name, email, created_at"
VEHICLE_COLUMNS = "city, id, type, owner_id, status, last_location, color, brand, date_added"
RIDE_COLUMNS = "city, id, rider_id, vehicle_id, start_location, start_time, end_location, end_time, promo_code"

# Is the caller's session live? Checked inside each action's own statement, so authenticating costs no
# round trip of its own: the user's row (in `%(city)s`, the statement's home) exists, carries the
# session's epoch, and does not list the session among its ended ones. True when the action runs for no
# session (tools, benchmarks) or on another city's rows, which are never the session user's (vehicles
# and rides live in their owner's home city), so such an action can only refuse.
SESSION_LIVE = """(%(session_epoch)s::integer IS NULL OR EXISTS (
    SELECT 1 FROM users su
     WHERE su.city = %(city)s AND su.id = %(session_user)s::uuid AND su.session_epoch = %(session_epoch)s::integer
       AND NOT (%(session_id)s::bigint = ANY (su.ended_sessions))))"""
# A user with more ended sessions than this within a session's lifetime is logged out everywhere instead
# (the list on their row stays small whatever they do).
ENDED_SESSIONS_KEPT = 64
DEFAULT_LOGIN_LIMIT = rules.LoginLimit()


@dataclass(frozen=True)
class Session:
    """The signed session or bearer token an action runs for (movr.web.auth.Rider.session)."""

    city: str
    user_id: uuid.UUID
    epoch: int
    id: int


@dataclass(frozen=True)
class LoggedIn(UserRecord):
    """A user whose password was just verified, with the session epoch a new session must carry."""

    session_epoch: int = 0


def _run(store: Backend, work: Work) -> list[Rows]:
    stats.note_action(work.action)
    try:
        return store.run(work)
    except Exception as error:
        # The sessions' timeouts: the statement was cancelled and rolled back, so nothing changed.
        if sqlstate_of(error) == LOCK_NOT_AVAILABLE:
            raise errors.Busy() from error
        if sqlstate_of(error) == QUERY_CANCELED:
            raise errors.TimedOut() from error
        raise


def _one(store: Backend, action: str, home: Home, sql: str, readonly: bool = False, **params: Any) -> Rows:
    return _run(store, Work(action, [Statement(sql, params)], home, readonly=readonly))[0]


def _city(store: Backend, city: str) -> str:
    if not isinstance(city, str) or not store.preset.is_city(city):
        raise errors.BadCity(f"MovR does not operate in {str(city)[:64]!r}")
    return city


def _user(row: dict[str, Any]) -> UserRecord:
    return UserRecord(**{k: row[k] for k in UserRecord.__dataclass_fields__ if k in row})


def _vehicle(row: dict[str, Any]) -> VehicleRecord:
    return VehicleRecord(**{k: row[k] for k in VehicleRecord.__dataclass_fields__ if k in row})


def _ride(row: dict[str, Any]) -> RideRecord:
    return RideRecord(**{k: row[k] for k in RideRecord.__dataclass_fields__ if k in row})


def _session(session: Session | None, city: str) -> dict[str, Any]:
    """The parameters of SESSION_LIVE for an action on `city`'s rows."""
    if session is None or session.city != city:
        return {"session_epoch": None, "session_user": None, "session_id": None}
    return {"session_epoch": session.epoch, "session_user": session.user_id, "session_id": session.id}


def _check_session(row: dict[str, Any]) -> None:
    if not row["session_live"]:
        raise errors.SessionEnded()


# --- idempotent writes ---------------------------------------------------------------------------------
# A write sent with an idempotency key (the API's Idempotency-Key header) stores its answer, the row its
# statement returned, in `idempotency_keys`, in that same statement and in the home of the row it wrote
# (`%(city)s`); a retry with the key finds it there and returns it, changing nothing. Keys are kept
# IDEMPOTENCY_TTL. The remembering writes spell these pieces out in their one statement:
#   WITH {PRIOR}, <the action's CTEs, writes gated on FRESH>, outcome AS (<its answer row>), {REMEMBER} {ANSWER}
# Without a key (%(key)s NULL) `prior` is empty and nothing is remembered.

IDEMPOTENCY_TTL = dt.timedelta(hours=24)
IDEMPOTENCY_KEY_RE = re.compile(r"[!-~]{1,255}")  # visible ASCII
SIGN_UP_SCOPE = "signup"
EXPIRED_KEYS_PER_WRITE = 16  # lazy clean-up: a remembering write deletes at most this many expired keys
PRIOR = """prior AS (
    SELECT request, answer FROM idempotency_keys
     WHERE city = %(city)s AND scope = %(key_scope)s AND key = %(key)s
       AND created_at > now() - %(key_ttl)s::interval
)"""
# An action's writes are gated on this: a retry (the key has an answer) writes nothing.
FRESH = "NOT EXISTS (SELECT 1 FROM prior)"
REMEMBER = f"""expired AS (
    DELETE FROM idempotency_keys
     WHERE %(key)s::varchar IS NOT NULL AND city = %(city)s AND created_at <= now() - %(key_ttl)s::interval
       AND (scope, key) IN (
           (SELECT scope, key FROM idempotency_keys
             WHERE city = %(city)s AND created_at <= now() - %(key_ttl)s::interval
             ORDER BY created_at LIMIT {EXPIRED_KEYS_PER_WRITE})
           UNION ALL SELECT %(key_scope)s, %(key)s)
    RETURNING 1
), remembered AS (
    -- After `expired` (its count is asked first), so an expired entry of this very key is gone.
    INSERT INTO idempotency_keys (city, scope, key, user_id, request, answer)
    SELECT %(city)s, %(key_scope)s, %(key)s, %(key_user)s, %(key_request)s, to_jsonb(outcome)
      FROM outcome
     WHERE %(key)s::varchar IS NOT NULL AND {FRESH} AND (SELECT count(*) FROM expired) >= 0
    RETURNING 1
)"""
ANSWER = """SELECT (SELECT request FROM prior) AS prior_request, (SELECT answer FROM prior) AS prior_answer, outcome.*
  FROM (SELECT 1) AS one LEFT JOIN outcome ON true"""
_UUID_COLUMNS = frozenset({"id", "owner_id", "rider_id", "vehicle_id", "owner_of_ride"})
_TIME_COLUMNS = frozenset({"created_at", "date_added", "start_time", "end_time"})


@dataclass(frozen=True)
class Remembered:
    """Where a write keeps its first answer: whose key it is, and what was asked with it."""

    scope: str
    key: str | None
    user_id: uuid.UUID
    request: str

    @classmethod
    def of(cls, key: str | None, *, scope: str, user_id: uuid.UUID, action: str, request: dict[str, Any]) -> Remembered:
        """`key` None: a write that remembers nothing. A password is never part of `request`: the digest is
        stored unsalted."""
        if key is not None and (not isinstance(key, str) or not IDEMPOTENCY_KEY_RE.fullmatch(key)):
            raise errors.BadIdempotencyKey()
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
        return cls(scope, key, user_id, f"{action}:{digest}")

    def params(self) -> dict[str, Any]:
        return {
            "key_scope": self.scope,
            "key": self.key,
            "key_user": self.user_id,
            "key_request": self.request,
            "key_ttl": IDEMPOTENCY_TTL,
        }


def _run_remembering(store: Backend, work: Work) -> dict[str, Any]:
    """The row of a remembering write. A request with the same key that committed after this statement's
    snapshot makes the key's insert fail (its primary key) and this statement with it, so it runs again:
    then its snapshot has the first answer."""
    try:
        return _run(store, work)[0][0]
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION and constraint_of(error) == "idempotency_keys_pkey":
            return _run(store, work)[0][0]
        raise


def _answer(row: dict[str, Any], remembered: Remembered) -> dict[str, Any]:
    """The row to answer with: the first answer to this key if there is one, else this statement's own."""
    if row["prior_answer"] is None:
        return row
    if row["prior_request"] != remembered.request:
        raise errors.IdempotencyKeyReused()
    return _revived(row["prior_answer"])


def _revived(answer: dict[str, Any]) -> dict[str, Any]:
    """A stored answer, read back from JSON with the types the statement returned."""
    revived = dict(answer)
    for column, value in answer.items():
        if isinstance(value, str) and column in _UUID_COLUMNS:
            revived[column] = uuid.UUID(value)
        elif isinstance(value, str) and column in _TIME_COLUMNS:
            revived[column] = dt.datetime.fromisoformat(value)
    return revived


# --- users -------------------------------------------------------------------------------------------


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
    city = _city(store, city)
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
    remembered = Remembered.of(
        idempotency_key,
        scope=SIGN_UP_SCOPE,
        user_id=user_id,
        action="register",
        request={k: params[k] for k in ("city", "username", "first_name", "last_name", "email")},
    )
    work = Work(
        "register",
        [
            Statement(
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
                """,
                {**params, **remembered.params()},
            )
        ],
        Home.of_city(city),
        claims=[UniqueClaim("username", username, city, str(user_id))],
    )
    try:
        row = _answer(_run_remembering(store, work), remembered)
    except errors.UsernameTaken:
        raise
    except errors.Busy:
        # Only the name's unique entries can be held: by a sign-up not yet committed or rolled back, e.g.
        # a two-phase commit whose coordinator died, until a resolver finishes it.
        raise errors.UsernamePending(
            f"another sign-up for {username!r} has not finished yet; try again in a few seconds"
        ) from None
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION and "username" in (constraint_of(error) or "username"):
            # A retry on the lab's backend: the name's directory claim, which the backend adds to the
            # statement, fails against the first sign-up's entry; the first answer is still there to give.
            first = _first_answer(store, city, remembered) if remembered.key is not None else None
            if first is not None:
                return _user(first)
            raise errors.UsernameTaken(f"the username {username!r} is taken") from None
        raise
    return _user(row)


def _first_answer(store: Backend, city: str, remembered: Remembered) -> dict[str, Any] | None:
    """The stored answer to a key, read on its own (a second statement, on a retry's rare paths only)."""
    rows = _one(
        store,
        "register",
        Home.of_city(city),
        f"WITH {PRIOR} SELECT request AS prior_request, answer AS prior_answer FROM prior",
        readonly=True,
        city=city,
        **remembered.params(),
    )
    return _answer(rows[0], remembered) if rows else None


def authenticate(
    store: Backend, *, username: str, password: str, limit: rules.LoginLimit = DEFAULT_LOGIN_LIMIT
) -> LoggedIn:
    """Log in by username, in any case. The username names no home: locality-optimized search finds it.

    Failed log-ins are counted on the user's row, in its home region, wherever the attempt lands, and the
    search reads the count: a username with `limit.failures` failures in the window is refused
    (TooManyAttempts) at no further cost, not even a password check. A failure costs one more statement
    (the count, in the home region); a success none, unless it clears a count of recent failures.
    """
    if not isinstance(username, str) or not rules.USERNAME_RE.match(username) or not isinstance(password, str):
        verify_password(None, "x")
        raise errors.BadCredentials()
    rows = _one(
        store,
        "authenticate",
        Home.search(),
        f"SELECT {USER_COLUMNS}, password_hash, session_epoch, failed_logins,"
        " COALESCE(failed_since > now() - %(window)s * INTERVAL '1 second', false) AS counting,"
        " ceil(extract(epoch FROM failed_since + %(window)s * INTERVAL '1 second' - now()))::integer AS retry_after"
        " FROM users WHERE username = %(username)s",
        readonly=True,
        username=rules.canonical_username(username),
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
        _one(
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
    _one(
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
    rows = _one(
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
    rows = _one(
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


def get_user(store: Backend, *, city: str, user_id: uuid.UUID | str, session: Session | None = None) -> UserRecord:
    """A user's profile; with the user's own `session`, SessionEnded when it has ended (or the user is gone)."""
    city = _city(store, city)
    rows = _one(
        store,
        "get_user",
        Home.of_city(city),
        f"SELECT {USER_COLUMNS} FROM users WHERE city = %(city)s AND id = %(id)s AND {SESSION_LIVE}",
        readonly=True,
        city=city,
        id=rules.check_uuid(user_id, "user id"),
        **_session(session, city),
    )
    if not rows:
        raise errors.SessionEnded() if _session(session, city)["session_epoch"] is not None else errors.UnknownUser()
    return _user(rows[0])


def list_users(store: Backend, *, city: str, limit: int = LIST_LIMIT) -> list[UserRecord]:
    city = _city(store, city)
    rows = _one(
        store,
        "list_users",
        Home.of_city(city),
        f"SELECT {USER_COLUMNS} FROM users WHERE city = %(city)s ORDER BY username LIMIT %(limit)s",
        readonly=True,
        city=city,
        limit=max(1, min(limit, LIST_LIMIT)),
    )
    return [_user(row) for row in rows]


def remove_user(
    store: Backend, *, city: str, user_id: uuid.UUID | str, username: str, session: Session | None = None
) -> None:
    """Remove an account with its vehicles and rides; refused while a ride of theirs is open. Every session
    and token of the account ends with its row."""
    city = _city(store, city)
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
                {"city": city, "id": user_id, "username": username, **_session(session, city)},
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
    row = _run(store, work)[0][0]
    if row["removed"]:
        return
    _check_session(row)
    if not row["found"]:
        raise errors.UnknownUser()
    raise errors.RideNotEnded("end the open rides on you or your vehicles before removing your account")


# --- vehicles ----------------------------------------------------------------------------------------


def list_vehicles(
    store: Backend, *, city: str, available_only: bool = True, limit: int = LIST_LIMIT
) -> list[VehicleRecord]:
    city = _city(store, city)
    rows = _one(
        store,
        "list_vehicles",
        Home.of_city(city),
        """
        SELECT v.city, v.id, v.type, v.owner_id, v.status, v.last_location, v.color, v.brand,
               v.date_added, u.username AS owner_username
          FROM vehicles v JOIN users u ON u.city = v.city AND u.id = v.owner_id
         WHERE v.city = %(city)s AND (NOT %(available_only)s OR v.status = 'available')
         ORDER BY v.date_added DESC, v.id
         LIMIT %(limit)s
        """,
        readonly=True,
        city=city,
        available_only=available_only,
        limit=max(1, min(limit, LIST_LIMIT)),
    )
    return [_vehicle(row) for row in rows]


def list_user_vehicles(
    store: Backend, *, city: str, owner_id: uuid.UUID | str, session: Session | None = None
) -> list[VehicleRecord]:
    city = _city(store, city)
    rows = _one(
        store,
        "list_user_vehicles",
        Home.of_city(city),
        f"""
        WITH live AS (
            SELECT {SESSION_LIVE} AS ok
        ), found AS (
            SELECT {VEHICLE_COLUMNS} FROM vehicles
             WHERE city = %(city)s AND owner_id = %(owner_id)s AND (SELECT ok FROM live)
        )
        SELECT live.ok AS session_live, found.* FROM live LEFT JOIN found ON true
         ORDER BY found.date_added DESC, found.id
        """,
        readonly=True,
        city=city,
        owner_id=rules.check_uuid(owner_id, "owner id"),
        **_session(session, city),
    )
    _check_session(rows[0])
    return [_vehicle(row) for row in rows if row["id"] is not None]


def add_vehicle(
    store: Backend,
    *,
    city: str,
    owner_id: uuid.UUID | str,
    type: str,
    brand: str = "",
    color: str = "",
    location: str = "",
    vehicle_id: uuid.UUID | None = None,
    session: Session | None = None,
    idempotency_key: str | None = None,
) -> VehicleRecord:
    """Add a vehicle in the owner's home city: one INSERT (the foreign key proves the owner exists). With
    `idempotency_key` (the owner's), a retry answers the first vehicle and adds none."""
    city = _city(store, city)
    params = {
        "city": city,
        "id": vehicle_id or uuid.uuid4(),
        "type": rules.check_vehicle_type(type),
        "owner_id": rules.check_uuid(owner_id, "owner id"),
        "last_location": rules.check_text(location, "location", rules.MAX_LOCATION),
        "color": rules.check_text(color, "color", 32),
        "brand": rules.check_text(brand, "brand"),
    }
    remembered = Remembered.of(
        idempotency_key,
        scope=str(params["owner_id"]),
        user_id=params["owner_id"],
        action="add_vehicle",
        request={k: v for k, v in params.items() if k != "id"},
    )
    sql = f"""
        WITH {PRIOR}, created AS (
            INSERT INTO vehicles (city, id, type, owner_id, status, last_location, color, brand)
            SELECT %(city)s::varchar, %(id)s, %(type)s, %(owner_id)s, 'available', %(last_location)s,
                   %(color)s, %(brand)s
             WHERE {SESSION_LIVE} AND {FRESH}
            RETURNING {VEHICLE_COLUMNS}
        ), outcome AS (
            SELECT * FROM created
        ), {REMEMBER}
        {ANSWER}
    """
    work = Work(
        "add_vehicle",
        [Statement(sql, {**params, **_session(session, city), **remembered.params()})],
        Home.of_city(city),
    )
    try:
        row = _answer(_run_remembering(store, work), remembered)
    except Exception as error:
        if sqlstate_of(error) == FOREIGN_KEY_VIOLATION:
            raise errors.UnknownUser("you can only add a vehicle in your home city") from None
        raise
    if row["id"] is None:
        raise errors.SessionEnded()
    return _vehicle(row)


def remove_vehicle(
    store: Backend,
    *,
    city: str,
    vehicle_id: uuid.UUID | str,
    owner_id: uuid.UUID | str,
    session: Session | None = None,
) -> None:
    """Remove your own vehicle; refused while it is in a ride. One statement."""
    city = _city(store, city)
    rows = _one(
        store,
        "remove_vehicle",
        Home.of_city(city),
        f"""
        WITH live AS (
            SELECT {SESSION_LIVE} AS ok
        ), before AS (
            -- Locked: after waiting on a racing action, this reads the row as it committed (or finds it
            -- gone), so the answer names what happened, not what the statement's snapshot saw.
            SELECT owner_id, status FROM vehicles WHERE city = %(city)s AND id = %(id)s FOR UPDATE
        ), removed AS (
            DELETE FROM vehicles
             WHERE city = %(city)s AND id = %(id)s AND owner_id = %(owner_id)s AND status = 'available'
               AND (SELECT ok FROM live)
            RETURNING id
        )
        SELECT live.ok AS session_live, before.owner_id, before.status, (SELECT count(*) FROM removed) AS removed
          FROM live LEFT JOIN before ON true
        """,
        city=city,
        id=rules.check_uuid(vehicle_id, "vehicle id"),
        owner_id=rules.check_uuid(owner_id, "owner id"),
        **_session(session, city),
    )
    row = rows[0]
    _check_session(row)
    if row["owner_id"] is None:
        raise errors.UnknownVehicle()
    if row["removed"]:
        return
    if str(row["owner_id"]) != str(owner_id):
        raise errors.NotYourVehicle()
    raise errors.VehicleInUse("that vehicle is in a ride; remove it when the ride has ended")


# --- rides -------------------------------------------------------------------------------------------


def start_ride(
    store: Backend,
    *,
    city: str,
    rider_id: uuid.UUID | str,
    rider_city: str,
    vehicle_id: uuid.UUID | str,
    ride_id: uuid.UUID | None = None,
    session: Session | None = None,
    idempotency_key: str | None = None,
) -> RideRecord:
    """Take an available vehicle: the vehicle's UPDATE and the ride's INSERT are one statement. With
    `idempotency_key` (the rider's), a retry answers the first attempt's ride, or its refusal.

    Concurrent riders of one vehicle serialize on its row; the loser's UPDATE finds it no longer
    available and inserts nothing. Unique partial indexes back this up: one open ride per vehicle,
    and per rider. The rider's row is locked (FOR KEY SHARE, as the ride's foreign key would) before
    the vehicle is taken: an account removal either waits for this ride (and then sees it) or has
    removed the rider already, and then nothing is taken (UnknownUser, never a foreign-key error).
    """
    city = _city(store, city)
    if rider_city != city:
        raise errors.WrongCity("you can ride vehicles in your home city only")
    params = {
        "city": city,
        "ride_id": ride_id or uuid.uuid4(),
        "rider_id": rules.check_uuid(rider_id, "rider id"),
        "vehicle_id": rules.check_uuid(vehicle_id, "vehicle id"),
        **_session(session, city),
    }
    remembered = Remembered.of(
        idempotency_key,
        scope=str(params["rider_id"]),
        user_id=params["rider_id"],
        action="start_ride",
        request={"city": city, "vehicle_id": params["vehicle_id"]},
    )
    sql = f"""
        WITH {PRIOR}, live AS (
            SELECT {SESSION_LIVE} AS ok
        ), rider AS (
            SELECT id FROM users WHERE city = %(city)s AND id = %(rider_id)s FOR KEY SHARE
        ), vehicle_before AS (
            SELECT status FROM vehicles WHERE city = %(city)s AND id = %(vehicle_id)s
        ), taken AS (
            UPDATE vehicles SET status = 'in_use'
             WHERE city = %(city)s AND id = %(vehicle_id)s AND status = 'available'
               AND EXISTS (SELECT 1 FROM rider) AND (SELECT ok FROM live) AND {FRESH}
            RETURNING id, last_location
        ), ride AS (
            INSERT INTO rides (city, id, rider_id, vehicle_id, start_location, start_time)
            SELECT %(city)s, %(ride_id)s, %(rider_id)s, taken.id, taken.last_location, now() FROM taken
            RETURNING city, id, rider_id, vehicle_id, start_location, start_time, end_location,
                      end_time, promo_code
        ), outcome AS (
            SELECT (SELECT ok FROM live) AS session_live, (SELECT count(*) FROM rider) AS rider_found,
                   (SELECT status FROM vehicle_before) AS vehicle_status,
                   ride.*
              FROM (SELECT 1) AS one LEFT JOIN ride ON true
        ), {REMEMBER}
        {ANSWER}
    """
    work = Work(
        "start_ride",
        [Statement(sql, {**params, **remembered.params()})],
        Home.of_city(city),
    )
    try:
        row = _answer(_run_remembering(store, work), remembered)
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION:
            if constraint_of(error) == "rides_one_open_per_rider":
                raise errors.RideNotEnded("you already have an open ride; end it first") from None
            raise errors.VehicleNotAvailable() from None
        if sqlstate_of(error) == FOREIGN_KEY_VIOLATION:  # the rider's account went away meanwhile
            raise errors.UnknownUser() from None
        raise
    if row["id"] is not None:
        return _ride(row)
    _check_session(row)
    if not row["rider_found"]:
        raise errors.UnknownUser()
    if row["vehicle_status"] is None:
        raise errors.UnknownVehicle()
    raise errors.VehicleNotAvailable()


def end_ride(
    store: Backend,
    *,
    city: str,
    ride_id: uuid.UUID | str,
    rider_id: uuid.UUID | str,
    location: str | None = None,
    session: Session | None = None,
) -> RideRecord:
    """End your open ride and free its vehicle: one statement."""
    city = _city(store, city)
    params = {
        "city": city,
        "ride_id": rules.check_uuid(ride_id, "ride id"),
        "rider_id": rules.check_uuid(rider_id, "rider id"),
        "location": rules.check_text(location, "location", rules.MAX_LOCATION) or None,
        **_session(session, city),
    }
    sql = f"""
        WITH live AS (
            SELECT {SESSION_LIVE} AS ok
        ), before AS (
            SELECT rider_id FROM rides WHERE city = %(city)s AND id = %(ride_id)s
        ), ended AS (
            UPDATE rides SET end_time = now(), end_location = COALESCE(%(location)s, start_location)
             WHERE city = %(city)s AND id = %(ride_id)s AND rider_id = %(rider_id)s AND end_time IS NULL
               AND (SELECT ok FROM live)
            RETURNING city, id, rider_id, vehicle_id, start_location, start_time, end_location,
                      end_time, promo_code
        ), freed AS (
            UPDATE vehicles SET status = 'available', last_location = ended.end_location
              FROM ended
             WHERE vehicles.city = %(city)s AND vehicles.id = ended.vehicle_id
            RETURNING vehicles.id
        )
        SELECT live.ok AS session_live, before.rider_id AS owner_of_ride, ended.*
          FROM live LEFT JOIN before ON true LEFT JOIN ended ON true
    """
    row = _one(store, "end_ride", Home.of_city(city), sql, **params)[0]
    _check_session(row)
    if row["owner_of_ride"] is None:
        raise errors.UnknownRide()
    if row["id"] is not None:
        return _ride(row)
    if str(row["owner_of_ride"]) != str(params["rider_id"]):
        raise errors.NotYourRide()
    raise errors.RideAlreadyEnded()


def list_rides(
    store: Backend,
    *,
    city: str,
    rider_id: uuid.UUID | str,
    limit: int = LIST_LIMIT,
    session: Session | None = None,
) -> list[RideRecord]:
    """A rider's rides, newest first; rides live in the rider's home city."""
    city = _city(store, city)
    rows = _one(
        store,
        "list_rides",
        Home.of_city(city),
        f"""
        WITH live AS (
            SELECT {SESSION_LIVE} AS ok
        ), found AS (
            SELECT r.city, r.id, r.rider_id, r.vehicle_id, r.start_location, r.start_time, r.end_location,
                   r.end_time, r.promo_code, COALESCE(v.type, '') AS vehicle_type,
                   COALESCE(v.brand, '') AS vehicle_brand
              FROM rides r LEFT JOIN vehicles v ON v.city = r.city AND v.id = r.vehicle_id
             WHERE r.city = %(city)s AND r.rider_id = %(rider_id)s AND (SELECT ok FROM live)
             ORDER BY r.start_time DESC, r.id
             LIMIT %(limit)s
        )
        SELECT live.ok AS session_live, found.* FROM live LEFT JOIN found ON true
         ORDER BY found.start_time DESC, found.id
        """,
        readonly=True,
        city=city,
        rider_id=rules.check_uuid(rider_id, "rider id"),
        limit=max(1, min(limit, LIST_LIMIT)),
        **_session(session, city),
    )
    _check_session(rows[0])
    return [_ride(row) for row in rows if row["id"] is not None]


# --- promo codes (GLOBAL reference data) -------------------------------------------------------------


def list_promo_codes(store: Backend) -> list[PromoCodeRecord]:
    rows = _one(
        store,
        "list_promo_codes",
        Home.local(),
        "SELECT code, description, discount_percent, expires_at FROM promo_codes"
        " WHERE expires_at > now() ORDER BY code",
        readonly=True,
    )
    return [PromoCodeRecord(**row) for row in rows]


def create_promo_code(
    store: Backend, *, code: str, description: str, discount_percent: int, expires_at: dt.datetime
) -> PromoCodeRecord:
    code = rules.check_text(code, "promo code", 32, required=True).upper()
    if not 1 <= int(discount_percent) <= 100:
        raise errors.InvalidInput("a discount is 1 to 100 percent")
    try:
        rows = _one(
            store,
            "create_promo_code",
            Home.global_write(),
            "INSERT INTO promo_codes (code, description, discount_percent, expires_at)"
            " VALUES (%(code)s, %(description)s, %(discount)s, %(expires_at)s)"
            " RETURNING code, description, discount_percent, expires_at",
            code=code,
            description=rules.check_text(description, "description", 256),
            discount=int(discount_percent),
            expires_at=expires_at,
        )
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION:
            raise errors.InvalidInput(f"promo code {code} exists already") from None
        raise
    return PromoCodeRecord(**rows[0])


def apply_promo_code(
    store: Backend,
    *,
    city: str,
    ride_id: uuid.UUID | str,
    rider_id: uuid.UUID | str,
    code: str,
    session: Session | None = None,
) -> RideRecord:
    """Apply a promo code to your open ride: reads the GLOBAL table and updates the ride in one statement."""
    city = _city(store, city)
    code = rules.check_text(code, "promo code", 32, required=True).upper()
    rows = _one(
        store,
        "apply_promo_code",
        Home.of_city(city),
        f"""
        WITH live AS (
            SELECT {SESSION_LIVE} AS ok
        ), promo AS (
            SELECT code FROM promo_codes WHERE code = %(code)s AND expires_at > now()
        ), before AS (
            SELECT rider_id, end_time FROM rides WHERE city = %(city)s AND id = %(ride_id)s
        ), applied AS (
            UPDATE rides SET promo_code = (SELECT code FROM promo)
             WHERE city = %(city)s AND id = %(ride_id)s AND rider_id = %(rider_id)s
               AND end_time IS NULL AND EXISTS (SELECT 1 FROM promo) AND (SELECT ok FROM live)
            RETURNING city, id, rider_id, vehicle_id, start_location, start_time, end_location,
                      end_time, promo_code
        )
        SELECT live.ok AS session_live, (SELECT count(*) FROM promo) AS promo_found,
               before.rider_id AS owner_of_ride, before.end_time AS ended_at, applied.*
          FROM live LEFT JOIN before ON true LEFT JOIN applied ON true
        """,
        city=city,
        ride_id=rules.check_uuid(ride_id, "ride id"),
        rider_id=rules.check_uuid(rider_id, "rider id"),
        code=code,
        **_session(session, city),
    )
    row = rows[0]
    _check_session(row)
    if row["owner_of_ride"] is None:
        raise errors.UnknownRide()
    if row["id"] is not None:
        return _ride(row)
    if str(row["owner_of_ride"]) != str(rider_id):
        raise errors.NotYourRide()
    if row["ended_at"] is not None:
        raise errors.RideAlreadyEnded("promo codes apply to open rides only")
    raise errors.UnknownPromoCode()
