"""Each action's statement count and latency on one local server: the foundation's report card.

It runs the journey's actions for fresh users, many times, and reports per action the statements it
sent (counted by the store, law 2) and its median / p95 latency on this machine with no distance.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from rich.progress import Progress

from movr.domain.passwords import hash_password
from movr.store import actions, stats
from movr.store.backend import Backend

PASSWORD = "demo-password-1"


@dataclass
class ActionFigures:
    action: str
    statements: int
    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def measure_actions(store: Backend, iterations: int = 50, progress: Progress | None = None) -> list[ActionFigures]:
    samples: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, set[int]] = defaultdict(set)
    city = store.preset.regions[store.region].cities[0]
    # Hashing is deliberately slow; sign-ups here reuse one hash so the figures show the database.
    password_hash = hash_password(PASSWORD)

    def timed(name: str, fn: Callable[[], object]) -> object:
        with stats.measure() as measured:
            started = time.perf_counter()
            result = fn()
            samples[name].append((time.perf_counter() - started) * 1000)
        counts[name].add(measured.statements)
        return result

    task = progress.add_task("actions", total=iterations) if progress else None
    run_id = uuid.uuid4().hex[:6]
    for number in range(iterations):
        _one_journey(store, city, f"bench{run_id}{number}", password_hash, timed)
        if progress and task is not None:
            progress.advance(task)
    # Authentication verifies a real argon2 hash: measured separately, fewer times.
    user = actions.register(store, city=city, username=f"auth{run_id}", password=PASSWORD)
    for _ in range(max(3, iterations // 10)):
        timed("authenticate", lambda: actions.authenticate(store, username=user.username, password=PASSWORD))
    actions.remove_user(store, city=city, user_id=user.id, username=user.username)
    return [ActionFigures(name, max(counts[name]), values) for name, values in samples.items()]


def _one_journey(store: Backend, city: str, username: str, password_hash: str, timed: Callable) -> None:
    user = timed(
        "register",
        lambda: actions.register(store, city=city, username=username, password="", password_hash=password_hash),
    )
    timed("get_user", lambda: actions.get_user(store, city=city, user_id=user.id))
    vehicle = timed("add_vehicle", lambda: actions.add_vehicle(store, city=city, owner_id=user.id, type="bike"))
    timed("list_vehicles", lambda: actions.list_vehicles(store, city=city, limit=25))
    timed("list_users", lambda: actions.list_users(store, city=city, limit=25))
    ride = timed(
        "start_ride",
        lambda: actions.start_ride(store, city=city, rider_id=user.id, rider_city=city, vehicle_id=vehicle.id),
    )
    timed("list_promo_codes", lambda: actions.list_promo_codes(store))
    timed(
        "apply_promo_code",
        lambda: actions.apply_promo_code(store, city=city, ride_id=ride.id, rider_id=user.id, code="WELCOME10"),
    )
    timed("end_ride", lambda: actions.end_ride(store, city=city, ride_id=ride.id, rider_id=user.id))
    timed("list_rides", lambda: actions.list_rides(store, city=city, rider_id=user.id))
    timed("remove_vehicle", lambda: actions.remove_vehicle(store, city=city, vehicle_id=vehicle.id, owner_id=user.id))
    timed("remove_user", lambda: actions.remove_user(store, city=city, user_id=user.id, username=user.username))
