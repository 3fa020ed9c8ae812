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
import uuid
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
LIST_LIMIT = 200

USER_COLUMNS = "city, id, username, first_name, last_name, email, created_at"
VEHICLE_COLUMNS = "city, id, type, owner_id, status, last_location, color, brand, date_added"
RIDE_COLUMNS = "city, id, rider_id, vehicle_id, start_location, start_time, end_location, end_time, promo_code"


def _run(store: Backend, work: Work) -> list[Rows]:
    stats.note_action(work.action)
    return store.run(work)


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
) -> UserRecord:
    """Sign up: one INSERT; the username is claimed across every region."""
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
    work = Work(
        "register",
        [
            Statement(
                "INSERT INTO users (city, id, username, password_hash, first_name, last_name, email)"
                " VALUES (%(city)s, %(id)s, %(username)s, %(password_hash)s, %(first_name)s,"
                " %(last_name)s, %(email)s)"
                f" RETURNING {USER_COLUMNS}",
                params,
            )
        ],
        Home.of_city(city),
        claims=[UniqueClaim("username", username, city, str(user_id))],
    )
    try:
        rows = _run(store, work)[0]
    except errors.UsernameTaken:
        raise
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION and "username" in (constraint_of(error) or "username"):
            raise errors.UsernameTaken(f"the username {username!r} is taken") from None
        raise
    return _user(rows[0])


def authenticate(store: Backend, *, username: str, password: str) -> UserRecord:
    """Log in by username. The username names no home: locality-optimized search finds it."""
    if not isinstance(username, str) or not rules.USERNAME_RE.match(username) or not isinstance(password, str):
        verify_password(None, "x")
        raise errors.BadCredentials()
    rows = _one(
        store,
        "authenticate",
        Home.search(),
        f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = %(username)s",
        readonly=True,
        username=username,
    )
    row = rows[0] if rows else None
    with stats.cpu_work():
        verified = verify_password(row["password_hash"] if row else None, password[: rules.MAX_PASSWORD])
    if not verified:
        raise errors.BadCredentials()
    assert row is not None
    return _user(row)


def get_user(store: Backend, *, city: str, user_id: uuid.UUID | str) -> UserRecord:
    city = _city(store, city)
    rows = _one(
        store,
        "get_user",
        Home.of_city(city),
        f"SELECT {USER_COLUMNS} FROM users WHERE city = %(city)s AND id = %(id)s",
        readonly=True,
        city=city,
        id=rules.check_uuid(user_id, "user id"),
    )
    if not rows:
        raise errors.UnknownUser()
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


def remove_user(store: Backend, *, city: str, user_id: uuid.UUID | str, username: str) -> None:
    """Remove an account with its vehicles and rides; refused while a ride of theirs is open."""
    city = _city(store, city)
    user_id = rules.check_uuid(user_id, "user id")
    work = Work(
        "remove_user",
        [
            Statement(
                """
                WITH target AS (
                    SELECT id FROM users WHERE city = %(city)s AND id = %(id)s AND username = %(username)s
                ), blockers AS (
                    SELECT 1 FROM rides WHERE city = %(city)s AND rider_id = %(id)s AND end_time IS NULL
                    UNION ALL
                    SELECT 1 FROM vehicles
                     WHERE city = %(city)s AND owner_id = %(id)s AND status = 'in_use'
                ), removed AS (
                    DELETE FROM users
                     WHERE city = %(city)s AND id = %(id)s AND username = %(username)s
                       AND NOT EXISTS (SELECT 1 FROM blockers)
                    RETURNING id
                )
                SELECT (SELECT count(*) FROM target) AS found,
                       (SELECT count(*) FROM blockers) AS blockers,
                       (SELECT count(*) FROM removed) AS removed
                """,
                {"city": city, "id": user_id, "username": username},
            )
        ],
        Home.of_city(city),
        releases=[UniqueClaim("username", username, city, str(user_id))],
        commit_if=lambda results: bool(results[0][0]["removed"]),
    )
    row = _run(store, work)[0][0]
    if row["removed"]:
        return
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


