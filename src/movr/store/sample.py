"""Deterministic sample data: the same seed gives the same users, vehicles and rides.

Rows are generated as plain dicts and handed to the backend's bulk loader, which sends each row to the
server that homes it. Every sample user shares one password (salted once), so a demo can log in as
anyone; the hash is computed once because argon2 is deliberately slow.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from movr.domain.models import VEHICLE_TYPES
from movr.domain.passwords import hash_password
from movr.geo import Preset
from movr.store.schema import default_promo_codes

SAMPLE_PASSWORD = "movr-password"
FIRST_NAMES = (
    "Ada",
    "Bruno",
    "Chiara",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Keiko",
    "Luca",
    "Maya",
    "Nils",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Sami",
    "Tess",
)
LAST_NAMES = ("Rossi", "Smith", "Garcia", "Müller", "Dubois", "Kim", "Silva", "Novak", "Okafor", "Lund")
BRANDS = {
    "bike": ("Cannondale", "Trek", "Brompton"),
    "scooter": ("Xiaomi", "Segway", "Vespa"),
    "skateboard": ("Boosted", "Evolve", "Onewheel"),
}
COLORS = ("red", "blue", "green", "black", "white", "yellow")
STREETS = ("Main St", "Via del Corso", "Market St", "Rue de Rivoli", "Broadway", "Damrak", "Pike St")


@dataclass
class SampleData:
    users: list[dict] = field(default_factory=list)
    vehicles: list[dict] = field(default_factory=list)
    rides: list[dict] = field(default_factory=list)
    promo_codes: list[dict] = field(default_factory=list)

    def tables(self) -> Iterator[tuple[str, list[dict]]]:
        # Parents before children, so foreign keys hold at every step.
        yield "promo_codes", self.promo_codes
        yield "users", self.users
        yield "vehicles", self.vehicles
        yield "rides", self.rides

    @property
    def total(self) -> int:
        return sum(len(rows) for _, rows in self.tables())


def generate(
    preset: Preset, *, users: int, vehicles: int, rides: int, seed: int, password_hash: str | None = None
) -> SampleData:
    rng = random.Random(seed)

    def uid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    epoch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    data = SampleData()
    shared_hash = password_hash or hash_password(SAMPLE_PASSWORD)
    cities = preset.cities
    for number in range(users):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        data.users.append(
            {
                "city": cities[number % len(cities)],
                "id": uid(),
                "username": f"{first.lower()}{number}",
                "password_hash": shared_hash,
                "first_name": first,
                "last_name": last,
                "email": f"{first.lower()}.{number}@example.com",
                "created_at": epoch + dt.timedelta(minutes=number),
            }
        )
    users_by_city: dict[str, list[dict]] = {}
    for user in data.users:
        users_by_city.setdefault(user["city"], []).append(user)
    owners = [u for u in data.users]
    for number in range(vehicles if owners else 0):
        owner = owners[number % len(owners)]
        kind = rng.choice(VEHICLE_TYPES)
        data.vehicles.append(
            {
                "city": owner["city"],
                "id": uid(),
                "type": kind,
                "owner_id": owner["id"],
                "status": "available",
                "last_location": f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                "color": rng.choice(COLORS),
                "brand": rng.choice(BRANDS[kind]),
                "date_added": epoch + dt.timedelta(hours=number),
            }
        )
    vehicles_by_city: dict[str, list[dict]] = {}
    for vehicle in data.vehicles:
        vehicles_by_city.setdefault(vehicle["city"], []).append(vehicle)
    ride_cities = [c for c in users_by_city if c in vehicles_by_city]
    for number in range(rides if ride_cities else 0):
        city = ride_cities[number % len(ride_cities)]
        rider = rng.choice(users_by_city[city])
        vehicle = rng.choice(vehicles_by_city[city])
        start = epoch + dt.timedelta(days=rng.randint(0, 300), minutes=rng.randint(0, 1439))
        data.rides.append(
            {
                "city": city,
                "id": uid(),
                "rider_id": rider["id"],
                "vehicle_id": vehicle["id"],
                "start_location": vehicle["last_location"],
                "start_time": start,
                "end_location": f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                "end_time": start + dt.timedelta(minutes=rng.randint(3, 90)),
                "promo_code": None,
            }
        )
    data.promo_codes = [
        {"code": code, "description": text, "discount_percent": pct, "expires_at": expires}
        for code, text, pct, expires in default_promo_codes(epoch + dt.timedelta(days=365 * 5))
    ]
    return data


ProgressCallback = Callable[[int], None]


def load_sample(backend, data: SampleData, progress: ProgressCallback | None = None) -> None:
    """Replace whatever is there with the sample data."""
    backend.truncate()
    for table, rows in data.tables():
        backend.load(table, rows, progress)
