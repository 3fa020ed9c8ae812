"""The YCSB clients, one process per region (movr.bench.fleet): `YcsbClient` reads and updates rows under a
variant, `InsertClient` inserts them. Every operation returns its `Outcome` with its floor (law 3), from the
row's actual home and the variant's protocol.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import psycopg

from movr.bench.fleet import BenchClient, Outcome
from movr.bench.ycsb.keys import Bucket, Uniform, Zipfian, computed_key, hashed_key, region_of_computed_key
from movr.bench.ycsb.tables import (
    CLAIM_SQL,
    DELETE_SQL,
    FIELD_COUNT,
    FIELDS,
    INSERT_SQL,
    READ_SQL,
    UNCLAIM_SQL,
    UPDATE_SQL,
    field_values,
)
from movr.store.work import Rows, Statement

MAX_RETRIES = 100  # a row that stays missing this long is an error, not contention


class MissingRow(RuntimeError):
    """A row the workload expects was found nowhere, even after MAX_RETRIES searches."""


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
        self.values = field_values(self.rng)

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

    def read(self, key: str, labels: tuple[str, ...]) -> Outcome:
        statement = Statement(READ_SQL, {"key": key})
        if self.variant == "computed":
            home = region_of_computed_key(key)
            if not self.one(home, "ycsb_read", [statement])[0]:
                raise MissingRow(key)
            return Outcome("read", labels, self.network.ycsb_floor_us("computed", self.region, home))
        home, _, retries = self.search(statement, "ycsb_read")
        return Outcome("read", labels, self.network.ycsb_floor_us("search", self.region, home), retries)

    def update(self, key: str, labels: tuple[str, ...], field: str, value: str) -> Outcome:
        statement = Statement(UPDATE_SQL[field], {"key": key, "value": value})
        if self.variant == "computed":
            home = region_of_computed_key(key)
            if not self.one(home, "ycsb_update", [statement])[0]:
                raise MissingRow(key)
            return Outcome("update", labels, self.network.ycsb_floor_us("computed", self.region, home))
        if self.variant == "default":
            home, _, retries = self.search(statement, "ycsb_update")
            return Outcome("update", labels, self.network.ycsb_floor_us("search", self.region, home), retries)
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

    def rehoming_update(
        self, key: str, labels: tuple[str, ...], field: str, value: str, statement: Statement
    ) -> Outcome:
        floor = self.network.ycsb_floor_us
        for retries in range(MAX_RETRIES + 1):
            if self.one(self.region, "ycsb_update", [statement])[0]:
                return Outcome("update", labels, floor("rehome", self.region, self.region), retries)
            found = self.first_hit(self.others, "ycsb_update", Statement(READ_SQL, {"key": key}))
            if found is None:
                continue
            home, rows = found
            if self.move_here(key, home, rows[0], field, value):
                return Outcome("update", labels, floor("rehome", self.region, home), retries, True)
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
        self.values = field_values(self.rng)
        self.nonce = task["nonce"]
        self.sequence = itertools.count()

    def next_operation(self) -> Callable[[], Outcome]:
        number = next(self.sequence)
        if self.variant == "computed":
            key = computed_key(self.region, number, digits=9)
        else:
            key = hashed_key(f"{self.nonce}/{self.region}/{number}")
        row = {"ycsb_key": key, **{f: self.rng.choice(self.values) for f in FIELDS}}
        return partial(self.insert, row)

    def insert(self, row: dict[str, Any]) -> Outcome:
        insert = Statement(INSERT_SQL, row)
        if self.variant == "computed":
            self.one(self.region, "ycsb_insert", [insert])
            return Outcome("insert", (), self.network.ycsb_floor_us("local insert", self.region, self.region))
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
        return Outcome("insert", (), self.network.ycsb_floor_us("claim everywhere", self.region, self.region))
