"""Regions, cities and the network model: where things are and how far apart they are in milliseconds.

The distance model is the one in ARCHITECTURE.md: a preset gives region-to-region RTTs, and a client city's
RTT to a region comes from great-circle distance (light in fibre ~200 km/ms, 1.5x route inflation, 2 ms
access) unless the preset overrides the pair. Where a client is (the city its request names) is read in one
place, `movr.geo.client_location`, by the app and the lab's balancer alike.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

FIBRE_KM_PER_MS = 200.0
ROUTE_INFLATION = 1.5
ACCESS_MS = 2.0
EARTH_RADIUS_KM = 6371.0


class PresetError(ValueError):
    """A preset that cannot be read or does not describe a consistent set of regions."""


@dataclass(frozen=True)
class Region:
    name: str
    location: tuple[float, float]
    cities: tuple[str, ...]


@dataclass(frozen=True)
class Preset:
    name: str
    primary_region: str
    intra_region_rtt_ms: float
    regions: dict[str, Region]
    city_locations: dict[str, tuple[float, float]]
    region_rtt: dict[frozenset[str], float]
    client_rtt_overrides: dict[tuple[str, str], float] = field(default_factory=dict)
    super_regions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    @property
    def region_names(self) -> list[str]:
        return list(self.regions)

    @property
    def cities(self) -> list[str]:
        return [city for region in self.regions.values() for city in region.cities]

    def region_of(self, city: str) -> str:
        for region in self.regions.values():
            if city in region.cities:
                return region.name
        raise PresetError(f"unknown city {city!r} in preset {self.name}")

    def is_city(self, city: str) -> bool:
        return any(city in region.cities for region in self.regions.values())

    def rtt_ms(self, a: str, b: str) -> float:
        """Round-trip time between two regions (the intra-region RTT when they are the same)."""
        if a == b:
            return self.intra_region_rtt_ms
        try:
            return self.region_rtt[frozenset((a, b))]
        except KeyError:
            raise PresetError(f"preset {self.name} has no RTT for {a}|{b}") from None

    def client_rtt_ms(self, city: str, region: str) -> float:
        """Round-trip time from a client in `city` to the front door of `region`."""
        override = self.client_rtt_overrides.get((city, region))
        if override is not None:
            return override
        km = great_circle_km(self.city_locations[city], self.regions[region].location)
        return 2 * km / FIBRE_KM_PER_MS * ROUTE_INFLATION + ACCESS_MS

    def nearest_regions(self, city: str, candidates: list[str] | None = None) -> list[str]:
        """Regions ordered by client RTT from `city`, nearest first."""
        names = candidates if candidates is not None else self.region_names
        return sorted(names, key=lambda region: self.client_rtt_ms(city, region))


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def preset_names() -> list[str]:
    folder = resources.files("movr.geo") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A packaged preset by name (`gcp-3`) or a TOML file the user wrote."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise PresetError(f"no preset file {path}")
        text, source = path.read_text(), str(path)
    else:
        resource = resources.files("movr.geo") / "presets" / f"{name_or_path}.toml"
        if not resource.is_file():
            raise PresetError(f"no preset named {name_or_path!r} (known: {', '.join(preset_names())})")
        text, source = resource.read_text(), f"preset:{name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PresetError(f"{source}: not valid TOML: {err}") from None
    return parse_preset(data, source)


def parse_preset(data: dict, source: str = "") -> Preset:
    def need(key: str):
        if key not in data:
            raise PresetError(f"{source}: missing '{key}'")
        return data[key]

    regions: dict[str, Region] = {}
    seen: dict[str, str] = {}
    for name, body in need("regions").items():
        cities = tuple(body.get("cities", ()))
        if not cities:
            raise PresetError(f"{source}: region {name} has no cities")
        for city in cities:
            if city in seen:
                raise PresetError(f"{source}: city {city!r} is in both {seen[city]} and {name}")
            seen[city] = name
        location = body.get("location")
        if not location or len(location) != 2:
            raise PresetError(f"{source}: region {name} needs location = [lat, lon]")
        regions[name] = Region(name, (float(location[0]), float(location[1])), cities)

    primary = need("primary_region")
    if primary not in regions:
        raise PresetError(f"{source}: primary_region {primary!r} is not one of its regions")

    city_locations = {city: (float(loc[0]), float(loc[1])) for city, loc in data.get("cities", {}).items()}
    for city in seen:
        if city not in city_locations:
            raise PresetError(f"{source}: city {city!r} has no coordinates in [cities]")

    region_rtt: dict[frozenset[str], float] = {}
    for pair, rtt in data.get("rtt_ms", {}).items():
        a, _, b = pair.partition("|")
        for r in (a, b):
            if r not in regions:
                raise PresetError(f"{source}: rtt_ms names unknown region {r!r}")
        if float(rtt) <= 0:
            raise PresetError(f"{source}: rtt_ms {pair} must be positive")
        region_rtt[frozenset((a, b))] = float(rtt)
    names = list(regions)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if frozenset((a, b)) not in region_rtt:
                raise PresetError(f"{source}: rtt_ms has no entry for {a}|{b}")

    overrides: dict[tuple[str, str], float] = {}
    for pair, rtt in data.get("client_rtt_ms", {}).items():
        city, _, region = pair.partition("|")
        overrides[(city, region)] = float(rtt)

    super_regions = {name: tuple(members) for name, members in data.get("super_regions", {}).items()}
    for name, members in super_regions.items():
        for r in members:
            if r not in regions:
                raise PresetError(f"{source}: super region {name} names unknown region {r!r}")

    return Preset(
        name=str(data.get("name", Path(source).stem)),
        primary_region=primary,
        intra_region_rtt_ms=float(data.get("intra_region_rtt_ms", 0.5)),
        regions=regions,
        city_locations=city_locations,
        region_rtt=region_rtt,
        client_rtt_overrides=overrides,
        super_regions=super_regions,
        source=source,
    )
