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

Round trips (law 5; counted by tests/integration/test_cockroach_round_trips.py):

- a single statement (every Work the actions hand over is one) runs in autocommit as an *implicit
  transaction*: one round trip to the gateway, and CockroachDB retries it on the server by itself when it can
  (https://www.cockroachlabs.com/docs/stable/transactions#automatic-retries). A 40001 that still reaches
  the client is retried here, bounded and with backoff (`movr.store.transaction.run_transaction`);
- work of several statements keeps the client-side retry loop of `sqlalchemy_cockroachdb.run_transaction`
  (BEGIN, SAVEPOINT cockroach_restart, the statements, RELEASE, COMMIT);
- no pre-ping: an idle connection that the gateway closed is noticed on checkout by a local look at its
  socket (`closed_by_peer`, the lab's check too) and replaced before anything is sent on it.

SQLSTATE 40003 (the result is ambiguous: the commit may or may not have happened) is never retried; it
becomes `ResultAmbiguous`. Optional follower reads (`follower_reads=True`) serve read-only work about a
city homed in another region from the nearest replica, as of `follower_read_timestamp()`; see
`follower_read_statement` for exactly when.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import psycopg
import sqlalchemy_cockroachdb
from psycopg.rows import dict_row
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from movr.domain.errors import ConfigError, ResultAmbiguous, RetriesExhausted, StoreUnavailable
from movr.domain.models import Base
from movr.geo import Preset
from movr.store import stats
from movr.store.backend import ALL_TABLES, Backend, closed_by_peer, run_pipelined, session_options
from movr.store.transaction import run_transaction, sqlstate_of
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
# "statement completion unknown": CockroachDB lost track of whether the commit happened.
AMBIGUOUS_SQLSTATE = "40003"


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


def _replace_if_closed_by_peer(
    dbapi_connection: psycopg.Connection, record: ConnectionPoolEntry, proxy: object
) -> None:
    """Pool checkout hook: a connection the gateway closed while idle is reconnected, never used.

    SQLAlchemy answers a DisconnectionError raised here by reconnecting the pool entry and checking
    again. Nothing was sent on the old connection, so this is safe for a write too, and unlike
    `pool_pre_ping` (a `SELECT 1` per checkout) it costs no round trip.
    """
    if closed_by_peer(dbapi_connection):
        raise DisconnectionError("the gateway closed this idle connection")


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
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": f"movr-{preset_region}",
                # statement_timeout, lock_timeout and idle_in_transaction_session_timeout, as on the lab's
                # servers: CockroachDB accepts `-c name=value` session variables in `options` too. Options
                # the URL gives (e.g. --cluster=<routing id>) are kept: connect_args would replace them.
                "options": session_options(str(self.url.query.get("options") or "") or None),
            },
        )
        event.listen(self.engine, "checkout", _replace_if_closed_by_peer)

    # --- running work ------------------------------------------------------------------------------

    def follower_read_statement(self, work: Work) -> str | None:
        """The statement that turns `work` into a follower read, or None to read fresh from the leaseholder.

        Only when follower reads are switched on, for read-only work about a city homed in *another*
        region: there the nearest (non-voting) replica saves a WAN round trip, and a few seconds of
        staleness is acceptable (browsing another city's vehicles or rides). Never for:
        - work about this region's cities: the leaseholder is local already, staleness would buy nothing;
        - `Home.search` (log in by username): a user who has just signed up must be found;
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
        try:
            follower = self.follower_read_statement(work)
            if follower is not None:
                return self._run_follower_read(work, follower)
            if len(work.statements) == 1:
                return self._run_implicit(work)
            return self._run_explicit(work)
        except (SQLAlchemyError, psycopg.Error) as error:
            if sqlstate_of(error) == AMBIGUOUS_SQLSTATE:
                raise ResultAmbiguous() from error
            if sqlstate_of(error) == "40001":
                raise RetriesExhausted(
                    f"gave up after {MAX_RETRIES} retries: CockroachDB kept restarting the transaction"
                ) from error
            if is_unavailable(error):
                raise StoreUnavailable(
                    f"the CockroachDB gateway for {self.region} is not reachable: {one_line(error)}"
                ) from error
            raise

    def _record(self, work: Work, statements: int, started: float) -> None:
        # The gateway is in this region: the app itself crosses no WAN link. What the database does
        # across regions (uniqueness checks, GLOBAL writes, region survival quorums) is not visible here.
        stats.record(work.action, statements, time.perf_counter() - started, 0, (self.region,))

    def _run_implicit(self, work: Work) -> list[Rows]:
        """One statement, one round trip: an implicit transaction, retried by the gateway itself.

        CockroachDB retries it on the server while the result has not been sent yet; a 40001 that still
        reaches us aborted the statement (nothing committed), so sending it again is safe.
        """

        def attempt() -> list[Rows]:
            started = time.perf_counter()
            try:
                return self._round_trip(work.statements)
            finally:
                self._record(work, len(work.statements), started)

        return run_transaction(attempt, max_attempts=MAX_RETRIES, max_delay=MAX_BACKOFF_SECONDS)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection (checked on checkout, see `_replace_if_closed_by_peer`) in autocommit with
        rows as dicts, handed back as SQLAlchemy expects it, or dropped if it broke."""
        pooled = self.engine.raw_connection()
        conn: psycopg.Connection = pooled.driver_connection
        row_factory = conn.row_factory
        try:
            conn.autocommit = True
            conn.row_factory = dict_row
            yield conn
        finally:
            if conn.broken or conn.closed:
                pooled.invalidate()  # returned, never handed out again: the pool opens a fresh one when needed
            else:
                try:
                    # Back to what SQLAlchemy expects of a pooled connection (its own queries, load, truncate).
                    conn.autocommit = False
                    conn.row_factory = row_factory
                finally:
                    pooled.close()

    def _round_trip(self, statements: Sequence[Statement], finish: str | None = None) -> list[Rows]:
        """One round trip: a lone statement as an implicit transaction, or statements between BEGIN and
        `finish` in one pipeline (`run_pipelined`, as the lab's servers run them).

        A lone statement is sent unprepared: libpq writes Parse, Bind, Execute and Sync at once and the
        gateway answers once. Preparing it (psycopg does on a statement's fifth run) would cost a round
        trip of its own outside a pipeline, and CockroachDB's query plan cache keeps the plan anyway.
        """
        with self._connection() as conn:
            if finish is None and len(statements) == 1:
                with conn.cursor() as cur:
                    cur.execute(statements[0].sql, statements[0].params, prepare=False)
                    return [cur.fetchall() if cur.description else []]
            return run_pipelined(conn, statements, finish)

    def _run_explicit(self, work: Work) -> list[Rows]:
        """Several statements: one transaction with CockroachDB's client-side retry protocol."""
        attempts = 0

        def attempt(conn: Connection) -> list[Rows]:
            nonlocal attempts
            attempts += 1
            return _execute(conn, work.statements)

        started = time.perf_counter()
        try:
            return sqlalchemy_cockroachdb.run_transaction(
                self.engine, attempt, max_retries=MAX_RETRIES, max_backoff=MAX_BACKOFF_SECONDS
            )
        finally:
            self._record(work, len(work.statements) * attempts, started)

    def _run_follower_read(self, work: Work, follower_sql: str) -> list[Rows]:
        # Exactly the documented shape, BEGIN; SET TRANSACTION AS OF SYSTEM TIME ...; SELECT ...; COMMIT,
        # sent as one pipeline: one round trip. A read at a fixed past timestamp conflicts with no writer,
        # so there is no restart to retry.
        started = time.perf_counter()
        try:
            return self._round_trip([Statement(follower_sql), *work.statements], "COMMIT")[1:]
        finally:
            self._record(work, len(work.statements), started)

    # --- administration ------------------------------------------------------------------------------

    def gateway_region(self) -> str:
        (rows,) = self._round_trip([Statement("SELECT gateway_region() AS region")])
        return str(rows[0]["region"])

    def ping(self) -> bool:
        try:
            gateway = self.gateway_region()
        except (SQLAlchemyError, psycopg.Error):
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


# Applying dbinit.sql (check the cluster first, then all or nothing) lives in movr.placement.apply.
