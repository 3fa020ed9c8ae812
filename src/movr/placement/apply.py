"""`movr db init`: create MovR's schema on a database, all or nothing.

CockroachDB (`cockroachdb://`). Schema changes are not transactional there: CockroachDB runs each DDL
statement as its own implicit transaction and does not give schema changes in an explicit transaction
full atomicity (https://www.cockroachlabs.com/docs/stable/online-schema-changes). So the guarantee comes
from checking first. Before the first statement, `init_cockroach` asks the server
- what it is and which version (`SELECT version()`): a server that is not CockroachDB is refused, and
  the spec is rendered for the version found, so a feature that version lacks is refused (with the
  alternatives) rather than met as a syntax error halfway through;
- which regions it has (`SHOW REGIONS FROM CLUSTER`): every region the spec names must be there;
- whether the database exists (refused unless `--drop`).
Only then are the statements applied, in order, on one session (its SET statements hold for the rest).
Should one still fail (a lost connection, a missing privilege), the database this run created is
dropped again, so no half-built database is left behind.

PostgreSQL (`postgresql://`). One region: the models' tables, exactly as the lab and the demo create
them (`Base.metadata`), in one transaction (PostgreSQL's DDL is transactional). Idempotent: tables that
exist are kept, missing ones are created; `--drop` replaces MovR's tables.

The server is asked through a `Session` made by `connect_session`, which a test may replace by a fake
cluster to see which statements would have been sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from movr.domain.errors import ConfigError
from movr.domain.models import Base
from movr.placement.cockroach import render_statements
from movr.placement.spec import PlacementSpec, SpecError
from movr.store.cockroach import CONNECT_TIMEOUT_SECONDS, engine_url, one_line, redact
from movr.store.schema import sqlalchemy_url

# The database every CockroachDB cluster has; the session starts there because the spec's database
# does not exist yet.
ADMIN_DATABASE = "defaultdb"
VERSION_SQL = "SELECT version()"
REGIONS_SQL = "SHOW REGIONS FROM CLUSTER"
DATABASE_EXISTS_SQL = "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %(name)s"
# `SELECT version()` on CockroachDB: "CockroachDB CCL v25.4.2 (x86_64-pc-linux-gnu, built ...)".
_COCKROACH_BANNER = re.compile(r"CockroachDB\b[^(]*?\bv(\d+)\.(\d+)")
# Region name templates clusters commonly use, tried to suggest --region-names when regions are missing.
_TEMPLATE_GUESSES = ("{region}", "gcp-{region}", "aws-{region}", "azure-{region}")


class InitError(Exception):
    """`movr db init` stopped; the message is one line that says what to do. Nothing is left half-built."""


class Session(Protocol):
    """One autocommit session to the server: each statement is its own implicit transaction."""

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str) -> None: ...

    def close(self) -> None: ...


class PsycopgSession:
    """A `Session` on a psycopg 3 connection."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params).fetchall())  # type: ignore[arg-type]

    def execute(self, sql: str) -> None:
        # Without parameters psycopg sends the text as it is: no placeholder parsing of the DDL.
        self.conn.execute(sql)  # type: ignore[arg-type]

    def close(self) -> None:
        self.conn.close()


def connect_session(url: URL) -> Session:
    """A session to the server `url` names (the psycopg dialect's own reading of the URL, several hosts too)."""
    _, params = url.get_dialect()().create_connect_args(url)
    params.pop("context", None)
    conn = psycopg.connect(
        **params, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="movr-db-init"
    )
    return PsycopgSession(conn)


@dataclass(frozen=True)
class Server:
    """What the server said about itself before anything was applied."""

    banner: str
    version: tuple[int, int] | None  # CockroachDB's MAJOR.MINOR; None for any other server
    regions: tuple[str, ...] = ()
    database_exists: bool = False

    @property
    def product(self) -> str:
        """The server's name and version as its banner says, e.g. 'PostgreSQL 18.1'."""
        words = self.banner.split()
        return " ".join(words[:2]) if words else "an unknown server"


@dataclass(frozen=True)
class Applied:
    statements: int
    version: str
    where: str


def cockroach_version_of(banner: str) -> tuple[int, int] | None:
    """MAJOR.MINOR from CockroachDB's `SELECT version()`, or None if the banner is not CockroachDB's."""
    match = _COCKROACH_BANNER.match(banner.strip())
    return (int(match[1]), int(match[2])) if match else None


def survey(session: Session, database: str) -> Server:
    """Ask the server what it is, its regions, and whether `database` exists. Reads only."""
    banner = str(session.query(VERSION_SQL)[0][0])
    version = cockroach_version_of(banner)
    if version is None:
        return Server(banner, None)
    regions = tuple(str(row[0]) for row in session.query(REGIONS_SQL))
    exists = bool(session.query(DATABASE_EXISTS_SQL, {"name": database}))
    return Server(banner, version, regions, exists)


def plan_cockroach(spec: PlacementSpec, server: Server, *, drop: bool, where: str) -> list[str]:
    """Every check, then the statements to run; InitError (nothing to run) if any check fails. No I/O."""
    if server.version is None:
        raise InitError(
            f"{where} is {server.product}, not CockroachDB: point --url at a CockroachDB node, or create"
            " the single-region schema on a plain PostgreSQL with --url postgresql://..."
        )
    version = f"{server.version[0]}.{server.version[1]}"
    try:
        statements = render_statements(spec.with_changes(cockroach_version=version))
    except SpecError as err:
        raise InitError(f"the cluster runs CockroachDB v{version}, which cannot run this spec: {err}") from None
    wanted = [spec.cloud_region(region) for region in spec.regions]
    missing = [name for name in wanted if name not in server.regions]
    if missing:
        raise InitError(_missing_regions_message(spec, missing, server.regions))
    if server.database_exists and not drop:
        raise InitError(
            f"database {spec.database} exists already at {where}; --drop replaces it (all its data is lost),"
            " or name another database in a spec file (database = ...)"
        )
    if drop:
        statements = [f"DROP DATABASE IF EXISTS {spec.database} CASCADE", *statements]
    return statements


