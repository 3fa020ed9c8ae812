"""`movr bench actions` (one embedded PostgreSQL, every action's statements and latency) and `movr demo
--no-serve` (a three-region lab, the journey from three cities beside its floor), run as a user runs them.

Timings are never judged here: the statement counts are (law 2), and that everything started is stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from movr.bench.client import STEPS
from movr.cli import main
from movr.lab.supervisor import processes_left

ACTIONS = {
    "register",
    "get_user",
    "add_vehicle",
    "list_vehicles",
    "list_users",
    "start_ride",
    "list_promo_codes",
    "apply_promo_code",
    "end_ride",
    "list_rides",
    "remove_vehicle",
    "remove_user",
    "authenticate",
}


@pytest.mark.integration
def test_bench_actions_counts_one_statement_per_action_and_stops_its_server(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "actions", "--iterations", "2", "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "MovR actions on one local server (2 runs each)" in result.output
    assert "server stopped; nothing left running." in result.output
    data = json.loads((tmp_path / "actions.json").read_text())
    assert data["benchmark"] == "actions" and data["iterations"] == 2 and data["server"] == "embedded"
    assert {row["action"] for row in data["actions"]} == ACTIONS
    assert all(row["statements"] == 1 for row in data["actions"])
    assert all(len(row["samples_ms"]) == 2 for row in data["actions"] if row["action"] != "authenticate")
    assert [check["holds"] for check in data["checks"]] == [True]
    assert processes_left(tmp_path / "actions") == []


@pytest.mark.lab
def test_demo_without_serving_prints_the_journey_and_stops_everything(tmp_path: Path) -> None:
    args = ["demo", "--no-serve", "--scale", "0.05", "--run-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "lab up: 3 PostgreSQL 18 primaries" in output
    for city in ("rome", "new york", "los angeles"):
        assert f"journey from {city} — preset gcp-3, delays x0.05, median of 3" in output
    assert all(step in output for step in STEPS)
    assert "stopped; nothing left running." in output
    assert processes_left(tmp_path / "demo") == []
