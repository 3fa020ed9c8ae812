"""Username claims: global uniqueness on the lab's regional backend in one parallel round of WAN round trips.

Every region's server keeps a `username_directory`: one row per claimed name (its primary key admits one
claim), naming the user, the user's city and home region, the region the claim was made from, when it was
made and until when its sign-up may still commit (its lease). A sign-up (movr.store.regional):

1. claims the name in every other region at once: one autocommit INSERT per region, in parallel;
2. if it won every claim, inserts the user and the local claim in one local transaction, before the
   lease ends (a CHECK refuses a claim made after its lease, so a coordinator that stalled past it cannot
   commit a user whose other claims a resolver may already have cleared);
3. if it lost a claim to a user that exists, the name is taken: it deletes the claims it made. If it lost
   to a sign-up still in flight, the older attempt (smaller user id) keeps its claims and tries the lost
   regions again; the younger deletes its claims and waits for the older to finish (it reads who holds the
   name where it lost until the older's user exists, and the name is taken, or its claims are gone) before
   claiming again. A younger one that claimed again at once would take back what the older needs, and
   racers that keep doing so can all run out of lease with no user. A waiting sign-up holds no claim, so
   nothing waits for it: there is no cycle, and one of several racing sign-ups always wins.

A coordinator that dies between 1 and 2 leaves claims whose user never appears. Each app server's resolver
(`ClaimResolver`) looks at its region's claims whose lease has ended and that nobody has yet seen settled,
asks each claim's home region whether its user exists (one statement per home region for all of them),
marks the claims of existing users settled and deletes the others: the name is free again a few seconds
after the coordinator died. A claim left by an account removal that could not reach every region (the
user is gone, the claim is settled) is cleared by the next sign-up of that name that meets it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from movr.domain.errors import StoreUnavailable
from movr.domain.rules import canonical_username
from movr.store.backend import RegionServer
from movr.store.work import Statement, UniqueClaim

log = logging.getLogger(__name__)

DIRECTORY_TABLE = "username_directory"
DIRECTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS {DIRECTORY_TABLE} (
    username varchar(64) PRIMARY KEY,
    user_id uuid NOT NULL,
    city varchar(64) NOT NULL,
    region text NOT NULL,
    claimed_from text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until timestamptz NOT NULL,
    settled boolean NOT NULL DEFAULT false,
    CONSTRAINT username_directory_lease_check CHECK (settled OR claimed_at <= lease_until)
)
"""
CLAIM_LEASE_S = 3.0
"""How long after its first claim a sign-up may still commit its user."""
CLOCK_MARGIN_S = 1.0
"""How long after a lease a resolver waits before judging its claim (a commit in flight, clocks apart)."""
SWEEP_INTERVAL_S = 1.0
SWEEP_BATCH = 500


@dataclass(frozen=True)
class Holder:
    """Who holds a claim another sign-up wanted: None fields when it was committed too recently to be read."""

    user_id: str | None
    city: str | None
    region: str | None
    expired: bool
    """Its lease ended more than CLOCK_MARGIN_S ago: its sign-up can no longer commit."""


def lease_until(now: dt.datetime | None = None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=CLAIM_LEASE_S)


def _params(claim: UniqueClaim, region: str, claimed_from: str, until: dt.datetime) -> dict:
    return {
        "username": canonical_username(claim.value),
        "user_id": claim.owner_id,
        "city": claim.city,
        "region": region,
        "claimed_from": claimed_from,
        "lease_until": until,
        "margin": CLOCK_MARGIN_S,
    }