def _missing_regions_message(spec: PlacementSpec, missing: Sequence[str], has: Sequence[str]) -> str:
    message = (
        f"the cluster has no region {', '.join(missing)} (it has {', '.join(has) or 'none'}); start nodes"
        " there with --locality region=..., or map the spec's regions onto the cluster's with --region-names"
    )
    for template in _TEMPLATE_GUESSES:
        if all(template.format(region=region) in has for region in spec.regions):
            return f"{message} (here: --region-names '{template}')"
    return f"{message} TEMPLATE"


def admin_url(url: str, database: str) -> URL:
    """The URL to run the DDL from: the one given, on `defaultdb` when it names no other database."""
    try:
        given = make_url(url).database
    except ArgumentError:
        given = None  # engine_url says what is wrong with it
    parsed = engine_url(url)
    if not given or given == database:
        parsed = parsed.set(database=ADMIN_DATABASE)
    return parsed


def init_cockroach(
    url: str, spec: PlacementSpec, *, drop: bool = False, connect: Callable[[URL], Session] | None = None
) -> Applied:
    """Check everything, then apply the spec's DDL for the cluster's own version; see the module docstring."""
    connect = connect or connect_session
    try:
        target = admin_url(url, spec.database)
    except ConfigError as err:
        raise InitError(str(err)) from None
    where = redact(target)
    try:
        session = connect(target)
    except psycopg.Error as err:
        raise InitError(f"cannot reach {where}: {one_line(err)} (is the cluster running, and the URL right?)") from None
    try:
        try:
            server = survey(session, spec.database)
        except psycopg.Error as err:
            raise InitError(f"cannot ask {where} its version and regions: {one_line(err)}") from None
        statements = plan_cockroach(spec, server, drop=drop, where=where)
        _apply(session, statements, spec.database, target, connect, where)
    finally:
        session.close()
    version = f"{server.version[0]}.{server.version[1]}" if server.version else "?"
    return Applied(len(statements), version, where)


def _apply(
    session: Session,
    statements: Sequence[str],
    database: str,
    target: URL,
    connect: Callable[[URL], Session],
    where: str,
) -> None:
    created = False
    for number, statement in enumerate(statements, 1):
        try:
            session.execute(statement)
        except psycopg.Error as err:
            failed = f"statement {number} of {len(statements)} failed at {where}: {one_line(err)}"
            if not created:
                raise InitError(f"{failed}; nothing was created") from None
            raise InitError(f"{failed}; {_drop_again(database, target, connect)}") from None
        created = created or statement.startswith("CREATE DATABASE")


def _drop_again(database: str, target: URL, connect: Callable[[URL], Session]) -> str:
    """Undo a half-built database on a fresh session (the failed one may be gone); say what happened."""
    try:
        cleanup = connect(target)
        try:
            cleanup.execute(f"DROP DATABASE IF EXISTS {database} CASCADE")
        finally:
            cleanup.close()
    except psycopg.Error as err:
        return (
            f"dropping the half-built database {database} failed too ({one_line(err)}):"
            f" DROP DATABASE {database} CASCADE by hand"
        )
    return f"the half-built database {database} was dropped again, nothing is left"


# --- plain PostgreSQL ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    created: tuple[str, ...]
    kept: tuple[str, ...]
    where: str


def init_postgres(url: str, *, drop: bool = False) -> Created:
    """The single-region schema on a plain PostgreSQL, in one transaction: all of it or none of it."""
    try:
        target = sqlalchemy_url(url)
        where = redact(target)
        engine = create_engine(target, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    except (ArgumentError, psycopg.ProgrammingError) as err:
        raise InitError(f"not a PostgreSQL URL: {one_line(err)}") from None
    tables = set(Base.metadata.tables)
    try:
        with engine.begin() as conn:
            banner = str(conn.exec_driver_sql(VERSION_SQL).scalar_one())
            if cockroach_version_of(banner) is not None:
                raise InitError(
                    f"{where} is CockroachDB: create its multi-region schema with --url cockroachdb://..."
                    " (a postgresql:// URL means a plain, single-region PostgreSQL)"
                )
            if drop:
                Base.metadata.drop_all(conn)
            existing = tables & set(inspect(conn).get_table_names())
            Base.metadata.create_all(conn)
    except DBAPIError as err:
        if err.connection_invalidated or isinstance(err.orig, psycopg.OperationalError):
            hint = "(is the server running, and the URL right?)"
            raise InitError(f"cannot reach {where}: {one_line(err)} {hint}") from None
        raise InitError(f"cannot create MovR's tables at {where}: {one_line(err)}; nothing was created") from None
    except SQLAlchemyError as err:
        raise InitError(f"cannot create MovR's tables at {where}: {one_line(err)}; nothing was created") from None
    finally:
        engine.dispose()
    order = [table.name for table in Base.metadata.sorted_tables]
    return Created(
        tuple(name for name in order if name not in existing),
        tuple(name for name in order if name in existing),
        where,
    )
