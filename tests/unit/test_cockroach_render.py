"""CockroachDB rendering without a CockroachDB: golden files, a PostgreSQL-parser check, the CLI, the backend.

No CockroachDB binary can run here, so the DDL is checked three ways:

1. Golden files (tests/unit/golden/cockroach/*.sql): for each preset and each spec feature, the whole
   dbinit.sql, checked by hand against the CockroachDB documentation cited in its comments. Set
   MOVR_UPDATE_GOLDEN=1 to rewrite them after a deliberate change, then review the diff against the docs.
2. A parser check: every statement must be well-formed SQL for the statement kinds PostgreSQL knows,
   once the CockroachDB-only clauses are taken out by the rule below (`split_cockroach`). pglast is
   PostgreSQL's own parser.
3. The CockroachDB-only clauses that were taken out must be exactly the ones the spec asks for, each
   in its place.

The rule (also in docs/cockroachdb.md):
- whole statements that exist only in CockroachDB - `ALTER DATABASE d SURVIVE ... FAILURE`,
  `ALTER DATABASE d ADD SUPER REGION "s" VALUES ...`, `ALTER DATABASE d ALTER SUPER REGION "s" SURVIVE ...`,
  `ALTER DATABASE d PLACEMENT ...` - must match their documented form exactly and are not parsed;
- `CREATE DATABASE d PRIMARY REGION "p" REGIONS "r", ...`: the trailing PRIMARY REGION/REGIONS clause is cut;
- `CREATE TABLE t (...) LOCALITY ...`: the trailing LOCALITY clause is cut;
- inside a column definition: `NOT VISIBLE` and `ON UPDATE <expr>` are cut, and CockroachDB's short
  computed-column spelling `AS (<expr>) STORED` becomes PostgreSQL's `GENERATED ALWAYS AS (<expr>) STORED`
  (the same stored computed column), so the CASE expression itself is parsed too.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pglast
import pytest
from click.testing import CliRunner
from pglast import ast as pg
from pglast import enums

import movr.store.actions
from movr.domain.errors import ConfigError
from movr.geo import load_preset
from movr.placement import PlacementSpec, SpecError, TablePlacement, load_spec
from movr.placement.cli import db_group
from movr.placement.cockroach import render_cockroach, render_statements
from movr.store.cockroach import (
    FOLLOWER_READ_SQL,
    CockroachBackend,
    engine_url,
    is_unavailable,
    redact,
    resolve_region,
)
from movr.store.work import Home, Statement, Work

GOLDEN = Path(__file__).parent / "golden" / "cockroach"


def with_tables(spec: PlacementSpec, **tables: TablePlacement) -> PlacementSpec:
    return spec.with_changes(tables={**spec.tables, **tables})


# name -> spec; each has tests/unit/golden/cockroach/<name>.sql
CASES = {
    # presets, default spec
    "preset-gcp-3": lambda: load_spec("gcp-3"),
    "preset-crdb-demo": lambda: load_spec("crdb-demo"),
    "preset-ycsb-3": lambda: load_spec("ycsb-3"),
    "preset-aws-eu-us": lambda: load_spec("aws-eu-us"),
    # survival goals and the super region rule
    "gcp-3-survival-region": lambda: load_spec("gcp-3", survival="region"),
    # a two-region super region under region survival: an explicit zone goal, CockroachDB v26.3+
    "aws-eu-us-survival-region": lambda: load_spec("aws-eu-us", survival="region", cockroach_version="26.3"),
    # before v26.2 the super region statement carries the replica-placement caveat (cockroach#164285)
    "aws-eu-us-v25.4": lambda: load_spec("aws-eu-us", cockroach_version="25.4"),
    "aws-eu-us-survival-region-no-super-regions": lambda: load_spec(
        "aws-eu-us", survival="region", super_regions=False
    ),
    "gcp-3-super-region-region-survival": lambda: load_spec("gcp-3", survival="region").with_changes(
        super_regions={"world": ("us-east1", "us-west1", "europe-west1")}
    ),
    # placement, region sources, localities
    "gcp-3-placement-restricted": lambda: load_spec("gcp-3", placement_restricted=True),
    "gcp-3-default-crdb-region": lambda: with_tables(
        load_spec("gcp-3"),
        users=TablePlacement("users", "regional_by_row", "default"),
        vehicles=TablePlacement("vehicles", "regional_by_row", "default"),
        rides=TablePlacement("rides", "regional_by_row", "default"),
    ),
    # rehoming on the tables actions update (never on users: no action updates a user)
    "gcp-3-rehoming": lambda: with_tables(
        load_spec("gcp-3"),
        vehicles=TablePlacement("vehicles", "regional_by_row", "rehoming"),
        rides=TablePlacement("rides", "regional_by_row", "rehoming"),
    ),
    "gcp-3-regional-by-table": lambda: with_tables(
        load_spec("gcp-3"),
        vehicles=TablePlacement("vehicles", "regional_by_table", region="us-west1"),
        promo_codes=TablePlacement("promo_codes", "regional_by_table"),
    ),
    # crdb-demo defaults to the names `cockroach demo --global` has (us-east1, ...); a template overrides them
    "crdb-demo-gcp-region-names": lambda: load_spec("crdb-demo", region_name_template="gcp-{region}"),
}


@pytest.fixture(params=sorted(CASES))
def case(request) -> tuple[str, PlacementSpec]:
    return request.param, CASES[request.param]()


# --- 1. golden files -------------------------------------------------------------------------------------


def test_rendered_sql_matches_its_golden_file(case):
    name, spec = case
    rendered = render_cockroach(spec)
    path = GOLDEN / f"{name}.sql"
    if os.environ.get("MOVR_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered)
    assert path.is_file(), f"no golden file {path}; render it with MOVR_UPDATE_GOLDEN=1 and check it by hand"
    assert rendered == path.read_text()


def test_every_golden_file_has_a_case():
    assert {p.stem for p in GOLDEN.glob("*.sql")} == set(CASES)


def test_render_statements_are_the_scripts_statements(case):
    _, spec = case
    script = render_cockroach(spec)
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    from_script = [s.strip() for s in (body + "\n").split(";\n") if s.strip()]
    assert from_script == render_statements(spec)


# --- 2. the parser check ---------------------------------------------------------------------------------

_Q = r'"[^"]+"'
WHOLE_STATEMENTS = {
    # https://www.cockroachlabs.com/docs/stable/multiregion-survival-goals
    "survive": re.compile(r"ALTER DATABASE (\w+) SURVIVE (ZONE|REGION) FAILURE"),
    # https://www.cockroachlabs.com/docs/stable/alter-database#add-super-region
    "add_super_region": re.compile(rf"ALTER DATABASE (\w+) ADD SUPER REGION ({_Q}) VALUES ({_Q}(?:, {_Q})*)"),
    # https://github.com/cockroachdb/cockroach/pull/165215 (v26.3)
    "super_region_survive": re.compile(
        rf"ALTER DATABASE (\w+) ALTER SUPER REGION ({_Q}) SURVIVE (ZONE|REGION) FAILURE"
    ),
    # https://www.cockroachlabs.com/docs/stable/alter-database#placement
    "placement": re.compile(r"ALTER DATABASE (\w+) PLACEMENT (RESTRICTED|DEFAULT)"),
}
CREATE_DATABASE = re.compile(rf"(CREATE DATABASE \w+) (PRIMARY REGION ({_Q})(?: REGIONS ({_Q}(?:, {_Q})*))?)")
LOCALITY = rf"LOCALITY (GLOBAL|REGIONAL BY ROW(?: AS (\w+))?|REGIONAL BY TABLE IN (?:PRIMARY REGION|{_Q}))"
CREATE_TABLE = re.compile(rf"(CREATE TABLE (\w+) \(.*\n\)) ({LOCALITY})", re.DOTALL)
COMPUTED_AS = re.compile(r"^(\s+\w+ crdb_internal_region) AS \(", re.MULTILINE)
NOT_VISIBLE = re.compile(r" NOT VISIBLE")
ON_UPDATE = re.compile(r"\s+ON UPDATE [^,\n]+")
COCKROACH_ONLY_WORDS = re.compile(r"\b(LOCALITY|SURVIVE|PRIMARY REGION|SUPER REGION|PLACEMENT|NOT VISIBLE|ON UPDATE)\b")


@dataclass
class Split:
    """What the rule took out of one statement, and the PostgreSQL-parseable rest (None for a whole statement)."""

    postgres: str | None
    kind: str
    fields: dict = field(default_factory=dict)


def split_cockroach(sql: str) -> Split:
    for kind, pattern in WHOLE_STATEMENTS.items():
        match = pattern.fullmatch(sql)
        if match:
            return Split(None, kind, {"groups": match.groups()})
    if sql.startswith("CREATE DATABASE"):
        match = CREATE_DATABASE.fullmatch(sql)
        assert match, f"CREATE DATABASE in an undocumented form: {sql}"
        others = re.findall(_Q, match[4] or "")
        return Split(match[1], "create_database", {"primary": match[3], "regions": others})
    if sql.startswith("CREATE TABLE"):
        match = CREATE_TABLE.fullmatch(sql)
        assert match, f"CREATE TABLE without a documented LOCALITY clause: {sql}"
        body = match[1]
        computed = COMPUTED_AS.findall(body)
        body = COMPUTED_AS.sub(r"\1 GENERATED ALWAYS AS (", body)
        not_visible = len(NOT_VISIBLE.findall(body))
        on_update = [m.strip() for m in ON_UPDATE.findall(body)]
        body = ON_UPDATE.sub("", NOT_VISIBLE.sub("", body))
        return Split(
            body,
            "create_table",
            {
                "table": match[2],
                "locality": match[4],
                "as_column": match[5],
                "computed": [c.split()[0] for c in computed],
                "not_visible": not_visible,
                "on_update": on_update,
            },
        )
    return Split(sql, "postgres")


def parse_one(sql: str):
    statements = pglast.parse_sql(sql)
    assert len(statements) == 1
    return statements[0].stmt


def test_every_statement_parses_once_the_cockroach_clauses_are_out(case):
    _, spec = case
    for sql in render_statements(spec):
        split = split_cockroach(sql)
        if split.postgres is None:
            continue
        assert not COCKROACH_ONLY_WORDS.search(split.postgres), f"a CockroachDB clause is left in: {split.postgres}"
        node = parse_one(split.postgres)
        expected = {
            "create_database": pg.CreatedbStmt,
            "create_table": pg.CreateStmt,
        }.get(split.kind, (pg.IndexStmt, pg.VariableSetStmt))
        assert isinstance(node, expected), sql


def test_cockroach_clauses_appear_exactly_where_the_spec_asks(case):
    _, spec = case
    splits = [split_cockroach(sql) for sql in render_statements(spec)]
    kinds = [s.kind for s in splits]
    q = lambda region: f'"{spec.cloud_region(region)}"'  # noqa: E731

    # the database, its primary region and its other regions
    (create,) = [s for s in splits if s.kind == "create_database"]
    assert create.fields["primary"] == q(spec.primary_region)
    assert create.fields["regions"] == [q(r) for r in spec.regions if r != spec.primary_region]

    # the database survival goal: once, after every super region statement
    survive = [s.fields["groups"] for s in splits if s.kind == "survive"]
    assert survive == [(spec.database, spec.survival.upper())]
    last_super = max((i for i, k in enumerate(kinds) if "super_region" in k), default=-1)
    assert last_super < kinds.index("survive")

    # super regions and their explicit survival goals
    added = {s.fields["groups"][1].strip('"'): s.fields["groups"][2] for s in splits if s.kind == "add_super_region"}
    assert added == {name: ", ".join(q(r) for r in members) for name, members in spec.super_regions.items()}
    goals = {
        s.fields["groups"][1].strip('"'): s.fields["groups"][2] for s in splits if s.kind == "super_region_survive"
    }
    assert goals == {name: goal.upper() for name, goal in spec.super_region_survival.items()}
    statements = render_statements(spec)
    assert ("SET enable_super_regions = 'on'" in statements) == bool(spec.super_regions)

    # PLACEMENT RESTRICTED
    placement = [s.fields["groups"][1] for s in splits if s.kind == "placement"]
    assert placement == (["RESTRICTED"] if spec.placement_restricted else [])

    # each table's locality, and the columns that go with it
    tables = {s.fields["table"]: s.fields for s in splits if s.kind == "create_table"}
    assert set(tables) == set(spec.tables)
    for name, placement_ in spec.tables.items():
        found = tables[name]
        if placement_.locality == "global":
            assert found["locality"] == "GLOBAL"
        elif placement_.locality == "regional_by_table":
            home = "PRIMARY REGION" if placement_.region is None else q(placement_.region)
            assert found["locality"] == f"REGIONAL BY TABLE IN {home}"
        elif placement_.region_source == "computed":
            assert found["locality"] == "REGIONAL BY ROW AS region" and found["computed"] == ["region"]
        elif placement_.region_source == "rehoming":
            assert found["locality"] == "REGIONAL BY ROW" and found["computed"] == []
            assert found["on_update"] == ["ON UPDATE rehome_row()::crdb_internal_region"]
            assert found["not_visible"] == 1
        else:
            assert found["locality"] == "REGIONAL BY ROW" and found["computed"] == []
            assert found["on_update"] == [] and found["not_visible"] == 0
        if not (placement_.locality == "regional_by_row" and placement_.region_source == "computed"):
            assert found["computed"] == []


def computed_region_map(sql: str) -> dict[str, str]:
    """city -> region from the CASE of a CREATE TABLE, read back through PostgreSQL's parser."""
    node = parse_one(split_cockroach(sql).postgres)
    (column,) = [c for c in node.tableElts if isinstance(c, pg.ColumnDef) and c.colname == "region"]
    (generated,) = [c for c in column.constraints if c.contype == enums.ConstrType.CONSTR_GENERATED]
    case_expr = generated.raw_expr
    mapping = {}
    for when in case_expr.args:
        assert when.expr.kind == enums.A_Expr_Kind.AEXPR_IN and when.expr.lexpr.fields[0].sval == "city"
        for city in when.expr.rexpr:
            assert city.val.sval not in mapping
            mapping[city.val.sval] = when.result.val.sval
    mapping["<else>"] = case_expr.defresult.val.sval
    return mapping


