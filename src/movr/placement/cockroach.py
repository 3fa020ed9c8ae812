"""Render a placement spec to CockroachDB multi-region DDL (dbinit.sql).

Each template below follows CockroachDB's documentation; the page is cited beside it and in a comment
above the statement it renders, so a reader can check the one against the other. Columns, keys,
foreign keys, checks and indexes come from the SQLAlchemy models (movr.domain.models), compiled with
the PostgreSQL dialect: the lab's schema and CockroachDB's are the same tables, and only the
multi-region clauses differ.

The order of the script matters:
1. the database with its regions (survival ZONE, the default, for now);
2. super regions, and the explicit survival goal of any super region too small for the database goal;
3. the database survival goal - after step 2, because CockroachDB rejects a REGION goal while a
   super region of fewer than 3 regions would inherit it;
4. PLACEMENT RESTRICTED (ZONE survival only);
5. the tables with their localities, then their indexes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from sqlalchemy import Index, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex

from movr.domain.models import Base
from movr.placement.spec import PlacementSpec, SpecError, TablePlacement, validate

# Each URL is the documentation page of the clause rendered next to it.
DOC_CREATE_DATABASE = "https://www.cockroachlabs.com/docs/stable/create-database"
DOC_SURVIVAL = "https://www.cockroachlabs.com/docs/stable/multiregion-survival-goals"
# Per-super-region survival goals are not in CockroachDB's documentation yet (cockroachdb/docs as of
# 2026-06-12); the pull request that added them states the syntax and the version (v26.3.0).
DOC_SUPER_REGION_SURVIVAL = "https://github.com/cockroachdb/cockroach/pull/165215"
# Before v26.2 a super region's zone configs left some replicas unconstrained (fixed in v26.2.0).
DOC_SUPER_REGION_REPLICA_FIX = "https://github.com/cockroachdb/cockroach/pull/164285"
SUPER_REGION_REPLICAS_CONFINED_SINCE = (26, 2)
DOC_ENABLE_SUPER_REGIONS = "https://www.cockroachlabs.com/docs/stable/alter-database#enable-super-regions"
DOC_ADD_SUPER_REGION = "https://www.cockroachlabs.com/docs/stable/alter-database#add-super-region"
DOC_PLACEMENT = "https://www.cockroachlabs.com/docs/stable/alter-database#placement"
DOC_TABLE_LOCALITIES = "https://www.cockroachlabs.com/docs/stable/table-localities"
DOC_RBR_AS = "https://www.cockroachlabs.com/docs/stable/alter-table#set-the-table-locality-to-regional-by-row"
DOC_REHOMING = "https://www.cockroachlabs.com/docs/stable/alter-table#turn-on-auto-rehoming-for-regional-by-row-tables"
DOC_RBR_INDEXES = "https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables"
DOC_SET_VARS = "https://www.cockroachlabs.com/docs/stable/set-vars"

# The stored computed region column of the domiciling article (004) and of the ALTER TABLE docs.
REGION_COLUMN = "region"
# CockroachDB's own name for the hidden home-region column of a REGIONAL BY ROW table.
CRDB_REGION_COLUMN = "crdb_region"
REGION_TYPE = "crdb_internal_region"

# The first release that has each feature; the target version must be at least this.
FEATURE_SINCE = {
    "multi-region databases": (21, 1),
    "auto-rehoming (ON UPDATE rehome_row())": (21, 2),
    "PLACEMENT RESTRICTED": (21, 2),
    "super regions": (22, 1),
    "per-super-region survival goals": (26, 3),
}
# What to do instead when the target lacks a feature (per-super-region goals have their own, below).
FEATURE_ALTERNATIVES = {
    "multi-region databases": "upgrade the cluster",
    "auto-rehoming (ON UPDATE rehome_row())": "use region_source 'computed' or 'default', or upgrade the cluster",
    "PLACEMENT RESTRICTED": "use --placement-default, or upgrade the cluster",
    "super regions": "use --no-super-regions, or upgrade the cluster",
}

_DIALECT = postgresql.dialect()
_CITY_LIST_WIDTH = 96
_COMMENT_WIDTH = 110


@dataclass(frozen=True)
class Step:
    """One statement of dbinit.sql and the comment that says why it is there."""

    sql: str
    why: str
    doc: str


def render_statements(spec: PlacementSpec) -> list[str]:
    """The statements of dbinit.sql, in order, without comments or semicolons (for `movr db init`)."""
    return [step.sql for step in render_steps(spec)]


def render_cockroach(spec: PlacementSpec) -> str:
    """The whole dbinit.sql: a header, then each statement under its reason and documentation page."""
    version = ".".join(map(str, spec.version))
    super_regions = (
        ", ".join(f"{name} = {' + '.join(members)}" for name, members in spec.super_regions.items()) or "none"
    )
    lines = [
        "-- MovR dbinit.sql for CockroachDB, rendered by `movr db render --target cockroach`.",
        f"-- Spec: {spec.source or 'defaults'}; preset {spec.preset.name}; primary region {spec.primary_region};",
        f"--   survival {spec.survival}; super regions {super_regions};"
        f" placement {'restricted' if spec.placement_restricted else 'default'}.",
        f"-- Target: CockroachDB v{version}. Cluster region names: {spec.region_name_template}"
        " (each node's --locality region=...).",
        "-- Apply with `movr db init --url cockroachdb://...` or `cockroach sql --url ... -f dbinit.sql`",
        "-- (one session: the SET statements below hold for the statements after them).",
    ]
    for step in render_steps(spec):
        lines.append("")
        for paragraph in step.why.splitlines():
            lines.extend(f"-- {line}" for line in textwrap.wrap(paragraph, _COMMENT_WIDTH, break_on_hyphens=False))
        lines.append(f"-- {step.doc}")
        lines.append(f"{step.sql};")
    return "\n".join(lines) + "\n"


def render_steps(spec: PlacementSpec) -> list[Step]:
    validate(spec)
    _check_version(spec)
    steps = _database_steps(spec)
    steps.append(
        Step(
            f"SET database = {spec.database}",
            "Create the tables in the new database (USE is CockroachDB's alias for this).",
            DOC_SET_VARS,
        )
    )
    for table in Base.metadata.sorted_tables:
        steps.extend(_table_steps(spec, table, spec.tables[table.name]))
    return steps


# --- database ----------------------------------------------------------------------------------------


def _database_steps(spec: PlacementSpec) -> list[Step]:
    db = spec.database
    primary = _quote(spec.cloud_region(spec.primary_region))
    others = ", ".join(_quote(spec.cloud_region(r)) for r in spec.regions if r != spec.primary_region)
    # https://www.cockroachlabs.com/docs/stable/create-database - CREATE DATABASE ... PRIMARY REGION ... REGIONS ...
    create = f"CREATE DATABASE {db} PRIMARY REGION {primary}" + (f" REGIONS {others}" if others else "")
    steps = [
        Step(
            create,
            "The database and its regions; every table of a multi-region database is homed in them.",
            DOC_CREATE_DATABASE,
        )
    ]

    if spec.super_regions:
        steps.append(
            Step(
                "SET enable_super_regions = 'on'",
                "Super regions are a preview feature: enable them for this session.",
                DOC_ENABLE_SUPER_REGIONS,
            )
        )
        for name, members in spec.super_regions.items():
            values = ", ".join(_quote(spec.cloud_region(r)) for r in members)
            # https://www.cockroachlabs.com/docs/stable/alter-database#add-super-region
            #   ALTER DATABASE db ADD SUPER REGION "name" VALUES "r1", "r2"
            why = f"Super region {name}: every replica of rows homed in {', '.join(members)} stays in it"
            why += " (data domiciling)."
            doc = DOC_ADD_SUPER_REGION
            if spec.version < SUPER_REGION_REPLICAS_CONFINED_SINCE:
                why += (
                    f" Caveat for v{spec.cockroach_version}: before v26.2.0 CockroachDB's super region zone"
                    " configs left some replicas unconstrained, free to be placed outside the super region"
                    " (cockroachdb/cockroach#164285); check SHOW ZONE CONFIGURATIONS, or run v26.2+."
                )
                doc = DOC_SUPER_REGION_REPLICA_FIX
            steps.append(Step(f"ALTER DATABASE {db} ADD SUPER REGION {_quote(name)} VALUES {values}", why, doc))
        for name, goal in spec.super_region_survival.items():
            members = spec.super_regions[name]
            why = f"Super region {name} keeps an explicit {goal} survival goal"
            if goal == "zone" and spec.survival == "region":
                why += (
                    f": with {len(members)} regions it cannot survive a region failure (CockroachDB: a super"
                    " region with fewer than 3 regions cannot inherit a REGION survival goal), so its rows"
                    " survive zone failures while every other row survives region failures."
                )
            else:
                why += ", unaffected by later changes of the database goal."
            # https://github.com/cockroachdb/cockroach/pull/165215 (v26.3):
            #   ALTER DATABASE db ALTER SUPER REGION "name" SURVIVE {ZONE|REGION} FAILURE
            steps.append(
                Step(
                    f"ALTER DATABASE {db} ALTER SUPER REGION {_quote(name)} SURVIVE {goal.upper()} FAILURE",
                    why,
                    DOC_SUPER_REGION_SURVIVAL,
                )
            )

    # https://www.cockroachlabs.com/docs/stable/multiregion-survival-goals - ALTER DATABASE db SURVIVE ... FAILURE
    survival_why = {
        "zone": "Survive the loss of a zone: 3 voting replicas in each row's home region (the default, stated).",
        "region": "Survive the loss of a region: 5 replicas, a quorum of 3 spread over regions; writes pay"
        " a round trip to the nearest other region.",
    }[spec.survival]
    steps.append(Step(f"ALTER DATABASE {db} SURVIVE {spec.survival.upper()} FAILURE", survival_why, DOC_SURVIVAL))

    if spec.placement_restricted:
        steps.append(
            Step(
                "SET enable_multiregion_placement_policy = 'on'",
                "PLACEMENT RESTRICTED is behind this session setting.",
                DOC_PLACEMENT,
            )
        )
        # https://www.cockroachlabs.com/docs/stable/alter-database#placement - ALTER DATABASE db PLACEMENT RESTRICTED
        steps.append(
            Step(
                f"ALTER DATABASE {db} PLACEMENT RESTRICTED",
                "Regional rows keep every replica in their home region (no non-voting replicas elsewhere,"
                " so no fast stale reads there); GLOBAL tables still live in every region.",
                DOC_PLACEMENT,
            )
        )
    return steps


# --- tables ------------------------------------------------------------------------------------------


def _table_steps(spec: PlacementSpec, table: Table, placement: TablePlacement) -> list[Step]:
    compiler = _DIALECT.ddl_compiler(_DIALECT, None)
    body = [compiler.get_column_specification(column) for column in table.columns]
    extra, locality, doc, why = _locality(spec, table, placement)
    body.extend(extra)
    constraints = compiler.create_table_constraints(table)
    body.extend(part for part in constraints.split(", \n\t") if part)
    create = f"CREATE TABLE {table.name} (\n" + ",\n".join(f"    {line}" for line in body) + f"\n) {locality}"
    steps = [Step(create, why, doc)]
    for index in sorted(table.indexes, key=lambda i: i.name or ""):
        sql = str(CreateIndex(index).compile(dialect=_DIALECT)).strip()
        steps.append(_index_step(sql, index, placement))
    return steps


def _index_step(sql: str, index: Index, placement: TablePlacement) -> Step:
    if placement.locality != "regional_by_row":
        return Step(sql, f"Index {index.name}" + (" (unique)." if index.unique else "."), DOC_TABLE_LOCALITIES)
    why = f"Index {index.name}: CockroachDB partitions it by the row's region too"
    if index.unique:
        # A UNIQUE index of an RBR table that leaves the region column out still means "unique on these
        # columns everywhere": the optimizer adds uniqueness checks (docs: indexes on RBR tables).
        local = placement.region_source == "computed" and "city" in index.columns
        why += "; its uniqueness still holds across every region" + (
            " (checked in the home region alone: the region is computed from city, which the index names)."
            if local
            else " (checked in every region at insert)."
        )
    else:
        why += "."
    return Step(sql, why, DOC_RBR_INDEXES)


def _locality(spec: PlacementSpec, table: Table, placement: TablePlacement) -> tuple[list[str], str, str, str]:
    """Extra column definitions, the LOCALITY clause, its documentation page and the reason."""
    name = table.name
    if placement.locality == "global":
        # https://www.cockroachlabs.com/docs/stable/table-localities#global-tables - LOCALITY GLOBAL
        return (
            [],
            "LOCALITY GLOBAL",
            DOC_TABLE_LOCALITIES,
            f"{name}: GLOBAL - fresh, local reads in every region; writes wait until every region can serve them.",
        )
    if placement.locality == "regional_by_table":
        # https://www.cockroachlabs.com/docs/stable/table-localities#regional-tables
        #   LOCALITY REGIONAL BY TABLE IN "region" | IN PRIMARY REGION
        where = "PRIMARY REGION" if placement.region is None else _quote(spec.cloud_region(placement.region))
        home = spec.primary_region if placement.region is None else placement.region
        return (
            [],
            f"LOCALITY REGIONAL BY TABLE IN {where}",
            DOC_TABLE_LOCALITIES,
            f"{name}: REGIONAL BY TABLE - the whole table is homed in {home}.",
        )
    primary_key = ", ".join(c.name for c in table.primary_key.columns)
    if placement.region_source == "computed":
        # https://www.cockroachlabs.com/docs/stable/alter-table#set-the-table-locality-to-regional-by-row
        #   region crdb_internal_region AS (CASE WHEN city IN (...) THEN 'r' ... END) STORED NOT NULL
        #   ... LOCALITY REGIONAL BY ROW AS region
        return (
            [_computed_region_column(spec)],
            f"LOCALITY REGIONAL BY ROW AS {REGION_COLUMN}",
            DOC_RBR_AS,
            f"{name}: REGIONAL BY ROW, each row homed in its city's region (a stored computed column, as in the"
            " data-domiciling article): a lookup that names the city goes straight to that region. CockroachDB"
            f" prepends {REGION_COLUMN} to the primary key ({primary_key}) and to every index.",
        )
    if placement.region_source == "rehoming":
        # https://www.cockroachlabs.com/docs/stable/alter-table#turn-on-auto-rehoming-for-regional-by-row-tables
        #   crdb_region ... DEFAULT default_to_database_primary_region(gateway_region())::crdb_internal_region
        #               ON UPDATE rehome_row()::crdb_internal_region
        # The column is spelled out as `SET enable_auto_rehoming = on` would create it, so the script does
        # not depend on the session setting's name (experimental_enable_auto_rehoming before v22.2).
        column = (
            f"{CRDB_REGION_COLUMN} {REGION_TYPE} NOT VISIBLE NOT NULL\n"
            f"        DEFAULT default_to_database_primary_region(gateway_region())::{REGION_TYPE}\n"
            f"        ON UPDATE rehome_row()::{REGION_TYPE}"
        )
        return (
            [column],
            "LOCALITY REGIONAL BY ROW",
            DOC_REHOMING,
            f"{name}: REGIONAL BY ROW with auto-rehoming - a row is homed where it was inserted, and an update"
            " moves it to the updating gateway's region. CockroachDB prepends"
            f" {CRDB_REGION_COLUMN} to the primary key ({primary_key}) and to every index.",
        )
    # https://www.cockroachlabs.com/docs/stable/table-localities#regional-by-row-tables - LOCALITY REGIONAL BY ROW
    return (
        [],
        "LOCALITY REGIONAL BY ROW",
        DOC_TABLE_LOCALITIES,
        f"{name}: REGIONAL BY ROW with the default hidden {CRDB_REGION_COLUMN} - a row is homed in the region"
        " of the gateway that inserted it; lookups that do not know it use locality-optimized search. CockroachDB"
        f" prepends {CRDB_REGION_COLUMN} to the primary key ({primary_key}) and to every index.",
    )


def _computed_region_column(spec: PlacementSpec) -> str:
    """The article's CASE over cities: one WHEN per region, unknown cities homed in the primary region."""
    lines = [f"{REGION_COLUMN} {REGION_TYPE} AS (", "        CASE"]
    for region in spec.regions:
        cities = [_literal(city) for city in spec.preset.regions[region].cities]
        head = "            WHEN city IN ("
        wrapped = _wrap(cities, _CITY_LIST_WIDTH, indent=" " * len(head))
        lines.append(f"{head}{wrapped}) THEN {_literal(spec.cloud_region(region))}")
    lines.append(f"            ELSE {_literal(spec.cloud_region(spec.primary_region))}")
    lines.append("        END")
    lines.append("    ) STORED NOT NULL")
    return "\n".join(lines)


