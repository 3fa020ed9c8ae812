"""The whole MovR journey through the unchanged actions, on a real multi-region CockroachDB cluster.

Skipped unless MOVR_COCKROACH_URL names a gateway node, e.g. for `cockroach demo --global --nodes 9 --insecure`:

    MOVR_COCKROACH_URL='cockroachdb://root@127.0.0.1:26257/defaultdb?sslmode=disable' \\
        .venv/bin/pytest tests/cockroach -m cockroach

Optional: MOVR_COCKROACH_PRESET (default crdb-demo), MOVR_COCKROACH_REGION_NAMES (default "{region}",
the plain names `cockroach demo --global` uses; "gcp-{region}" on CockroachDB Cloud) and
MOVR_COCKROACH_REGION (the gateway's region; default the preset's primary region). The test renders the
placement spec into a scratch database `movr_journey` (dropped and re-created) and runs every action
through CockroachBackend.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest

from movr.domain import errors
from movr.placement import PlacementSpec, load_spec
from movr.store import actions, stats

URL = os.environ.get("MOVR_COCKROACH_URL", "")
DATABASE = "movr_journey"
PASSWORD = "correct horse battery"

pytestmark = [
    pytest.mark.cockroach,
    pytest.mark.skipif(
        not URL,
        reason="set MOVR_COCKROACH_URL to a CockroachDB gateway (e.g. of `cockroach demo --global --nodes 9`)"
        " to run the journey on CockroachDB; no CockroachDB runs here",
    ),
]


@pytest.fixture(scope="module")
def spec() -> PlacementSpec:
    spec = load_spec(
        os.environ.get("MOVR_COCKROACH_PRESET", "crdb-demo"),
        region_name_template=os.environ.get("MOVR_COCKROACH_REGION_NAMES", "{region}"),
    )
    return spec.with_changes(database=DATABASE)


@pytest.fixture(scope="module")
def database_url(spec: PlacementSpec) -> str:
    from movr.placement.apply import init_cockroach
    from movr.store.cockroach import engine_url

    init_cockroach(URL, spec, drop=True)  # what `movr db init --drop` runs: checks the cluster, then applies
    return engine_url(URL).set(database=DATABASE).render_as_string(hide_password=False)


def make_backend(spec: PlacementSpec, url: str, follower_reads: bool = False):
    from movr.store.cockroach import CockroachBackend

    region = os.environ.get("MOVR_COCKROACH_REGION") or spec.cloud_region(spec.primary_region)
    return CockroachBackend(url, spec.preset, region, follower_reads=follower_reads)


@pytest.fixture
def store(spec: PlacementSpec, database_url: str) -> Iterator:
    backend = make_backend(spec, database_url)
    backend.truncate()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    backend.load(
        "promo_codes",
        [{"code": "WELCOME10", "description": "10% off", "discount_percent": 10, "expires_at": expires}],
    )
    try:
        yield backend
    finally:
        backend.close()


def counted(fn, *args, **kwargs):
    with stats.measure() as measured:
        result = fn(*args, **kwargs)
    return result, measured.statements


def test_the_gateway_answers(store):
    assert store.ping()
    assert store.gateway_region()


def test_whole_journey_through_the_actions(store, spec):
    city = spec.preset.regions[store.region].cities[0]
    name = f"ada{uuid.uuid4().hex[:8]}"

    user, n = counted(actions.register, store, city=city, username=name, password=PASSWORD, first_name="Ada")
    assert n == 1 and user.username == name and user.city == city

    found, n = counted(actions.authenticate, store, username=name, password=PASSWORD)
    assert n == 1 and found.id == user.id
    with pytest.raises(errors.BadCredentials):
        actions.authenticate(store, username=name, password="wrong password")

    vehicle, n = counted(actions.add_vehicle, store, city=city, owner_id=user.id, type="scooter", brand="Vespa")
    assert n == 1 and vehicle.status == "available"

    listed, n = counted(actions.list_vehicles, store, city=city)
    assert n == 1 and vehicle.id in [v.id for v in listed]

    ride, n = counted(actions.start_ride, store, city=city, rider_id=user.id, rider_city=city, vehicle_id=vehicle.id)
    assert n == 1 and ride.is_open
    with pytest.raises(errors.VehicleNotAvailable):
        actions.start_ride(store, city=city, rider_id=user.id, rider_city=city, vehicle_id=vehicle.id)

    applied = actions.apply_promo_code(store, city=city, ride_id=ride.id, rider_id=user.id, code="welcome10")
    assert applied.promo_code == "WELCOME10"

    ended, n = counted(actions.end_ride, store, city=city, ride_id=ride.id, rider_id=user.id, location="Dock 4")
    assert n == 1 and not ended.is_open and ended.end_location == "Dock 4"

    rides, n = counted(actions.list_rides, store, city=city, rider_id=user.id)
    assert n == 1 and [r.id for r in rides] == [ride.id]

    _, n = counted(actions.remove_vehicle, store, city=city, vehicle_id=vehicle.id, owner_id=user.id)
    assert n == 1
    assert actions.list_user_vehicles(store, city=city, owner_id=user.id) == []

    _, n = counted(actions.remove_user, store, city=city, user_id=user.id, username=name)
    assert n == 1
    with pytest.raises(errors.UnknownUser):
        actions.get_user(store, city=city, user_id=user.id)


def test_usernames_are_unique_across_regions(store, spec):
    first, second = (spec.preset.regions[r].cities[0] for r in spec.regions[:2])
    name = f"bo{uuid.uuid4().hex[:8]}"
    actions.register(store, city=first, username=name, password=PASSWORD)
    with pytest.raises(errors.UsernameTaken):
        actions.register(store, city=second, username=name, password=PASSWORD)


def test_follower_reads_of_a_remote_city(store, spec, database_url):
    remote = next(r for r in spec.regions if r != store.region)
    city = spec.preset.regions[remote].cities[0]
    owner = actions.register(store, city=city, username=f"cy{uuid.uuid4().hex[:8]}", password=PASSWORD)
    actions.add_vehicle(store, city=city, owner_id=owner.id, type="bike")
    reader = make_backend(spec, database_url, follower_reads=True)
    try:
        # As of follower_read_timestamp(): the vehicle added a moment ago may not be visible yet.
        assert isinstance(actions.list_vehicles(reader, city=city), list)
    finally:
        reader.close()
