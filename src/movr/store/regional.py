"""RegionalPostgresBackend: the lab's multi-region database, one PostgreSQL primary per region.

How CockroachDB's multi-region features are realized here (ARCHITECTURE.md, "Semantics map"):
- REGIONAL BY ROW, region computed from city: a row lives on the primary of its city's region, and
  work that names a city goes to that server only.
- Locality-optimized search: work that names no home (log in by username) runs on the local server
  first, then on every other region's server at once; the first that finds rows answers.
- Global UNIQUE (usernames): a `username_directory` row homed on a region chosen by a hash of the name
  (in its canonical, lower-case form, as users store it),
  written in the same transaction as the user: on one server when the user's region is the directory's,
  else by two-phase commit (one parallel PREPARE round, one COMMIT PREPARED round), whose commit point
  is a decision row committed with the user (movr.store.twophase), so a coordinator that dies midway
  leaves nothing that a resolver cannot finish. The directory's primary key makes two sign-ups for one
  name in two regions race-free: the second waits on the first's row and then fails.
- GLOBAL tables: written on the primary region's server with `synchronous_commit = remote_apply` to
  logical-replication subscribers in every other region, so reads anywhere are local and fresh.

The backend is handed its servers, one per region (anything that behaves as a `RegionServer`), so that its
routing, its search and its two-phase commit run unchanged on fakes that count round trips
(tests/unit/test_regional_routing.py, test_twophase_fakes.py); `from_urls` builds the real pools.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from typing import Any

from movr.domain.errors import StoreUnavailable
from movr.domain.rules import canonical_username
from movr.geo import Preset
from movr.store import twophase
from movr.store.backend import Backend, RegionServer, ServerPool
from movr.store.transaction import run_transaction
from movr.store.work import Rows, Statement, UniqueClaim, Work

DIRECTORY_DDL = """
CREATE TABLE IF NOT EXISTS username_directory (
    username varchar(64) PRIMARY KEY,
    city varchar(64) NOT NULL,
    user_id uuid NOT NULL
)
"""
REGIONAL_TABLES_IN_LAB = (
    "idempotency_keys",
    "rides",
    "vehicles",
    "users",
    "username_directory",
    twophase.DECISIONS_TABLE,
)

log = logging.getLogger(__name__)


def directory_region(preset: Preset, value: str, regions: Sequence[str] | None = None) -> str:
    """The region that homes a unique value's directory entry: stable across processes and runs.

    `regions` narrows the choice (data domiciling, see movr.lab.survival.directory_regions): the regions
    where every city's rows may be stored, so that no directory entry leaves its user's allowed regions.
    """
    regions = sorted(regions or preset.region_names)
    # The canonical form: names that differ only in case are one name, so they share a directory region.
    digest = hashlib.blake2b(canonical_username(value).encode(), digest_size=8).digest()
    return regions[int.from_bytes(digest, "big") % len(regions)]


def claim_statement(claim: UniqueClaim) -> Statement:
    return Statement(
        "INSERT INTO username_directory (username, city, user_id) VALUES (%(username)s, %(city)s, %(user_id)s)",
        {"username": canonical_username(claim.value), "city": claim.city, "user_id": claim.owner_id},
    )


def release_statement(claim: UniqueClaim) -> Statement:
    # Conditional on the user being gone: when the directory shares the user's server, this runs after
    # the user's DELETE in the same transaction and sees whether it happened.
    return Statement(
        "DELETE FROM username_directory WHERE username = %(username)s AND user_id = %(user_id)s"
        " AND NOT EXISTS (SELECT 1 FROM users WHERE city = %(city)s AND id = %(user_id)s)",
        {"username": canonical_username(claim.value), "city": claim.city, "user_id": claim.owner_id},
    )


class RegionalPostgresBackend(Backend):
    name = "regional-postgres"

    def __init__(
        self,
        servers: Mapping[str, RegionServer],
        preset: Preset,
        region: str,
        *,
        global_writer: Callable[[], RegionServer] | None = None,
        directory_regions: Sequence[str] | None = None,
        executor: Executor | None = None,
    ) -> None:
        """`servers`: each region's server, which this backend then owns (closes). `global_writer` opens, on
        the first GLOBAL write, the server that writes GLOBAL tables (default: the primary region's server).
        `directory_regions`: where username directory entries may live. `executor` runs the parallel parts
        (search, PREPAREs, phase two, forgetting decisions; default: a thread pool that close() shuts down)."""
        super().__init__(preset, region)
        _check_regions(preset, servers, directory_regions)
        self.directory_regions = tuple(directory_regions or ())
        self.servers = dict(servers)
        self._open_global_writer = global_writer or (lambda: self.servers[preset.primary_region])
        self._global_writer: RegionServer | None = None
        self._own_pool = executor is None
        self._pool = executor or ThreadPoolExecutor(
            max_workers=4 * len(self.servers), thread_name_prefix="movr-regional"
        )
        self._sweeper: twophase.InDoubtSweeper | None = None

    @classmethod
    def from_urls(
        cls,
        region_urls: Mapping[str, str],
        preset: Preset,
        region: str,
        *,
        pool_size: int = 8,
        pool_timeout: float | None = None,
        directory_regions: Sequence[str] | None = None,
    ) -> RegionalPostgresBackend:
        """A pool to each region's PostgreSQL server (through the lab's links). `pool_timeout` (labs with a
        survival goal): fail fast on a lost server and reconnect at once after a failover (see ServerPool)."""
        _check_regions(preset, region_urls, directory_regions)
        options: dict[str, float] = (
            {} if pool_timeout is None else {"timeout": pool_timeout, "reconnect_timeout": min(1.0, pool_timeout)}
        )
        servers = {
            name: ServerPool(_conninfo(url), name, wan=name != region, max_size=pool_size, **options)
            for name, url in region_urls.items()
        }
        primary = preset.primary_region

        def global_writer() -> ServerPool:
            return ServerPool(
                _conninfo(region_urls[primary]),
                primary,
                wan=primary != region,
                max_size=2,
                options="-c synchronous_commit=remote_apply",
                **options,
            )

        return cls(servers, preset, region, global_writer=global_writer, directory_regions=directory_regions)

    # --- routing ------------------------------------------------------------------------------------

    def run(self, work: Work) -> list[Rows]:
        home = work.home
        if home.kind == "city":
            assert home.city is not None
            region = self.home_region(home.city)
            if work.claims or work.releases:
                return run_transaction(lambda: self._run_with_directory(work, region))
            return self._on(region, work)
        if home.kind == "local":
            return self._on(self.region, work)
        if home.kind == "search":
            return self._search(work)
        if home.kind == "global_write":
            return run_transaction(lambda: self.global_writer.execute(work.action, work.statements))
        raise ValueError(f"unknown home {home}")

    def _on(self, region: str, work: Work) -> list[Rows]:
        server = self.servers[region]
        return run_transaction(lambda: server.execute(work.action, work.statements, work.isolation))

    def _search(self, work: Work) -> list[Rows]:
        """Locality-optimized search: local first; if nothing is found, every other region at once."""
        local = self._on(self.region, work)
        if local[0]:
            return local
        others = [name for name in self.servers if name != self.region]
        pending = {self._submit(self._on, name, work) for name in others}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                results = future.result()
                if results[0]:
                    return results
        return local

    @property
    def global_writer(self) -> RegionServer:
        if self._global_writer is None:
            self._global_writer = self._open_global_writer()
        return self._global_writer

    # --- global uniqueness --------------------------------------------------------------------------

    def directory_of(self, value: str) -> str:
        return directory_region(self.preset, value, self.directory_regions)

    def _run_with_directory(self, work: Work, user_region: str) -> list[Rows]:
        parts: dict[str, list[Statement]] = {user_region: list(work.statements)}
        for claim in work.claims:
            parts.setdefault(self.directory_of(claim.value), []).append(claim_statement(claim))
        for claim in work.releases:
            parts.setdefault(self.directory_of(claim.value), []).append(release_statement(claim))
        if len(parts) == 1:
            server = self.servers[user_region]
            return server.execute(work.action, parts[user_region], work.isolation)[: len(work.statements)]
        return self._two_phase(work, user_region, parts)

    def _two_phase(self, work: Work, user_region: str, parts: dict[str, list[Statement]]) -> list[Rows]:
        """Atomic across servers, with the commit point in the user's region (movr.store.twophase)."""
        gid = twophase.new_gid(user_region)
        others = _Participants(
            {
                region: self._submit(self.servers[region].prepare, gid, work.action, stmts)
                for region, stmts in parts.items()
                if region != user_region
            }
        )
        deciding = False

        def decide(results: list[Rows]) -> list[Statement] | None:
            nonlocal deciding
            if others.failure() is not None or (work.commit_if is not None and not work.commit_if(results)):
                return None
            deciding = True
            return [twophase.commit_decision(gid)]

        try:
            # The isolation is the action's, for its own statements; the other parts hold directory entries only.
            results, committed = self.servers[user_region].execute_deciding(
                work.action, parts[user_region], decide, work.isolation
            )
        except StoreUnavailable:
            if not deciding:
                self._finish(others.prepared(), gid, commit=False)
            # Else the commit's outcome is unknown here: the prepared parts wait for a resolver, which
            # reads the decision from the user's region once it is reachable.
            raise
        except Exception as error:
            self._finish(others.prepared(), gid, commit=False)  # the server answered: nothing committed
            if deciding and twophase.is_decision_conflict(error):
                raise twophase.InDoubtAborted(f"a resolver aborted {gid} while it waited") from error
            raise
        self._finish(others.prepared(), gid, commit=committed)
        failure = others.failure()
        if failure is not None:
            raise failure
        return results[: len(work.statements)]

    def _finish(self, regions: list[str], gid: str, *, commit: bool) -> None:
        """Phase two on every prepared part, in parallel. A part that cannot be told now is left in doubt:
        its region's resolver finishes it the same way (the decision is durable, or presumed abort)."""
        how = "commit_prepared" if commit else "rollback_prepared"
        futures = {region: self._submit(getattr(self.servers[region], how), gid) for region in regions}
        unfinished = []
        for region, future in futures.items():
            try:
                future.result()
            except Exception as error:  # logged; a resolver finishes the part
                unfinished.append(region)
                log.warning("%s of %s in %s failed, left to its resolver: %s", how, gid, region, error)
        if commit and not unfinished:
            # Every part committed, so the decision is no longer needed; off the request's path (and
            # outside its counters: no copied context).
            with contextlib.suppress(RuntimeError):  # the backend is closing: the row stays, harmless
                self._pool.submit(self._forget, gid)

    def _forget(self, gid: str) -> None:
        try:
            region = twophase.decision_region_of(gid)
            assert region is not None
            self.servers[region].execute("forget_decision", [twophase.forget_decision(gid)])
        except Exception as error:  # a leftover decision row is harmless
            log.info("decision of %s kept: %s", gid, error)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        # Each thread records into the same request's counters.
        context = contextvars.copy_context()
        return self._pool.submit(context.run, fn, *args)

    # --- bulk loading and housekeeping --------------------------------------------------------------

    def load(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None:
        if table == "promo_codes":
            # GLOBAL: written once on the primary region's server; replication copies it everywhere.
            self.servers[self.preset.primary_region].copy_rows(table, rows, progress)
            return
        by_region: dict[str, list[dict]] = {}
        for row in rows:
            by_region.setdefault(self.home_region(row["city"]), []).append(row)
        for region, region_rows in by_region.items():
            self.servers[region].copy_rows(table, region_rows, progress)
        if table == "users":
            entries: dict[str, list[dict]] = {}
            for row in rows:
                entries.setdefault(self.directory_of(row["username"]), []).append(
                    {"username": canonical_username(row["username"]), "city": row["city"], "user_id": row["id"]}
                )
            for region, region_rows in entries.items():
                self.servers[region].copy_rows("username_directory", region_rows)

    def truncate(self) -> None:
        for server in self.servers.values():
            server.truncate(REGIONAL_TABLES_IN_LAB)
        self.servers[self.preset.primary_region].truncate(("promo_codes",))

    def warm(self, timeout: float = 15.0) -> None:
        for server in self.servers.values():
            server.wait_ready(timeout)

    def start_housekeeping(self) -> None:
        """Resolve this region's in-doubt two-phase commits in the background (movr.store.twophase)."""
        if self._sweeper is None:
            self._sweeper = twophase.InDoubtSweeper(self.servers, self.region)
            self._sweeper.start()

    def ping(self) -> bool:
        try:
            self.servers[self.region].execute("ping", [Statement("SELECT 1")])
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
        if self._own_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for server in self.servers.values():
            server.close()
        if self._global_writer is not None and self._global_writer not in self.servers.values():
            self._global_writer.close()


def _check_regions(preset: Preset, servers: Mapping[str, object], directory_regions: Sequence[str] | None) -> None:
    missing = set(preset.region_names) - set(servers)
    if missing:
        raise ValueError(f"no database server for region(s) {', '.join(sorted(missing))}")
    unknown = set(directory_regions or ()) - set(preset.region_names)
    if unknown:
        raise ValueError(f"directory regions {', '.join(sorted(unknown))} are not regions of {preset.name}")


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class _Participants:
    """The parts of a two-phase commit other than the user's region's: their PREPAREs, awaited once."""

    def __init__(self, futures: dict[str, Future]) -> None:
        self._futures = futures
        self._outcome: tuple[list[str], Exception | None] | None = None

    def _settle(self) -> tuple[list[str], Exception | None]:
        if self._outcome is None:
            prepared, failure = [], None
            for region, future in self._futures.items():
                try:
                    future.result()
                    prepared.append(region)
                except Exception as error:  # reported by failure(), after phase two
                    failure = failure or error
            self._outcome = (prepared, failure)
        return self._outcome

    def prepared(self) -> list[str]:
        return self._settle()[0]

    def failure(self) -> Exception | None:
        return self._settle()[1]
