"""Vehicles: a city's available vehicles, an owner's vehicles, adding and removing one."""

from __future__ import annotations

import uuid

from movr.domain import errors, rules
from movr.domain.records import VehicleRecord
from movr.store.actions._idempotency import ANSWER, FRESH, PRIOR, REMEMBER, Remembered, answer_of, run_remembering
from movr.store.actions._run import (
    Session,
    check_session,
    known_city,
    own_rows,
    run_in_city,
    session_params,
    vehicle_of,
)
from movr.store.actions._sql import FOREIGN_KEY_VIOLATION, LIST_LIMIT, LIVE, SESSION_LIVE, VEHICLE_COLUMNS
from movr.store.backend import Backend
from movr.store.transaction import sqlstate_of
from movr.store.work import Home, Statement, Work


def list_vehicles(
    store: Backend, *, city: str, available_only: bool = True, limit: int = LIST_LIMIT
) -> list[VehicleRecord]:
    city = known_city(store, city)
    sql = """
        SELECT v.city, v.id, v.type, v.owner_id, v.status, v.last_location, v.color, v.brand,
               v.date_added, u.username AS owner_username
          FROM vehicles v JOIN users u ON u.city = v.city AND u.id = v.owner_id
         WHERE v.city = %(city)s AND (NOT %(available_only)s OR v.status = 'available')
         ORDER BY v.date_added DESC, v.id
         LIMIT %(limit)s
        """
    limit = max(1, min(limit, LIST_LIMIT))
    rows = run_in_city(store, "list_vehicles", city, sql, readonly=True, available_only=available_only, limit=limit)
    return [vehicle_of(row) for row in rows]


def list_user_vehicles(
    store: Backend, *, city: str, owner_id: uuid.UUID | str, session: Session | None = None
) -> list[VehicleRecord]:
    city = known_city(store, city)
    sql = f"""
        WITH {LIVE}, found AS (
            SELECT {VEHICLE_COLUMNS} FROM vehicles
             WHERE city = %(city)s AND owner_id = %(owner_id)s AND (SELECT ok FROM live)
        )
        SELECT live.ok AS session_live, found.* FROM live LEFT JOIN found ON true
         ORDER BY found.date_added DESC, found.id
        """
    rows = own_rows(store, "list_user_vehicles", city, sql, session, owner_id=rules.check_uuid(owner_id, "owner id"))
    return [vehicle_of(row) for row in rows]


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
    city = known_city(store, city)
    params = {
        "city": city,
        "id": vehicle_id or uuid.uuid4(),
        "type": rules.check_vehicle_type(type),
        "owner_id": rules.check_uuid(owner_id, "owner id"),
        "last_location": rules.check_text(location, "location", rules.MAX_LOCATION),
        "color": rules.check_text(color, "color", 32),
        "brand": rules.check_text(brand, "brand"),
    }
    request = {k: v for k, v in params.items() if k != "id"}
    remembered = Remembered.of(idempotency_key, "add_vehicle", request, user_id=params["owner_id"])
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
        [Statement(remembered.statement(sql), {**params, **session_params(session, city), **remembered.params()})],
        Home.of_city(city),
    )
    try:
        row = answer_of(run_remembering(store, work), remembered)
    except Exception as error:
        if sqlstate_of(error) == FOREIGN_KEY_VIOLATION:
            raise errors.UnknownUser("you can only add a vehicle in your home city") from None
        raise
    if row["id"] is None:
        raise errors.SessionEnded()
    return vehicle_of(row)


def remove_vehicle(
    store: Backend, *, city: str, vehicle_id: uuid.UUID | str, owner_id: uuid.UUID | str, session: Session | None = None
) -> None:
    """Remove your own vehicle; refused while it is in a ride. One statement."""
    city = known_city(store, city)
    sql = f"""
        WITH {LIVE}, before AS (
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
        """
    params = {
        "id": rules.check_uuid(vehicle_id, "vehicle id"),
        "owner_id": rules.check_uuid(owner_id, "owner id"),
        **session_params(session, city),
    }
    row = run_in_city(store, "remove_vehicle", city, sql, **params)[0]
    check_session(row)
    if row["owner_id"] is None:
        raise errors.UnknownVehicle()
    if row["removed"]:
        return
    if str(row["owner_id"]) != str(owner_id):
        raise errors.NotYourVehicle()
    raise errors.VehicleInUse("that vehicle is in a ride; remove it when the ride has ended")
