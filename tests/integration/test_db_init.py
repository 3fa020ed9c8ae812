"""`movr db init`: every check before the first statement, on CockroachDB and on a plain PostgreSQL.

No CockroachDB runs here. What a user would run for real is run for real: the embedded PostgreSQL is
both the plain PostgreSQL that `db init --url postgresql://...` builds MovR's schema on (then
`movr load` fills it) and "a server that is not CockroachDB" for `--url cockroachdb://...`; an
unreachable cluster is a free port with nothing listening. The answers only a CockroachDB cluster can
give (its version, `SHOW REGIONS FROM CLUSTER`) come from a fake cluster that stands in for the one
function that connects (`movr.placement.apply.connect_session`) and records every statement sent, so
the tests can assert that a refusal sent no DDL at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import movr.placement.apply as apply
from movr.cli import main
from movr.lab.ports import free_port
from movr.placement import load_spec
from movr.placement.cockroach import render_statements

pytestmark = pytest.mark.integration

CLUSTER_URL = "cockroachdb://root@crdb.example:26257/defaultdb?sslmode=verify-full"
DEMO_REGIONS = ("us-east1", "us-west1", "europe-west1")  # `cockroach demo --global`
AWS_REGIONS = ("aws-eu-central-1", "aws-eu-west-3", "aws-us-east-2")
PROBES = (apply.VERSION_SQL, apply.REGIONS_SQL, apply.DATABASE_EXISTS_SQL)


def banner(version: str) -> str:
    return f"CockroachDB CCL v{version} (x86_64-pc-linux-gnu, built 2026/05/01 12:00:00, go1.25.5)"


class FakeCluster:
    """Answers what CockroachDB answers to db init's questions; records every statement; runs no SQL."""

    def __init__(
        self,
        version: str = "26.2.1",
        regions: tuple[str, ...] = DEMO_REGIONS,
        databases: tuple[str, ...] = ("defaultdb", "postgres", "system"),
        fail_on: str | None = None,
    ) -> None:
        self.banner = banner(version)
        self.regions = regions
        self.databases = set(databases)
        self.fail_on = fail_on
        self.sent: list[str] = []
        self.sessions = 0

    def __call__(self, url) -> FakeCluster:
        self.sessions += 1
        return self

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.sent.append(sql)
        if sql == apply.VERSION_SQL:
            return [(self.banner,)]
        if sql == apply.REGIONS_SQL:
            return [(region, ["a", "b", "c"]) for region in self.regions]
        if sql == apply.DATABASE_EXISTS_SQL:
            return [(1,)] if params and params["name"] in self.databases else []
        raise AssertionError(f"db init asked something unexpected: {sql}")

    def execute(self, sql: str) -> None:
        self.sent.append(sql)
        if self.fail_on and sql.startswith(self.fail_on):
            raise psycopg.errors.InsufficientPrivilege("user movr does not have CREATE privilege")
        if sql.startswith("CREATE DATABASE "):
            self.databases.add(sql.split()[2])
        if sql.startswith("DROP DATABASE IF EXISTS "):
            self.databases.discard(sql.split()[4])

    def close(self) -> None:
        pass

    @property
    def ddl(self) -> list[str]:
        return [sql for sql in self.sent if sql not in PROBES]


@pytest.fixture
def cluster(monkeypatch) -> Iterator[FakeCluster]:
    fake = FakeCluster()
    monkeypatch.setattr(apply, "connect_session", fake)
    yield fake


