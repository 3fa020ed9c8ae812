"""Backends run Work. Service functions never know which one runs them (law 4).

`PostgresBackend` is one PostgreSQL server: every home is that server. The lab's regional backend and
the CockroachDB backend live beside it and follow the same contract.
"""

from __future__ import annotations

import abc
import contextlib
import select
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from movr.domain.errors import StoreUnavailable
from movr.domain.models import GLOBAL_TABLES, REGIONAL_TABLES
from movr.geo import Preset
from movr.store import prepared, stats
from movr.store.transaction import run_transaction
from movr.store.work import Isolation, Rows, Statement, Work

ALL_TABLES = (*REGIONAL_TABLES, *GLOBAL_TABLES)
T = TypeVar("T")

# Set on every connection of every pool when it opens (libpq `options`: no round trip of its own), so
# nothing waits without bound: a statement, a wait for a row lock (e.g. a row held by a prepared
# transaction whose coordinator died: the request is told at once instead), or a
# transaction its client abandoned while holding locks. A lock wait that long is never a healthy one:
# holders commit within a few WAN round trips.
SESSION_TIMEOUTS = {
    "statement_timeout": "30s",
    "lock_timeout": "2s",
    "idle_in_transaction_session_timeout": "60s",
}


# PostgreSQL's own setting for our sessions (not CockroachDB's: it caches plans itself). Every statement is
# prepared on its connection (movr.store.prepared, psycopg's pipeline), so plan it once there: by default
# PostgreSQL plans each of a statement's first five runs anew at Bind, which a lab server's log measured at
# 0.4-0.8 ms for our CTEs against 0.1-0.2 ms with the plan kept, and a journey runs each statement only a
# few times per connection. Our statements look rows up by key, so one plan fits every parameter.
PLAN_ONCE = "-c plan_cache_mode=force_generic_plan"


def session_options(extra: str | None = None) -> str:
    """The libpq `options` that set SESSION_TIMEOUTS (and `extra` settings) on a new connection."""
    timeouts = " ".join(f"-c {name}={value}" for name, value in SESSION_TIMEOUTS.items())
    return f"{timeouts} {extra}" if extra else timeouts