# --- helpers -------------------------------------------------------------------------------------------


def _check_version(spec: PlacementSpec) -> None:
    """Refuse, in one line naming the feature, the version that has it and the alternatives, a spec the
    target CockroachDB version cannot run - before any statement is rendered, so none is ever applied."""
    used = ["multi-region databases"]
    if any(p.region_source == "rehoming" and p.locality == "regional_by_row" for p in spec.tables.values()):
        used.append("auto-rehoming (ON UPDATE rehome_row())")
    if spec.placement_restricted:
        used.append("PLACEMENT RESTRICTED")
    if spec.super_regions:
        used.append("super regions")
    if spec.super_region_survival:
        used.append("per-super-region survival goals")
    for feature in used:
        since = FEATURE_SINCE[feature]
        if spec.version < since:
            needs = f"{feature} need CockroachDB v{since[0]}.{since[1]} or later"
            if feature == "per-super-region survival goals":
                reason, alternatives = _super_region_survival_alternatives(spec)
                needs += f" ({reason})"
            else:
                alternatives = FEATURE_ALTERNATIVES[feature]
            raise SpecError(f"{needs}; the target is v{spec.cockroach_version}: {alternatives}")


def _super_region_survival_alternatives(spec: PlacementSpec) -> tuple[str, str]:
    """Why the spec has per-super-region goals, and how to do without them on an older version."""
    small = [
        name
        for name, goal in spec.super_region_survival.items()
        if spec.survival == "region" and goal == "zone" and len(spec.super_regions[name]) < 3
    ]
    if not small:
        named = ", ".join(spec.super_region_survival)
        return (
            f"the spec sets an explicit goal for super region {named}",
            "drop [super_region_survival] from the spec (super regions then inherit the database goal), or run v26.3+",
        )
    described = ", ".join(f"{name} has {len(spec.super_regions[name])}" for name in small)
    return (
        f"a super region of fewer than 3 regions cannot inherit SURVIVE REGION FAILURE; {described}",
        f"add regions to super region {' and '.join(small)} (at least 3), use zone survival (--survival zone),"
        " drop super regions (--no-super-regions), or run v26.3+",
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _wrap(items: list[str], width: int, indent: str) -> str:
    lines: list[str] = []
    current = ""
    for item in items:
        piece = f"{current}, {item}" if current else item
        if current and len(piece) > width:
            lines.append(current + ",")
            current = item
        else:
            current = piece
    lines.append(current)
    return f"\n{indent}".join(lines)