# --- 3. what the issue must show -------------------------------------------------------------------------


def test_aws_eu_us_zone_has_the_articles_mapping_a_global_table_and_the_europe_super_region():
    spec = load_spec("aws-eu-us", survival="zone")
    statements = render_statements(spec)
    preset = load_preset("aws-eu-us")
    expected = {city: f"aws-{preset.region_of(city)}" for city in preset.cities}
    for table in ("users", "vehicles", "rides"):
        (sql,) = [s for s in statements if s.startswith(f"CREATE TABLE {table} ")]
        mapping = computed_region_map(sql)
        assert mapping.pop("<else>") == "aws-eu-central-1"  # unknown cities: the primary region, as the article does
        assert mapping == expected and len(mapping) == 48
        assert sql.endswith(") LOCALITY REGIONAL BY ROW AS region")
    assert any(s.startswith("CREATE TABLE promo_codes ") and s.endswith("LOCALITY GLOBAL") for s in statements)
    assert 'ALTER DATABASE movr ADD SUPER REGION "europe" VALUES "aws-eu-central-1", "aws-eu-west-3"' in statements
    assert "ALTER DATABASE movr SURVIVE ZONE FAILURE" in statements


def test_aws_eu_us_region_survival_keeps_europe_on_an_explicit_zone_goal():
    statements = render_statements(load_spec("aws-eu-us", survival="region", cockroach_version="26.3"))
    add = statements.index('ALTER DATABASE movr ADD SUPER REGION "europe" VALUES "aws-eu-central-1", "aws-eu-west-3"')
    explicit = statements.index('ALTER DATABASE movr ALTER SUPER REGION "europe" SURVIVE ZONE FAILURE')
    survive = statements.index("ALTER DATABASE movr SURVIVE REGION FAILURE")
    assert add < explicit < survive  # the explicit goal exists before the database goal changes


