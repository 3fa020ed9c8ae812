"""A lone statement on a server-side prepared statement: one round trip, and as little Python as it allows.

Most user actions are one statement (a CTE does the reads, the checks and the write), which autocommit makes
its own transaction. psycopg runs such a statement through its pipeline (`movr.store.backend.run_pipelined`)
so that its first run on a connection, which prepares it, is still one round trip; every later run then
pays the pipeline's and the cursor's Python, woken cold after the request's idle gap, for nothing. Measured
in process through a ServerPool to a lab server behind its 0.5 ms in-region link (the read of a city's
vehicles, 400 interleaved rounds, medians of two runs): after 20 ms idle 1.16-1.22 ms through psycopg's
pipeline, 0.98-1.04 ms this way; back to back 0.73-0.77 and 0.61-0.63 ms.

So this module keeps, per connection, the statements it has prepared under its own names, and runs a lone
statement with libpq's PQexecPrepared once prepared; the first run sends Parse, then Bind/Execute and one
Sync in libpq's pipeline mode, still one round trip. psycopg still does what it is good at: its Transformer
adapts the parameters and loads the rows, with the connection's adapters, exactly as a cursor would.
"""

from __future__ import annotations

import functools
import itertools
import re
import select
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result

from movr.store.work import Rows

# psycopg's placeholders as our SQL writes them: %(name)s, and %% for a literal percent sign.
_PLACEHOLDER = re.compile(r"%(?:\((?P<name>\w+)\)s|(?P<percent>%))")
_ROWS_OR_COMMAND = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
INVALID_STATEMENT_NAME = b"26000"
# Names unique in the process: a name is never reused, even for a connection whose statements were forgotten.
_names = itertools.count()
# A connection forgets its statements when it closes; so does this map (weak keys).
_prepared: weakref.WeakKeyDictionary[psycopg.Connection, dict[tuple[bytes, tuple[int, ...]], bytes]] = (
    weakref.WeakKeyDictionary()
)


def convertible(sql: str) -> bool:
    """Are the statement's placeholders all %(name)s (else run it the ordinary way)?"""
    return converted(sql) is not None


@functools.lru_cache(maxsize=512)
def converted(sql: str) -> tuple[bytes, tuple[str, ...]] | None:
    """The statement with $1, $2, ... for its named placeholders, and the names in that order; None when it
    has placeholders of another kind (positional %s, or psycopg's %b and %t)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group("percent"):
            return "%"
        name = match.group("name")
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PLACEHOLDER.sub(number, sql)
    if re.search(r"%[sbt(]", _PLACEHOLDER.sub("", sql)):
        return None
    return text.encode(), tuple(names)


def forget(conn: psycopg.Connection) -> None:
    """The connection ran ROLLBACK: psycopg deallocates every prepared statement after one."""
    _prepared.pop(conn, None)


def run_alone(conn: psycopg.Connection, sql: str, params: Mapping[str, Any]) -> Rows:
    """Run one statement (in autocommit: its own transaction) in one round trip; its rows as dicts.

    Raises psycopg's error for what the server refused (sqlstate and diagnostics as a cursor's would be),
    psycopg.OperationalError for a lost connection. Only for a statement `convertible` accepts."""
    found = converted(sql)
    assert found is not None, "run_alone takes only statements whose placeholders are all %(name)s"
    text, names = found
    adapter = Transformer(conn)
    values = adapter.dump_sequence([params[name] for name in names], [PyFormat.AUTO] * len(names))
    statements = _prepared.setdefault(conn, {})
    key = (text, tuple(adapter.types or ()))
    pgconn = conn.pgconn
    result = None
    if (name := statements.get(key)) is not None:
        result = pgconn.exec_prepared(name, values, adapter.formats)
        if result.error_field(pq.DiagnosticField.SQLSTATE) == INVALID_STATEMENT_NAME:
            # The server forgot it (psycopg deallocates every prepared statement after a rollback that
            # `forget` did not see): nothing ran, so prepare it again.
            statements.clear()
            result = None
    if result is None:
        name = f"movr_{next(_names)}".encode()
        result = _prepare_and_run(pgconn, name, text, adapter.types, values, adapter.formats)
        if result.status in _ROWS_OR_COMMAND:
            statements[key] = name
    _check(conn, result)
    if result.status != pq.ExecStatus.TUPLES_OK:
        return []
    adapter.set_pgresult(result)
    encoding = conn.info.encoding
    columns = [(result.fname(number) or b"").decode(encoding) for number in range(result.nfields)]
    return adapter.load_rows(0, result.ntuples, lambda row: dict(zip(columns, row, strict=True)))


def _prepare_and_run(
    pgconn: Any,
    name: bytes,
    text: bytes,
    types: Sequence[int] | None,
    values: Sequence[Any],
    formats: Sequence[Any] | None,
) -> Any:
    """Parse, Bind/Execute and Sync written at once (libpq's pipeline mode): the first run is one round trip.
    The execution's result, or the first error (an error aborts the rest of the pipeline)."""
    pgconn.enter_pipeline_mode()
    try:
        pgconn.send_prepare(name, text, param_types=types)
        pgconn.send_query_prepared(name, values, param_formats=formats)
        pgconn.pipeline_sync()
        while pgconn.flush():  # a nonblocking connection may not take it all at once
            select.select([], [pgconn.socket], [])
        results = []
        while pgconn.status != pq.ConnStatus.BAD:
            result = _next_result(pgconn)
            if result is None:
                continue  # the end of one query's results
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                break
            results.append(result)
    finally:
        if pgconn.status != pq.ConnStatus.BAD:
            try:
                pgconn.exit_pipeline_mode()
            except psycopg.Error:
                # Interrupted with answers unread: the connection is out of step; closed, the pool drops it
                # (and what interrupted us is what the caller sees).
                pgconn.finish()
    for result in results:
        if result.status not in _ROWS_OR_COMMAND:
            return result
    if len(results) != 2:  # the connection was lost before both answers came
        raise psycopg.OperationalError(pgconn.get_error_message() or "the connection was lost")
    return results[-1]


def _next_result(pgconn: Any) -> Any:
    """libpq's next result, waiting for it here: PQgetResult would wait holding the GIL."""
    while pgconn.is_busy():
        select.select([pgconn.socket], [], [])
        pgconn.consume_input()
    return pgconn.get_result()


def _check(conn: psycopg.Connection, result: Any) -> None:
    if result.status in _ROWS_OR_COMMAND:
        return
    if conn.pgconn.status == pq.ConnStatus.BAD:
        raise psycopg.OperationalError(conn.pgconn.get_error_message() or "the connection was lost")
    raise error_from_result(result, encoding=conn.info.encoding)
