"""The data-homing experiments of article 003 (REGIONAL BY ROW), on the lab: `movr bench ycsb | insert | rehome`.

A YCSB ``usertable`` (``ycsb_key`` text primary key, ``field0..field9`` text) exists on every region's
server; each row lives on exactly one of them, its *home*. One closed-loop client process per region
reads or updates rows; "locality of access" is the share of operations on rows originally homed in the
client's own region. How a client finds a row is what the variants compare:

- ``computed``: the key carries its region (``us-east1-000123``), so the client sends the operation
  straight to that region's server: one round trip, local or remote (CockroachDB: a computed region
  column, or the article's manually partitioned baseline).
- ``default``: the key says nothing about its home (``user8723...``). Locality-optimized search: the
  operation runs on the local server first; if it found no row, on every other region's server at once,
  and the first that finds the row answers (CockroachDB: a default ``crdb_region`` column).
- ``rehoming``: as ``default``, and an update issued from another region moves the row to the client's
  region: DELETE at the old home and INSERT here in one two-phase commit (PREPARE TRANSACTION on both,
  then COMMIT PREPARED on both), so later accesses from this region are local (CockroachDB: auto-rehoming,
  ``ON UPDATE gateway_region()``).

Remote accesses are partitioned so that, in `ycsb`, no two clients touch the same row (the article's
"ideal uncontended" rehoming): region h's rows are split into one part per client region, and client r
only ever touches part r of each region. `rehome` then makes the remote accesses of c regions share
one small hot range, to show what contention does to rehoming.

`insert` compares inserting new rows: with a computed region the key's home is known and its primary key
is unique there, so one local round trip suffices; with a default region the key could already exist in
any region, so before the local insert the client claims the key in every other region's
``usertable_keys`` at once (one parallel round trip to the farthest region; see `InsertClient`).

Every operation's *floor* (law 3) is computed from the row's actual home and the variant's protocol; the
definitions are in `FLOORS` and in docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial, wraps
from pathlib import Path
from typing import Any, NoReturn

import click
import psycopg
from rich.table import Table

from movr.bench.common import (
    BenchClient,
    BenchLab,
    ClientFleet,
    Outcome,
    bench_lab,
    console,
    default_run_dir,
    figures,
    machine,
    merged_figures,
    ms,
    progress_bar,
    roll_back_prepared,
    versions,
    write_json,
)
from movr.bench.plots import save_figure
from movr.cli_support import preset_or_fail
from movr.geo import load_preset
from movr.store.work import Rows, Statement

VARIANTS = ("computed", "default", "rehoming")
INSERT_VARIANTS = ("default", "computed")
WORKLOADS = {"A": 0.50, "B": 0.95}  # share of reads; the rest are updates (YCSB core workloads A and B)
DISTRIBUTIONS = ("zipfian", "uniform")
ZIPFIAN_CONSTANT = 0.99  # YCSB's
FIELD_COUNT = 10
FIELD_LENGTH = 100  # bytes per field, YCSB's default
FIELDS = tuple(f"field{i}" for i in range(FIELD_COUNT))
MAX_RETRIES = 100  # a row that stays missing this long is an error, not contention

QUICK_SCALE = 0.05
QUICK = {
    "ycsb": {"records": 600, "duration": 1.0, "warmup": 0.3},
    "insert": {"duration": 1.5, "warmup": 0.3},
    "rehome": {"records": 300, "duration": 1.0, "warmup": 0.4},
}
FULL = {
    "ycsb": {"records": 30_000, "duration": 45.0, "warmup": 10.0},
    "insert": {"duration": 45.0, "warmup": 10.0},
    "rehome": {"records": 3_000, "duration": 45.0, "warmup": 45.0},
}

COLUMNS = ", ".join(("ycsb_key", *FIELDS))
USERTABLE_DDL = f"CREATE TABLE usertable (ycsb_key text PRIMARY KEY, {', '.join(f'{f} text' for f in FIELDS)})"
KEYS_DDL = "CREATE TABLE usertable_keys (ycsb_key text PRIMARY KEY)"
READ_SQL = f"SELECT {COLUMNS} FROM usertable WHERE ycsb_key = %(key)s"
UPDATE_SQL = {f: f"UPDATE usertable SET {f} = %(value)s WHERE ycsb_key = %(key)s RETURNING ycsb_key" for f in FIELDS}
DELETE_SQL = f"DELETE FROM usertable WHERE ycsb_key = %(key)s RETURNING {COLUMNS}"
INSERT_SQL = f"INSERT INTO usertable ({COLUMNS}) VALUES ({', '.join(f'%({c})s' for c in ('ycsb_key', *FIELDS))})"
CLAIM_SQL = "INSERT INTO usertable_keys (ycsb_key) VALUES (%(key)s)"
UNCLAIM_SQL = "DELETE FROM usertable_keys WHERE ycsb_key = %(key)s"

FLOORS = {
    "local": "intra-region RTT: one round trip to the client's own region's server (every variant, row homed locally)",
    "computed remote": "RTT(client region, row's home): the key names its home, so one round trip straight there",
    "default remote": (
        "intra-region RTT + RTT(client region, row's home): the local attempt misses, then every other region is "
        "searched at once and the first hit answers, so the row's home (not the farthest region) sets the time; "
        "a search that waited for every region would have the floor intra + max RTT to the other regions"
    ),
    "rehoming remote update": (
        "intra-region RTT + 3 x RTT(client region, row's home): local miss, parallel search, PREPARE TRANSACTION "
        "at the old home and here at once, COMMIT PREPARED at both at once"
    ),
    "rehoming remote read": "as default remote: the row's home at the time of the read",
    "insert default": (
        "max RTT(client region, other regions) + intra-region RTT: one parallel round trip claiming the key in "
        "every other region, then the local insert"
    ),
    "insert computed": "intra-region RTT: the key names its home (the client's region) and is unique there",
}


class MissingRow(RuntimeError):
    """A row the workload expects was found nowhere, even after MAX_RETRIES searches."""


# --------------------------------------------------------------------------------------------------------
# Keys and how clients choose them


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class KeyLayout:
    """Which keys each region homes at load time, and how they are named."""

    regions: tuple[str, ...]
    per_region: int
    computed: bool

    def key(self, home: str, index: int) -> str:
        if self.computed:
            return f"{home}-{index:06d}"
        # A YCSB-style hashed key: nothing in it says where the row lives.
        return f"user{_hash64(f'{home}/{index}')}"

    def keys(self, home: str) -> list[str]:
        return [self.key(home, i) for i in range(self.per_region)]

    def part(self, home: str, accessor: str) -> list[str]:
        """The rows of `home` that only `accessor`'s client touches (remote accesses never contend)."""
        slot, parts = self.regions.index(accessor), len(self.regions)
        return [self.key(home, i) for i in range(slot, self.per_region, parts)]