def test_an_older_target_is_refused_naming_the_feature_the_version_and_the_alternatives():
    spec = load_spec("aws-eu-us", survival="region")
    for version in ("25.4", "26.2"):
        with pytest.raises(SpecError) as refused:
            render_cockroach(spec.with_changes(cockroach_version=version))
        message = str(refused.value)
        assert message.startswith("per-super-region survival goals need CockroachDB v26.3 or later")
        assert f"the target is v{version}" in message and "\n" not in message
        for alternative in ("add regions to super region europe", "--survival zone", "--no-super-regions"):
            assert alternative in message
    with pytest.raises(SpecError, match=r"super regions need CockroachDB v22.1.*--no-super-regions"):
        render_cockroach(load_spec("aws-eu-us", cockroach_version="21.2"))
    rehoming = with_tables(load_spec("gcp-3"), rides=TablePlacement("rides", "regional_by_row", "rehoming"))
    with pytest.raises(SpecError, match=r"auto-rehoming .* v21.2 .*region_source 'computed'"):
        render_cockroach(rehoming.with_changes(cockroach_version="21.1"))
    explicit = load_spec("aws-eu-us").with_changes(super_region_survival={"europe": "zone"})
    with pytest.raises(SpecError, match=r"explicit goal for super region europe.*drop \[super_region_survival\]"):
        render_cockroach(explicit.with_changes(cockroach_version="26.2"))
    assert "SURVIVE ZONE FAILURE" in render_cockroach(load_spec("aws-eu-us", cockroach_version="22.1"))


