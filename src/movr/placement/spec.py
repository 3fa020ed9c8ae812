"""The placement spec: one declarative description of where MovR's data lives, for both backends.

It names the regions (from a geo preset), the primary region, the survival goal, super regions,
PLACEMENT RESTRICTED and each table's locality. `movr.placement.cockroach` renders it to CockroachDB
DDL; the lab lays its servers and standbys out from the same object.

The validator enforces the rules CockroachDB enforces, so that a spec the lab accepts is a spec
CockroachDB accepts too (law 4: one spec, two backends):

- a REGION survival goal needs at least 3 database regions;
- a super region whose rows must survive a region failure needs at least 3 regions of its own (its
  replicas are confined to it); a super region may carry an explicit ZONE goal under a REGION database
  goal, which is how a two-region super region like `europe` coexists with region survival (CockroachDB
  v26.3+, cockroachdb/cockroach#165215: the CockroachDB renderer refuses it for an older target, the lab
  realizes it on every version);
- auto-rehoming (a row moves to the region that updates it) is offered only on the tables whose updates
  say where the row is used now: `vehicles` and `rides`, not `users`.
- super regions are disjoint and name database regions only;
- PLACEMENT RESTRICTED is only available with the ZONE survival goal
  (https://www.cockroachlabs.com/docs/stable/alter-database#placement).

A spec file is TOML; see `movr/placement/specs/example.toml` and docs/cockroachdb.md.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from movr.domain.models import Base
from movr.geo import Preset, PresetError, load_preset

Locality = Literal["regional_by_row", "global", "regional_by_table"]
RegionSource = Literal["computed", "default", "rehoming"]
Survival = Literal["zone", "region"]

LOCALITIES: tuple[str, ...] = get_args(Locality)
REGION_SOURCES: tuple[str, ...] = get_args(RegionSource)
SURVIVALS: tuple[str, ...] = get_args(Survival)

DEFAULT_PRESET = "gcp-3"
DEFAULT_DATABASE = "movr"
# The offline target: the newest *released* CockroachDB version whose documented syntax the renderer
# follows. As of cockroachdb/docs src/current/_data/versions.csv and releases.yml (snapshot of
# 2026-06-12, the newest release data available here): v26.2 GA 2026-04-27 (v26.2.2, 2026-06-05);
# v26.3 has no release date (v26.3.0-alpha.1 only). `movr db init` does not use this: it asks the
# cluster. Per-super-region survival goals (ALTER DATABASE ... ALTER SUPER REGION ... SURVIVE ...)
# arrived in v26.3 (cockroachdb/cockroach#165215), so the default target refuses them.
DEFAULT_COCKROACH_VERSION = "26.2"
DEFAULT_COCKROACH_VERSION_AS_OF = "2026-06-12"
# "at least 3 regions are required for surviving a region failure" - CockroachDB's own words.
MIN_REGIONS_FOR_REGION_SURVIVAL = 3

# How a preset's region names become cluster region names (the --locality region= of the nodes).
# CockroachDB Cloud names regions after their provider (gcp-us-east1, aws-eu-central-1); a spec key
# or --region-names overrides it, e.g. "{region}" for `cockroach demo --global`.
DEFAULT_REGION_NAME_TEMPLATES = {
    "gcp-3": "gcp-{region}",
    # `cockroach demo --global` names its regions us-east1, us-west1, europe-west1: no prefix.
    "crdb-demo": "{region}",
    "ycsb-3": "gcp-{region}",
    "aws-eu-us": "aws-{region}",
}

# Auto-rehoming moves a row to the region of the gateway that updates it. It is offered only where the
# actions' updates say where the row is used now: a ride ended, a vehicle taken or returned (a test reads
# movr.store.actions to keep this true).
REHOMING_TABLES = frozenset({"vehicles", "rides"})
# Why not elsewhere. No action changes a user's home (city); a users row is updated only for log-in
# bookkeeping (failed attempts, ended sessions), so rehoming would move a user's row to wherever
# someone last tried to log in as them - an attacker's region included.
REHOMING_REFUSED_BECAUSE = {
    "users": "no action changes a user's home, and its only updates (failed log-ins, ended sessions) would"
    " move the row to wherever someone tried to log in as that user",
}

# The default layout: rows of a city live in its region; reference data is readable everywhere.
DEFAULT_LOCALITIES: dict[str, Locality] = {
    "users": "regional_by_row",
    "vehicles": "regional_by_row",
    "rides": "regional_by_row",
    # Kept with the row a write created (its city), so a retry and its first answer share a home.
    "idempotency_keys": "regional_by_row",
    "promo_codes": "global",
}

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DATABASE_RE = re.compile(r"[a-z_][a-z0-9_]*")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)")
SPEC_KEYS = frozenset(
    {
        "preset",
        "database",
        "primary_region",
        "survival",
        "placement_restricted",
        "region_name_template",
        "cockroach_version",
        "super_regions",
        "super_region_survival",
        "tables",
    }
)
TABLE_KEYS = frozenset({"locality", "region_source", "region"})


class SpecError(ValueError):
    """A placement spec that cannot be realized; the message is one line that names the rule."""


@dataclass(frozen=True)
class TablePlacement:
    """Where one table's rows live.

    - `regional_by_row`: each row has a home region, taken from `region_source`:
      `computed` from the row's city (the preset's city -> region map, as a stored computed column),
      `default` the gateway region that inserted it (CockroachDB's hidden `crdb_region`),
      `rehoming` like `default`, and an update moves the row to the updating gateway's region.
    - `global`: a copy readable locally in every region; writes pay for reaching every region.
    - `regional_by_table`: the whole table lives in `region` (the primary region when None).
    """

    table: str
    locality: Locality
    region_source: RegionSource = "computed"
    region: str | None = None


def default_tables() -> dict[str, TablePlacement]:
    return {name: TablePlacement(name, locality) for name, locality in DEFAULT_LOCALITIES.items()}


@dataclass(frozen=True)
class PlacementSpec:
    preset: Preset
    primary_region: str
    survival: Survival
    super_regions: dict[str, tuple[str, ...]]
    placement_restricted: bool
    tables: dict[str, TablePlacement]
    region_name_template: str = "{region}"
    # Explicit survival goals of single super regions (CockroachDB v26.3+); a super region not named
    # here inherits `survival`.
    super_region_survival: dict[str, Survival] = field(default_factory=dict)
    database: str = DEFAULT_DATABASE
    cockroach_version: str = DEFAULT_COCKROACH_VERSION
    source: str = ""

    @property
    def regions(self) -> list[str]:
        return self.preset.region_names

    def region_of(self, city: str) -> str:
        """The home region of rows of `city` when the region is computed from the city."""
        return self.preset.region_of(city)

    def cloud_region(self, region: str) -> str:
        """The cluster's name for a preset region, e.g. us-east1 -> gcp-us-east1."""
        return self.region_name_template.format(region=region)

    def preset_region(self, cloud_name: str) -> str:
        """The inverse of `cloud_region`; accepts a preset region name as it is."""
        if cloud_name in self.preset.regions:
            return cloud_name
        for region in self.regions:
            if self.cloud_region(region) == cloud_name:
                return region
        raise SpecError(f"{cloud_name!r} is not a region of this spec (regions: {', '.join(self.regions)})")

    def super_region_of(self, region: str) -> str | None:
        for name, members in self.super_regions.items():
            if region in members:
                return name
        return None

    def survival_of(self, region: str) -> Survival:
        """The survival goal that governs rows homed in `region` (its super region's explicit goal, if any)."""
        name = self.super_region_of(region)
        if name is not None and name in self.super_region_survival:
            return self.super_region_survival[name]
        return self.survival

    def allowed_regions(self, region: str) -> tuple[str, ...]:
        """Where replicas of rows homed in `region` may live.

        Its super region if it has one, else every region. PLACEMENT RESTRICTED (ZONE survival only)
        further keeps every replica of a regional row in its home region. GLOBAL tables are not
        affected by either: their copies live in every region.
        """
        if self.placement_restricted:
            return (region,)
        name = self.super_region_of(region)
        if name is not None:
            return self.super_regions[name]
        return tuple(self.regions)

    def table(self, name: str) -> TablePlacement:
        return self.tables[name]

    def with_changes(self, **changes: Any) -> PlacementSpec:
        spec = dataclasses.replace(self, **changes)
        validate(spec)
        return spec

    @property
    def version(self) -> tuple[int, int]:
        return parse_version(self.cockroach_version)


def parse_version(text: str) -> tuple[int, int]:
    match = _VERSION_RE.fullmatch(str(text).removeprefix("v"))
    if not match:
        raise SpecError(f"cockroach_version {text!r} is not MAJOR.MINOR (e.g. 26.3)")
    return int(match[1]), int(match[2])


def model_tables() -> dict[str, Any]:
    return dict(Base.metadata.tables)


# --- validation ----------------------------------------------------------------------------------------


def validate(spec: PlacementSpec) -> None:
    """Raise SpecError with a one-line reason if CockroachDB (or the lab) could not realize `spec`."""
    _validate_regions(spec)
    _validate_super_regions(spec)
    _validate_survival(spec)
    _validate_tables(spec)


def _validate_regions(spec: PlacementSpec) -> None:
    preset = spec.preset
    if not preset.regions:
        raise SpecError(f"preset {preset.name} has no regions")
    seen: dict[str, str] = {}
    for region in preset.regions.values():
        if not region.cities:
            raise SpecError(f"region {region.name} is empty: it has no cities, so no row could be homed there")
        for city in region.cities:
            if city in seen:
                raise SpecError(f"city {city!r} is in two regions, {seen[city]} and {region.name}")
            seen[city] = region.name
        if not _NAME_RE.fullmatch(region.name):
            raise SpecError(f"region name {region.name!r} has characters CockroachDB region names cannot carry")
    if spec.primary_region not in preset.regions:
        raise SpecError(f"unknown primary region {spec.primary_region!r} (regions: {', '.join(spec.regions)})")
    template = spec.region_name_template
    if template.count("{region}") != 1 or re.search(r"\{(?!region\})", template):
        raise SpecError(f"region_name_template {template!r} must contain {{region}} exactly once and nothing else")
    cloud = [spec.cloud_region(r) for r in spec.regions]
    for name in cloud:
        if not _NAME_RE.fullmatch(name):
            raise SpecError(f"region_name_template {template!r} makes {name!r}, not a valid region name")
    if not _DATABASE_RE.fullmatch(spec.database):
        raise SpecError(f"database name {spec.database!r} must be a lower-case SQL identifier")
    parse_version(spec.cockroach_version)


def _validate_super_regions(spec: PlacementSpec) -> None:
    owner: dict[str, str] = {}
    for name, members in spec.super_regions.items():
        if not _NAME_RE.fullmatch(name):
            raise SpecError(f"super region name {name!r} is not a valid name")
        if not members:
            raise SpecError(f"super region {name} has no regions (it needs one or more)")
        for region in members:
            if region not in spec.preset.regions:
                raise SpecError(f"super region {name} names unknown region {region!r}")
            if region in owner:
                where = "twice" if owner[region] == name else f"in both {owner[region]} and {name}"
                raise SpecError(f"region {region} is {where}: super regions must be disjoint")
            owner[region] = name
    for name, goal in spec.super_region_survival.items():
        if name not in spec.super_regions:
            raise SpecError(f"super_region_survival names unknown super region {name!r}")
        if goal not in SURVIVALS:
            raise SpecError(f"super region {name}: survival must be one of {', '.join(SURVIVALS)}, not {goal!r}")


def _validate_survival(spec: PlacementSpec) -> None:
    if spec.survival not in SURVIVALS:
        raise SpecError(f"survival must be one of {', '.join(SURVIVALS)}, not {spec.survival!r}")
    if spec.survival == "region" and len(spec.regions) < MIN_REGIONS_FOR_REGION_SURVIVAL:
        raise SpecError(
            f"survival 'region' needs at least {MIN_REGIONS_FOR_REGION_SURVIVAL} regions; "
            f"preset {spec.preset.name} has {len(spec.regions)}"
        )
    for name, members in spec.super_regions.items():
        goal = spec.super_region_survival.get(name, spec.survival)
        if goal == "region" and len(members) < MIN_REGIONS_FOR_REGION_SURVIVAL:
            explicit = name in spec.super_region_survival
            raise SpecError(
                f"super region {name} has {len(members)} regions but "
                + ("asks" if explicit else "inherits")
                + f" survival 'region': all its replicas stay inside it, and surviving a region failure "
                f"needs at least {MIN_REGIONS_FOR_REGION_SURVIVAL} regions; give it an explicit zone goal "
                f'([super_region_survival] {name} = "zone", CockroachDB v26.3+), add regions to it, '
                "drop super regions (--no-super-regions) or survive zone failures"
            )
    goals = {spec.survival, *spec.super_region_survival.values()}
    if spec.placement_restricted and "region" in goals:
        raise SpecError(
            "PLACEMENT RESTRICTED is only available with the zone survival goal "
            "(it removes the non-voting replicas a region survival goal places in other regions)"
        )


def _validate_tables(spec: PlacementSpec) -> None:
    known = model_tables()
    for name, placement in spec.tables.items():
        if name not in known:
            raise SpecError(f"unknown table {name!r} (MovR tables: {', '.join(sorted(known))})")
        if placement.table != name:
            raise SpecError(f"table entry {name!r} holds the placement of {placement.table!r}")
        if placement.locality not in LOCALITIES:
            raise SpecError(f"table {name}: unknown locality {placement.locality!r} (one of {', '.join(LOCALITIES)})")
        if placement.region_source not in REGION_SOURCES:
            raise SpecError(
                f"table {name}: unknown region_source {placement.region_source!r} (one of {', '.join(REGION_SOURCES)})"
            )
        if placement.locality == "regional_by_table":
            if placement.region is not None and placement.region not in spec.preset.regions:
                raise SpecError(f"table {name}: regional_by_table names unknown region {placement.region!r}")
        elif placement.region is not None:
            raise SpecError(f"table {name}: 'region' applies to regional_by_table only, not {placement.locality}")
        if (
            placement.locality == "regional_by_row"
            and placement.region_source == "rehoming"
            and name not in REHOMING_TABLES
        ):
            because = REHOMING_REFUSED_BECAUSE.get(name, f"no MovR action updates a {name} row, so it would never fire")
            raise SpecError(
                f"table {name}: auto-rehoming is not offered here: {because}; use region_source 'computed'"
                " (home by city) or 'default' (home where inserted)"
            )
        if (
            placement.locality == "regional_by_row"
            and placement.region_source == "computed"
            and "city" not in known[name].columns
        ):
            raise SpecError(f"table {name}: region_source 'computed' needs a city column, and {name} has none")
    missing = sorted(set(known) - set(spec.tables))
    if missing:
        raise SpecError(f"no placement for table(s) {', '.join(missing)}")


# --- loading ---------------------------------------------------------------------------------------------


def load_spec(
    preset: str | Path | Preset | None = DEFAULT_PRESET,
    spec_file: Path | None = None,
    *,
    survival: Survival | None = None,
    primary_region: str | None = None,
    super_regions: bool | None = None,
    placement_restricted: bool | None = None,
    region_name_template: str | None = None,
    cockroach_version: str | None = None,
) -> PlacementSpec:
    """A validated spec: the preset's defaults, then the spec file, then these overrides.

    `preset` may be None (take the spec file's `preset`, else gcp-3). `super_regions=False` switches
    the preset's (and the file's) super regions off.

    A REGION survival goal with a super region of fewer than 3 regions is settled the way CockroachDB
    allows: when the spec does not name that super region's goal, it gets an explicit ZONE goal (its
    rows survive zone failures, every other row survives region failures). The lab realizes that on any
    version; CockroachDB needs v26.3+, which the renderer checks against its target (an older target is
    refused there, before any statement, with the alternatives).
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if spec_file is not None:
        data, source = _read_spec_file(Path(spec_file)), str(spec_file)

    preset_obj = _resolve_preset(preset, data.get("preset"), source)
    spec = PlacementSpec(
        preset=preset_obj,
        primary_region=preset_obj.primary_region,
        survival="zone",
        super_regions=dict(preset_obj.super_regions),
        placement_restricted=False,
        tables=default_tables(),
        region_name_template=DEFAULT_REGION_NAME_TEMPLATES.get(preset_obj.name, "{region}"),
        source=source,
    )
    spec = _apply_file(spec, data, source)

    changes: dict[str, Any] = {}
    if survival is not None:
        changes["survival"] = survival
    if primary_region is not None:
        changes["primary_region"] = primary_region
    if super_regions is False:
        changes["super_regions"] = {}
        changes["super_region_survival"] = {}
    if placement_restricted is not None:
        changes["placement_restricted"] = bool(placement_restricted)
    if region_name_template is not None:
        changes["region_name_template"] = region_name_template
    if cockroach_version is not None:
        changes["cockroach_version"] = str(cockroach_version)
    spec = dataclasses.replace(spec, **changes)
    spec = settle_small_super_regions(spec)
    validate(spec)
    return spec


def settle_small_super_regions(spec: PlacementSpec) -> PlacementSpec:
    """Give super regions too small for a REGION goal an explicit ZONE goal (CockroachDB v26.3+)."""
    if spec.survival != "region":
        return spec
    goals = dict(spec.super_region_survival)
    for name, members in spec.super_regions.items():
        if name not in goals and len(members) < MIN_REGIONS_FOR_REGION_SURVIVAL:
            goals[name] = "zone"
    return dataclasses.replace(spec, super_region_survival=goals)


def _read_spec_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"no spec file {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(SPEC_KEYS))})")
    return data


def _resolve_preset(preset: str | Path | Preset | None, from_file: Any, source: str) -> Preset:
    if isinstance(preset, Preset):
        if from_file is not None and str(from_file) != preset.name:
            raise SpecError(f"{source} names preset {from_file!r} but preset {preset.name!r} was given")
        return preset
    wanted = preset
    if from_file is not None:
        if preset not in (None, DEFAULT_PRESET) and str(preset) != str(from_file):
            raise SpecError(f"{source} names preset {from_file!r} but preset {str(preset)!r} was given")
        wanted = from_file
    try:
        return load_preset(wanted or DEFAULT_PRESET)
    except PresetError as err:
        raise SpecError(str(err)) from None


def _apply_file(spec: PlacementSpec, data: dict[str, Any], source: str) -> PlacementSpec:
    changes: dict[str, Any] = {}
    for key in ("primary_region", "survival", "region_name_template", "cockroach_version", "database"):
        if key in data:
            changes[key] = str(data[key])
    if "placement_restricted" in data:
        if not isinstance(data["placement_restricted"], bool):
            raise SpecError(f"{source}: placement_restricted must be true or false")
        changes["placement_restricted"] = data["placement_restricted"]
    if "super_regions" in data:
        members_of = _as_table(data["super_regions"], f"{source}: [super_regions]")
        changes["super_regions"] = {
            str(name): tuple(str(r) for r in _as_list(members, f"{source}: super region {name}"))
            for name, members in members_of.items()
        }
    if "super_region_survival" in data:
        goals = _as_table(data["super_region_survival"], f"{source}: [super_region_survival]")
        changes["super_region_survival"] = {str(k): str(v) for k, v in goals.items()}
    if "tables" in data:
        tables = dict(spec.tables)
        for name, body in _as_table(data["tables"], f"{source}: [tables]").items():
            if not isinstance(body, dict):
                raise SpecError(f"{source}: [tables.{name}] must be a table with a locality")
            unknown = sorted(set(body) - TABLE_KEYS)
            if unknown:
                raise SpecError(f"{source}: [tables.{name}] has unknown key(s) {', '.join(unknown)}")
            base = tables.get(name, TablePlacement(name, "regional_by_row"))
            region = body.get("region", base.region)
            tables[name] = TablePlacement(
                table=name,
                locality=str(body.get("locality", base.locality)),  # type: ignore[arg-type]
                region_source=str(body.get("region_source", base.region_source)),  # type: ignore[arg-type]
                region=None if region is None else str(region),
            )
        changes["tables"] = tables
    return dataclasses.replace(spec, **changes)


def _as_table(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{what} must be a table of name = value")
    return value


def _as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"{what} must be a list of regions")
    return value