def claim_statement(claim: UniqueClaim, region: str, claimed_from: str, until: dt.datetime) -> Statement:
    """Claim the name in another region, in autocommit: no rows when it is ours now (new, or ours already),
    else its holder (NULLs when the holder committed after this statement's snapshot)."""
    return Statement(
        f"""
        WITH claimed AS (
            INSERT INTO {DIRECTORY_TABLE} (username, user_id, city, region, claimed_from, lease_until)
            VALUES (%(username)s, %(user_id)s, %(city)s, %(region)s, %(claimed_from)s, %(lease_until)s)
            ON CONFLICT (username) DO NOTHING
            RETURNING user_id
        )
        SELECT d.user_id::text AS user_id, d.city, d.region,
               COALESCE(d.lease_until < now() - %(margin)s * INTERVAL '1 second', false) AS expired
          FROM (SELECT 1) AS one LEFT JOIN {DIRECTORY_TABLE} d ON d.username = %(username)s
         WHERE NOT EXISTS (SELECT 1 FROM claimed) AND d.user_id IS DISTINCT FROM %(user_id)s::uuid
        """,
        _params(claim, region, claimed_from, until),
    )


def local_claim_statement(claim: UniqueClaim, region: str, until: dt.datetime) -> Statement:
    """The claim in the user's own region, in the user's transaction: settled, as it commits with the user.

    A claim of ours already there (every region on one server, as in tests) is settled in place; another's
    makes the transaction fail: DO UPDATE then sets user_id NULL, which its NOT NULL refuses (23502), as
    a plain INSERT could not tell ours from another's."""
    return Statement(
        f"""
        INSERT INTO {DIRECTORY_TABLE} (username, user_id, city, region, claimed_from, lease_until, settled)
        VALUES (%(username)s, %(user_id)s, %(city)s, %(region)s, %(claimed_from)s, %(lease_until)s, true)
        ON CONFLICT (username) DO UPDATE SET
            settled = true,
            user_id = CASE WHEN {DIRECTORY_TABLE}.user_id = EXCLUDED.user_id THEN EXCLUDED.user_id END
        """,
        _params(claim, region, region, until),
    )


def holder_statement(claim: UniqueClaim) -> Statement:
    """Who holds the name on this server (after a lost local claim)."""
    return Statement(
        f"SELECT user_id::text AS user_id, city, region,"
        f" lease_until < now() - %(margin)s * INTERVAL '1 second' AS expired"
        f" FROM {DIRECTORY_TABLE} WHERE username = %(username)s",
        {"username": canonical_username(claim.value), "margin": CLOCK_MARGIN_S},
    )


def unclaim_statement(username: str, user_id: str) -> Statement:
    """Delete one sign-up's claim (a lost race, a removed account)."""
    return Statement(
        f"DELETE FROM {DIRECTORY_TABLE} WHERE username = %(username)s AND user_id = %(user_id)s",
        {"username": canonical_username(username), "user_id": user_id},
    )


def clear_expired_statement(username: str, user_id: str) -> Statement:
    """Delete a claim whose user does not exist, only if its lease has ended (it can never commit now)."""
    return Statement(
        f"DELETE FROM {DIRECTORY_TABLE} WHERE username = %(username)s AND user_id = %(user_id)s"
        " AND lease_until < now() - %(margin)s * INTERVAL '1 second'",
        {"username": canonical_username(username), "user_id": user_id, "margin": CLOCK_MARGIN_S},
    )


def release_local_statement(claim: UniqueClaim) -> Statement:
    """In the removal's own transaction, after the user's DELETE: released only if the user is gone."""
    return Statement(
        f"DELETE FROM {DIRECTORY_TABLE} WHERE username = %(username)s AND user_id = %(user_id)s"
        " AND NOT EXISTS (SELECT 1 FROM users WHERE city = %(city)s AND id = %(user_id)s)",
        {"username": canonical_username(claim.value), "city": claim.city, "user_id": claim.owner_id},
    )


def lookup_statement(username: str) -> Statement:
    """The local entry of a name: which city (and region) homes its user."""
    return Statement(
        f"SELECT city, region FROM {DIRECTORY_TABLE} WHERE username = %(username)s",
        {"username": canonical_username(username)},
    )