def test_the_valid_alternatives_render_on_the_older_target():
    """Each way out the refusal names renders on v25.4, with no statement 25.4 lacks."""
    for spec in (
        load_spec("aws-eu-us", survival="zone", cockroach_version="25.4"),
        load_spec("aws-eu-us", survival="region", super_regions=False, cockroach_version="25.4"),
    ):
        statements = render_statements(spec)
        assert not any("ALTER SUPER REGION" in sql for sql in statements)


def test_super_regions_before_v26_2_carry_the_replica_placement_caveat():
    old = render_cockroach(load_spec("aws-eu-us", cockroach_version="25.4"))
    assert "cockroachdb/cockroach#164285" in old and "run v26.2+" in old
    assert "164285" not in render_cockroach(load_spec("aws-eu-us", cockroach_version="26.2"))


def test_partial_unique_indexes_come_along():
    statements = render_statements(load_spec())
    assert "CREATE UNIQUE INDEX rides_one_open_per_vehicle ON rides (city, vehicle_id) WHERE end_time IS NULL" in (
        statements
    )
    assert "CREATE UNIQUE INDEX rides_one_open_per_rider ON rides (city, rider_id) WHERE end_time IS NULL" in statements
    assert "CREATE UNIQUE INDEX users_username_key ON users (username)" in statements