def hot_keys(count: int) -> list[str]:
    return [f"user{_hash64(f'hot/{i}')}" for i in range(count)]


def region_of_computed_key(key: str) -> str:
    return key.rsplit("-", 1)[0]


class Zipfian:
    """YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic databases"),
    scrambled by a fixed permutation so the popular items are spread over the key set, not its start."""

    def __init__(self, items: int, rng: random.Random, theta: float = ZIPFIAN_CONSTANT) -> None:
        self.items = items
        self.rng = rng
        self.theta = theta
        self.zetan = sum(1.0 / (i**theta) for i in range(1, items + 1))
        self.alpha = 1.0 / (1.0 - theta)
        zeta2 = 1.0 + 0.5**theta
        self.half_pow_theta = 0.5**theta
        self.eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan) if items > 2 else 0.0
        self.permutation = list(range(items))
        random.Random(items).shuffle(self.permutation)

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0 or self.items == 1:
            rank = 0
        elif uz < 1.0 + self.half_pow_theta:
            rank = 1
        else:
            rank = min(self.items - 1, int(self.items * (self.eta * u - self.eta + 1) ** self.alpha))
        return self.permutation[rank]


class Uniform:
    def __init__(self, items: int, rng: random.Random) -> None:
        self.items = items
        self.rng = rng

    def next(self) -> int:
        return self.rng.randrange(self.items)


@dataclass
class Bucket:
    """A set of keys a client picks from with some probability, and the labels its operations carry."""

    weight: float
    keys: list[str]
    labels: tuple[str, ...]
    chooser: Zipfian | Uniform

    def pick(self) -> str:
        return self.keys[self.chooser.next()]


