"""CockroachBackend: the actions, unchanged, on a multi-region CockroachDB cluster.

The app server in region R holds one SQLAlchemy engine (sqlalchemy-cockroachdb on psycopg 3) to R's
gateway node(s): the URL it is given names them, e.g.

    cockroachdb://movr@crdb-us-east1.internal:26257/movr?sslmode=verify-full
    cockroachdb://movr@/movr?host=10.0.0.1:26257&host=10.0.0.2:26257      (several gateways in R)

Where a row lives is the database's business here, not the backend's: the placement spec rendered to
DDL (movr.placement.cockroach) homes each row, and the gateway sends every read and write to its home.
So the `Home` of a piece of work needs no routing:

- `Home.of_city`  the region is computed from the city (REGIONAL BY ROW AS region), so a statement that
                   names the city goes straight to that region;
- `Home.search`   CockroachDB runs locality-optimized search itself (local region first, then the rest);
- `Home.local`    GLOBAL tables serve fresh reads from every region;
- `Home.global_write` a GLOBAL write waits for every region by itself;
- `claims`/`releases` unique indexes of REGIONAL BY ROW tables are enforced across every region by
                   the database (uniqueness checks), so there is nothing to claim by hand.

Every piece of work is one transaction through `sqlalchemy_cockroachdb.run_transaction`, which retries
CockroachDB's serialization restarts (SQLSTATE 40001). Optional follower reads (`follower_reads=True`)
serve read-only work about a city homed in another region from the nearest replica, as of
`follower_read_timestamp()` (about 4.8 s ago); see `follower_read_statement` for exactly when.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import psycopg
import sqlalchemy_cockroachdb
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from movr.domain.errors import RetriesExhausted, StoreUnavailable
from movr.domain.models import Base
from movr.geo import Preset
from movr.store import stats
from movr.store.backend import ALL_TABLES, Backend
from movr.store.factory import ConfigError
from movr.store.transaction import sqlstate_of
from movr.store.work import Rows, Statement, Work

log = logging.getLogger(__name__)

DRIVER = "cockroachdb+psycopg"
DEFAULT_PORT = 26257
DEFAULT_DATABASE = "movr"
MAX_RETRIES = 8
MAX_BACKOFF_SECONDS = 1
CONNECT_TIMEOUT_SECONDS = 10
LOAD_BATCH = 500

# https://www.cockroachlabs.com/docs/stable/follower-reads - "Exact staleness follower reads in read-only
# transactions": BEGIN; SET TRANSACTION AS OF SYSTEM TIME follower_read_timestamp(); SELECT ...; COMMIT;
FOLLOWER_READ_SQL = "SET TRANSACTION AS OF SYSTEM TIME follower_read_timestamp()"

# Accepted spellings of a CockroachDB URL; everything becomes cockroachdb+psycopg (psycopg 3).
_ACCEPTED_DRIVERS = {"cockroachdb", "cockroachdb+psycopg", "postgresql", "postgresql+psycopg", "postgres"}
_CLOUD_PREFIXES = ("gcp-", "aws-", "azure-")
# Connection-level failures: the gateway is down or unreachable, not the statement's fault.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def engine_url(url: str | URL) -> URL:
    """A SQLAlchemy URL for the psycopg 3 CockroachDB dialect, with CockroachDB's port and the movr database."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        raise ConfigError(f"not a database URL: {redact(str(url))}") from None
    if parsed.drivername not in _ACCEPTED_DRIVERS:
        raise ConfigError(f"expected a cockroachdb:// URL (driven by psycopg 3), not {parsed.drivername}://")
    parsed = parsed.set(drivername=DRIVER)
    # Several gateways may be listed as ?host=a:26257&host=b:26257; then the port lives in each entry.
    if parsed.port is None and parsed.host and "host" not in parsed.query:
        parsed = parsed.set(port=DEFAULT_PORT)
    if not parsed.database:
        parsed = parsed.set(database=DEFAULT_DATABASE)
    return parsed


def redact(url: str | URL) -> str:
    """The URL without its password, for messages."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable URL>"
    return parsed.render_as_string(hide_password=True)


def resolve_region(preset: Preset, name: str) -> tuple[str, str | None]:
    """(preset region, cluster region name or None) for `us-east1` or a cluster name like `gcp-us-east1`."""
    if name in preset.regions:
        return name, None
    for prefix in _CLOUD_PREFIXES:
        if name.startswith(prefix) and name.removeprefix(prefix) in preset.regions:
            return name.removeprefix(prefix), name
    raise ConfigError(f"region {name!r} is not a region of preset {preset.name} ({', '.join(preset.regions)})")


def one_line(error: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background links."""
    inner = getattr(error, "orig", None) or error
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0]


def is_unavailable(error: BaseException) -> bool:
    """Did the gateway fail to answer (as opposed to rejecting the statement)?"""
    state = sqlstate_of(error)
    if state is not None:
        return state.startswith("08") or state in _UNAVAILABLE_SQLSTATES
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    inner = getattr(error, "orig", error)
    return isinstance(inner, psycopg.OperationalError | psycopg.InterfaceError)


def _execute(conn: Connection, statements: Sequence[Statement]) -> list[Rows]:
    """Run the statements in order on `conn`; rows of each as dicts (psycopg %(name)s placeholders pass through)."""
    results: list[Rows] = []
    for statement in statements:
        result = conn.exec_driver_sql(statement.sql, dict(statement.params))
        results.append([dict(row) for row in result.mappings()] if result.returns_rows else [])
    return results


