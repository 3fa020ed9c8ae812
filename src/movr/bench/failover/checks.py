"""What the drill proves once the lab is healed, by reading the databases (never the app): the ledger, the
invariants, and that every member of every group holds exactly its primary's rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from movr.bench.failover.ledger import Ledger
from movr.lab.standbys import wait_caught_up
from movr.lab.state import LabState
from movr.lab.survival import current_primaries, server_index

CONNECT_TIMEOUT_S = 5


def _dsn(state: LabState, name: str) -> str:
    return state.dsn(server_index(state)[name].port, connect_timeout=CONNECT_TIMEOUT_S)


@contextlib.contextmanager
def _primaries(state: LabState) -> Iterator[dict[str, psycopg.Connection]]:
    """A connection to every group's current primary, all closed however the body ends."""
    with contextlib.ExitStack() as stack:
        primaries = current_primaries(state).items()
        yield {
            group: stack.enter_context(psycopg.connect(_dsn(state, name), autocommit=True)) for group, name in primaries
        }


def _count(conn: psycopg.Connection, query: sql.Composable | str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def check_ledger(state: LabState, ledger: Ledger) -> dict[str, Any]:
    """Every acknowledged write on its region's current primary, exactly once across all of them."""
    preset = state.preset
    missing: list[str] = []
    duplicated: list[str] = []

    def count(conns: dict[str, psycopg.Connection], table: str, ids: dict[str, str], ended: bool = False) -> None:
        name = sql.Identifier(table)
        at_home = sql.SQL("SELECT count(*) FROM {} WHERE city = %s AND id = %s").format(name)
        if ended:
            at_home += sql.SQL(" AND end_time IS NOT NULL")
        anywhere = sql.SQL("SELECT count(*) FROM {} WHERE id = %s").format(name)
        for row_id, city in ids.items():
            found = _count(conns[preset.region_of(city)], at_home, (city, row_id))
            everywhere = sum(_count(conn, anywhere, (row_id,)) for conn in conns.values())
            if found == 0:
                missing.append(f"{table} {row_id} ({city}){' without its end time' if ended else ''}")
            if everywhere > 1:
                duplicated.append(f"{table} {row_id} ({city}) x{everywhere}")

    with _primaries(state) as conns:
        count(conns, "users", ledger.users)
        count(conns, "vehicles", ledger.vehicles)
        count(conns, "rides", {**ledger.started, **ledger.adopted})
        count(conns, "rides", {**ledger.ended, **ledger.ended_unacked}, ended=True)
    return {
        "acknowledged_writes": ledger.acknowledged,
        "lost": missing,
        "duplicated": duplicated,
        "ok": not missing and not duplicated,
    }


INVARIANTS = {
    "vehicle_in_two_open_rides": "SELECT count(*) FROM (SELECT city, vehicle_id FROM rides WHERE end_time IS NULL "
    "GROUP BY city, vehicle_id HAVING count(*) > 1) AS twice",
    "ended_ride_without_end_time": "SELECT count(*) FROM rides WHERE end_location IS NOT NULL AND end_time IS NULL",
    "vehicle_status_disagrees_with_rides": "SELECT count(*) FROM vehicles v WHERE (v.status = 'in_use') <> EXISTS "
    "(SELECT 1 FROM rides r WHERE r.city = v.city AND r.vehicle_id = v.id AND r.end_time IS NULL)",
}


def check_invariants(state: LabState) -> dict[str, Any]:
    with _primaries(state) as conns:
        found = {name: sum(_count(conn, query) for conn in conns.values()) for name, query in INVARIANTS.items()}
    return {"violations": found, "ok": not any(found.values())}


FINGERPRINT = (
    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM vehicles), (SELECT count(*) FROM rides), "
    "(SELECT md5(coalesce(string_agg(city || id::text || coalesce(end_time::text, '-'), ',' ORDER BY city, id), '')) "
    "FROM rides), (SELECT md5(coalesce(string_agg(city || id::text || status, ',' ORDER BY city, id), '')) "
    "FROM vehicles)"
)


def check_replicas(state: LabState, lagging: str | None = None) -> dict[str, Any]:
    """After the heal, every member of every group holds exactly its primary's rows. `lagging`: why a standby
    had not caught up with its primary when the heal's wait ended (the check then fails, whatever it reads)."""
    layout = state.plan.survival
    assert layout is not None, "a failover drill's lab has a survival goal"
    groups = {}
    ok = True
    for group, primary in current_primaries(state).items():
        prints: dict[str, list[Any]] = {}
        for name in layout.groups[group].members:
            try:
                with psycopg.connect(_dsn(state, name), autocommit=True) as conn:
                    row = conn.execute(FINGERPRINT).fetchone()
                    prints[name] = list(row) if row else []
            except psycopg.Error as err:
                prints[name] = [f"unreachable: {err}"]
        same = all(value == prints[primary] for value in prints.values())
        ok = ok and same
        groups[group] = {"primary": primary, "identical": same, "rows": prints[primary][:3]}
    return {"groups": groups, "ok": ok and lagging is None, "lagging": lagging}


def wait_replicas(run_dir: Path, timeout: float = 60.0) -> None:
    """Until every standby has replayed its primary's WAL (after the heal: the replicas check compares)."""
    state = LabState.read(run_dir)
    layout = state.plan.survival
    assert layout is not None, "a failover drill's lab has a survival goal"
    for group, primary in current_primaries(state).items():
        for name in layout.groups[group].members:
            if name != primary:
                wait_caught_up(layout.port(name), layout.port(primary), state.passfile, timeout)
