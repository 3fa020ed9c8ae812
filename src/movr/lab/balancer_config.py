"""The balancer's config (its JSON file, validated against its preset) and its pure routing decisions: where a
client is, and which region serves it. No I/O but reading the config file; movr.lab.balancer runs them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from movr.geo import Preset, PresetError, load_preset
from movr.geo.client_location import match_city, resolve
from movr.lab.layout import TOPOLOGIES


class BalancerConfigError(ValueError):
    """A balancer config that cannot be used."""


@dataclass(frozen=True)
class BalancerConfig:
    preset: Preset
    scale: float
    topology: str
    primary_region: str
    apps: dict[str, str]  # region -> app base URL, without a trailing slash
    default_city: str


def parse_config(data: Mapping[str, Any]) -> BalancerConfig:
    """Validate a config dict (the JSON file's content) against its preset."""
    if "preset" not in data:
        raise BalancerConfigError("config needs 'preset'")
    try:
        preset = load_preset(data["preset"])
    except PresetError as err:
        raise BalancerConfigError(str(err)) from None

    topology = data.get("topology", "multi")
    if topology not in TOPOLOGIES:
        raise BalancerConfigError(f"topology must be one of {TOPOLOGIES}, not {topology!r}")
    try:
        scale = float(data.get("scale", 1.0))
    except (TypeError, ValueError):
        raise BalancerConfigError(f"scale must be a number, not {data.get('scale')!r}") from None
    if scale < 0:
        raise BalancerConfigError("scale must not be negative")

    primary = data.get("primary_region") or preset.primary_region
    if primary not in preset.regions:
        raise BalancerConfigError(f"primary_region {primary!r} is not a region of preset {preset.name}")

    apps_in = data.get("apps") or {}
    if not isinstance(apps_in, Mapping):
        raise BalancerConfigError("apps must map region -> URL")
    for region in apps_in:
        if region not in preset.regions:
            raise BalancerConfigError(f"apps names {region!r}, not a region of preset {preset.name}")
    apps = {region: str(url).rstrip("/") for region, url in apps_in.items()}
    for region, url in apps.items():
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path or parts.query:
            raise BalancerConfigError(f"the app of {region} must be at http://host:port, not {url!r}")
    if topology == "single":
        # The seed article's "before": one app in the primary region serves the world.
        if primary not in apps:
            raise BalancerConfigError(f"topology single needs an app in the primary region {primary}")
        apps = {primary: apps[primary]}
    elif not apps:
        raise BalancerConfigError("apps is empty")

    default_city = data.get("default_city")
    if default_city is None:
        default_city = preset.regions[primary].cities[0]
    else:
        matched = match_city(preset, str(default_city))
        if matched is None:
            raise BalancerConfigError(f"default_city {default_city!r} is not a city of preset {preset.name}")
        default_city = matched
    return BalancerConfig(preset, scale, topology, primary, apps, default_city)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a JSON config; a relative preset path is taken relative to the config file."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise BalancerConfigError(f"{path}: config must be a JSON object")
    preset = data.get("preset")
    if isinstance(preset, str) and preset.endswith(".toml") and not Path(preset).is_absolute():
        beside = path.parent / preset
        if beside.exists():
            data["preset"] = str(beside)
    return data


# --- pure decisions -----------------------------------------------------------------------------------------


def resolve_city(preset: Preset, headers: Mapping[str, str], cookies: Mapping[str, str], default_city: str) -> str:
    """Where the client is, read as the app reads it (movr.geo.client_location), else the default city."""
    return resolve(preset, headers, cookies).city or default_city


def choose_region(preset: Preset, city: str, healthy_regions: list[str], topology: str, primary: str) -> str | None:
    """The region that serves a client in `city`: the nearest healthy one (the primary in `single`)."""
    if topology == "single":
        return primary if primary in healthy_regions else None
    if not healthy_regions:
        return None
    return preset.nearest_regions(city, list(healthy_regions))[0]
