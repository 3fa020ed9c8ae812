"""Idempotent writes: a write sent with an idempotency key remembers its answer in its own statement.

A write sent with an idempotency key (the API's Idempotency-Key header) stores its answer, the row its
statement returned, in `idempotency_keys`, in that same statement and in the home of the row it wrote
(`%(city)s`); a retry with the key finds it there and returns it, changing nothing. Keys are kept
IDEMPOTENCY_TTL. The remembering writes spell these pieces out in their one statement:
  WITH {PRIOR}, <the action's CTEs, writes gated on FRESH>, outcome AS (<its answer row>), {REMEMBER} {ANSWER}
and run it as `remembered.statement(sql)`. Without a key (the usual write) PRIOR and REMEMBER give way to
stand-ins that touch no table: `prior` is empty and nothing is remembered. A statement that opened
`idempotency_keys` and its indexes only to find no key cost a write 0.14-0.19 ms more after idling (the
add-vehicle statement on a lab's server, docs/lab.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from movr.domain import errors
from movr.store.actions._run import run_work
from movr.store.actions._sql import UNIQUE_VIOLATION
from movr.store.backend import Backend
from movr.store.transaction import constraint_of, sqlstate_of
from movr.store.work import Work

IDEMPOTENCY_TTL = dt.timedelta(hours=24)
IDEMPOTENCY_KEY_RE = re.compile(r"[!-~]{1,255}")  # visible ASCII
EXPIRED_KEYS_PER_WRITE = 16  # lazy clean-up: a remembering write deletes at most this many expired keys
PRIOR = """prior AS (
    SELECT request, answer FROM idempotency_keys
     WHERE city = %(city)s AND scope = %(key_scope)s AND key = %(key)s
       AND created_at > now() - %(key_ttl)s::interval
)"""
# Without a key: the same columns, no table.
NO_PRIOR = "prior AS (SELECT NULL::varchar AS request, NULL::jsonb AS answer WHERE false)"
# An action's writes are gated on this: a retry (the key has an answer) writes nothing.
FRESH = "NOT EXISTS (SELECT 1 FROM prior)"
REMEMBER = f"""expired AS (
    DELETE FROM idempotency_keys
     WHERE %(key)s::varchar IS NOT NULL AND city = %(city)s AND created_at <= now() - %(key_ttl)s::interval
       AND (scope, key) IN (
           (SELECT scope, key FROM idempotency_keys
             WHERE city = %(city)s AND created_at <= now() - %(key_ttl)s::interval
             ORDER BY created_at LIMIT {EXPIRED_KEYS_PER_WRITE})
           UNION ALL SELECT %(key_scope)s, %(key)s)
    RETURNING 1
), remembered AS (
    -- After `expired` (its count is asked first), so an expired entry of this very key is gone.
    INSERT INTO idempotency_keys (city, scope, key, user_id, request, answer)
    SELECT %(city)s, %(key_scope)s, %(key)s, %(key_user)s, %(key_request)s, to_jsonb(outcome)
      FROM outcome
     WHERE %(key)s::varchar IS NOT NULL AND {FRESH} AND (SELECT count(*) FROM expired) >= 0
    RETURNING 1
)"""
NO_REMEMBER = "remembered AS (SELECT 1)"  # a CTE no one reads, so it never runs
ANSWER = """SELECT (SELECT request FROM prior) AS prior_request, (SELECT answer FROM prior) AS prior_answer, outcome.*
  FROM (SELECT 1) AS one LEFT JOIN outcome ON true"""
_UUID_COLUMNS = frozenset({"id", "owner_id", "rider_id", "vehicle_id", "owner_of_ride"})
_TIME_COLUMNS = frozenset({"created_at", "date_added", "start_time", "end_time"})


@dataclass(frozen=True)
class Remembered:
    """Where a write keeps its first answer: whose key it is, and what was asked with it."""

    scope: str
    key: str | None
    user_id: uuid.UUID
    request: str

    @classmethod
    def of(
        cls, key: str | None, action: str, request: dict[str, Any], *, user_id: uuid.UUID, scope: str | None = None
    ) -> Remembered:
        """`key` None: a write that remembers nothing. A key belongs to `scope`, by default its user's own
        keys. A password is never part of `request`: the digest is stored unsalted."""
        scope = str(user_id) if scope is None else scope
        if key is None:
            return cls(scope, None, user_id, "")  # nothing is remembered, so nothing is compared: no digest
        if not isinstance(key, str) or not IDEMPOTENCY_KEY_RE.fullmatch(key):
            raise errors.BadIdempotencyKey()
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
        return cls(scope, key, user_id, f"{action}:{digest}")

    def statement(self, sql: str) -> str:
        """A remembering write's statement, written with PRIOR and REMEMBER, as this write runs it: as written
        with a key; else with the key-less stand-ins (static text either way, parameters only)."""
        if self.key is not None:
            return sql
        assert PRIOR in sql and REMEMBER in sql, "a remembering write spells out PRIOR and REMEMBER"
        return sql.replace(PRIOR, NO_PRIOR).replace(REMEMBER, NO_REMEMBER)

    def params(self) -> dict[str, Any]:
        if self.key is None:
            return {}  # the key-less pieces take none
        return {
            "key_scope": self.scope,
            "key": self.key,
            "key_user": self.user_id,
            "key_request": self.request,
            "key_ttl": IDEMPOTENCY_TTL,
        }


def run_remembering(store: Backend, work: Work) -> dict[str, Any]:
    """The row of a remembering write. A request with the same key that committed after this statement's
    snapshot makes the key's insert fail (its primary key) and this statement with it, so it runs again:
    then its snapshot has the first answer."""
    try:
        return run_work(store, work)[0][0]
    except Exception as error:
        if sqlstate_of(error) == UNIQUE_VIOLATION and constraint_of(error) == "idempotency_keys_pkey":
            return run_work(store, work)[0][0]
        raise


def answer_of(row: dict[str, Any], remembered: Remembered) -> dict[str, Any]:
    """The row to answer with: the first answer to this key if there is one, else this statement's own."""
    if row["prior_answer"] is None:
        return row
    if row["prior_request"] != remembered.request:
        raise errors.IdempotencyKeyReused()
    return _revived(row["prior_answer"])


def _revived(answer: dict[str, Any]) -> dict[str, Any]:
    """A stored answer, read back from JSON with the types the statement returned."""
    revived = dict(answer)
    for column, value in answer.items():
        if isinstance(value, str) and column in _UUID_COLUMNS:
            revived[column] = uuid.UUID(value)
        elif isinstance(value, str) and column in _TIME_COLUMNS:
            revived[column] = dt.datetime.fromisoformat(value)
    return revived
