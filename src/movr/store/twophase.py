"""Two-phase commit across the lab's region servers, and what finishes one whose coordinator is gone.

PostgreSQL's PREPARE TRANSACTION makes a participant's part durable but undecided: somebody must later
say COMMIT PREPARED or ROLLBACK PREPARED, and until then its rows stay locked (a prepared username
directory entry holds that name). The coordinator, the app server running the request, says it; but it
may die, or lose sight of a participant, in between. So the decision is recorded durably, in the part of
the transaction that homes the request's own rows (the "decision region"), which is never prepared:

1. every other participant runs its statements and PREPAREs (one parallel round of WAN round trips),
   while the decision region's part runs its statements in an open transaction;
2. if every part prepared and the action's own test passed, the decision region's part inserts a
   'commit' decision row and COMMITs: that local commit is the whole transaction's commit point;
   otherwise it rolls back;
3. every prepared participant is told COMMIT PREPARED or ROLLBACK PREPARED (one parallel round).

A part prepared longer than IN_DOUBT_AFTER_S is in doubt. A resolver (every lab app server sweeps its own
region's server) asks the decision region to insert an 'abort' decision for it:
- a 'commit' row is already there: the coordinator committed, so COMMIT PREPARED;
- the insert succeeds: nobody committed, and now nobody can, because the coordinator's own insert of its
  decision would fail on the primary key (it then rolls back and retries the action), so ROLLBACK PREPARED;
- the coordinator's commit is in flight: the insert waits on its uncommitted row, then sees it.
The two can never disagree, whatever the timing; IN_DOUBT_AFTER_S only keeps resolvers from racing a
coordinator that is merely slow.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from movr.domain.errors import StoreUnavailable
from movr.store.backend import RegionServer
from movr.store.work import Statement

log = logging.getLogger(__name__)

DECISIONS_TABLE = "movr_twophase_decisions"
DECISIONS_DDL = f"""
CREATE TABLE IF NOT EXISTS {DECISIONS_TABLE} (
    gid text PRIMARY KEY,
    outcome text NOT NULL CHECK (outcome IN ('commit', 'abort')),
    decided_at timestamptz NOT NULL DEFAULT now()
)
"""
GID_PREFIX = "movr:"
IN_DOUBT_AFTER_S = 5.0
SWEEP_INTERVAL_S = 2.0


class InDoubtAborted(Exception):
    """A resolver decided 'abort' for this transaction before its coordinator could commit it.

    Nothing was committed anywhere, so running the action again is safe: the SQLSTATE of a serialization
    failure tells `run_transaction` to do so.
    """

    sqlstate = "40001"


def new_gid(decision_region: str) -> str:
    """A transaction id that names where its decision is recorded (PostgreSQL allows 200 bytes)."""
    return f"{GID_PREFIX}{decision_region}:{uuid.uuid4()}"


def decision_region_of(gid: str) -> str | None:
    """The region that records `gid`'s decision; None for a transaction that is not MovR's."""
    if not gid.startswith(GID_PREFIX) or ":" not in gid.removeprefix(GID_PREFIX):
        return None
    return gid.removeprefix(GID_PREFIX).rsplit(":", 1)[0]


def commit_decision(gid: str) -> Statement:
    return Statement(f"INSERT INTO {DECISIONS_TABLE} (gid, outcome) VALUES (%(gid)s, 'commit')", {"gid": gid})


def forget_decision(gid: str) -> Statement:
    """Once every participant committed, the decision is no longer needed."""
    return Statement(f"DELETE FROM {DECISIONS_TABLE} WHERE gid = %(gid)s AND outcome = 'commit'", {"gid": gid})


def is_decision_conflict(error: BaseException) -> bool:
    """Did a coordinator's decision insert meet a resolver's 'abort' for the same transaction?"""
    diag = getattr(error, "diag", None)
    return isinstance(error, psycopg.errors.UniqueViolation) and getattr(diag, "table_name", None) == DECISIONS_TABLE


@dataclass(frozen=True)
class Resolution:
    gid: str
    region: str
    """The region whose server held the prepared part."""
    outcome: str
    """'commit' or 'abort'."""


def prepared_parts_statement(older_than_s: float) -> Statement:
    """MovR's parts prepared on a server for longer than `older_than_s` seconds (0: all of them)."""
    return Statement(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
        " AND starts_with(gid, %(prefix)s) AND prepared <= now() - make_interval(secs => %(age)s)"
        " ORDER BY prepared",
        {"prefix": GID_PREFIX, "age": older_than_s},
    )


def prepared_parts(server: RegionServer, older_than_s: float) -> list[str]:
    rows = server.execute("find_in_doubt", [prepared_parts_statement(older_than_s)])[0]
    return [row["gid"] for row in rows]


def decide(decision_server: RegionServer, gid: str) -> str:
    """The outcome of `gid`: the coordinator's 'commit' if it recorded one, else 'abort', made final."""
    rows = decision_server.execute(
        "decide_in_doubt",
        [
            Statement(
                f"INSERT INTO {DECISIONS_TABLE} (gid, outcome) VALUES (%(gid)s, 'abort') ON CONFLICT (gid) DO NOTHING",
                {"gid": gid},
            ),
            # READ COMMITTED: this statement's snapshot sees the row that the insert waited for.
            Statement(f"SELECT outcome FROM {DECISIONS_TABLE} WHERE gid = %(gid)s", {"gid": gid}),
        ],
    )[1]
    return rows[0]["outcome"]


def resolve_in_doubt(
    servers: Mapping[str, RegionServer], region: str, older_than_s: float = IN_DOUBT_AFTER_S
) -> list[Resolution]:
    """Finish every MovR part prepared on `region`'s server for longer than `older_than_s`."""
    resolved = []
    for gid in prepared_parts(servers[region], older_than_s):
        decision_region = decision_region_of(gid)
        if decision_region not in servers:
            log.warning("prepared transaction %s names no region of this lab; left alone", gid)
            continue
        try:
            outcome = decide(servers[decision_region], gid)
            finish = servers[region].commit_prepared if outcome == "commit" else servers[region].rollback_prepared
            finish(gid)
        except psycopg.errors.UndefinedObject:
            continue  # its coordinator or another resolver finished it first
        except StoreUnavailable as error:
            log.info("in-doubt transaction %s waits for its decision region: %s", gid, error)
            continue
        resolved.append(Resolution(gid, region, outcome))
    return resolved


class InDoubtSweeper:
    """A daemon thread that resolves its region's in-doubt parts every SWEEP_INTERVAL_S."""

    def __init__(self, servers: Mapping[str, RegionServer], region: str, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.servers = servers
        self.region = region
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"movr-in-doubt-{region}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)  # a sweep blocked on a lost server must not hold up a shutdown

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                for resolution in resolve_in_doubt(self.servers, self.region):
                    log.warning(
                        "in-doubt transaction %s on %s: %s (its coordinator did not finish it)",
                        resolution.gid,
                        resolution.region,
                        "committed" if resolution.outcome == "commit" else "rolled back",
                    )
            except (StoreUnavailable, psycopg.Error) as error:
                log.info("in-doubt sweep of %s skipped: %s", self.region, error)
