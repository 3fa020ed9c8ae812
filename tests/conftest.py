"""Shared fixtures: one embedded PostgreSQL server per test session, started and always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from movr.geo import Preset, load_preset

FAST_TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@pytest.fixture(scope="session")
def preset() -> Preset:
    return load_preset("gcp-3")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from movr.lab.pgserver import running_server

    base: Path = tmp_path_factory.mktemp("pg")
    with running_server(base, "test", settings=FAST_TEST_SETTINGS) as server:
        yield server


@pytest.fixture(scope="session")
def movr_dsn(pg_server) -> str:
    from movr.store.schema import create_schema

    pg_server.create_database("movr")
    dsn = pg_server.dsn("movr")
    create_schema(dsn)
    return dsn


@pytest.fixture
def store(movr_dsn: str, preset: Preset) -> Iterator:
    """A backend on an emptied database that holds only the sample promo codes."""
    from movr.store.backend import PostgresBackend
    from movr.store.sample import SampleData, load_sample
    from movr.store.schema import default_promo_codes

    backend = PostgresBackend(movr_dsn, preset)
    promos = [
        {"code": c, "description": d, "discount_percent": p, "expires_at": e} for c, d, p, e in default_promo_codes()
    ]
    load_sample(backend, SampleData(promo_codes=promos))
    try:
        yield backend
    finally:
        backend.close()
