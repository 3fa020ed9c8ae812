"""Promo codes: GLOBAL reference data, read locally everywhere; applying one to an open ride."""

from __future__ import annotations

import datetime as dt
import uuid

from movr.domain import errors, rules
from movr.domain.records import PromoCodeRecord, RideRecord
from movr.store.actions._run import Session, changed_ride, known_city, run_in_city, run_statement, session_params
from movr.store.actions._sql import LIVE, RIDE_COLUMNS, UNIQUE_VIOLATION
from movr.store.backend import Backend
from movr.store.transaction import sqlstate_of
from movr.store.work import Home


def list_promo_codes(store: Backend) -> list[PromoCodeRecord]:
    rows = run_statement(
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
        rows = run_statement(
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
    city = known_city(store, city)
    code = rules.check_text(code, "promo code", 32, required=True).upper()
    sql = f"""
        WITH {LIVE}, promo AS (
            SELECT code FROM promo_codes WHERE code = %(code)s AND expires_at > now()
        ), before AS (
            SELECT rider_id, end_time FROM rides WHERE city = %(city)s AND id = %(ride_id)s
        ), applied AS (
            UPDATE rides SET promo_code = (SELECT code FROM promo)
             WHERE city = %(city)s AND id = %(ride_id)s AND rider_id = %(rider_id)s
               AND end_time IS NULL AND EXISTS (SELECT 1 FROM promo) AND (SELECT ok FROM live)
            RETURNING {RIDE_COLUMNS}
        )
        SELECT live.ok AS session_live, (SELECT count(*) FROM promo) AS promo_found,
               before.rider_id AS owner_of_ride, before.end_time AS ended_at, applied.*
          FROM live LEFT JOIN before ON true LEFT JOIN applied ON true
        """
    params = {
        "ride_id": rules.check_uuid(ride_id, "ride id"),
        "rider_id": rules.check_uuid(rider_id, "rider id"),
        "code": code,
        **session_params(session, city),
    }
    row = run_in_city(store, "apply_promo_code", city, sql, **params)[0]
    ride = changed_ride(row, params["rider_id"])
    if ride is not None:
        return ride
    if row["ended_at"] is not None:
        raise errors.RideAlreadyEnded("promo codes apply to open rides only")
    raise errors.UnknownPromoCode()