def list_user_vehicles(store: Backend, *, city: str, owner_id: uuid.UUID | str) -> list[VehicleRecord]:
    city = _city(store, city)
    rows = _one(
        store,
        "list_user_vehicles",
        Home.of_city(city),
        f"SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE city = %(city)s AND owner_id = %(owner_id)s"
        " ORDER BY date_added DESC, id",
        readonly=True,
        city=city,
        owner_id=rules.check_uuid(owner_id, "owner id"),
    )
    return [_vehicle(row) for row in rows]


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
) -> VehicleRecord:
    """Add a vehicle in the owner's home city: one INSERT (the foreign key proves the owner exists)."""
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
    try:
        rows = _one(
            store,
            "add_vehicle",
            Home.of_city(city),
            "INSERT INTO vehicles (city, id, type, owner_id, status, last_location, color, brand)"
            " VALUES (%(city)s, %(id)s, %(type)s, %(owner_id)s, 'available', %(last_location)s,"
            f" %(color)s, %(brand)s) RETURNING {VEHICLE_COLUMNS}",
            **params,
        )
    except Exception as error:
        if sqlstate_of(error) == FOREIGN_KEY_VIOLATION:
            raise errors.UnknownUser("you can only add a vehicle in your home city") from None
        raise
    return _vehicle(rows[0])


def remove_vehicle(store: Backend, *, city: str, vehicle_id: uuid.UUID | str, owner_id: uuid.UUID | str) -> None:
    """Remove your own vehicle; refused while it is in a ride. One statement."""
    city = _city(store, city)
    rows = _one(
        store,
        "remove_vehicle",
        Home.of_city(city),
        """
        WITH before AS (
            SELECT owner_id, status FROM vehicles WHERE city = %(city)s AND id = %(id)s
        ), removed AS (
            DELETE FROM vehicles
             WHERE city = %(city)s AND id = %(id)s AND owner_id = %(owner_id)s AND status = 'available'
            RETURNING id
        )
        SELECT before.owner_id, before.status, (SELECT count(*) FROM removed) AS removed FROM before
        """,
        city=city,
        id=rules.check_uuid(vehicle_id, "vehicle id"),
        owner_id=rules.check_uuid(owner_id, "owner id"),
    )
    if not rows:
        raise errors.UnknownVehicle()
    row = rows[0]
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
) -> RideRecord:
    """Take an available vehicle: the vehicle's UPDATE and the ride's INSERT are one statement.

    Concurrent riders of one vehicle serialize on its row; the loser's UPDATE finds it no longer
    available and inserts nothing. Unique partial indexes back this up: one open ride per vehicle,
    and per rider.
    """
    city = _city(store, city)
    if rider_city != city:
        raise errors.WrongCity("you can ride vehicles in your home city only")
    params = {
        "city": city,
        "ride_id": ride_id or uuid.uuid4(),
        "rider_id": rules.check_uuid(rider_id, "rider id"),
        "vehicle_id": rules.check_uuid(vehicle_id, "vehicle id"),
    }
    sql = """
        WITH rider AS (
            SELECT id FROM users WHERE city = %(city)s AND id = %(rider_id)s
        ), vehicle_before AS (
            SELECT status FROM vehicles WHERE city = %(city)s AND id = %(vehicle_id)s
        ), taken AS (
            UPDATE vehicles SET status = 'in_use'
             WHERE city = %(city)s AND id = %(vehicle_id)s AND status = 'available'
               AND EXISTS (SELECT 1 FROM rider)
            RETURNING id, last_location
        ), ride AS (
            INSERT INTO rides (city, id, rider_id, vehicle_id, start_location, start_time)
            SELECT %(city)s, %(ride_id)s, %(rider_id)s, taken.id, taken.last_location, now() FROM taken
            RETURNING city, id, rider_id, vehicle_id, start_location, start_time, end_location,
                      end_time, promo_code
        )
        SELECT (SELECT count(*) FROM rider) AS rider_found,
               (SELECT status FROM vehicle_before) AS vehicle_status,
               ride.*
          FROM (SELECT 1) AS one LEFT JOIN ride ON true
    """
    try:
        row = _one(store, "start_ride", Home.of_city(city), sql, **params)[0]
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION:
            if constraint_of(error) == "rides_one_open_per_rider":
                raise errors.RideNotEnded("you already have an open ride; end it first") from None
            raise errors.VehicleNotAvailable() from None
        raise
    if row["id"] is not None:
        return _ride(row)
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
) -> RideRecord:
    """End your open ride and free its vehicle: one statement."""
    city = _city(store, city)
    params = {
        "city": city,
        "ride_id": rules.check_uuid(ride_id, "ride id"),
        "rider_id": rules.check_uuid(rider_id, "rider id"),
        "location": rules.check_text(location, "location", rules.MAX_LOCATION) or None,
    }
    sql = """
        WITH before AS (
            SELECT rider_id FROM rides WHERE city = %(city)s AND id = %(ride_id)s
        ), ended AS (
            UPDATE rides SET end_time = now(), end_location = COALESCE(%(location)s, start_location)
             WHERE city = %(city)s AND id = %(ride_id)s AND rider_id = %(rider_id)s AND end_time IS NULL
            RETURNING city, id, rider_id, vehicle_id, start_location, start_time, end_location,
                      end_time, promo_code
        ), freed AS (
            UPDATE vehicles SET status = 'available', last_location = ended.end_location
              FROM ended
             WHERE vehicles.city = %(city)s AND vehicles.id = ended.vehicle_id
            RETURNING vehicles.id
        )
        SELECT before.rider_id AS owner_of_ride, ended.*
          FROM before LEFT JOIN ended ON true
    """
    rows = _one(store, "end_ride", Home.of_city(city), sql, **params)
    if not rows:
        raise errors.UnknownRide()
    row = rows[0]
    if row["id"] is not None:
        return _ride(row)
    if str(row["owner_of_ride"]) != str(params["rider_id"]):
        raise errors.NotYourRide()
    raise errors.RideAlreadyEnded()