def movr(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.output.strip().splitlines()
    assert line.startswith("movr: ")
    return line


# --- CockroachDB: checks first, then the statements -----------------------------------------------------


def test_init_renders_for_the_clusters_version_and_applies_every_statement(cluster):
    result = movr("db", "init", "--url", CLUSTER_URL, "--preset", "crdb-demo")
    assert result.exit_code == 0, result.output
    assert cluster.sent[:3] == list(PROBES)  # asked before anything was applied
    assert cluster.ddl == render_statements(load_spec("crdb-demo", cockroach_version="26.2"))
    assert "applied" in result.output and "CockroachDB v26.2 (the cluster's version)" in result.output


def test_a_newer_cluster_gets_the_newer_features(cluster):
    cluster.banner = banner("26.3.0")
    cluster.regions = AWS_REGIONS
    result = movr("db", "init", "--url", CLUSTER_URL, "--preset", "aws-eu-us", "--survival", "region")
    assert result.exit_code == 0, result.output
    assert 'ALTER DATABASE movr ALTER SUPER REGION "europe" SURVIVE ZONE FAILURE' in cluster.ddl


@pytest.mark.parametrize("version", ["25.4.2", "26.2.1"])
def test_a_version_that_cannot_run_the_spec_is_refused_before_any_statement(cluster, version):
    cluster.banner = banner(version)
    cluster.regions = AWS_REGIONS
    line = one_line_error(movr("db", "init", "--url", CLUSTER_URL, "--preset", "aws-eu-us", "--survival", "region"))
    major_minor = version.rsplit(".", 1)[0]
    assert f"the cluster runs CockroachDB v{major_minor}, which cannot run this spec" in line
    assert "per-super-region survival goals need CockroachDB v26.3 or later" in line
    assert "--survival zone" in line and "--no-super-regions" in line
    assert cluster.ddl == []


def test_regions_the_cluster_lacks_are_named_before_any_statement(cluster):
    # gcp-3 names its regions gcp-us-east1, ...; `cockroach demo --global` has us-east1, ...
    line = one_line_error(movr("db", "init", "--url", CLUSTER_URL, "--preset", "gcp-3"))
    assert "the cluster has no region gcp-us-east1, gcp-us-west1, gcp-europe-west1" in line
    assert "(it has us-east1, us-west1, europe-west1)" in line
    assert "--region-names '{region}'" in line
    assert cluster.ddl == []
    cluster.sent.clear()
    result = movr("db", "init", "--url", CLUSTER_URL, "--preset", "gcp-3", "--region-names", "{region}")
    assert result.exit_code == 0, result.output
    assert cluster.ddl[0] == 'CREATE DATABASE movr PRIMARY REGION "us-east1" REGIONS "us-west1", "europe-west1"'


def test_a_region_no_template_explains_is_named_too(cluster):
    cluster.regions = ("us-east1", "us-west1")
    line = one_line_error(movr("db", "init", "--url", CLUSTER_URL, "--preset", "crdb-demo"))
    assert "no region europe-west1 (it has us-east1, us-west1)" in line and "--region-names TEMPLATE" in line
    assert cluster.ddl == []


def test_an_existing_database_is_refused_unless_drop(cluster):
    cluster.databases.add("movr")
    line = one_line_error(movr("db", "init", "--url", CLUSTER_URL, "--preset", "crdb-demo"))
    assert "database movr exists already" in line and "--drop" in line
    assert cluster.ddl == []
    result = movr("db", "init", "--url", CLUSTER_URL, "--preset", "crdb-demo", "--drop")
    assert result.exit_code == 0, result.output
    assert cluster.ddl[0] == "DROP DATABASE IF EXISTS movr CASCADE"
    assert cluster.ddl[1:] == render_statements(load_spec("crdb-demo", cockroach_version="26.2"))


def test_a_statement_that_fails_anyway_leaves_no_half_built_database(cluster):
    cluster.fail_on = "CREATE TABLE users"
    line = one_line_error(movr("db", "init", "--url", CLUSTER_URL, "--preset", "crdb-demo"))
    assert "failed" in line and "CREATE privilege" in line
    assert "the half-built database movr was dropped again, nothing is left" in line
    assert cluster.ddl[-1] == "DROP DATABASE IF EXISTS movr CASCADE"
    assert "movr" not in cluster.databases and cluster.sessions == 2  # the clean-up ran on a fresh session


def test_a_failing_first_statement_needs_no_clean_up(cluster):
    cluster.fail_on = "CREATE DATABASE"
    line = one_line_error(movr("db", "init", "--url", CLUSTER_URL, "--preset", "crdb-demo"))
    assert line.endswith("; nothing was created")
    assert cluster.ddl == [render_statements(load_spec("crdb-demo"))[0]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CockroachDB CCL v25.4.2 (x86_64-pc-linux-gnu, built 2025/12/01 19:00:00, go1.23.12)", (25, 4)),
        ("CockroachDB OSS v23.1.11 (aarch64-unknown-linux-gnu, built 2023/10/01)", (23, 1)),
        ("CockroachDB CCL v26.3.0-alpha.1 (x86_64-pc-linux-gnu)", (26, 3)),
        ("PostgreSQL 18.1 on x86_64-pc-linux-gnu, compiled by gcc", None),
        ("", None),
    ],
)
def test_the_version_is_read_from_the_banner(text, expected):
    assert apply.cockroach_version_of(text) == expected