class Backend(abc.ABC):
    """Runs Work as one transaction each, on the servers that home its data."""

    name = "backend"

    def __init__(self, preset: Preset, region: str) -> None:
        self.preset = preset
        self.region = region

    def home_region(self, city: str) -> str:
        return self.preset.region_of(city)

    @abc.abstractmethod
    def run(self, work: Work) -> list[Rows]:
        """Rows of each statement, in order."""

    def ping(self) -> bool:
        """Is the database this app server needs reachable?"""
        return True

    def warm(self, timeout: float = 15.0) -> None:  # noqa: B027 - optional for backends without pools
        """Open connections before the first request needs them."""

    def start_housekeeping(self) -> None:  # noqa: B027 - optional for backends that need none
        """Start what an app server's backend does in the background (stopped by close())."""

    @abc.abstractmethod
    def load(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None:
        """Bulk-load rows, each onto the server(s) that home it."""

    @abc.abstractmethod
    def truncate(self) -> None:
        """Empty every MovR table everywhere."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        pass


class RegionServer(Protocol):
    """What the regional backend and its claims resolver ask of one region's server.

    `ServerPool` is the real one; unit tests hand the backend fakes that answer from a script and count
    the round trips (tests/unit/fake_servers.py). `execute` is one round trip.
    """

    region: str
    wan: bool

    def execute(
        self, action: str, statements: Sequence[Statement], isolation: Isolation | None = None
    ) -> list[Rows]: ...

    def copy_rows(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None: ...

    def truncate(self, tables: Sequence[str]) -> None: ...

    def wait_ready(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class ServerPool:
    """A psycopg pool to one server, in autocommit so a lone statement is its own transaction.

    A single statement then costs one round trip (no BEGIN, no COMMIT), run on a statement prepared under
    our own name (`movr.store.prepared`: no pipeline once prepared); several statements go in one pipeline,
    BEGIN and COMMIT included, so a whole transaction still costs one round trip. Either way a statement is
    prepared on the server the first time a connection runs it, inside that same round trip.
    """

    def __init__(
        self,
        conninfo: str,
        region: str,
        *,
        wan: bool = False,
        max_size: int = 8,
        options: str | None = None,
        timeout: float = 10.0,
        reconnect_timeout: float = 5 * 60.0,
    ) -> None:
        """`timeout`: how long a request waits for a connection; `reconnect_timeout`: how long the pool keeps
        retrying (with backoff) to open one. Labs with a survival goal shorten both, so that a request for
        a lost server fails fast and the first request after a failover connects at once instead of
        waiting out the pool's backoff."""
        self.conninfo = conninfo
        self.region = region
        self.wan = wan
        self.max_size = max_size
        # Prepared on first use: every statement of a request is one of a few dozen the app knows.
        kwargs: dict = {
            "autocommit": True,
            "row_factory": dict_row,
            "prepare_threshold": 0,
            "options": session_options(f"{PLAN_ONCE} {options}" if options else PLAN_ONCE),
        }
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs=kwargs,
            open=True,
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
            name=f"movr-{region}",
        )

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection that is still open, as `pool.connection()` gives but never a stale one.

        A server that crashed, failed over or was cut off by a link closes its idle connections; the pool
        cannot know until one is used, and the request that used it would fail. So an idle connection
        whose socket is readable (the peer closed it, or sent a farewell) is dropped and another taken:
        nothing was sent on it, so trying another is safe even for a write, and costs no round trip.
        """
        for _ in range(self.max_size + 1):
            conn = self.pool.getconn()
            if closed_by_peer(conn):
                conn.close()
                self.pool.putconn(conn)  # a closed connection is discarded and replaced by the pool
                continue
            try:
                with conn:
                    yield conn
            finally:
                self.pool.putconn(conn)
            return
        raise psycopg.OperationalError(f"every pooled connection to the database in {self.region} was closed")

    def wait_ready(self, timeout: float) -> None:
        self.pool.wait(timeout=timeout)

    def execute(self, action: str, statements: Sequence[Statement], isolation: Isolation | None = None) -> list[Rows]:
        """The statements as one transaction, in one round trip."""
        alone = len(statements) == 1 and isolation is None
        return self._run(action, statements, None if alone else "COMMIT", isolation)

    def prepare(self, gid: str, action: str, statements: Sequence[Statement]) -> list[Rows]:
        """Phase one of a two-phase commit: run the statements and PREPARE, in one round trip."""
        return self._run(action, statements, sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))

    def _run(
        self,
        action: str,
        statements: Sequence[Statement],
        finish: str | sql.Composed | None,
        isolation: Isolation | None = None,
    ) -> list[Rows]:
        def round_trip() -> list[Rows]:
            with self._connection() as conn:
                if finish is None and len(statements) == 1 and prepared.convertible(statements[0].sql):
                    return [prepared.run_alone(conn, statements[0].sql, statements[0].params)]
                return run_pipelined(conn, statements, finish, isolation=isolation)

        return self._timed(action, len(statements), round_trip)

    def _timed(self, action: str, statements: int, round_trip: Callable[[], T]) -> T:
        """One round trip to this server, counted (law 2), with a lost server reported as StoreUnavailable."""
        started = time.perf_counter()
        try:
            return round_trip()
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"the database in {self.region} is not reachable: {error}") from error
        finally:
            stats.record(action, statements, time.perf_counter() - started, 1 if self.wan else 0, (self.region,))

    def commit_prepared(self, gid: str) -> None:
        self._finish_prepared("COMMIT PREPARED {}", gid)

    def rollback_prepared(self, gid: str) -> None:
        self._finish_prepared("ROLLBACK PREPARED {}", gid)

    def _finish_prepared(self, template: str, gid: str) -> None:
        def round_trip() -> None:
            with self._connection() as conn:
                # A statement that names one transaction is not worth preparing.
                conn.execute(sql.SQL(template).format(sql.Literal(gid)), prepare=False)

        self._timed("two_phase_commit", 0, round_trip)

    def copy_rows(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None:
        """COPY rows in (one stream, far fewer round trips than INSERTs)."""
        if not rows:
            return
        columns = list(rows[0])
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # Bulk loading is not a request: it may take longer than any request statement may.
            cur.execute("SET LOCAL statement_timeout = 0")
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for number, row in enumerate(rows, 1):
                    copy.write_row([row[c] for c in columns])
                    if progress and number % 500 == 0:
                        progress(500)
            if progress:
                progress(len(rows) % 500)

    def truncate(self, tables: Sequence[str]) -> None:
        with self.pool.connection() as conn:
            conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")

    def close(self) -> None:
        self.pool.close()


def closed_by_peer(conn: psycopg.Connection) -> bool:
    """Has the server (or a link) closed this idle connection? A local check: no round trip.

    An idle connection in autocommit receives nothing unless its peer closed it or is about to (a
    FATAL message on shutdown), so a readable socket means it must not be used. `ServerPool` and
    `CockroachBackend`'s pool (on checkout, instead of a pre-ping) both ask it.
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


