"""RegionalPostgresBackend: the lab's multi-region database, one PostgreSQL primary per region.

How CockroachDB's multi-region features are realized here (ARCHITECTURE.md, "Semantics map"):
- REGIONAL BY ROW, region computed from city: a row lives on the primary of its city's region, and
  work that names a city goes to that server only.
- Global UNIQUE (usernames): claims (movr.store.claims). A sign-up claims the name in every other region at
  once (one autocommit statement per region: one parallel round of WAN round trips, whatever the name),
  then inserts the user with the local claim in one local transaction; each region's primary key admits
  one claim, so of several sign-ups of one name at most one holds them all. CockroachDB pays the same one
  round: its uniqueness check reads every region, and parallel commits commit the write locally.
- Log in by username: the local claim names the user's home, so the user's row is read locally or with one
  statement routed to its region (no fan-out). Only a region that keeps no claims (data domiciling narrows
  where they may live) falls back to a locality-optimized search: local first, then every other region.
- GLOBAL tables: written on the primary region's server with `synchronous_commit = remote_apply` to
  logical-replication subscribers in every other region, so reads anywhere are local and fresh.

The backend is handed its servers, one per region (anything that behaves as a `RegionServer`), so that its
routing, its search and its claims run unchanged on fakes that count round trips
(tests/unit/test_regional_routing.py, test_claims_fakes.py); `from_urls` builds the real pools.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from typing import Any

from movr.domain import errors
from movr.domain.errors import StoreUnavailable
from movr.domain.rules import canonical_username
from movr.geo import Preset
from movr.store import claims
from movr.store.backend import Backend, RegionServer, ServerPool
from movr.store.transaction import run_transaction, sqlstate_of
from movr.store.work import Rows, Statement, UniqueClaim, Work

DIRECTORY_DDL = claims.DIRECTORY_DDL
REGIONAL_TABLES_IN_LAB = ("idempotency_keys", "rides", "vehicles", "users", claims.DIRECTORY_TABLE)
# A local claim that met another sign-up's: its primary key (a plain INSERT) or the NOT NULL of its upsert.
_CLAIM_CONFLICTS = frozenset({"23505", "23502"})
# Who holds a name where the holder could not be read (gone, or committed after the read's snapshot).
_UNREAD_HOLDER = claims.Holder(None, None, None, False)

log = logging.getLogger(__name__)


class NameTaken(Exception):
    """A claim met the claim of a user that exists: the name is taken (a unique violation, as on one server)."""

    sqlstate = "23505"


class RegionalPostgresBackend(Backend):
    name = "regional-postgres"

    def __init__(
        self,
        servers: Mapping[str, RegionServer],
        preset: Preset,
        region: str,
        *,
        global_writer: Callable[[], RegionServer] | None = None,
        housekeeping_servers: Callable[[], Mapping[str, RegionServer]] | None = None,
        directory_regions: Sequence[str] | None = None,
        executor: Executor | None = None,
    ) -> None:
        """`servers`: each region's server, which this backend then owns (closes). `global_writer` opens, on
        the first GLOBAL write, the server that writes GLOBAL tables (default: the primary region's server).
        `housekeeping_servers` opens, when housekeeping starts, the servers the claims resolver sweeps with
        (default: `servers`). `directory_regions`: where username directory entries may live. `executor` runs
        the parallel parts (search, PREPAREs, phase two, forgetting decisions; default: a thread pool that
        close() shuts down)."""
        super().__init__(preset, region)
        _check_regions(preset, servers, directory_regions)
        self.directory_regions = tuple(directory_regions or ())
        self.servers = dict(servers)
        self._open_global_writer = global_writer or (lambda: self.servers[preset.primary_region])
        self._global_writer: RegionServer | None = None
        self._open_housekeeping_servers = housekeeping_servers or (lambda: self.servers)
        self._housekeeping_servers: dict[str, RegionServer] = {}
        self._own_pool = executor is None
        self._pool = executor or ThreadPoolExecutor(
            max_workers=4 * len(self.servers), thread_name_prefix="movr-regional"
        )
        self._sweeper: claims.ClaimResolver | None = None

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

        def housekeeping_servers() -> dict[str, ServerPool]:
            # The resolver's sweeps on connections of their own. On a request's, a sweep that held the one
            # connection a request wanted would make the pool open another; the requests would then take turns
            # on the two, and each statement would be planned again on the new one, as on a cold server.
            return {
                name: ServerPool(_conninfo(url), name, wan=name != region, max_size=1, **options)
                for name, url in region_urls.items()
            }

        return cls(
            servers,
            preset,
            region,
            global_writer=global_writer,
            housekeeping_servers=housekeeping_servers,
            directory_regions=directory_regions,
        )

    # --- routing ------------------------------------------------------------------------------------

    def run(self, work: Work) -> list[Rows]:
        home = work.home
        if home.kind == "city":
            assert home.city is not None
            region = self.home_region(home.city)
            if work.claims:
                return self._sign_up(work, region)
            if work.releases:
                return self._remove(work, region)
            return self._on(region, work)
        if home.kind == "local":
            return self._on(self.region, work)
        if home.kind == "search":
            return self._find(work)
        if home.kind == "global_write":
            return run_transaction(lambda: self.global_writer.execute(work.action, work.statements))
        raise ValueError(f"unknown home {home}")

    def _on(self, region: str, work: Work, extra: Sequence[Statement] = ()) -> list[Rows]:
        server = self.servers[region]
        return run_transaction(lambda: server.execute(work.action, [*work.statements, *extra], work.isolation))

    def _find(self, work: Work) -> list[Rows]:
        """Work that names a user by name: here, with the name's local claim in the same round trip; if the
        user lives elsewhere, the claim names its city, and the work runs there (one statement routed)."""
        username = work.home.username
        if username is None or not self.keeps_claims(self.region):
            return self._search(work)
        *found, entry = self._on(self.region, work, [claims.lookup_statement(username)])
        if found[0] or not entry:
            return found
        region = self.home_region(entry[0]["city"])
        return found if region == self.region else self._on(region, work)

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

    # --- global uniqueness: claims (movr.store.claims) ------------------------------------------------

    def claim_regions(self) -> tuple[str, ...]:
        """Where every name is claimed (data domiciling may narrow it); a user's home region always is."""
        return self.directory_regions or tuple(self.servers)

    def keeps_claims(self, region: str) -> bool:
        """Does `region` hold the claim of every name, so that a log-in there needs no search?"""
        return region in self.claim_regions()

    def _sign_up(self, work: Work, home: str) -> list[Rows]:
        """Claim the name in every other region at once, then insert the user with its local claim; a lost
        race is settled by wait-die (movr.store.claims), within the claims' lease."""
        (claim,) = work.claims
        until = claims.lease_until()
        deadline = time.monotonic() + claims.CLAIM_LEASE_S - claims.CLOCK_MARGIN_S
        others = [region for region in self.claim_regions() if region != home]
        held: set[str] = set()
        yielded_to: set[str] = set()  # where an older sign-up in flight held the name when we gave ours up
        for attempt in range(1_000):
            if yielded_to:
                # Claiming again before that sign-up has finished would only take back what it needs, and
                # sign-ups that keep doing so can all run out of time with no user: look until it is gone.
                lost = self._still_held(claim, yielded_to)
            else:
                lost = self._claim(claim, [r for r in others if r not in held], until, held)
                if not lost:
                    if time.monotonic() >= deadline:
                        # Past the lease a resolver may already have cleared the remote claims: committing the
                        # user now could leave a name claimed nowhere else. Give them up instead.
                        break
                    statements = [claims.local_claim_statement(claim, home, until)]
                    try:
                        return self._on(home, work, statements)[: len(work.statements)]
                    except Exception as error:
                        if sqlstate_of(error) not in _CLAIM_CONFLICTS:
                            self._unclaim(claim, held)
                            raise
                        lost = {home: self._holders(home, claim)}
            yielded_to = self._settle_race(claim, lost, held) if lost else set()
            pause = random.uniform(0, min(0.2, 0.005 * 2**attempt))  # contention backoff, not a distance
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
        self._unclaim(claim, held)
        raise errors.Busy(f"another sign-up for {claim.value!r} has not finished")

    def _claim(self, claim: UniqueClaim, regions: list[str], until: dt.datetime, held: set[str]) -> dict:
        """One parallel round: the claim in each of `regions`; adds those won to `held`, returns the others'
        holders. On a failure (a region lost), releases every claim held and raises it."""
        futures = {
            region: self._submit(
                self.servers[region].execute,
                "register_claim",
                [claims.claim_statement(claim, self.home_region(claim.city), self.region, until)],
            )
            for region in regions
        }
        lost: dict[str, list[claims.Holder]] = {}
        failure: Exception | None = None
        for region, future in futures.items():
            try:
                rows = future.result()[0]
            except Exception as error:  # reported once every claim made is released
                failure = failure or error
                continue
            if rows:
                lost[region] = [claims.Holder(**row) for row in rows]
            else:
                held.add(region)
        if failure is None:
            try:
                self._identify_unread_holders(claim, lost, held)
            except Exception as error:
                failure = error
        if failure is not None:
            self._unclaim(claim, held)
            raise failure
        return lost

    def _identify_unread_holders(
        self, claim: UniqueClaim, lost: dict[str, list[claims.Holder]], held: set[str]
    ) -> None:
        """A holder that committed after a claim's snapshot shows as NULLs: look again to learn who it is. It can
        be this sign-up itself where regions share a server (as in tests): its claim in another region made the
        same row, and the name is then ours there too (moved from `lost` to `held`)."""
        unread = {region for region, holders in lost.items() if all(h.user_id is None for h in holders)}
        if not unread:
            return
        found = self._still_held(claim, unread)  # one parallel round, however many regions
        for region in unread:
            holders = found.get(region) or [_UNREAD_HOLDER]
            if any(h.user_id == claim.owner_id for h in holders):
                held.add(region)
                del lost[region]
            else:
                lost[region] = holders

    def _holders(self, region: str, claim: UniqueClaim) -> list[claims.Holder]:
        return self._still_held(claim, {region}).get(region) or [_UNREAD_HOLDER]

    def _still_held(self, claim: UniqueClaim, regions: set[str]) -> dict[str, list[claims.Holder]]:
        """Who holds the name in `regions` now, in one parallel round; regions where nobody does are left out."""
        futures = {
            region: self._submit(self.servers[region].execute, "register_claim", [claims.holder_statement(claim)])
            for region in regions
        }
        found = {region: future.result()[0] for region, future in futures.items()}
        return {region: [claims.Holder(**row) for row in rows] for region, rows in found.items() if rows}

    def _settle_race(self, claim: UniqueClaim, lost: dict[str, list[claims.Holder]], held: set[str]) -> set[str]:
        """A claim was lost. To a user that exists: the name is taken. To a sign-up whose lease has ended
        and that has no user: its claim is cleared. To one in flight: the older of the two (smaller user
        id) keeps its claims and tries again; the younger releases them and waits for the older to finish.
        Returns the regions where an older sign-up in flight holds the name (empty: try again now)."""
        by_home: dict[str, set[tuple[str, str]]] = {}
        for holders in lost.values():
            for h in holders:
                if h.user_id is not None and h.city is not None and h.region in self.servers:
                    by_home.setdefault(h.region, set()).add((h.city, h.user_id))
        asked = [
            self._submit(claims.existing_users, self.servers[home], sorted(users)) for home, users in by_home.items()
        ]
        exist: set[str] = set()
        for future in asked:
            try:
                exist |= future.result()
            except StoreUnavailable:  # unknown: treated as in flight
                continue
        if exist:
            self._unclaim(claim, held)
            raise NameTaken(f"the username {claim.value!r} is taken")
        stale = [
            (region, holder.user_id)
            for region, holders in lost.items()
            for holder in holders
            if holder.expired and holder.user_id is not None
        ]
        for future in [
            self._submit(self.servers[r].execute, "register_clear", [claims.clear_expired_statement(claim.value, u)])
            for r, u in stale
        ]:
            future.result()
        older = {
            region
            for region, holders in lost.items()
            for h in holders
            if not h.expired and (h.user_id is None or h.user_id < claim.owner_id)
        }
        if older:
            self._unclaim(claim, held)
        return older

    def _unclaim(self, claim: UniqueClaim, regions: set[str], action: str = "register_unclaim") -> None:
        """Delete this sign-up's claims in `regions`, in parallel; one that cannot be reached is left to its
        region's resolver (its user never appears)."""
        futures = {
            region: self._submit(
                self.servers[region].execute, action, [claims.unclaim_statement(claim.value, claim.owner_id)]
            )
            for region in regions
        }
        regions.clear()
        for region, future in futures.items():
            try:
                future.result()
            except Exception as error:  # logged; a resolver or the next sign-up of the name clears it
                log.warning("claim of %r in %s not released: %s", claim.value, region, error)

    def _remove(self, work: Work, home: str) -> list[Rows]:
        """The user and its local claim in one local transaction; then its claims everywhere else, in
        parallel, if the action says the user went (`commit_if`)."""
        (claim,) = work.releases
        results = self._on(home, work, [claims.release_local_statement(claim)])[: len(work.statements)]
        if work.commit_if is None or work.commit_if(results):
            self._unclaim(claim, {region for region in self.claim_regions() if region != home}, work.action)
        return results

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
            # Loaded users are settled: their claims in every claim region and their home.
            now = dt.datetime.now(dt.UTC)
            entries: dict[str, list[dict]] = {}
            for row in rows:
                home = self.home_region(row["city"])
                entry = {
                    "username": canonical_username(row["username"]),
                    "user_id": row["id"],
                    "city": row["city"],
                    "region": home,
                    "claimed_from": home,
                    "lease_until": now,
                    "settled": True,
                }
                for region in {*self.claim_regions(), home}:
                    entries.setdefault(region, []).append(entry)
            # Regions that share one database (tests put every region on one server) get each entry once.
            loaded: dict[object, set[str]] = {}
            for region, region_rows in entries.items():
                server = self.servers[region]
                done = loaded.setdefault(getattr(server, "conninfo", id(server)), set())
                fresh = [row for row in region_rows if row["username"] not in done]
                done.update(row["username"] for row in fresh)
                server.copy_rows(claims.DIRECTORY_TABLE, fresh)

    def truncate(self) -> None:
        for server in self.servers.values():
            server.truncate(REGIONAL_TABLES_IN_LAB)
        self.servers[self.preset.primary_region].truncate(("promo_codes",))

    def warm(self, timeout: float = 15.0) -> None:
        for server in self.servers.values():
            server.wait_ready(timeout)

    def start_housekeeping(self) -> None:
        """Settle or clear this region's expired claims in the background (movr.store.claims)."""
        if self._sweeper is None:
            self._housekeeping_servers = dict(self._open_housekeeping_servers())
            self._sweeper = claims.ClaimResolver(self._housekeeping_servers, self.region)
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
        for server in self._housekeeping_servers.values():
            if server not in self.servers.values():
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
