"""In-memory region servers for unit tests of the regional backend and its username claims.

A `FakeServer` behaves as a `movr.store.backend.RegionServer`: it records every round trip (which method,
which action, which SQL) and answers from a script, so tests assert what a backend sent where and how
many round trips each region cost, never how long anything took. Like `ServerPool`, it adds each round trip
to the current `movr.store.stats` scope (statements, a WAN round trip when it is not the local region),
so the figures a response would carry are checked too.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from movr.geo import Preset
from movr.store import stats
from movr.store.regional import RegionalPostgresBackend
from movr.store.work import Rows, Statement

__all__ = ["Answer", "FakeServer", "RoundTrip", "SerialExecutor", "Sqlstate", "fake_backend"]


class SerialExecutor(Executor):
    """Runs each submitted call at once, in the caller's thread: the backend's parallel parts (search, claims,
    releases) are done by the time the action returns, in a fixed order."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


class Sqlstate(Exception):
    """A database error as the backend sees one: only its SQLSTATE matters (e.g. 40001, 23505)."""

    def __init__(self, sqlstate: str, message: str = "") -> None:
        super().__init__(message or sqlstate)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class RoundTrip:
    kind: str  # execute (the only kind a regional backend sends)
    action: str
    sql: tuple[str, ...] = ()


@dataclass
class Answer:
    """Rows for every statement whose SQL contains `contains` (first match wins); `raises` once instead."""

    contains: str
    rows: Rows = field(default_factory=list)
    raises: Exception | None = None
    times: int | None = None  # answer this many times, then no more (None: always)


class FakeServer:
    def __init__(self, region: str, *, wan: bool = False) -> None:
        self.region = region
        self.wan = wan
        self.script: list[Answer] = []
        self.fail_next: dict[str, Exception] = {}  # method kind -> raised on its next call, instead of running
        self.trips: list[RoundTrip] = []
        self.copied: dict[str, list[dict]] = {}
        self.closed = False
        self._lock = threading.Lock()

    # --- scripting and reading -----------------------------------------------------------------------

    def answer(self, contains: str, rows: Rows | None = None, *, raises: Exception | None = None, times=None) -> None:
        self.script.append(Answer(contains, list(rows or []), raises, times))

    def kinds(self) -> Counter[str]:
        return Counter(trip.kind for trip in self.trips)

    @property
    def round_trips(self) -> int:
        return len(self.trips)

    def statements(self) -> list[str]:
        return [sql for trip in self.trips for sql in trip.sql]

    # --- RegionServer --------------------------------------------------------------------------------

    def execute(self, action: str, statements: Sequence[Statement], isolation: Any = None) -> list[Rows]:
        return self._trip("execute", action, statements)

    def copy_rows(self, table: str, rows: Sequence[dict], progress: Callable[[int], None] | None = None) -> None:
        self.copied.setdefault(table, []).extend(rows)

    def truncate(self, tables: Sequence[str]) -> None:
        self._trip("execute", "truncate", [Statement(f"TRUNCATE {', '.join(tables)}")])

    def wait_ready(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    # --- one round trip ------------------------------------------------------------------------------

    def _trip(self, kind: str, action: str, statements: Sequence[Statement]) -> list[Rows]:
        with self._lock:
            self.trips.append(RoundTrip(kind, action, tuple(s.sql for s in statements)))
            failure = self.fail_next.pop(kind, None)
        stats.record(action, len(statements), 0.0, 1 if self.wan else 0, (self.region,))
        if failure is not None:
            raise failure
        return [self._rows(statement) for statement in statements]

    def _rows(self, statement: Statement) -> Rows:
        with self._lock:
            for answer in self.script:
                if answer.contains in statement.sql and answer.times != 0:
                    if answer.times is not None:
                        answer.times -= 1
                    if answer.raises is not None:
                        raise answer.raises
                    return [dict(row) for row in answer.rows]
        return []


def fake_backend(
    preset: Preset, region: str, *, directory_regions: Sequence[str] | None = None
) -> tuple[RegionalPostgresBackend, dict[str, FakeServer], list[FakeServer]]:
    """A regional backend in `region` on a fake server per region (WAN unless local), run serially; also the
    global writers it opened (none until its first GLOBAL write)."""
    servers = {name: FakeServer(name, wan=name != region) for name in preset.region_names}
    writers: list[FakeServer] = []

    def global_writer() -> FakeServer:
        writers.append(FakeServer(preset.primary_region, wan=preset.primary_region != region))
        return writers[-1]

    backend = RegionalPostgresBackend(
        servers,
        preset,
        region,
        global_writer=global_writer,
        directory_regions=directory_regions,
        executor=SerialExecutor(),
    )
    return backend, servers, writers