# --- the CLI ---------------------------------------------------------------------------------------------


def run_cli(*args: str):
    return CliRunner().invoke(db_group, list(args))


def test_cli_render_prints_the_script():
    result = run_cli(
        "render",
        "--target",
        "cockroach",
        "--preset",
        "aws-eu-us",
        "--survival",
        "region",
        "--cockroach-version",
        "26.3",
    )
    assert result.exit_code == 0, result.output
    assert result.output == render_cockroach(load_spec("aws-eu-us", survival="region", cockroach_version="26.3"))
    assert "ALTER DATABASE movr SURVIVE REGION FAILURE;" in result.output
    assert "-- Target: CockroachDB v26.3." in result.output


def test_cli_render_defaults_to_the_newest_released_version():
    result = run_cli("render", "--target", "cockroach", "--preset", "gcp-3")
    assert result.exit_code == 0, result.output
    assert "-- Target: CockroachDB v26.2." in result.output


@pytest.mark.parametrize("version", [None, "25.4"])
def test_cli_render_refuses_what_the_target_lacks_in_one_line(version):
    """The issue's must-show: no statement 25.4 lacks; exit 2 and one line with the feature, version, alternatives."""
    args = ["render", "--target", "cockroach", "--preset", "aws-eu-us", "--survival", "region"]
    result = run_cli(*args, *(["--cockroach-version", version] if version else []))
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("movr: per-super-region survival goals need CockroachDB v26.3 or later")
    assert f"the target is v{version or '26.2'}" in line
    assert "--survival zone" in line and "--no-super-regions" in line and "add regions to super region" in line
    assert "CREATE DATABASE" not in result.output  # refused before the first statement