def list_rides(store: Backend, *, city: str, rider_id: uuid.UUID | str, limit: int = LIST_LIMIT) -> list[RideRecord]:
    """A rider's rides, newest first; rides live in the rider's home city."""
    city = _city(store, city)
    rows = _one(
        store,
        "list_rides",
        Home.of_city(city),
        """
        SELECT r.city, r.id, r.rider_id, r.vehicle_id, r.start_location, r.start_time, r.end_location,
               r.end_time, r.promo_code, COALESCE(v.type, '') AS vehicle_type,
               COALESCE(v.brand, '') AS vehicle_brand
          FROM rides r LEFT JOIN vehicles v ON v.city = r.city AND v.id = r.vehicle_id
         WHERE r.city = %(city)s AND r.rider_id = %(rider_id)s
         ORDER BY r.start_time DESC, r.id
         LIMIT %(limit)s
        """,
        readonly=True,
        city=city,
        rider_id=rules.check_uuid(rider_id, "rider id"),
        limit=max(1, min(limit, LIST_LIMIT)),
    )
    return [_ride(row) for row in rows]


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
    store: Backend, *, city: str, ride_id: uuid.UUID | str, rider_id: uuid.UUID | str, code: str
) -> RideRecord:
    """Apply a promo code to your open ride: reads the GLOBAL table and updates the ride in one statement."""
    city = _city(store, city)
    code = rules.check_text(code, "promo code", 32, required=True).upper()
    rows = _one(
        store,
        "apply_promo_code",
        Home.of_city(city),
        """
        WITH promo AS (
            SELECT code FROM promo_codes WHERE code = %(code)s AND expires_at > now()
        ), before AS (
            SELECT rider_id, end_time FROM rides WHERE city = %(city)s AND id = %(ride_id)s
        ), applied AS (
            UPDATE rides SET promo_code = (SELECT code FROM promo)
             WHERE city = %(city)s AND id = %(ride_id)s AND rider_id = %(rider_id)s
               AND end_time IS NULL AND EXISTS (SELECT 1 FROM promo)
            RETURNING city, id, rider_id, vehicle_id, start_location, start_time, end_location,
                      end_time, promo_code
        )
        SELECT (SELECT count(*) FROM promo) AS promo_found, before.rider_id AS owner_of_ride,
               before.end_time AS ended_at, applied.*
          FROM before LEFT JOIN applied ON true
        """,
        city=city,
        ride_id=rules.check_uuid(ride_id, "ride id"),
        rider_id=rules.check_uuid(rider_id, "rider id"),
        code=code,
    )
    if not rows:
        raise errors.UnknownRide()
    row = rows[0]
    if row["id"] is not None:
        return _ride(row)
    if str(row["owner_of_ride"]) != str(rider_id):
        raise errors.NotYourRide()
    if row["ended_at"] is not None:
        raise errors.RideAlreadyEnded("promo codes apply to open rides only")
    raise errors.UnknownPromoCode()
