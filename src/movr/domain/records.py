"""What actions return: plain, immutable records (no session, no lazy loading)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from movr.domain.rules import format_length, ride_length


@dataclass(frozen=True)
class UserRecord:
    city: str
    id: uuid.UUID
    username: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    created_at: dt.datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class VehicleRecord:
    city: str
    id: uuid.UUID
    type: str
    owner_id: uuid.UUID
    status: str
    last_location: str
    color: str
    brand: str
    date_added: dt.datetime | None = None
    owner_username: str = ""

    def as_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class RideRecord:
    city: str
    id: uuid.UUID
    rider_id: uuid.UUID
    vehicle_id: uuid.UUID
    start_location: str
    start_time: dt.datetime
    end_location: str | None = None
    end_time: dt.datetime | None = None
    promo_code: str | None = None
    vehicle_type: str = ""
    vehicle_brand: str = ""

    @property
    def is_open(self) -> bool:
        return self.end_time is None

    @property
    def length(self) -> dt.timedelta:
        return ride_length(self.start_time, self.end_time)

    @property
    def length_text(self) -> str:
        return format_length(self.length)

    def as_json(self) -> dict[str, Any]:
        data = _json(self)
        data["length_seconds"] = round(self.length.total_seconds(), 3)
        return data


@dataclass(frozen=True)
class PromoCodeRecord:
    code: str
    description: str
    discount_percent: int
    expires_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        return _json(self)


def _json(record: Any) -> dict[str, Any]:
    data = asdict(record)
    for key, value in data.items():
        if isinstance(value, uuid.UUID):
            data[key] = str(value)
        elif isinstance(value, dt.datetime):
            data[key] = value.isoformat()
    return data