def test_cli_render_options(tmp_path):
    out = tmp_path / "dbinit.sql"
    result = run_cli("render", "--preset", "aws-eu-us", "--no-super-regions", "--output", str(out))
    assert result.exit_code == 0
    assert out.read_text() == render_cockroach(load_spec("aws-eu-us", super_regions=False))
    assert "SUPER REGION" not in out.read_text()
    result = run_cli("render", "--preset", "crdb-demo", "--region-names", "{region}", "--placement-restricted")
    assert result.exit_code == 0 and 'PRIMARY REGION "us-east1"' in result.output
    assert "ALTER DATABASE movr PLACEMENT RESTRICTED;" in result.output
    # crdb-demo renders the region names of `cockroach demo --global` without --region-names
    result = run_cli("render", "--preset", "crdb-demo", "--output", str(out))
    assert result.exit_code == 0
    assert 'PRIMARY REGION "us-east1" REGIONS "us-west1", "europe-west1";' in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "--preset", "atlantis"], "no preset named 'atlantis'"),
        (["render", "--survival", "region", "--placement-restricted"], "PLACEMENT RESTRICTED"),
        (["render", "--preset", "aws-eu-us", "--survival", "region", "--cockroach-version", "25.4"], "europe"),
        (["render", "--spec", "/nonexistent/spec.toml"], "no spec file"),
        (["render", "--primary-region", "mars-1"], "unknown primary region"),
        (["init", "--url", "mysql://somewhere/movr"], "expected a cockroachdb:// URL"),
        (["init", "--url", "postgresql://u@h/movr", "--survival", "region"], "--survival shapes a multi-region"),
        (["init", "--url", "cockroachdb://u@h/movr", "--preset", "atlantis"], "no preset named 'atlantis'"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, message):
    result = run_cli(*args)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_init_without_a_cluster_exits_2_with_one_line():
    # The whole `db init` refusal matrix (not CockroachDB, version, regions, a free port) is in
    # tests/integration/test_db_init.py; this one needs nothing listening on port 1.
    result = run_cli("init", "--url", "cockroachdb://root@127.0.0.1:1/movr?sslmode=disable")
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("movr: cannot reach cockroachdb+psycopg://root@127.0.0.1:1/defaultdb")


