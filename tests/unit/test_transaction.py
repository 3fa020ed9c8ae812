from __future__ import annotations

import pytest

from movr.domain.errors import RetriesExhausted
from movr.store.transaction import run_transaction


class FakeDbError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_retries_serialization_failures_then_succeeds():
    calls, sleeps = [], []

    def attempt():
        calls.append(1)
        if len(calls) < 3:
            raise FakeDbError("40001")
        return "done"

    assert run_transaction(attempt, sleep=sleeps.append) == "done"
    assert len(calls) == 3 and len(sleeps) == 2
    assert all(0 <= s <= 0.5 for s in sleeps)


def test_backoff_is_capped_and_gives_up_with_clear_error():
    sleeps: list[float] = []

    def attempt():
        raise FakeDbError("40P01")

    with pytest.raises(RetriesExhausted, match="40P01"):
        run_transaction(attempt, max_attempts=12, base_delay=0.1, max_delay=0.3, sleep=sleeps.append)
    assert len(sleeps) == 11 and max(sleeps) <= 0.3


def test_other_errors_are_not_retried():
    calls = []

    def attempt():
        calls.append(1)
        raise FakeDbError("23505")

    with pytest.raises(FakeDbError):
        run_transaction(attempt, sleep=lambda _: None)
    assert len(calls) == 1
