"""Every action against a real PostgreSQL server: results, domain errors, statement counts, races."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from movr.domain import errors
from movr.store import actions, stats

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


def signup(store, username: str = "ada", city: str = "rome"):
    return actions.register(store, city=city, username=username, password=PASSWORD, first_name="Ada")


def counted(fn, *args, **kwargs):
    with stats.measure() as measured:
        result = fn(*args, **kwargs)
    return result, measured.statements


def table_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("users", "vehicles", "rides")}


def test_journey_with_statement_counts(store):
    user, n = counted(signup, store)
    assert n == 1 and user.username == "ada" and user.city == "rome"

    found, n = counted(actions.authenticate, store, username="ada", password=PASSWORD)
    assert n == 1 and found.id == user.id

    vehicle, n = counted(actions.add_vehicle, store, city="rome", owner_id=user.id, type="scooter", brand="Vespa")
    assert n == 1 and vehicle.status == "available"

    listed, n = counted(actions.list_vehicles, store, city="rome")
    assert n == 1 and [v.id for v in listed] == [vehicle.id] and listed[0].owner_username == "ada"

    ride, n = counted(
        actions.start_ride, store, city="rome", rider_id=user.id, rider_city="rome", vehicle_id=vehicle.id
    )
    assert n == 1 and ride.is_open
    assert actions.list_vehicles(store, city="rome") == []

    applied, n = counted(
        actions.apply_promo_code, store, city="rome", ride_id=ride.id, rider_id=user.id, code="welcome10"
    )
    assert n == 1 and applied.promo_code == "WELCOME10"

    ended, n = counted(actions.end_ride, store, city="rome", ride_id=ride.id, rider_id=user.id, location="Piazza")
    assert n == 1 and not ended.is_open and ended.end_location == "Piazza"

    rides, n = counted(actions.list_rides, store, city="rome", rider_id=user.id)
    assert n == 1 and [r.id for r in rides] == [ride.id] and rides[0].vehicle_brand == "Vespa"

    _, n = counted(actions.remove_vehicle, store, city="rome", vehicle_id=vehicle.id, owner_id=user.id)
    assert n == 1
    assert actions.list_user_vehicles(store, city="rome", owner_id=user.id) == []

    _, n = counted(actions.remove_user, store, city="rome", user_id=user.id, username="ada")
    assert n == 1
    with pytest.raises(errors.UnknownUser):
        actions.get_user(store, city="rome", user_id=user.id)


def test_usernames_are_unique_across_cities(store, movr_dsn):
    signup(store, "ada", "rome")
    before = table_counts(movr_dsn)
    with pytest.raises(errors.UsernameTaken):
        signup(store, "ada", "boston")
    assert table_counts(movr_dsn) == before


@pytest.mark.parametrize(
    ("city", "username", "password", "error"),
    [
        ("atlantis", "bob", PASSWORD, errors.BadCity),
        ("rome", "b" * 10_000, PASSWORD, errors.InvalidInput),
        ("rome", "bad name!", PASSWORD, errors.InvalidInput),
        ("rome", "bob", "short", errors.InvalidInput),
    ],
)
def test_register_rejects_bad_input_and_writes_nothing(store, movr_dsn, city, username, password, error):
    with pytest.raises(error):
        actions.register(store, city=city, username=username, password=password)
    assert table_counts(movr_dsn)["users"] == 0


def test_bad_credentials(store):
    signup(store)
    with pytest.raises(errors.BadCredentials):
        actions.authenticate(store, username="ada", password="wrong password")
    with pytest.raises(errors.BadCredentials):
        actions.authenticate(store, username="nobody", password=PASSWORD)


def test_vehicle_rules(store, movr_dsn):
    owner = signup(store, "owner")
    other = signup(store, "other")
    with pytest.raises(errors.UnknownUser):
        actions.add_vehicle(store, city="paris", owner_id=owner.id, type="bike")  # not the owner's city
    with pytest.raises(errors.InvalidInput):
        actions.add_vehicle(store, city="rome", owner_id=owner.id, type="spaceship")
    vehicle = actions.add_vehicle(store, city="rome", owner_id=owner.id, type="bike")
    with pytest.raises(errors.NotYourVehicle):
        actions.remove_vehicle(store, city="rome", vehicle_id=vehicle.id, owner_id=other.id)
    with pytest.raises(errors.UnknownVehicle):
        actions.remove_vehicle(store, city="rome", vehicle_id=uuid.uuid4(), owner_id=owner.id)
    ride = actions.start_ride(store, city="rome", rider_id=other.id, rider_city="rome", vehicle_id=vehicle.id)
    with pytest.raises(errors.VehicleInUse):
        actions.remove_vehicle(store, city="rome", vehicle_id=vehicle.id, owner_id=owner.id)
    with pytest.raises(errors.RideNotEnded):
        actions.remove_user(store, city="rome", user_id=owner.id, username="owner")
    assert table_counts(movr_dsn) == {"users": 2, "vehicles": 1, "rides": 1}
    actions.end_ride(store, city="rome", ride_id=ride.id, rider_id=other.id)
    actions.remove_vehicle(store, city="rome", vehicle_id=vehicle.id, owner_id=owner.id)


def test_ride_rules(store, movr_dsn):
    rider = signup(store, "rider")
    thief = signup(store, "thief")
    vehicle = actions.add_vehicle(store, city="rome", owner_id=rider.id, type="scooter")
    with pytest.raises(errors.WrongCity):
        actions.start_ride(store, city="paris", rider_id=rider.id, rider_city="rome", vehicle_id=vehicle.id)
    with pytest.raises(errors.UnknownVehicle):
        actions.start_ride(store, city="rome", rider_id=rider.id, rider_city="rome", vehicle_id=uuid.uuid4())
    with pytest.raises(errors.UnknownUser):
        actions.start_ride(store, city="rome", rider_id=uuid.uuid4(), rider_city="rome", vehicle_id=vehicle.id)
    ride = actions.start_ride(store, city="rome", rider_id=rider.id, rider_city="rome", vehicle_id=vehicle.id)
    with pytest.raises(errors.VehicleNotAvailable):
        actions.start_ride(store, city="rome", rider_id=thief.id, rider_city="rome", vehicle_id=vehicle.id)
    with pytest.raises(errors.NotYourRide):
        actions.end_ride(store, city="rome", ride_id=ride.id, rider_id=thief.id)
    with pytest.raises(errors.UnknownPromoCode):
        actions.apply_promo_code(store, city="rome", ride_id=ride.id, rider_id=rider.id, code="NOPE")
    before = table_counts(movr_dsn)
    actions.end_ride(store, city="rome", ride_id=ride.id, rider_id=rider.id)
    with pytest.raises(errors.RideAlreadyEnded):
        actions.end_ride(store, city="rome", ride_id=ride.id, rider_id=rider.id)
    with pytest.raises(errors.UnknownRide):
        actions.end_ride(store, city="rome", ride_id=uuid.uuid4(), rider_id=rider.id)
    assert table_counts(movr_dsn) == before


def test_one_open_ride_per_rider(store):
    rider = signup(store, "rider")
    first = actions.add_vehicle(store, city="rome", owner_id=rider.id, type="bike")
    second = actions.add_vehicle(store, city="rome", owner_id=rider.id, type="bike")
    actions.start_ride(store, city="rome", rider_id=rider.id, rider_city="rome", vehicle_id=first.id)
    with pytest.raises(errors.RideNotEnded):
        actions.start_ride(store, city="rome", rider_id=rider.id, rider_city="rome", vehicle_id=second.id)
    assert [v.id for v in actions.list_vehicles(store, city="rome")] == [second.id]


def test_fifty_riders_race_for_ten_vehicles(store, movr_dsn):
    owner = signup(store, "owner", "boston")
    from movr.domain.passwords import hash_password

    shared_hash = hash_password(PASSWORD)
    riders = [
        actions.register(store, city="boston", username=f"rider{i}", password="", password_hash=shared_hash)
        for i in range(50)
    ]
    vehicles = [actions.add_vehicle(store, city="boston", owner_id=owner.id, type="bike") for _ in range(10)]
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        barrier.wait()
        try:
            actions.start_ride(
                store,
                city="boston",
                rider_id=riders[index].id,
                rider_city="boston",
                vehicle_id=vehicles[index % 10].id,
            )
            outcome = "won"
        except errors.VehicleNotAvailable:
            outcome = "lost"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 50
    with psycopg.connect(movr_dsn) as conn:
        open_rides = conn.execute(
            "SELECT vehicle_id, count(*) FROM rides WHERE end_time IS NULL GROUP BY vehicle_id"
        ).fetchall()
        in_use = conn.execute("SELECT count(*) FROM vehicles WHERE status = 'in_use'").fetchone()[0]
    assert all(count == 1 for _, count in open_rides)
    assert outcomes.count("won") == len(open_rides) == in_use == 10


def test_ending_a_ride_twice_at_once(store):
    rider = signup(store, "rider")
    vehicle = actions.add_vehicle(store, city="rome", owner_id=rider.id, type="bike")
    ride = actions.start_ride(store, city="rome", rider_id=rider.id, rider_city="rome", vehicle_id=vehicle.id)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def end() -> None:
        barrier.wait()
        try:
            actions.end_ride(store, city="rome", ride_id=ride.id, rider_id=rider.id)
            outcomes.append("ended")
        except errors.RideAlreadyEnded:
            outcomes.append("already")

    threads = [threading.Thread(target=end) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already", "ended"]
