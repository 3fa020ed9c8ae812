"""`movr bench actions` (one embedded PostgreSQL, every action's statements and latency) and `movr demo`
(Rome's journey in single, hybrid and multi labs side by side with the tutorial's ratio, New York and Los
Angeles on multi, then the multi lab served with its console), run as a user runs them.

Timings are never judged here: the statement counts are (law 2), and that everything started is stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from movr.bench.client import STEPS
from movr.cli import main
from movr.lab.supervisor import lab_down, processes_left

MOVR = str(Path(sys.executable).with_name("movr"))

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
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://x/y", "unsupported database URL scheme"),
        ("postgresql://movr@127.0.0.1:1/movr", "cannot create MovR's tables"),
    ],
)
def test_bench_actions_on_a_database_it_cannot_use_exits_2_with_one_line(tmp_path: Path, url: str, reason: str) -> None:
    result = CliRunner().invoke(main, ["bench", "actions", "--database-url", url, "--run-dir", str(tmp_path)])
    assert result.exit_code == 2 and reason in result.output and "Traceback" not in result.output


def test_demo_without_serving_tells_romes_story_in_three_labs_and_stops_everything(tmp_path: Path) -> None:
    args = ["demo", "--no-serve", "--scale", "0.05", "--run-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "single lab up: 1 PostgreSQL 18 primary (us-east1), 1 link, 1 app server (us-east1)" in output
    assert "hybrid lab up: 1 PostgreSQL 18 primary (us-east1), 3 links, 3 app servers" in output
    assert "multi lab up: 3 PostgreSQL 18 primaries" in output

    # From Rome, the three topologies side by side: a (ms (floor), SQL ms, stmts/WAN) triple each, per step.
    rome = journey_table(result.output, "rome")
    assert rome.topologies == ["single", "hybrid", "multi"]
    assert list(rome.steps) == list(STEPS)
    for step, cells in rome.steps.items():
        single, hybrid, multi = (cells[i : i + 3] for i in (0, 3, 6))
        for triple in (single, hybrid, multi):
            assert re.fullmatch(r"[\d.]+ \([\d.]+\)", triple[0]) and re.fullmatch(r"[\d.]+", triple[1]), triple
        # Locality, counted by the links (law 2): single's app sits beside its database; hybrid's app, in
        # Rome's region, crosses the WAN for every statement; multi crosses it only to sign up.
        assert wan(single) == 0, step
        assert wan(hybrid) >= statements(hybrid) > 0, step
        assert wan(multi) == 0 or step == "sign up", step

    # The ratio line: what it divides, and the article's claim beside it.
    assert "from rome, the mean over the steps after sign up of each step's median of 3:" in output
    client = re.search(r"client latency single ([\d.]+) ms ÷ multi ([\d.]+) ms = ([\d.]+)x", output)
    sql = re.search(r"SQL latency hybrid ([\d.]+) ms ÷ multi ([\d.]+) ms = ([\d.]+)x", output)
    assert client and sql, output
    for found in (client, sql):
        over, under, quotient = (float(v) for v in found.groups())
        # The operands are printed to 0.01 and the quotient to 0.1, from the unrounded values: the quotient
        # of the printed operands may differ by what their rounding allows, which grows as the divisor (multi's
        # SQL) gets small.
        rounding = (over / under) * (0.005 / over + 0.005 / under) + 0.05
        assert quotient == pytest.approx(over / under, abs=rounding + 1e-9)
    assert "(the article, single region → multi-region, SQL from Rome: ~150 ms → < 2.5 ms, over 60x)" in output

    # Then New York and Los Angeles, on multi only.
    for city in ("new york", "los angeles"):
        assert f"journey from {city} — preset gcp-3, delays x0.05, median of 3" in output
        other = journey_table(result.output, city)
        assert other.topologies == ["multi"] and list(other.steps) == list(STEPS)
    assert output.index("SQL latency hybrid") < output.index("journey from new york")
    assert "MovR is at" not in output  # --no-serve: no URL to open, nothing served

    assert "stopped; nothing left running." in output
    for topology in ("single", "hybrid", "multi"):
        assert processes_left(tmp_path / "demo" / topology) == []


@pytest.mark.lab
def test_demo_serves_the_multi_lab_and_its_console_until_interrupted(tmp_path: Path) -> None:
    log_path = tmp_path / "demo.log"
    argv = [MOVR, "demo", "--scale", "0.05", "--run-dir", str(tmp_path)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            argv, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 300
        while "press Ctrl-C to stop" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.5)  # polling for the demo to reach its serving step, not a stand-in for distance
        printed = " ".join(log_path.read_text().split())
        app = re.search(r"MovR is at (http://127\.0\.0\.1:\d+) ", printed)
        lab_console = re.search(r"The lab console is at (\S+) ", printed)
        assert app and lab_console, printed
        assert lab_console.group(1).startswith(app.group(1) + "/lab/?token=")
        assert requests.get(app.group(1) + "/", timeout=30).status_code == 200
        page = requests.get(lab_console.group(1), timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        assert all(region in page.text for region in ("us-east1", "us-west1", "europe-west1"))
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log_path.read_text()
        assert "stopped; nothing left running." in log_path.read_text()
    finally:
        if process.poll() is None:  # a failed assertion: Ctrl-C, as a user stops it, then anything left
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for topology in ("single", "hybrid", "multi"):
            lab_down(tmp_path / "demo" / topology)
    for topology in ("single", "hybrid", "multi"):
        assert processes_left(tmp_path / "demo" / topology) == []


def test_demo_refuses_a_preset_without_its_cities_before_standing_anything_up(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--no-serve", "--preset", "ycsb-3", "--run-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "movr: preset ycsb-3 has no city rome, los angeles; the demo's journeys start in rome, new york, los angeles"
    ]
    assert not (tmp_path / "demo").exists()


@dataclass
class JourneyTable:
    topologies: list[str]
    steps: dict[str, list[str]]  # per step, its cells after the step's name


def journey_table(output: str, city: str) -> JourneyTable:
    """The step table `movr demo` printed for `city` (rich's box characters; one line per step)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if f"journey from {city} " in line)
    rows = [cells(line) for line in lines[start:] if line.startswith(("┃", "│"))]
    header = rows[0]  # the first header line: a topology's name over each of its columns
    topologies = list(dict.fromkeys(header[1:]))
    steps = {}
    for row in rows:
        if row[0] in STEPS and row[0] not in steps:
            steps[row[0]] = row[1:]
        if len(steps) == len(STEPS):
            break
    return JourneyTable(topologies, steps)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"[┃│]", line)[1:-1]]


def statements(triple: list[str]) -> int:
    return int(triple[2].split("/")[0])


def wan(triple: list[str]) -> int:
    return int(triple[2].split("/")[1])