def _field_values(rng: random.Random, count: int = 256) -> list[str]:
    return [rng.randbytes(FIELD_LENGTH // 2).hex() for _ in range(count)]


# --------------------------------------------------------------------------------------------------------
# The clients (each runs in its own process)


class YcsbClient(BenchClient):
    """Reads and updates under one variant; every operation returns its Outcome with the floor it had."""

    def prepare(self, task: Mapping[str, Any]) -> None:
        self.variant: str = task["variant"]
        self.read_share: float = task["read_proportion"]
        self.rng = random.Random(task["seed"])
        kind = Zipfian if task["distribution"] == "zipfian" else Uniform
        self.buckets = [
            Bucket(b["weight"], b["keys"], tuple(b["labels"]), kind(len(b["keys"]), self.rng)) for b in task["buckets"]
        ]
        self.cumulative = list(itertools.accumulate(b.weight for b in self.buckets))
        self.values = _field_values(self.rng)

    def next_operation(self) -> Callable[[], Outcome]:
        draw = self.rng.random() * self.cumulative[-1]
        bucket = next(
            (b for b, edge in zip(self.buckets, self.cumulative, strict=True) if draw < edge), self.buckets[-1]
        )
        key = bucket.pick()
        if self.rng.random() < self.read_share:
            return partial(self.read, key, bucket.labels)
        field = FIELDS[self.rng.randrange(FIELD_COUNT)]
        return partial(self.update, key, bucket.labels, field, self.rng.choice(self.values))

    # --- the variants -------------------------------------------------------------------------------------

    def read(self, key: str, labels: tuple[str, ...]) -> Outcome:
        statement = Statement(READ_SQL, {"key": key})
        if self.variant == "computed":
            home = region_of_computed_key(key)
            if not self.one(home, "ycsb_read", [statement])[0]:
                raise MissingRow(key)
            return Outcome("read", labels, self.network.rtt_us(self.region, home))
        home, _, retries = self.search(statement, "ycsb_read")
        return Outcome("read", labels, self.search_floor(home), retries)

    def update(self, key: str, labels: tuple[str, ...], field: str, value: str) -> Outcome:
        statement = Statement(UPDATE_SQL[field], {"key": key, "value": value})
        if self.variant == "computed":
            home = region_of_computed_key(key)
            if not self.one(home, "ycsb_update", [statement])[0]:
                raise MissingRow(key)
            return Outcome("update", labels, self.network.rtt_us(self.region, home))
        if self.variant == "default":
            home, _, retries = self.search(statement, "ycsb_update")
            return Outcome("update", labels, self.search_floor(home), retries)
        return self.rehoming_update(key, labels, field, value, statement)

    def search(self, statement: Statement, action: str) -> tuple[str, Rows, int]:
        """Locality-optimized search: here first; if no row, every other region at once, first hit wins.

        A row being moved by a concurrent rehoming update can be missing everywhere for an instant (the
        two COMMIT PREPARED are not one atomic step across servers): then search again, and count it.
        """
        for retries in range(MAX_RETRIES + 1):
            rows = self.one(self.region, action, [statement])[0]
            if rows:
                return self.region, rows, retries
            found = self.first_hit(self.others, action, statement)
            if found is not None:
                return found[0], found[1], retries
        raise MissingRow(str(statement.params.get("key")))

    def search_floor(self, home: str) -> int:
        intra = self.network.intra_us
        return intra if home == self.region else intra + self.network.rtt_us(self.region, home)

    def rehoming_update(
        self, key: str, labels: tuple[str, ...], field: str, value: str, statement: Statement
    ) -> Outcome:
        intra = self.network.intra_us
        for retries in range(MAX_RETRIES + 1):
            if self.one(self.region, "ycsb_update", [statement])[0]:
                return Outcome("update", labels, intra, retries)
            found = self.first_hit(self.others, "ycsb_update", Statement(READ_SQL, {"key": key}))
            if found is None:
                continue
            home, rows = found
            if self.move_here(key, home, rows[0], field, value):
                return Outcome("update", labels, intra + 3 * self.network.rtt_us(self.region, home), retries, True)
        raise MissingRow(key)

    def move_here(self, key: str, home: str, old: dict[str, Any], field: str, value: str) -> bool:
        """Move a row from `home` to this region with the update applied, in one two-phase commit.

        Both PREPAREs go out at once. The DELETE must remove exactly the row the search saw: if another
        client changed or moved it in between (contention), both halves roll back and the caller retries,
        so a row is never lost or duplicated.
        """
        new = {**old, field: value}
        gid = f"movr-rehome-{uuid.uuid4().hex}"
        remote = self.submit(self.pools[home].prepare, gid, "ycsb_rehome", [Statement(DELETE_SQL, {"key": key})])
        here = self.pools[self.region]
        local_error: Exception | None = None
        remote_error: Exception | None = None
        deleted: Rows = []
        try:
            here.prepare(gid, "ycsb_rehome", [Statement(INSERT_SQL, new)])
        except Exception as error:  # finished below: the other half must not stay prepared
            local_error = error
        try:
            deleted = remote.result()[0]
        except Exception as error:
            remote_error = error
        commit = local_error is None and remote_error is None and deleted == [old]
        finish = type(here).commit_prepared if commit else type(here).rollback_prepared
        remote_finish = self.submit(finish, self.pools[home], gid) if remote_error is None else None
        if local_error is None:
            finish(here, gid)
        if remote_finish is not None:
            remote_finish.result()
        # A conflict (unique violation, changed row) is contention: retry. Anything else is a failure.
        for error in (local_error, remote_error):
            if error is not None and not isinstance(error, psycopg.Error):
                raise error
        return commit


class InsertClient(BenchClient):
    """Inserts new rows, homed in the client's region, under `default` or `computed`.

    `default`: the key has no region, so it must be unique across every region. CockroachDB checks the
    other regions' partitions in the inserting transaction. The lab's race-free equivalent is a claim:
    every region's ``usertable_keys`` gets the key, inserted in the other regions at once (one parallel
    round trip; a unique violation there means the key exists or is being inserted elsewhere), then here
    together with the row (one local round trip, one transaction). Two concurrent inserts of one key both
    need a claim in every region, and each region's primary key admits one, so at most one succeeds; the
    loser deletes the claims it made. No transaction stays open across the WAN, so there is no
    distributed deadlock.

    `computed`: the key names its region (this one), and the primary key there makes it unique.
    """

    def prepare(self, task: Mapping[str, Any]) -> None:
        self.variant = task["variant"]
        self.rng = random.Random(task["seed"])
        self.values = _field_values(self.rng)
        self.nonce = task["nonce"]
        self.sequence = itertools.count()

    def next_operation(self) -> Callable[[], Outcome]:
        number = next(self.sequence)
        if self.variant == "computed":
            key = f"{self.region}-{number:09d}"
        else:
            key = f"user{_hash64(f'{self.nonce}/{self.region}/{number}')}"
        row = {"ycsb_key": key, **{f: self.rng.choice(self.values) for f in FIELDS}}
        return partial(self.insert, row)

    def insert(self, row: dict[str, Any]) -> Outcome:
        insert = Statement(INSERT_SQL, row)
        if self.variant == "computed":
            self.one(self.region, "ycsb_insert", [insert])
            return Outcome("insert", (), self.network.intra_us)
        claim = Statement(CLAIM_SQL, {"key": row["ycsb_key"]})
        futures = {region: self.submit(self.one, region, "ycsb_claim", [claim]) for region in self.others}
        claimed: list[str] = []
        failure: Exception | None = None
        for region, future in futures.items():
            try:
                future.result()
                claimed.append(region)
            except Exception as error:  # a unique violation: the key exists, or is being inserted, there
                failure = failure or error
        if failure is None:
            try:
                self.one(self.region, "ycsb_insert", [claim, insert])
            except Exception as error:
                failure = error
        if failure is not None:
            unclaim = Statement(UNCLAIM_SQL, {"key": row["ycsb_key"]})
            for future in [self.submit(self.one, region, "ycsb_unclaim", [unclaim]) for region in claimed]:
                future.result()
            raise failure
        return Outcome("insert", (), self.network.farthest_other_us(self.region) + self.network.intra_us)


# --------------------------------------------------------------------------------------------------------
# Loading


def load_tables(lab: BenchLab, rows_by_region: Mapping[str, Sequence[str]], seed: int) -> None:
    """Fresh ``usertable`` on every server holding the keys homed there, and an empty ``usertable_keys``
    (the insert experiment's claims). Straight to the servers, past the links: not measured.
    """

    def reset(region: str, conn: psycopg.Connection) -> None:
        rng = random.Random(f"{seed}/{region}")
        values = _field_values(rng)
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

    lab.each_server(reset)


def count_rows(lab: BenchLab) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}

    def count(region: str, conn: psycopg.Connection) -> None:
        rows = conn.execute("SELECT count(*) FROM usertable").fetchone()
        keys = conn.execute("SELECT count(*) FROM usertable_keys").fetchone()
        counts[region] = {"rows": rows[0] if rows else 0, "claims": keys[0] if keys else 0}

    lab.each_server(count)
    return counts


# --------------------------------------------------------------------------------------------------------
# Running an experiment


@dataclass
class Settings:
    experiment: str
    preset: str
    scale: float
    duration: float
    warmup: float
    run_dir: Path
    link_mode: str = "process"
    quick: bool = False
    workload: str = "B"
    distribution: str = "zipfian"
    localities: tuple[int, ...] = (100, 95, 50)
    variants: tuple[str, ...] = VARIANTS
    records: int = 0
    contending: tuple[int, ...] = (1, 2, 3)
    hot: int = 10
    seed: int = 42

    @property
    def tail_s(self) -> float:
        return min(10.0, self.duration / 3)

    def describe(self) -> dict[str, Any]:
        data = {
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "tail_s": self.tail_s,
            "quick": self.quick,
            "links": self.link_mode,
            "clients": "one closed-loop process per client region, one operation at a time",
            "seed": self.seed,
        }
        if self.experiment in ("ycsb", "rehome"):
            data |= {
                "workload": self.workload,
                "read_proportion": WORKLOADS[self.workload],
                "distribution": self.distribution,
                "records": self.records,
            }
        if self.experiment == "ycsb":
            data |= {"localities": list(self.localities), "variants": list(self.variants)}
        if self.experiment == "insert":
            data |= {"variants": list(self.variants)}
        if self.experiment == "rehome":
            data |= {"contending": list(self.contending), "hot_keys": self.hot, "locality": 50}
        return data


class _RunProgress:
    """One bar for the experiment's runs, one for the current run's warm-up and measured window."""

    def __init__(self, runs: int) -> None:
        self.bar = progress_bar()
        self.runs = self.bar.add_task("runs", total=runs, detail="")
        self.current = self.bar.add_task("", total=1, detail="")

    def __enter__(self) -> _RunProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def start(self, label: str, seconds: float) -> Callable[[float, int], None]:
        self.bar.reset(self.current, total=seconds, description=label, detail="")

        def update(elapsed: float, measured: int) -> None:
            self.bar.update(self.current, completed=elapsed, detail=f"{measured} ops measured")

        return update

    def done(self) -> None:
        self.bar.advance(self.runs)


def _base_result(settings: Settings, lab: BenchLab) -> dict[str, Any]:
    return {
        "benchmark": settings.experiment,
        "preset": lab.preset.name,
        "preset_source": settings.preset,
        "scale": settings.scale,
        "settings": settings.describe(),
        "versions": versions(lab),
        "machine": machine(),
        "network": lab.network.describe(),
        "floors": FLOORS,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _round_trips(lab: BenchLab, region: str, before: dict, after: dict, ops_total: int) -> dict[str, Any]:
    counted = lab.round_trips(before, after).get(region, {"wan": 0, "local": 0})
    return {
        **counted,
        "ops_total": ops_total,
        "wan_per_op": counted["wan"] / ops_total if ops_total else None,
        "note": "links' counts over warm-up and measured window together, per operation of both",
    }


def _op_figures(payload: Mapping[str, Any], op: str, labels: Sequence[str]) -> dict[str, Any]:
    result = figures(payload, op)
    for label in labels:
        group, _, name = label.partition("=")
        if name:
            result.setdefault(f"by_{group}", {})[name] = figures(payload, f"{op}|{label}")
        else:
            result.setdefault("by_access", {})[label] = figures(payload, f"{op}|{label}")
    return result


def _timeline(payload: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: payload["timeline"].get(key, []) for key in keys}


@dataclass(frozen=True)
class _MeasuredRun:
    """One run of the fleet: every client's payload, and the links' counters read just before and after it."""

    lab: BenchLab
    duration: float
    payloads: Mapping[str, Mapping[str, Any]]
    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]

    def client(self, region: str, *, searches: bool = True) -> dict[str, Any]:
        """The figures every experiment reports for one client, so that `ycsb`, `insert` and `rehome` rows
        agree on their names and meaning. `searches=False` for inserts: they never search for a row or move
        one, so their rows carry no retries or moves.
        """
        payload = self.payloads[region]
        contention = (
            {"retries": payload["retries"], "moves": payload["moves"], "moves_total": payload["moves_total"]}
            if searches
            else {}
        )
        return {
            "ops": payload["ops_measured"],
            "throughput_ops_s": payload["ops_measured"] / self.duration,
            **contention,
            "errors": payload["errors"],
            "first_error": payload["first_error"],
            "round_trips": _round_trips(self.lab, region, self.before, self.after, payload["ops_total"]),
        }

    def reads_and_updates(self, region: str, labels: Sequence[str]) -> dict[str, Any]:
        """One client's read and update figures, each overall and per label: `ycsb` and `rehome` rows carry
        both under the same names, so one place computes them."""
        payload = self.payloads[region]
        return {"read": _op_figures(payload, "read", labels), "update": _op_figures(payload, "update", labels)}


def _measure_run(
    lab: BenchLab,
    fleet: ClientFleet,
    progress: _RunProgress,
    settings: Settings,
    tasks: Mapping[str, Mapping[str, Any]],
    label: str,
) -> _MeasuredRun:
    """Run the fleet once, warm-up and measured window, between two readings of the links' counters: they
    count from the lab's start, so only readings right around the run give its clients' round trips alone,
    not those of every run before it."""
    before = lab.counters()
    update = progress.start(label, settings.warmup + settings.duration)
    payloads = fleet.run(tasks, settings.warmup, settings.duration, settings.tail_s, update)
    after = lab.counters()
    progress.done()
    return _MeasuredRun(lab, settings.duration, payloads, before, after)


def run_ycsb(settings: Settings) -> dict[str, Any]:
    preset = load_preset(settings.preset)
    regions = preset.region_names
    per_region = settings.records // len(regions)
    results: list[dict[str, Any]] = []
    runs = [(v, loc) for v in settings.variants for loc in settings.localities]
    with (
        bench_lab(settings.preset, settings.scale, settings.run_dir, link_mode=settings.link_mode) as lab,
        ClientFleet(lab, regions, "movr.bench.ycsb:YcsbClient") as fleet,
        _RunProgress(len(runs)) as progress,
    ):
        result = _base_result(settings, lab)
        for run_number, (variant, locality) in enumerate(runs):
            layout = KeyLayout(tuple(regions), per_region, computed=variant == "computed")
            load_tables(lab, {r: layout.keys(r) for r in regions}, settings.seed + run_number)
            tasks = {}
            for index, region in enumerate(regions):
                buckets = [
                    {
                        "weight": locality / 100,
                        "keys": layout.part(region, region),
                        "labels": ["local", f"home={region}"],
                    }
                ]
                for home in regions:
                    if home != region:
                        buckets.append(
                            {
                                "weight": (1 - locality / 100) / (len(regions) - 1),
                                "keys": layout.part(home, region),
                                "labels": ["remote", f"home={home}"],
                            }
                        )
                tasks[region] = {
                    "variant": variant,
                    "read_proportion": WORKLOADS[settings.workload],
                    "distribution": settings.distribution,
                    "buckets": [b for b in buckets if b["weight"] > 0],
                    "seed": settings.seed * 1000 + run_number * 10 + index,
                }
            run = _measure_run(lab, fleet, progress, settings, tasks, f"{variant} @ {locality}%")
            labels = ["local", "remote", *(f"home={h}" for h in regions)]
            for region in regions:
                results.append(
                    {
                        "variant": variant,
                        "locality": locality,
                        "region": region,
                        **run.client(region),
                        **run.reads_and_updates(region, labels),
                        "timeline": _timeline(run.payloads[region], ["read", "update"]),
                    }
                )
    result["results"] = results
    result["checks"] = ycsb_checks(result)
    return result


def run_insert(settings: Settings) -> dict[str, Any]:
    preset = load_preset(settings.preset)
    regions = preset.region_names
    results: list[dict[str, Any]] = []
    verification: dict[str, Any] = {}
    with (
        bench_lab(settings.preset, settings.scale, settings.run_dir, link_mode=settings.link_mode) as lab,
        ClientFleet(lab, regions, "movr.bench.ycsb:InsertClient") as fleet,
        _RunProgress(len(settings.variants)) as progress,
    ):
        result = _base_result(settings, lab)
        for run_number, variant in enumerate(settings.variants):
            load_tables(lab, {}, settings.seed + run_number)
            nonce = uuid.uuid4().hex[:8]
            tasks = {
                region: {"variant": variant, "seed": settings.seed * 1000 + run_number * 10 + i, "nonce": nonce}
                for i, region in enumerate(regions)
            }
            run = _measure_run(lab, fleet, progress, settings, tasks, f"insert, {variant} region")
            for region in regions:
                results.append(
                    {
                        "variant": variant,
                        "region": region,
                        **run.client(region, searches=False),
                        "insert": figures(run.payloads[region], "insert"),
                    }
                )
            verification[variant] = _verify_inserts(variant, count_rows(lab), run.payloads)
    result["results"] = results
    result["verification"] = verification
    result["checks"] = insert_checks(result)
    return result


def _verify_inserts(variant: str, counts: dict[str, dict[str, int]], payloads: Mapping[str, Any]) -> dict[str, Any]:
    """Every successful insert left exactly one row, at its home; with `default`, a claim in every region."""
    inserted = {region: p["ops_total"] for region, p in payloads.items()}
    total = sum(inserted.values())
    rows_ok = all(counts[region]["rows"] == inserted[region] for region in inserted)
    claims_ok = all(c["claims"] == (total if variant == "default" else 0) for c in counts.values())
    return {"inserted": inserted, "counts": counts, "consistent": rows_ok and claims_ok}


def rehome_order(regions: list[str]) -> tuple[str, list[str]]:
    """The hot range's home (the last region) and the contending regions in order, the hot home last:
    c = 1 and 2 reach it only remotely; at c = 3 its own client contends too."""
    hot_home = regions[-1]
    return hot_home, [r for r in regions if r != hot_home] + [hot_home]


def run_rehome(settings: Settings) -> dict[str, Any]:
    preset = load_preset(settings.preset)
    regions = preset.region_names
    per_region = settings.records // len(regions)
    hot_home, order = rehome_order(regions)
    hot = hot_keys(settings.hot)
    layout = KeyLayout(tuple(regions), per_region, computed=False)
    results: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    runs = [(c, v) for c in settings.contending for v in ("default", "rehoming")]
    with (
        bench_lab(settings.preset, settings.scale, settings.run_dir, link_mode=settings.link_mode) as lab,
        ClientFleet(lab, regions, "movr.bench.ycsb:YcsbClient") as fleet,
        _RunProgress(len(runs)) as progress,
    ):
        result = _base_result(settings, lab)
        result["hot_home"] = hot_home
        for run_number, (contending, variant) in enumerate(runs):
            rows = {r: layout.keys(r) + (hot if r == hot_home else []) for r in regions}
            load_tables(lab, rows, settings.seed + run_number)
            clients = order[:contending]
            tasks = {
                region: {
                    "variant": variant,
                    "read_proportion": WORKLOADS[settings.workload],
                    "distribution": settings.distribution,
                    "buckets": [
                        {"weight": 0.5, "keys": layout.keys(region), "labels": ["private"]},
                        {"weight": 0.5, "keys": hot, "labels": ["hot"]},
                    ],
                    "seed": settings.seed * 1000 + run_number * 10 + i,
                }
                for i, region in enumerate(clients)
            }
            run = _measure_run(lab, fleet, progress, settings, tasks, f"c={contending}, {variant}")
            for region in clients:
                payload = run.payloads[region]
                results.append(
                    {
                        "contending": contending,
                        "variant": variant,
                        "region": region,
                        **run.client(region),
                        **run.reads_and_updates(region, ["private", "hot"]),
                        "hot_read_tail": figures(payload, "read|hot@tail"),
                        "timeline": _timeline(payload, ["read|hot", "update|hot"]),
                    }
                )
            all_payloads = [run.payloads[r] for r in clients]
            ops = sum(p["ops_measured"] for p in all_payloads)
            summary.append(
                {
                    "contending": contending,
                    "variant": variant,
                    "regions": clients,
                    "ops": ops,
                    "throughput_ops_s": ops / settings.duration,
                    "moves": sum(p["moves"] for p in all_payloads),
                    "retries": sum(p["retries"] for p in all_payloads),
                    "errors": sum(p["errors"] for p in all_payloads),
                    "read": merged_figures(all_payloads, "read"),
                    "update": merged_figures(all_payloads, "update"),
                    "hot_read": merged_figures(all_payloads, "read|hot"),
                    "hot_update": merged_figures(all_payloads, "update|hot"),
                    "hot_read_tail": merged_figures(all_payloads, "read|hot@tail"),
                }
            )
    result["results"] = results
    result["summary"] = summary
    result["checks"] = rehome_checks(result)
    return result


# --------------------------------------------------------------------------------------------------------
# What the tracker asks the runs to show


def _cell(results: list[dict], **match: Any) -> dict | None:
    return next((r for r in results if all(r.get(k) == v for k, v in match.items())), None)


def ycsb_checks(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    intra = result["network"]["intra_region_rtt_ms"] * result["scale"]
    rows = result["results"]
    checks: list[dict[str, Any]] = []
    regions = sorted({r["region"] for r in rows})
    for variant in ("default", "computed"):
        cells = [c for c in (_cell(rows, variant=variant, locality=100, region=r) for r in regions) if c]
        p50s = {c["region"]: c["read"]["p50_ms"] for c in cells}
        wan = {c["region"]: c["round_trips"]["wan_per_op"] for c in cells}
        if cells and len(cells) == len(regions) and None not in p50s.values():
            worst = max(p50s.values())
            checks.append(
                {
                    "claim": (
                        f"100% locality: {variant} median read exceeds the local floor ({intra:g} ms) by <= 2 ms, "
                        "with no WAN round trip"
                    ),
                    "measured": {"read_p50_ms": p50s, "wan_round_trips_per_op": wan},
                    "excess_ms": round(worst - intra, 3),
                    "holds": worst - intra <= 2.0 and all(v == 0 for v in wan.values()),
                }
            )
    deltas: dict[str, float] = {}
    for region in regions:
        default, computed = (_cell(rows, variant=v, locality=50, region=region) for v in ("default", "computed"))
        if not default or not computed:
            continue
        for home, figures_default in default["read"].get("by_home", {}).items():
            figures_computed = computed["read"].get("by_home", {}).get(home)
            if home == region or not figures_computed:
                continue
            if figures_default["p50_ms"] is not None and figures_computed["p50_ms"] is not None:
                deltas[f"{region}->{home}"] = round(figures_default["p50_ms"] - figures_computed["p50_ms"], 3)
    if deltas:
        checks.append(
            {
                "claim": (
                    "50% locality: default pays the local attempt before its remote search, computed goes straight "
                    "to the home (remote reads: default p50 - computed p50 > 0 for every client->home pair)"
                ),
                "measured": deltas,
                "holds": all(delta > 0 for delta in deltas.values()),
            }
        )
    return checks


def insert_checks(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """By counts first (law 2), then by time: how many WAN round trips an insert made, and whether its
    median fits one parallel round trip (at least the farthest RTT, less than farthest + nearest)."""
    network = result["network"]
    scaled = network["scaled_rtt_ms"]
    checks = []
    for variant in ("default", "computed"):
        cells = [r for r in result["results"] if r["variant"] == variant]
        if not cells:
            continue
        measured, holds = {}, True
        for cell in cells:
            region = cell["region"]
            others = [rtt for pair, rtt in scaled.items() if pair.split("|")[0] == region != pair.split("|")[1]]
            farthest, nearest = max(others), min(others)
            p50 = cell["insert"]["p50_ms"]
            wan = cell["round_trips"]["wan_per_op"]
            measured[region] = {"p50_ms": p50, "wan_round_trips_per_insert": wan, "farthest_rtt_ms": farthest}
            if p50 is None or wan is None:
                holds = False
            elif variant == "default":
                holds = holds and abs(wan - len(others)) < 0.05 and farthest <= p50 < farthest + nearest
            else:
                holds = holds and wan == 0 and p50 < nearest
        claim = (
            "default pays one parallel round trip to the farthest region: one WAN round trip to each other region "
            "per insert, farthest RTT <= p50 < farthest + nearest RTT"
            if variant == "default"
            else "computed pays none: no WAN round trip per insert, p50 below the nearest region's RTT"
        )
        checks.append({"claim": claim, "measured": measured, "holds": holds})
    return checks


def rehome_checks(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    intra = result["network"]["intra_region_rtt_ms"] * result["scale"]
    summary = result["summary"]
    checks = []
    rehoming = _cell(summary, contending=1, variant="rehoming")
    default = _cell(summary, contending=1, variant="default")
    if rehoming and default:
        tail = rehoming["hot_read_tail"]["p50_ms"]
        checks.append(
            {
                "claim": (
                    f"c = 1: rehoming converges to local latency (hot-range reads in the last "
                    f"{result['settings']['tail_s']:g} s: p50 <= local floor {intra:g} ms + 2 ms)"
                ),
                "measured": {
                    "rehoming_hot_read_tail_p50_ms": tail,
                    "rehoming_hot_read_p50_ms": rehoming["hot_read"]["p50_ms"],
                    "default_hot_read_p50_ms": default["hot_read"]["p50_ms"],
                },
                "holds": tail is not None and tail - intra <= 2.0,
            }
        )
    ratios = {}
    for contending in dict.fromkeys(row["contending"] for row in summary):
        rehoming, default = (_cell(summary, contending=contending, variant=v) for v in ("rehoming", "default"))
        if rehoming and default and default["throughput_ops_s"]:
            ratios[contending] = round(rehoming["throughput_ops_s"] / default["throughput_ops_s"], 3)
    if len(ratios) > 1:
        values = [ratios[c] for c in sorted(ratios)]
        checks.append(
            {
                "claim": (
                    "rehoming loses its value as contention rises: its throughput relative to default "
                    "(all contending clients together) falls as c grows"
                ),
                "measured": {f"c={c}": ratio for c, ratio in sorted(ratios.items())},
                "holds": all(later < earlier for earlier, later in itertools.pairwise(values)),
            }
        )
    return checks


# --------------------------------------------------------------------------------------------------------
# Tables


def _print_checks(result: Mapping[str, Any]) -> None:
    for check in result.get("checks", []):
        verdict = "[bold green]holds[/]" if check["holds"] else "[bold red]does not hold[/]"
        console.print(f"{verdict}: {check['claim']} — measured {check['measured']}")


def _title(result: Mapping[str, Any], what: str) -> str:
    s = result["settings"]
    return (
        f"{what} — preset {result['preset']}, delays x{result['scale']:g}, {s['duration_s']:g} s measured "
        f"after {s['warmup_s']:g} s warm-up; ms"
    )


def _table(result: Mapping[str, Any], what: str, columns: Sequence[str], left: Collection[str]) -> Table:
    """A table titled by `_title`, its text columns (`left`) aligned left and its figures right: every table
    here is laid out this way, so they read alike side by side."""
    table = Table(title=_title(result, what))
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


# The figures `ycsb` and `insert` show for one client and one kind of operation, after the cells naming them.
CLIENT_FIGURE_COLUMNS = ("p50", "p95", "p99", "floor p50", "ops/s", "WAN rt/op")


def _client_figure_cells(cell: Mapping[str, Any], op: str) -> list[str]:
    """The `CLIENT_FIGURE_COLUMNS` of one result row for operation `op`: shared so that the `ycsb` and
    `insert` tables format latency, throughput and WAN round trips the same way."""
    f = cell[op]
    wan = cell["round_trips"]["wan_per_op"]
    return [
        ms(f["p50_ms"]),
        ms(f["p95_ms"]),
        ms(f["p99_ms"]),
        ms(f["floor"]["p50_ms"]),
        f"{cell['throughput_ops_s']:.0f}",
        f"{wan:.2f}" if wan is not None else "-",
    ]


def print_ycsb(result: Mapping[str, Any]) -> None:
    rows = sorted(result["results"], key=lambda r: (-r["locality"], VARIANTS.index(r["variant"]), r["region"]))
    for op in ("read", "update"):
        title = f"YCSB-{result['settings']['workload']} {op}s, every operation"
        columns = ("locality", "variant", "client region", *CLIENT_FIGURE_COLUMNS)
        table = _table(result, title, columns, left=("variant", "client region"))
        for cell in rows:
            table.add_row(f"{cell['locality']}%", cell["variant"], cell["region"], *_client_figure_cells(cell, op))
        console.print(table)
    print_remote_by_home(result)
    _print_errors(rows)
    _print_checks(result)


def print_remote_by_home(result: Mapping[str, Any]) -> None:
    """Remote accesses split by the row's original home: where default's local attempt shows."""
    rows = result["results"]
    variants = [v for v in VARIANTS if v in result["settings"]["variants"]]
    localities = [loc for loc in result["settings"]["localities"] if loc < 100]
    if not localities:
        return
    for op in ("read", "update"):
        title = f"remote {op}s by the row's original home: p50 (floor p50)"
        table = _table(result, title, ("locality", "client region", "home", *variants), left=("client region", "home"))
        for locality in localities:
            for region in dict.fromkeys(r["region"] for r in rows):
                for home in dict.fromkeys(r["region"] for r in rows):
                    if home == region:
                        continue
                    cells = []
                    for variant in variants:
                        cell = _cell(rows, variant=variant, locality=locality, region=region)
                        h = (cell or {}).get(op, {}).get("by_home", {}).get(home)
                        cells.append(f"{ms(h['p50_ms'])} ({ms(h['floor']['p50_ms'])})" if h and h["count"] else "-")
                    table.add_row(f"{locality}%", region, home, *cells)
        console.print(table)


def print_insert(result: Mapping[str, Any]) -> None:
    table = _table(result, "inserts", ("variant", "region", *CLIENT_FIGURE_COLUMNS), left=("variant", "region"))
    for cell in result["results"]:
        table.add_row(cell["variant"], cell["region"], *_client_figure_cells(cell, "insert"))
    console.print(table)
    for variant, check in result["verification"].items():
        console.print(f"{variant}: rows and claims after the run {'consistent' if check['consistent'] else 'WRONG'}")
    _print_errors(result["results"])
    _print_checks(result)


def print_rehome(result: Mapping[str, Any]) -> None:
    """Per client first: a closed loop that holds the hot rows runs hundreds of times faster than one that
    does not, so a distribution merged over clients mostly shows the fastest client."""
    title = f"rehoming under contention, hot range first homed in {result['hot_home']}, per client"
    columns = ("c", "variant", "client region", "hot read p50", "p99", "floor p50", "hot update p50", "p99")
    more = ("private read p50", "ops/s", "rows moved", "retries")
    table = _table(result, title, (*columns, *more), left=("variant", "client region"))
    for cell in result["results"]:
        read, update = cell["read"]["by_access"]["hot"], cell["update"]["by_access"]["hot"]
        table.add_row(
            str(cell["contending"]),
            cell["variant"],
            cell["region"],
            ms(read["p50_ms"]),
            ms(read["p99_ms"]),
            ms(read["floor"]["p50_ms"]),
            ms(update["p50_ms"]),
            ms(update["p99_ms"]),
            ms(cell["read"]["by_access"]["private"]["p50_ms"]),
            f"{cell['throughput_ops_s']:.0f}",
            str(cell["moves"]),
            str(cell["retries"]),
        )
    console.print(table)
    title = "rehoming under contention, all contending clients together"
    columns = ("c", "variant", "ops/s", "rows moved", "read p50", "read p99", "update p50", "update p99")
    table = _table(result, title, (*columns, "hot read p50, last part"), left=("variant",))
    for row in result["summary"]:
        table.add_row(
            str(row["contending"]),
            row["variant"],
            f"{row['throughput_ops_s']:.0f}",
            str(row["moves"]),
            ms(row["read"]["p50_ms"]),
            ms(row["read"]["p99_ms"]),
            ms(row["update"]["p50_ms"]),
            ms(row["update"]["p99_ms"]),
            ms(row["hot_read_tail"]["p50_ms"]),
        )
    console.print(table)
    _print_errors(result["results"])
    _print_checks(result)


def _print_errors(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row.get("errors"):
            console.print(f"[yellow]{row['region']}: {row['errors']} failed operations; first: {row['first_error']}")


# --------------------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(axis: Any, groups: list[str], series: dict[str, list[dict[str, Any] | None]]) -> None:
    """Grouped bars of p50 with a whisker up to p99 and the floor (p50 of floors) marked."""
    width = 0.8 / max(1, len(series))
    for index, (name, cells) in enumerate(series.items()):
        positions = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        p50 = [(c or {}).get("p50_ms") or 0.0 for c in cells]
        p99 = [(c or {}).get("p99_ms") or 0.0 for c in cells]
        floors = [((c or {}).get("floor") or {}).get("p50_ms") or float("nan") for c in cells]
        whisker = [[0.0] * len(p50), [max(0.0, hi - lo) for lo, hi in zip(p50, p99, strict=True)]]
        axis.bar(positions, p50, width * 0.95, yerr=whisker, capsize=2, label=name)
        axis.scatter(
            positions, floors, marker="_", s=150, color="black", zorder=3, label="floor" if index == 0 else None
        )
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels(groups, fontsize=8)
    axis.set_yscale("log")
    axis.grid(axis="y", alpha=0.3)


def _read_update_grid(plt: Any, columns: int) -> tuple[Any, Any]:
    """A figure of reads (top row) over updates (bottom row), `columns` panels wide, each row on one y axis:
    the layout of the `ycsb` and `rehome` plots, one column per locality or contention level."""
    return plt.subplots(2, columns, figsize=(5 * columns, 8), squeeze=False, sharey="row")


def plot_ycsb(result: Mapping[str, Any], path: Path) -> None:
    plt = _pyplot()
    rows = result["results"]
    localities = list(result["settings"]["localities"])
    variants = list(result["settings"]["variants"])
    regions = list(dict.fromkeys(r["region"] for r in rows))
    fig, axes = _read_update_grid(plt, len(localities))
    for row_index, op in enumerate(("read", "update")):
        for col_index, locality in enumerate(localities):
            axis = axes[row_index][col_index]
            series = {
                v: [(_cell(rows, variant=v, locality=locality, region=r) or {}).get(op) for r in regions]
                for v in variants
            }
            _bars(axis, regions, series)
            axis.set_title(f"{op}s, {locality}% locality")
            axis.set_ylabel("ms (bar p50, whisker p99)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"YCSB-{result['settings']['workload']} on the lab — preset {result['preset']}, delays x{result['scale']:g}; "
        "black marks: floor"
    )
    save_figure(fig, path)


def plot_insert(result: Mapping[str, Any], path: Path) -> None:
    plt = _pyplot()
    rows = result["results"]
    regions = list(dict.fromkeys(r["region"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axis = plt.subplots(figsize=(7, 4.5))
    _bars(
        axis,
        regions,
        {v: [(_cell(rows, variant=v, region=r) or {}).get("insert") for r in regions] for v in variants},
    )
    axis.set_ylabel("insert ms (bar p50, whisker p99)")
    axis.legend(fontsize=8)
    axis.set_title(f"inserts — preset {result['preset']}, delays x{result['scale']:g}; black marks: floor")
    save_figure(fig, path)


def plot_rehome(result: Mapping[str, Any], path: Path) -> None:
    """Per contention level: each client's hot-range reads and updates, default vs rehoming."""
    plt = _pyplot()
    rows = result["results"]
    counts = list(dict.fromkeys(r["contending"] for r in rows))
    fig, axes = _read_update_grid(plt, len(counts))
    for col, contending in enumerate(counts):
        regions = list(dict.fromkeys(r["region"] for r in rows if r["contending"] == contending))
        totals = {
            v: (_cell(result["summary"], contending=contending, variant=v) or {}).get("throughput_ops_s", 0.0)
            for v in ("default", "rehoming")
        }
        for row_index, op in enumerate(("read", "update")):
            axis = axes[row_index][col]
            series = {
                v: [
                    ((_cell(rows, contending=contending, variant=v, region=r) or {}).get(op) or {})
                    .get("by_access", {})
                    .get("hot")
                    for r in regions
                ]
                for v in ("default", "rehoming")
            }
            _bars(axis, regions, series)
            axis.set_title(
                f"c={contending}: hot-range {op}s "
                f"(ops/s: default {totals['default']:.0f}, rehoming {totals['rehoming']:.0f})",
                fontsize=9,
            )
            axis.set_ylabel("ms (bar p50, whisker p99)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"rehoming under contention — preset {result['preset']}, delays x{result['scale']:g}, hot range first "
        f"homed in {result['hot_home']}; black marks: floor"
    )
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------------------
# Commands


def _fail(message: str) -> NoReturn:
    from movr.cli import CliError

    raise CliError(message)


def _int_list(text: str, option: str, low: int, high: int) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        _fail(f"{option} takes comma-separated integers, not {text!r}")
    if not values or any(not low <= v <= high for v in values):
        _fail(f"{option} values must be between {low} and {high}: {text!r}")
    if len(set(values)) != len(values):
        _fail(f"{option} repeats a value: {text!r}")
    return values


def _names(text: str, option: str, known: Sequence[str]) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [v for v in values if v not in known]
    if bad or not values:
        _fail(f"{option}: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(known)}")
    if len(set(values)) != len(values):
        _fail(f"{option} repeats a value: {text!r}")
    return values


@dataclass(frozen=True)
class CommonOptions:
    """The options all three commands take, as `_common_options` hands them over."""

    preset: str
    scale: float | None
    duration: float | None
    warmup: float | None
    quick: bool
    json_path: Path | None
    run_dir: Path | None
    links: str


def _common_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Add the options every command here takes, and pass them to `fn` as one `CommonOptions`, its first
    argument: each command then names only its own options, and `_settings` reads the shared ones once."""
    options = [
        click.option("--preset", default="ycsb-3", show_default=True, help="Preset name or TOML file."),
        click.option(
            "--scale", type=float, default=None, help="Multiplies every delay [default: 1; 0.05 with --quick]."
        ),
        click.option("--duration", type=float, default=None, help="Measured seconds per run."),
        click.option("--warmup", type=float, default=None, help="Seconds of the same workload before measuring."),
        click.option("--quick", is_flag=True, help="Tiny data and runs at scale 0.05 (the whole command < 30 s)."),
        click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="Result file."),
        click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False), help="Servers and logs here."),
        click.option("--links", default="process", show_default=True, help="Links as a process or a thread."),
    ]
    names = [field.name for field in fields(CommonOptions)]

    @wraps(fn)
    def command(**values: Any) -> None:
        fn(CommonOptions(**{name: values.pop(name) for name in names}), **values)

    # `wraps` shares `fn`'s list of the options declared below this decorator: give `command` its own.
    command.__click_params__ = list(getattr(fn, "__click_params__", []))  # type: ignore[attr-defined]
    for option in reversed(options):
        command = option(command)
    return command


def _workload_options(distribution: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """--workload and --distribution, which `ycsb` and `rehome` both take (`distribution` is the default)."""
    workload_option = click.option(
        "--workload", default="B", show_default=True, help="YCSB B (95% reads) or A (50% reads)."
    )
    distribution_option = click.option(
        "--distribution", default=distribution, show_default=True, help="zipfian or uniform."
    )
    return lambda fn: workload_option(distribution_option(fn))


def _checked_workload(workload: str, distribution: str) -> str:
    """The --workload letter upper-cased, once it and --distribution are known (exit status 2 if not)."""
    workload = workload.upper()
    if workload not in WORKLOADS:
        _fail(f"--workload must be A or B, not {workload!r}")
    if distribution not in DISTRIBUTIONS:
        _fail(f"--distribution must be zipfian or uniform, not {distribution!r}")
    return workload


def _settings(experiment: str, common: CommonOptions, records: int | None = None, **extra: Any) -> Settings:
    """Validate the options (exit status 2 with one line on a bad one) and fill in the full or quick defaults."""
    chosen = preset_or_fail(common.preset)
    quick = common.quick
    defaults = QUICK[experiment] if quick else FULL[experiment]
    scale = common.scale if common.scale is not None else (QUICK_SCALE if quick else 1.0)
    duration = common.duration if common.duration is not None else defaults["duration"]
    warmup = common.warmup if common.warmup is not None else defaults["warmup"]
    if scale <= 0:
        _fail("--scale must be positive")
    if duration <= 0:
        _fail("--duration must be positive")
    if warmup < 0:
        _fail("--warmup must not be negative")
    if common.links not in ("process", "thread"):
        _fail("--links must be process or thread")
    regions = len(chosen.region_names)
    if regions < 2:
        _fail(f"preset {chosen.name} has {regions} region; these experiments need at least two")
    settings = Settings(
        experiment=experiment,
        preset=common.preset,
        scale=scale,
        duration=duration,
        warmup=warmup,
        run_dir=common.run_dir or default_run_dir(experiment),
        link_mode=common.links,
        quick=quick,
        **extra,
    )
    if "records" in defaults:
        settings.records = records if records is not None else defaults["records"]
        if settings.records < regions * regions:
            _fail(f"--records must be at least {regions * regions} (one row per client region in every region)")
    return settings


def _outputs(settings: Settings, json_path: Path | None) -> tuple[Path, Path]:
    path = json_path or settings.run_dir / f"{settings.experiment}.json"
    return path, path.with_suffix(".png")


def _finish(result: dict[str, Any], json_path: Path, plot_path: Path, plot: Callable, show: Callable) -> None:
    write_json(json_path, result)
    plot(result, plot_path)
    show(result)
    console.print(f"figures: {json_path}, chart: {plot_path}")


@click.command("ycsb")
@_common_options
@_workload_options(distribution="zipfian")
@click.option("--locality", "locality_text", default="100,95,50", show_default=True, help="Locality of access, %.")
@click.option("--variants", "variants_text", default=",".join(VARIANTS), show_default=True)
@click.option("--records", type=int, default=None, help="Rows in all regions together [default: 30000; 600 quick].")
def ycsb_command(
    common: CommonOptions,
    workload: str,
    distribution: str,
    locality_text: str,
    variants_text: str,
    records: int | None,
) -> None:
    """Reads and updates of homed rows: computed vs default (locality-optimized search) vs rehoming."""
    workload = _checked_workload(workload, distribution)
    settings = _settings(
        "ycsb",
        common,
        records=records,
        workload=workload,
        distribution=distribution,
        localities=_int_list(locality_text, "--locality", 0, 100),
        variants=_names(variants_text, "--variants", VARIANTS),
    )
    json_file, plot_file = _outputs(settings, common.json_path)
    _finish(run_ycsb(settings), json_file, plot_file, plot_ycsb, print_ycsb)


@click.command("insert")
@_common_options
@click.option("--variants", "variants_text", default=",".join(INSERT_VARIANTS), show_default=True)
def insert_command(common: CommonOptions, variants_text: str) -> None:
    """Inserts: default region (key unique across every region) vs computed region (unique at home)."""
    settings = _settings("insert", common, variants=_names(variants_text, "--variants", INSERT_VARIANTS))
    json_file, plot_file = _outputs(settings, common.json_path)
    _finish(run_insert(settings), json_file, plot_file, plot_insert, print_insert)


@click.command("rehome")
@_common_options
@click.option("--contending", "contending_text", default="1,2,3", show_default=True, help="Contending regions.")
@click.option("--hot-keys", "hot", type=int, default=10, show_default=True, help="Rows in the shared hot range.")
@_workload_options(distribution="uniform")
@click.option("--records", type=int, default=None, help="Private rows, all regions [default: 3000; 300 quick].")
def rehome_command(
    common: CommonOptions,
    contending_text: str,
    hot: int,
    workload: str,
    distribution: str,
    records: int | None,
) -> None:
    """Rehoming vs default when c regions' remote accesses share one hot range (50% locality)."""
    workload = _checked_workload(workload, distribution)
    if hot < 1:
        _fail("--hot-keys must be at least 1")
    regions = len(preset_or_fail(common.preset).region_names)
    settings = _settings(
        "rehome",
        common,
        records=records,
        workload=workload,
        distribution=distribution,
        contending=_int_list(contending_text, "--contending", 1, regions),
        hot=hot,
    )
    json_file, plot_file = _outputs(settings, common.json_path)
    _finish(run_rehome(settings), json_file, plot_file, plot_rehome, print_rehome)
