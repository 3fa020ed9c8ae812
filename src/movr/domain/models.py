"""SQLAlchemy 2 typed models of the MovR schema.

Every regional table carries `city` first in its primary key, as in the tutorial: the city says where a
row lives, so a lookup that names the city touches one region only. `promo_codes` is reference data,
read on the ride path and meant to be readable everywhere (GLOBAL locality).

Rides are homed in the rider's city (riders ride vehicles of their home city), so every write of the
journey touches one home; `rides.vehicle_id` has no foreign key so that a removed vehicle keeps its history.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VEHICLE_TYPES = ("bike", "scooter", "skateboard")
VEHICLE_STATUSES = ("available", "in_use")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    city: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    first_name: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    last_name: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    email: Mapped[str] = mapped_column(String(254), nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Sessions (movr.store.actions.Session): a signed session or token names the epoch it was issued in
    # and its own id; every action on the user's rows checks both against this row, in its own statement.
    # Log out everywhere bumps the epoch; log-out adds the id to ended_sessions (ids of sessions that
    # expired anyway are pruned).
    session_epoch: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    ended_sessions: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False, server_default=text("'{}'"))
    # Failed log-ins in the window that started at failed_since: read by the log-in statement itself.
    failed_logins: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    failed_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("users_username_key", "username", unique=True),
        # Usernames ignore case (movr.domain.rules.canonical_username): stored in lower case only.
        CheckConstraint("username = lower(username)", name="users_username_lower_check"),
    )


class Vehicle(Base):
    __tablename__ = "vehicles"

    city: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    date_added: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="available")
    last_location: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    color: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    brand: Mapped[str] = mapped_column(String(64), nullable=False, default="")

    __table_args__ = (
        ForeignKeyConstraint(["city", "owner_id"], ["users.city", "users.id"], ondelete="CASCADE"),
        CheckConstraint(f"status IN {VEHICLE_STATUSES!r}", name="vehicles_status_check"),
        Index("vehicles_city_status_idx", "city", "status"),
        Index("vehicles_owner_idx", "city", "owner_id"),
    )


class Ride(Base):
    __tablename__ = "rides"

    city: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    rider_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    vehicle_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    start_location: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    end_location: Mapped[str | None] = mapped_column(String(128))
    start_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    end_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    promo_code: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        ForeignKeyConstraint(["city", "rider_id"], ["users.city", "users.id"], ondelete="CASCADE"),
        Index("rides_rider_idx", "city", "rider_id", "start_time"),
        # At most one open ride per vehicle, enforced by the database whatever the race.
        Index(
            "rides_one_open_per_vehicle",
            "city",
            "vehicle_id",
            unique=True,
            postgresql_where=text("end_time IS NULL"),
        ),
        Index(
            "rides_one_open_per_rider",
            "city",
            "rider_id",
            unique=True,
            postgresql_where=text("end_time IS NULL"),
        ),
    )


class PromoCode(Base):
    __tablename__ = "promo_codes"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    discount_percent: Mapped[int] = mapped_column(Integer, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (CheckConstraint("discount_percent BETWEEN 1 AND 100", name="promo_codes_discount_check"),)


class IdempotencyKey(Base):
    """The first answer to a write sent with an `Idempotency-Key` (movr.store.actions), kept a day so that a
    retry gets it again instead of writing twice. Written in the same statement as the write, and homed
    like the row it wrote: in the city of the user, vehicle or ride (REGIONAL BY ROW)."""

    __tablename__ = "idempotency_keys"

    city: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Whose key: the requesting user's id, or "signup" for a sign-up (a key per city then).
    scope: Mapped[str] = mapped_column(String(36), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # The user the answer is about: it goes with their account.
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # The action and a digest of its input: the same key sent with another request is refused.
    request: Mapped[str] = mapped_column(String(96), nullable=False)
    answer: Mapped[dict] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())

    __table_args__ = (
        ForeignKeyConstraint(["city", "user_id"], ["users.city", "users.id"], ondelete="CASCADE"),
        Index("idempotency_keys_user_idx", "city", "user_id"),
        Index("idempotency_keys_expiry_idx", "city", "created_at"),
    )


REGIONAL_TABLES = ("users", "vehicles", "rides", "idempotency_keys")
GLOBAL_TABLES = ("promo_codes",)
