"""Build the backend an app server should use, from a URL or the lab's per-region routes.

- `postgresql://...`  one PostgreSQL server homes everything (PostgresBackend)
- `cockroachdb://...` a CockroachDB cluster's gateway in this region (CockroachBackend)
- a mapping region -> URL: the lab's region servers, reached through links (RegionalPostgresBackend)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from movr.domain.errors import ConfigError
from movr.geo import Preset, load_preset
from movr.store.backend import Backend, PostgresBackend
from movr.store.cockroach import CockroachBackend
from movr.store.regional import RegionalPostgresBackend


def make_backend(
    preset: Preset,
    region: str | None = None,
    *,
    database_url: str | None = None,
    region_urls: Mapping[str, str] | None = None,
    wan: bool = False,
    follower_reads: bool = False,
    pool_timeout: float | None = None,
    directory_regions: list[str] | None = None,
) -> Backend:
    region = region or preset.primary_region
    if region_urls:
        return RegionalPostgresBackend.from_urls(
            dict(region_urls), preset, region, pool_timeout=pool_timeout, directory_regions=directory_regions
        )
    if not database_url:
        raise ConfigError("set MOVR_DATABASE_URL (or MOVR_REGION_DATABASE_URLS for the lab)")
    if database_url.startswith("cockroachdb"):
        return CockroachBackend(database_url, preset, region, follower_reads=follower_reads)
    if database_url.startswith(("postgresql", "postgres")) or "=" in database_url:
        return _postgres_backend(database_url, preset, region, wan=wan)
    raise ConfigError(f"unsupported database URL scheme in {database_url.split('://')[0]!r}")


def _postgres_backend(url: str, preset: Preset, region: str, *, wan: bool) -> Backend:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    return PostgresBackend(conninfo, preset, region, wan=wan)


def backend_from_env(env: Mapping[str, str] | None = None) -> Backend:
    """MOVR_PRESET, MOVR_REGION, MOVR_DATABASE_URL / MOVR_REGION_DATABASE_URLS, MOVR_DATABASE_WAN,
    MOVR_FOLLOWER_READS; for lab region servers also MOVR_POOL_TIMEOUT (seconds) and MOVR_DIRECTORY_REGIONS
    (a JSON list), which labs with a survival goal or data domiciling set."""
    env = os.environ if env is None else env
    preset = load_preset(env.get("MOVR_PRESET", "gcp-3"))
    region = env.get("MOVR_REGION") or preset.primary_region
    database_url = env.get("MOVR_DATABASE_URL", "")
    # A CockroachDB app server may name its region as the cluster does (gcp-us-east1); its backend maps it.
    if region not in preset.regions and not database_url.startswith("cockroachdb"):
        raise ConfigError(f"MOVR_REGION {region!r} is not a region of preset {preset.name}")
    region_urls = None
    if env.get("MOVR_REGION_DATABASE_URLS"):
        try:
            region_urls = json.loads(env["MOVR_REGION_DATABASE_URLS"])
        except json.JSONDecodeError as err:
            raise ConfigError(f"MOVR_REGION_DATABASE_URLS is not JSON: {err}") from None
    extra: dict = {}
    if env.get("MOVR_POOL_TIMEOUT"):
        try:
            extra["pool_timeout"] = float(env["MOVR_POOL_TIMEOUT"])
        except ValueError:
            raise ConfigError(f"MOVR_POOL_TIMEOUT {env['MOVR_POOL_TIMEOUT']!r} is not a number of seconds") from None
    if env.get("MOVR_DIRECTORY_REGIONS"):
        try:
            extra["directory_regions"] = list(json.loads(env["MOVR_DIRECTORY_REGIONS"]))
        except (json.JSONDecodeError, TypeError) as err:
            raise ConfigError(f"MOVR_DIRECTORY_REGIONS is not a JSON list: {err}") from None
    return make_backend(
        preset,
        region,
        database_url=database_url or None,
        region_urls=region_urls,
        wan=env.get("MOVR_DATABASE_WAN", "") in ("1", "true", "yes"),
        follower_reads=env.get("MOVR_FOLLOWER_READS", "") in ("1", "true", "yes"),
        **extra,
    )
