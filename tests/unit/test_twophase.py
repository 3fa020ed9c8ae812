"""Two-phase commit ids name where their decision is recorded; a resolver's abort is told apart."""

from __future__ import annotations

import psycopg
import pytest

from movr.store import twophase
from movr.store.transaction import run_transaction


@pytest.mark.parametrize("region", ["europe-west1", "eu-central-1", "us-east1"])
def test_a_gid_names_its_decision_region_and_is_unique(region: str) -> None:
    gid = twophase.new_gid(region)
    assert twophase.decision_region_of(gid) == region
    assert gid != twophase.new_gid(region) and len(gid.encode()) <= 200  # PostgreSQL's limit


@pytest.mark.parametrize("gid", ["movr-rehome-1234", "other:europe-west1:1", "movr:", "movr:nocolon"])
def test_a_gid_that_is_not_a_movr_decision_names_no_region(gid: str) -> None:
    assert twophase.decision_region_of(gid) is None


def test_an_abort_decided_by_a_resolver_makes_the_action_run_again() -> None:
    attempts = []

    def attempt() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise twophase.InDoubtAborted("a resolver aborted it")
        return "done"

    assert run_transaction(attempt, sleep=lambda _: None) == "done" and len(attempts) == 2


def test_only_a_unique_violation_on_the_decisions_table_is_a_decision_conflict() -> None:
    assert not twophase.is_decision_conflict(psycopg.errors.UniqueViolation("users_username_key"))
    assert not twophase.is_decision_conflict(ValueError("no"))
