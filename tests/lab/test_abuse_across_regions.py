"""Across regions on the lab's regional backend: failed log-ins count on the user's row in its home region
wherever they land, and usernames that differ only in case meet in one directory region.

The coordinators are backends in the test process that reach every server through one region's app links,
as that region's app server does (as in test_claims_races.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labkit import app_backend

from movr.domain import errors
from movr.geo import load_preset
from movr.lab.state import LabState
from movr.store import actions, stats
from movr.store.regional import RegionalPostgresBackend

pytestmark = pytest.mark.lab

PRESET = load_preset("gcp-3")
ROME, NEW_YORK = "europe-west1", "us-east1"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def lab(lab_factory) -> LabState:
    return lab_factory("multi")


@pytest.fixture(scope="module")
def backends(lab: LabState) -> Iterator[dict[str, RegionalPostgresBackend]]:
    made = {region: app_backend(lab, region) for region in (ROME, NEW_YORK)}
    yield made
    for backend in made.values():
        backend.close()


def test_failed_log_ins_count_in_the_home_region_wherever_they_land(backends) -> None:
    rome, new_york = backends[ROME], backends[NEW_YORK]
    actions.register(rome, city="rome", username="greta", password=PASSWORD)
    for attempt in range(actions.DEFAULT_LOGIN_LIMIT.failures):
        store = (rome, new_york)[attempt % 2]
        with stats.measure() as measured, pytest.raises(errors.BadCredentials):
            actions.authenticate(store, username="Greta", password="not the password")
        assert ROME in measured.regions  # from New York: the claim names Rome, the row and the count are there
        if store is rome:
            # The row with its local claim (one round trip), then the count: all local.
            assert measured.regions == {ROME} and measured.statements == 3
    for store in (rome, new_york):
        with stats.measure() as measured, pytest.raises(errors.TooManyAttempts):
            actions.authenticate(store, username="greta", password=PASSWORD)
        assert measured.cpu_seconds == 0  # refused before any password check
    actions.register(new_york, city="new york", username="hiro", password=PASSWORD)
    assert actions.authenticate(rome, username="HIRO", password=PASSWORD).username == "hiro"


def test_a_name_in_another_case_meets_the_same_claims_in_any_region(backends, lab: LabState) -> None:
    rome, new_york = backends[ROME], backends[NEW_YORK]
    created = actions.register(rome, city="rome", username="Mallory", password=PASSWORD)
    assert created.username == "mallory"
    with pytest.raises(errors.UsernameTaken):
        actions.register(new_york, city="new york", username="mALLORY", password=PASSWORD)
    assert actions.authenticate(new_york, username="MALLORY", password=PASSWORD).id == created.id