# --- CockroachBackend, without a cluster -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "cockroachdb://root@localhost/movr?sslmode=disable",
            "cockroachdb+psycopg://root@localhost:26257/movr?sslmode=disable",
        ),
        ("cockroachdb+psycopg://u:secret@db.example:26000/app", "cockroachdb+psycopg://u:secret@db.example:26000/app"),
        ("postgresql://root@localhost:26257/", "cockroachdb+psycopg://root@localhost:26257/movr"),
        (
            "cockroachdb://root@/movr?host=a:26257&host=b:26257",
            "cockroachdb+psycopg://root@/movr?host=a%3A26257&host=b%3A26257",
        ),
    ],
)
def test_engine_url(url, expected):
    assert engine_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("url", ["mysql://x/y", "cockroachdb+psycopg2://x/y", "not a url"])
def test_engine_url_refuses_other_drivers(url):
    with pytest.raises(ConfigError):
        engine_url(url)


def test_redact_hides_the_password():
    assert "secret" not in redact("cockroachdb://u:secret@h:26257/movr")


def test_regions_by_preset_or_cluster_name():
    preset = load_preset("gcp-3")
    assert resolve_region(preset, "us-west1") == ("us-west1", None)
    assert resolve_region(preset, "gcp-us-west1") == ("us-west1", "gcp-us-west1")
    with pytest.raises(ConfigError):
        resolve_region(preset, "aws-eu-west-3")


def backend(follower_reads: bool, region: str = "gcp-us-east1") -> CockroachBackend:
    # Builds an engine but never connects: nothing listens on port 1.
    return CockroachBackend(
        "cockroachdb://root@127.0.0.1:1/movr?sslmode=disable",
        load_preset("gcp-3"),
        region,
        follower_reads=follower_reads,
    )


def work(home: Home, readonly: bool = True) -> Work:
    return Work("test", [Statement("SELECT 1")], home, readonly=readonly)


def test_follower_reads_only_for_read_only_work_about_a_remote_city():
    store = backend(follower_reads=True)
    assert store.region == "us-east1" and store.name == "cockroach"
    assert store.follower_read_statement(work(Home.of_city("rome"))) == FOLLOWER_READ_SQL
    assert store.follower_read_statement(work(Home.of_city("seattle"))) == FOLLOWER_READ_SQL
    assert store.follower_read_statement(work(Home.of_city("boston"))) is None  # local leaseholder already
    assert store.follower_read_statement(work(Home.of_city("rome"), readonly=False)) is None
    assert store.follower_read_statement(work(Home.search())) is None  # a fresh sign-up must be found
    assert store.follower_read_statement(work(Home.local())) is None  # GLOBAL reads are local and fresh
    assert store.follower_read_statement(work(Home.of_city("atlantis"))) is None
    assert FOLLOWER_READ_SQL == "SET TRANSACTION AS OF SYSTEM TIME follower_read_timestamp()"


def test_follower_reads_are_off_unless_configured():
    store = backend(follower_reads=False)
    assert store.follower_read_statement(work(Home.of_city("rome"))) is None


def test_an_unreachable_gateway_is_store_unavailable_not_a_traceback():
    from movr.domain.errors import StoreUnavailable

    store = backend(follower_reads=False)
    assert store.ping() is False
    with pytest.raises(StoreUnavailable, match="gateway for us-east1 is not reachable"):
        store.run(work(Home.of_city("boston")))
    store.close()


def test_unavailable_is_told_from_statement_errors():
    class Coded(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    assert is_unavailable(Coded("08006"))
    assert not is_unavailable(Coded("23505"))
    assert not is_unavailable(Coded("40001"))  # a restart to retry, not an outage


def test_the_actions_know_no_backend():
    """Law 4: one set of actions for every backend; no backend check lives inside them."""
    source = "\n".join(path.read_text() for path in sorted(Path(movr.store.actions.__file__).parent.glob("*.py")))
    for needle in (
        "cockroach",
        "Cockroach",
        "Regional",
        "Postgres",
        "isinstance(store",
        "store.name",
        "sqlalchemy_cockroachdb",
    ):
        assert needle not in source, needle
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(
        module.startswith(("movr.store.cockroach", "movr.store.regional", "movr.lab")) for module in imported
    )
