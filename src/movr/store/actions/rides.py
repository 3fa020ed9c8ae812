"""Rides: take a vehicle, end the ride, a rider's rides."""

from __future__ import annotations

import uuid

from movr.domain import errors, rules
from movr.domain.records import RideRecord
from movr.store.actions._idempotency import ANSWER, FRESH, PRIOR, REMEMBER, Remembered, answer_of, run_remembering
from movr.store.actions._run import (
    Session,
    changed_ride,
    check_session,
    known_city,
    own_rows,
    ride_of,
    run_in_city,
    session_params,
)
from movr.store.actions._sql import FOREIGN_KEY_VIOLATION, LIST_LIMIT, LIVE, RIDE_COLUMNS, UNIQUE_VIOLATION
from movr.store.backend import Backend
from movr.store.transaction import constraint_of, sqlstate_of
from movr.store.work import Home, Statement, Work


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
    city = known_city(store, city)
    if rider_city != city:
        raise errors.WrongCity("you can ride vehicles in your home city only")
    params = {
        "city": city,
        "ride_id": ride_id or uuid.uuid4(),
        "rider_id": rules.check_uuid(rider_id, "rider id"),
        "vehicle_id": rules.check_uuid(vehicle_id, "vehicle id"),
        **session_params(session, city),
    }
    request = {"city": city, "vehicle_id": params["vehicle_id"]}
    remembered = Remembered.of(idempotency_key, "start_ride", request, user_id=params["rider_id"])
    sql = f"""
        WITH {PRIOR}, {LIVE}, rider AS (
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
            RETURNING {RIDE_COLUMNS}
        ), outcome AS (
            SELECT (SELECT ok FROM live) AS session_live, (SELECT count(*) FROM rider) AS rider_found,
                   (SELECT status FROM vehicle_before) AS vehicle_status,
                   ride.*
              FROM (SELECT 1) AS one LEFT JOIN ride ON true
             WHERE (SELECT ok FROM live)  -- an ended session's refusal is not an answer to keep for its key
        ), {REMEMBER}
        {ANSWER}
    """
    work = Work(
        "start_ride",
        [Statement(remembered.statement(sql), {**params, **remembered.params()})],
        Home.of_city(city),
    )
    try:
        row = answer_of(run_remembering(store, work), remembered)
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION:
            if constraint_of(error) == "rides_one_open_per_rider":
                raise errors.RideNotEnded("you already have an open ride; end it first") from None
            raise errors.VehicleNotAvailable() from None
        if sqlstate_of(error) == FOREIGN_KEY_VIOLATION:  # the rider's account went away meanwhile
            raise errors.UnknownUser() from None
        raise
    if row["id"] is not None:
        return ride_of(row)
    check_session(row)
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
    city = known_city(store, city)
    params = {
        "ride_id": rules.check_uuid(ride_id, "ride id"),
        "rider_id": rules.check_uuid(rider_id, "rider id"),
        "location": rules.check_text(location, "location", rules.MAX_LOCATION) or None,
        **session_params(session, city),
    }
    sql = f"""
        WITH {LIVE}, before AS (
            SELECT rider_id FROM rides WHERE city = %(city)s AND id = %(ride_id)s
        ), ended AS (
            UPDATE rides SET end_time = now(), end_location = COALESCE(%(location)s, start_location)
             WHERE city = %(city)s AND id = %(ride_id)s AND rider_id = %(rider_id)s AND end_time IS NULL
               AND (SELECT ok FROM live)
            RETURNING {RIDE_COLUMNS}
        ), freed AS (
            UPDATE vehicles SET status = 'available', last_location = ended.end_location
              FROM ended
             WHERE vehicles.city = %(city)s AND vehicles.id = ended.vehicle_id
            RETURNING vehicles.id
        )
        SELECT live.ok AS session_live, before.rider_id AS owner_of_ride, ended.*
          FROM live LEFT JOIN before ON true LEFT JOIN ended ON true
    """
    ride = changed_ride(run_in_city(store, "end_ride", city, sql, **params)[0], params["rider_id"])
    if ride is None:
        raise errors.RideAlreadyEnded()
    return ride


def list_rides(
    store: Backend,
    *,
    city: str,
    rider_id: uuid.UUID | str,
    limit: int = LIST_LIMIT,
    session: Session | None = None,
) -> list[RideRecord]:
    """A rider's rides, newest first; rides live in the rider's home city."""
    city = known_city(store, city)
    sql = f"""
        WITH {LIVE}, found AS (
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
        """
    rider = rules.check_uuid(rider_id, "rider id")
    rows = own_rows(store, "list_rides", city, sql, session, rider_id=rider, limit=max(1, min(limit, LIST_LIMIT)))
    return [ride_of(row) for row in rows]
