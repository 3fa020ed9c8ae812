"""The YCSB tables on every region's server: their shape, the statements on them, loading and counting.

``usertable`` (``ycsb_key`` text primary key, ``field0..field9`` text) holds the rows, each on the server
of its home region; ``usertable_keys`` holds the `insert` experiment's claims. Loading and counting go
straight to the servers, past the links: they are never measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from movr.lab.supervisor import ServerLab

FIELD_COUNT = 10
FIELD_LENGTH = 100  # bytes per field, YCSB's default
FIELDS = tuple(f"field{i}" for i in range(FIELD_COUNT))

COLUMNS = ", ".join(("ycsb_key", *FIELDS))
USERTABLE_DDL = f"CREATE TABLE usertable (ycsb_key text PRIMARY KEY, {', '.join(f'{f} text' for f in FIELDS)})"
KEYS_DDL = "CREATE TABLE usertable_keys (ycsb_key text PRIMARY KEY)"
READ_SQL = f"SELECT {COLUMNS} FROM usertable WHERE ycsb_key = %(key)s"
UPDATE_SQL = {f: f"UPDATE usertable SET {f} = %(value)s WHERE ycsb_key = %(key)s RETURNING ycsb_key" for f in FIELDS}
DELETE_SQL = f"DELETE FROM usertable WHERE ycsb_key = %(key)s RETURNING {COLUMNS}"
INSERT_SQL = f"INSERT INTO usertable ({COLUMNS}) VALUES ({', '.join(f'%({c})s' for c in ('ycsb_key', *FIELDS))})"
CLAIM_SQL = "INSERT INTO usertable_keys (ycsb_key) VALUES (%(key)s)"
UNCLAIM_SQL = "DELETE FROM usertable_keys WHERE ycsb_key = %(key)s"


def field_values(rng: random.Random, count: int = 256) -> list[str]:
    """A pool of field values to draw rows and updates from (drawing is cheap; making one is not)."""
    return [rng.randbytes(FIELD_LENGTH // 2).hex() for _ in range(count)]


def each_server(lab: ServerLab, fn: Callable[[str, psycopg.Connection], None]) -> None:
    """Run `fn(region, connection)` on every server at once (autocommit, straight to the server)."""

    def one(region: str) -> None:
        with psycopg.connect(lab.server_dsn(region), autocommit=True) as conn:
            fn(region, conn)

    with ThreadPoolExecutor(max_workers=len(lab.regions)) as pool:
        for future in [pool.submit(one, region) for region in lab.regions]:
            future.result()


def roll_back_prepared(conn: psycopg.Connection) -> None:
    """Roll back prepared transactions a killed client left behind (they would hold their locks forever)."""
    for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()").fetchall():
        conn.execute(psycopg.sql.SQL("ROLLBACK PREPARED {}").format(psycopg.sql.Literal(gid)))


def load_tables(lab: ServerLab, rows_by_region: Mapping[str, Sequence[str]], seed: int) -> None:
    """Fresh ``usertable`` on every server holding the keys homed there, and an empty ``usertable_keys``."""

    def reset(region: str, conn: psycopg.Connection) -> None:
        rng = random.Random(f"{seed}/{region}")
        values = field_values(rng)
        roll_back_prepared(conn)
        conn.execute("DROP TABLE IF EXISTS usertable, usertable_keys")
        conn.execute(USERTABLE_DDL)
        conn.execute(KEYS_DDL)
        with conn.cursor() as cur, cur.copy(f"COPY usertable ({COLUMNS}) FROM STDIN") as copy:
            for key in rows_by_region.get(region, ()):
                copy.write_row([key, *(rng.choice(values) for _ in FIELDS)])
        conn.execute("ANALYZE usertable")
        conn.execute("ANALYZE usertable_keys")
        # Start every run with nothing to flush, so a checkpoint does not land in the measured window.
        conn.execute("CHECKPOINT")

    each_server(lab, reset)


def count_rows(lab: ServerLab) -> dict[str, dict[str, int]]:
    """Rows and claims on every server."""
    counts: dict[str, dict[str, int]] = {}

    def count(region: str, conn: psycopg.Connection) -> None:
        rows = conn.execute("SELECT count(*) FROM usertable").fetchone()
        keys = conn.execute("SELECT count(*) FROM usertable_keys").fetchone()
        counts[region] = {"rows": rows[0] if rows else 0, "claims": keys[0] if keys else 0}

    each_server(lab, count)
    return counts
