"""The lab's regional backend with every region on the one test server: sign-ups claim names in every
region as in the lab, removals release them; the claims table starts and ends empty."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from movr.geo import Preset
from movr.store.regional import DIRECTORY_DDL, RegionalPostgresBackend


@contextlib.contextmanager
def one_server_regional(movr_dsn: str, preset: Preset, region: str) -> Iterator[RegionalPostgresBackend]:
    with psycopg.connect(movr_dsn, autocommit=True) as conn:
        conn.execute(DIRECTORY_DDL)
        conn.execute("TRUNCATE username_directory")
    backend = RegionalPostgresBackend.from_urls(dict.fromkeys(preset.region_names, movr_dsn), preset, region)
    try:
        yield backend
    finally:
        backend.close()
        with psycopg.connect(movr_dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE username_directory")