class CockroachBackend(Backend):
    """One engine to the gateway node(s) in this app server's region; the database homes the rows."""

    name = "cockroach"

    def __init__(
        self,
        url: str,
        preset: Preset,
        region: str,
        *,
        follower_reads: bool = False,
        pool_size: int = 8,
    ) -> None:
        preset_region, cluster_region = resolve_region(preset, region or preset.primary_region)
        super().__init__(preset, preset_region)
        # The cluster's name for this region when the caller used it (e.g. gcp-us-east1); checked by ping().
        self.cluster_region = cluster_region
        self.follower_reads = follower_reads
        self.url = engine_url(url)
        # create_engine does not connect: this backend can be built (and tested) without a cluster.
        self.engine: Engine = create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": f"movr-{preset_region}"},
        )

    # --- running work ------------------------------------------------------------------------------

    def follower_read_statement(self, work: Work) -> str | None:
        """The statement that turns `work` into a follower read, or None to read fresh from the leaseholder.

        Only when follower reads are switched on, for read-only work about a city homed in *another*
        region: there the nearest (non-voting) replica saves a WAN round trip, and a few seconds of
        staleness is acceptable (browsing another city's vehicles or rides). Never for:
        - work about this region's cities: the leaseholder is local already, staleness would buy nothing;
        - `Home.search` (log in, find a user by id): a user who has just signed up must be found;
        - `Home.local` (GLOBAL tables): they already serve fresh reads locally;
        - any write.
        """
        if not self.follower_reads or not work.readonly or work.home.kind != "city" or not work.home.city:
            return None
        try:
            home = self.home_region(work.home.city)
        except ValueError:
            return None
        return FOLLOWER_READ_SQL if home != self.region else None

    def run(self, work: Work) -> list[Rows]:
        started = time.perf_counter()
        try:
            follower = self.follower_read_statement(work)
            if follower is not None:
                return self._run_follower_read(follower, work.statements)
            return sqlalchemy_cockroachdb.run_transaction(
                self.engine,
                lambda conn: _execute(conn, work.statements),
                max_retries=MAX_RETRIES,
                max_backoff=MAX_BACKOFF_SECONDS,
            )
        except SQLAlchemyError as error:
            if sqlstate_of(error) == "40001":
                raise RetriesExhausted(
                    f"gave up after {MAX_RETRIES} retries: CockroachDB kept restarting the transaction"
                ) from error
            if is_unavailable(error):
                raise StoreUnavailable(
                    f"the CockroachDB gateway for {self.region} is not reachable: {one_line(error)}"
                ) from error
            raise
        finally:
            # The gateway is in this region: the app itself crosses no WAN link. What the database does
            # across regions (uniqueness checks, GLOBAL writes, region survival quorums) is not visible here.
            stats.record(work.action, len(work.statements), time.perf_counter() - started, 0, (self.region,))

    def _run_follower_read(self, follower_sql: str, statements: Sequence[Statement]) -> list[Rows]:
        # Exactly the documented shape: BEGIN; SET TRANSACTION AS OF SYSTEM TIME ...; SELECT ...; COMMIT.
        # A read at a fixed past timestamp conflicts with no writer, so there is no restart to retry.
        with self.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(follower_sql)
            return _execute(conn, statements)

    # --- administration ------------------------------------------------------------------------------

    def gateway_region(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("SELECT gateway_region()").scalar_one())

    def ping(self) -> bool:
        try:
            gateway = self.gateway_region()
        except SQLAlchemyError:
            return False
        expected = self.cluster_region
        if (expected and gateway != expected) or (not expected and not gateway.endswith(self.region)):
            # Not fatal (the data is still right), but every statement now pays a WAN round trip.
            log.warning("app server for %s is connected to a gateway in %s", self.region, gateway)
        return True

    def load(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None:
        """Insert rows in batches, one transaction each (CockroachDB prefers small transactions).

        Rows of REGIONAL BY ROW tables with a computed region go to their city's region; rows of
        `default`/`rehoming` tables are homed in this gateway's region unless they carry crdb_region.
        """
        if table not in ALL_TABLES:
            raise ValueError(f"unknown table {table!r}")
        if not rows:
            return
        columns = list(rows[0])
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(f'%({c})s' for c in columns)})"
        for start in range(0, len(rows), LOAD_BATCH):
            batch = [dict(row) for row in rows[start : start + LOAD_BATCH]]
            sqlalchemy_cockroachdb.run_transaction(
                self.engine,
                lambda conn, batch=batch: conn.exec_driver_sql(sql, batch),
                max_retries=MAX_RETRIES,
                max_backoff=MAX_BACKOFF_SECONDS,
            )
            if progress:
                progress(len(batch))

    def truncate(self) -> None:
        # DELETE rather than TRUNCATE: TRUNCATE is a schema change in CockroachDB (new ranges, zone
        # configs re-applied per region), far slower than deleting the few rows a test or demo holds.
        # Children first, for the foreign keys.
        def delete_all(conn: Connection) -> None:
            for table in reversed(Base.metadata.sorted_tables):
                conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE true")

        sqlalchemy_cockroachdb.run_transaction(self.engine, delete_all, max_retries=MAX_RETRIES)

    def close(self) -> None:
        self.engine.dispose()


def apply_statements(url: str, statements: Sequence[str], *, drop_database: str | None = None) -> int:
    """Run dbinit statements in order on one session (its SET statements hold for what follows).

    Connects to `defaultdb`: the database the script creates does not exist yet. Returns the count run.
    """
    target = engine_url(url).set(database="defaultdb")
    engine = create_engine(
        target, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    )
    try:
        with engine.connect() as conn:
            if drop_database:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {drop_database} CASCADE")
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    return len(statements)