def run_pipelined(
    conn: psycopg.Connection,
    statements: Sequence[Statement],
    finish: str | sql.Composed | None,
    *,
    isolation: Isolation | None = None,
) -> list[Rows]:
    """Run statements in one round trip: alone (autocommit: its own transaction, `finish` None), or
    between BEGIN and `finish` (COMMIT, or PREPARE TRANSACTION for a two-phase commit). `isolation` is the
    transaction's level, set by its BEGIN (default: the server's, READ COMMITTED).

    Always a pipeline: psycopg prepares a statement the first time a connection runs it (server-side
    plans save the parse and plan on every later run), and outside a pipeline that preparation would
    cost a round trip of its own.
    """
    cursors = []
    try:
        with conn.pipeline():
            if finish is not None:
                conn.execute(BEGIN[isolation], prepare=False)
            for statement in statements:
                cur = conn.cursor()
                cur.execute(statement.sql, statement.params)
                cursors.append(cur)
            if finish is not None:
                # Never prepared: a PREPARE TRANSACTION names a new transaction each time.
                conn.execute(finish, prepare=False)
        return [cur.fetchall() if cur.description else [] for cur in cursors]
    except Exception:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK", prepare=False)
            prepared.forget(conn)
        raise
    finally:
        for cur in cursors:
            cur.close()


BEGIN: dict[Isolation | None, str] = {
    None: "BEGIN",
    "repeatable read": "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "serializable": "BEGIN ISOLATION LEVEL SERIALIZABLE",
}


class PostgresBackend(Backend):
    """One PostgreSQL server homes everything: the `single` and `hybrid` topologies, and tests."""

    name = "postgres"

    def __init__(self, conninfo: str, preset: Preset, region: str | None = None, *, wan: bool = False) -> None:
        super().__init__(preset, region or preset.primary_region)
        self.server = ServerPool(conninfo, preset.primary_region, wan=wan)

    def run(self, work: Work) -> list[Rows]:
        # One server: unique indexes already make claims global, and a search has one place to look.
        return run_transaction(lambda: self.server.execute(work.action, work.statements, work.isolation))

    def ping(self) -> bool:
        try:
            self.server.execute("ping", [Statement("SELECT 1")])
        except StoreUnavailable:
            return False
        return True

    def warm(self, timeout: float = 15.0) -> None:
        self.server.wait_ready(timeout)

    def load(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None:
        self.server.copy_rows(table, rows, progress)

    def truncate(self) -> None:
        self.server.truncate(ALL_TABLES)

    def close(self) -> None:
        self.server.close()