# --- CockroachDB URL, real servers: not CockroachDB, unreachable ---------------------------------------


def databases(pg_server) -> set[str]:
    with psycopg.connect(pg_server.dsn()) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_a_server_that_is_not_cockroachdb_is_refused_and_nothing_is_applied(pg_server, tmp_path: Path):
    spec = tmp_path / "spec.toml"
    spec.write_text('preset = "crdb-demo"\ndatabase = "movr_not_crdb"\n')
    url = pg_server.dsn("postgres").replace("postgresql://", "cockroachdb://", 1)
    line = one_line_error(movr("db", "init", "--url", url, "--spec", str(spec)))
    assert f":{pg_server.port}/postgres" in line and "is PostgreSQL 18" in line and "not CockroachDB" in line
    assert "--url postgresql://" in line  # what to do instead
    assert "movr_not_crdb" not in databases(pg_server)


def test_an_unreachable_cluster_is_one_line():
    port = free_port()  # nothing listens there
    line = one_line_error(movr("db", "init", "--url", f"cockroachdb://root@127.0.0.1:{port}/defaultdb?sslmode=disable"))
    assert f"cannot reach cockroachdb+psycopg://root@127.0.0.1:{port}/defaultdb" in line
    assert "is the cluster running" in line


# --- a plain PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def empty_database(pg_server, request) -> str:
    name = f"movr_init_{request.node.name.split('[')[0][-20:]}".lower()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
    pg_server.create_database(name)
    return pg_server.dsn(name)


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("users", "vehicles", "rides", "promo_codes")
        }


def test_postgresql_init_then_load(empty_database):
    loaded = movr("load", "--database-url", empty_database, "--users", "6", "--vehicles", "6", "--rides", "6")
    assert loaded.exit_code != 0  # on an empty database: relation "users" does not exist - the report

    result = movr("db", "init", "--url", empty_database)
    assert result.exit_code == 0, result.output
    assert "created MovR's tables" in result.output and "users" in result.output
    assert counts(empty_database) == {"users": 0, "vehicles": 0, "rides": 0, "promo_codes": 0}

    loaded = movr("load", "--database-url", empty_database, "--users", "6", "--vehicles", "6", "--rides", "6")
    assert loaded.exit_code == 0, loaded.output
    after = counts(empty_database)
    assert (after["users"], after["vehicles"], after["rides"]) == (6, 6, 6) and after["promo_codes"] > 0


def test_postgresql_init_is_idempotent_and_drop_replaces_the_tables(empty_database):
    assert movr("db", "init", "--url", empty_database).exit_code == 0
    assert (
        movr("load", "--database-url", empty_database, "--users", "3", "--vehicles", "0", "--rides", "0").exit_code == 0
    )

    again = movr("db", "init", "--url", empty_database)
    assert again.exit_code == 0, again.output
    assert "created MovR's tables" in again.output and ": none; kept" in again.output
    assert counts(empty_database)["users"] == 3  # kept, data and all

    dropped = movr("db", "init", "--url", empty_database, "--drop")
    assert dropped.exit_code == 0, dropped.output
    assert counts(empty_database)["users"] == 0


def test_postgresql_bad_input_is_one_line(pg_server, empty_database):
    missing = pg_server.dsn("movr_no_such_db")
    line = one_line_error(movr("db", "init", "--url", missing))
    assert "cannot reach" in line and "movr_no_such_db" in line
    line = one_line_error(movr("db", "init", "--url", empty_database, "--survival", "region"))
    assert "--survival shapes a multi-region CockroachDB database" in line
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    port = free_port()
    line = one_line_error(movr("db", "init", "--url", f"postgresql://postgres@127.0.0.1:{port}/movr"))
    assert f"cannot reach postgresql+psycopg://postgres@127.0.0.1:{port}/movr" in line
