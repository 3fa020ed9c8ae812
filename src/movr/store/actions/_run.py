"""How an action runs: its Work through the backend (timeouts become domain errors), the city check, the
session it runs for, and the records it answers with."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from movr.domain import errors
from movr.domain.records import RideRecord, UserRecord, VehicleRecord
from movr.store import stats
from movr.store.actions._sql import LOCK_NOT_AVAILABLE, QUERY_CANCELED
from movr.store.backend import Backend
from movr.store.transaction import sqlstate_of
from movr.store.work import Home, Rows, Statement, Work


@dataclass(frozen=True)
class Session:
    """The signed session or bearer token an action runs for (movr.web.auth.Rider.session)."""

    city: str
    user_id: uuid.UUID
    epoch: int
    id: int


def run_work(store: Backend, work: Work) -> list[Rows]:
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


def run_statement(store: Backend, action: str, home: Home, sql: str, readonly: bool = False, **params: Any) -> Rows:
    return run_work(store, Work(action, [Statement(sql, params)], home, readonly=readonly))[0]


def run_in_city(store: Backend, action: str, city: str, sql: str, readonly: bool = False, **params: Any) -> Rows:
    """One statement homed in `city`, a city known_city accepted, with `%(city)s` among its parameters."""
    return run_statement(store, action, Home.of_city(city), sql, readonly, city=city, **params)


def own_rows(store: Backend, action: str, city: str, sql: str, session: Session | None, **params: Any) -> Rows:
    """A read of a user's own rows in `city`, for `session`: `sql` joins its `live` CTE (LIVE) to the rows it
    found, so it answers one row, of NULLs but `session_live`, when it found none. SessionEnded when the
    session has ended (the read then finds nothing), else the rows found."""
    # Read-only, but never a follower read for a session: its epoch and ended ids must be fresh.
    rows = run_in_city(store, action, city, sql, readonly=session is None, **session_params(session, city), **params)
    check_session(rows[0])
    return [row for row in rows if row["id"] is not None]


def known_city(store: Backend, city: str) -> str:
    if not isinstance(city, str) or not store.preset.is_city(city):
        raise errors.BadCity(f"MovR does not operate in {str(city)[:64]!r}")
    return city


def user_of(row: dict[str, Any]) -> UserRecord:
    return UserRecord(**{k: row[k] for k in UserRecord.__dataclass_fields__ if k in row})


def vehicle_of(row: dict[str, Any]) -> VehicleRecord:
    return VehicleRecord(**{k: row[k] for k in VehicleRecord.__dataclass_fields__ if k in row})


def ride_of(row: dict[str, Any]) -> RideRecord:
    return RideRecord(**{k: row[k] for k in RideRecord.__dataclass_fields__ if k in row})


def session_params(session: Session | None, city: str) -> dict[str, Any]:
    """The parameters of SESSION_LIVE for an action on `city`'s rows."""
    if session is None or session.city != city:
        return {"session_epoch": None, "session_user": None, "session_id": None}
    return {"session_epoch": session.epoch, "session_user": session.user_id, "session_id": session.id}


def check_session(row: dict[str, Any]) -> None:
    if not row["session_live"]:
        raise errors.SessionEnded()


def changed_ride(row: dict[str, Any], rider_id: uuid.UUID) -> RideRecord | None:
    """The answer of a statement that changes a rider's ride: its `session_live`, `owner_of_ride` (the ride's
    rider, NULL when there is no such ride) and the changed ride's columns (NULL when it changed nothing).
    The ride when it changed; None when it is the rider's but did not change (the caller knows why)."""
    check_session(row)
    if row["owner_of_ride"] is None:
        raise errors.UnknownRide()
    if row["id"] is not None:
        return ride_of(row)
    if str(row["owner_of_ride"]) != str(rider_id):
        raise errors.NotYourRide()
    return None