def users_exist_statement(users: list[tuple[str, str]]) -> Statement:
    """Which of these (city, id) users exist, on their home server (by primary key)."""
    return Statement(
        "SELECT u.id::text AS id FROM users u"
        " JOIN unnest(%(cities)s::varchar[], %(ids)s::uuid[]) AS w(city, id) ON u.city = w.city AND u.id = w.id",
        {"cities": [city for city, _ in users], "ids": [user_id for _, user_id in users]},
    )


def existing_users(server: RegionServer, users: list[tuple[str, str]]) -> set[str]:
    return {row["id"] for row in server.execute("claims_check", [users_exist_statement(users)])[0]}


def expired_claims_statement() -> Statement:
    """This server's claims past their lease that no resolver has settled yet."""
    return Statement(
        f"SELECT username, user_id::text AS user_id, city, region FROM {DIRECTORY_TABLE}"
        " WHERE NOT settled AND lease_until < now() - %(margin)s * INTERVAL '1 second'"
        " ORDER BY lease_until LIMIT %(batch)s",
        {"margin": CLOCK_MARGIN_S, "batch": SWEEP_BATCH},
    )


def unsettled_claims_statement() -> Statement:
    """How many claims on this server no resolver has seen settled (sign-ups in flight, or orphans)."""
    return Statement(f"SELECT count(*) AS unsettled FROM {DIRECTORY_TABLE} WHERE NOT settled")


@dataclass(frozen=True)
class Resolution:
    settled: int
    """Claims whose user exists, now marked settled (never looked at again)."""
    cleared: list[str]
    """Names whose orphan claim was deleted here."""


def resolve_claims(servers: Mapping[str, RegionServer], region: str) -> Resolution:
    """Settle or clear `region`'s claims whose lease has ended (one pass). A home region that cannot be
    reached leaves its claims for a later pass."""
    here = servers[region]
    expired = here.execute("claims_sweep", [expired_claims_statement()])[0]
    by_home: dict[str, list[dict]] = {}
    for row in expired:
        by_home.setdefault(row["region"], []).append(row)
    settle: list[dict] = []
    clear: list[dict] = []
    for home, rows in by_home.items():
        if home not in servers:
            log.warning("claims in %s name region %s, not of this lab; left alone", region, home)
            continue
        try:
            exist = existing_users(servers[home], [(row["city"], row["user_id"]) for row in rows])
        except StoreUnavailable as error:
            log.info("claims homed in %s wait for it: %s", home, error)
            continue
        for row in rows:
            (settle if row["user_id"] in exist else clear).append(row)
    statements = []
    if settle:
        statements.append(_batch("UPDATE {t} d SET settled = true FROM {pairs} WHERE {match}", settle))
    if clear:
        statements.append(_batch("DELETE FROM {t} d USING {pairs} WHERE {match} AND NOT d.settled", clear))
    if statements:
        here.execute("claims_resolve", statements)
    return Resolution(len(settle), [row["username"] for row in clear])


def _batch(template: str, rows: list[dict]) -> Statement:
    sql = template.format(
        t=DIRECTORY_TABLE,
        pairs="unnest(%(names)s::varchar[], %(ids)s::uuid[]) AS s(username, user_id)",
        match="d.username = s.username AND d.user_id = s.user_id",
    )
    return Statement(sql, {"names": [row["username"] for row in rows], "ids": [row["user_id"] for row in rows]})


class ClaimResolver:
    """A daemon thread that settles or clears its region's expired claims every SWEEP_INTERVAL_S."""

    def __init__(
        self,
        servers: Mapping[str, RegionServer],
        region: str,
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.servers = servers
        self.region = region
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"movr-claims-{region}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)  # a sweep blocked on a lost server must not hold up a shutdown

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                resolution = resolve_claims(self.servers, self.region)
            except (StoreUnavailable, psycopg.Error) as error:
                log.info("claims sweep of %s skipped: %s", self.region, error)
                continue
            for name in resolution.cleared:
                log.warning("claim of %r in %s cleared: its sign-up never committed", name, self.region)
