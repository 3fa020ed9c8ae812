"""Create the MovR schema on a PostgreSQL server, from the SQLAlchemy models."""

from __future__ import annotations

import datetime as dt

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from movr.domain.models import Base

SAMPLE_PROMO_CODES = (
    ("WELCOME10", "10% off your first rides", 10),
    ("ROME2026", "Ride through Rome for less", 15),
    ("NIGHTOWL", "Late rides, lighter prices", 20),
)


def sqlalchemy_url(conninfo: str) -> str:
    """A SQLAlchemy URL (psycopg 3 driver) for a libpq conninfo or URL."""
    if conninfo.startswith("postgresql+psycopg://"):
        return conninfo
    if conninfo.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + conninfo.split("://", 1)[1]
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = params.get("user", "postgres")
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql+psycopg://{user}@{host}:{port}/{params.get('dbname', 'postgres')}"


def create_schema(conninfo: str) -> None:
    """Create every table and index (idempotent)."""
    engine = create_engine(sqlalchemy_url(conninfo), poolclass=NullPool)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


def default_promo_codes(now: dt.datetime | None = None) -> list[tuple[str, str, int, dt.datetime]]:
    expires = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(days=365)
    return [(code, text, pct, expires) for code, text, pct in SAMPLE_PROMO_CODES]
