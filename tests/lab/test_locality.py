"""Locality by counts (law 2): what the links and the balancer counted for a journey in each topology."""

from __future__ import annotations

import json
import urllib.request

import pytest
from labkit import LAB_SCALE, assert_links_shown_whole, lab_status

from movr.bench.journey import STEPS, run_journey, summarize
from movr.geo import load_preset
from movr.lab import control
from movr.lab.apps import restart_app_server
from movr.lab.links import fetch_counters
from movr.lab.processes import is_alive, stop_process_tree
from movr.lab.state import LabState
from movr.lab.supervisor import processes_left

pytestmark = pytest.mark.lab

PRESET = load_preset("gcp-3")


def balancer_status(state) -> dict:
    return control.call(f"{state.balancer_url}/_balancer/status", state.control_token)


@pytest.fixture(scope="module")
def multi(lab_factory):
    return lab_factory("multi")


def test_rome_journey_in_multi_crosses_no_wan_round_trip_but_the_sign_ups_claims(multi):
    run = run_journey(multi, PRESET, "rome", multi.scale)
    assert [s.step for s in run.steps] == list(STEPS)
    assert {s.served_by for s in run.steps} == {"europe-west1"}
    # Sign-up claims the name in the two other regions (one parallel round); nothing else leaves Rome.
    assert [s.link_wan_round_trips for s in run.steps] == [2] + [0] * (len(STEPS) - 1)
    assert [s.app_wan_round_trips for s in run.steps] == [2] + [0] * (len(STEPS) - 1)
    assert all(set(s.data_regions) <= {"europe-west1"} for s in run.steps[1:])


def test_a_journey_from_a_city_with_a_space_in_its_name(multi):
    run = run_journey(multi, PRESET, "new york", multi.scale)
    assert all(s.status < 300 for s in run.steps)
    assert {s.served_by for s in run.steps} == {"us-east1"}
    assert [s.link_wan_round_trips for s in run.steps[1:]] == [0] * (len(STEPS) - 1)


def test_signup_costs_one_parallel_round_to_the_other_regions_whatever_the_name(multi):
    run = run_journey(multi, PRESET, "rome", multi.scale, username="romefar1")
    sign_up = run.steps[0]
    # One round trip on each other region's link, in one round: the floor counts it once, at the farthest.
    assert sign_up.step == "sign up" and sign_up.link_wan_round_trips == 2 and sign_up.unavoidable_wan == 1
    assert sign_up.wan_by_link == {"app:europe-west1->us-east1-a": 1, "app:europe-west1->us-west1-a": 1}
    assert [s.link_wan_round_trips for s in run.steps[1:]] == [0] * (len(STEPS) - 1)
    row = next(r for r in summarize([run]) if r["step"] == "sign up")
    assert row["wan_rounds"] == 1 and row["wan_round_trips"] == 2


def test_lab_status_at_80_columns_shows_the_links_as_a_matrix_naming_each_end_whole(multi):
    text, status = lab_status(multi.run_dir, columns=80)
    assert len(status["links"]) == 11  # 3 x 3 app links, 2 GLOBAL-table replication links
    assert_links_shown_whole(text, status)
    assert "DOWN" not in text


def test_global_promo_codes_are_read_locally_in_every_region(multi):
    before = fetch_counters(multi.links_control_port, token=multi.control_token)
    for city in ("rome", "seattle", "boston"):
        with urllib.request.urlopen(
            urllib.request.Request(f"{multi.balancer_url}/api/v1/promo-codes", headers={"X-Client-City": city}),
            timeout=10,
        ) as response:
            codes = json.loads(response.read())
            assert response.headers["X-Movr-Wan-Round-Trips"] == "0"
        assert "WELCOME10" in json.dumps(codes)
    after = fetch_counters(multi.links_control_port, token=multi.control_token)
    wan = [n for n in after if n.startswith("app:") and after[n]["round_trips"] != before.get(n, {}).get("round_trips")]
    assert all(n.split("->")[1].startswith(n.split(":")[1].split("->")[0]) for n in wan)


def test_an_app_server_started_again_runs_exactly_as_lab_up_started_it(multi):
    before = {record.name: record for record in LabState.read(multi.run_dir).processes}["app-us-west1"]
    assert stop_process_tree(before, 10.0)
    pid = restart_app_server(multi.run_dir, "us-west1")
    after = {record.name: record for record in LabState.read(multi.run_dir).processes}["app-us-west1"]
    assert after.pid == pid != before.pid and is_alive(after)
    assert after.cmdline == before.cmdline  # same workers and threads (a plain lab's app is not single-threaded)
    assert after.cmdline[after.cmdline.index("--threads") + 1] == "4"
    with urllib.request.urlopen(f"http://127.0.0.1:{after.port}/healthz", timeout=10) as response:
        assert json.loads(response.read())["region"] == "us-west1"


def test_hybrid_pays_one_wan_round_trip_per_statement(lab_factory):
    hybrid = lab_factory("hybrid")
    run = run_journey(hybrid, PRESET, "rome", hybrid.scale)
    assert {s.served_by for s in run.steps} == {"europe-west1"}
    for step in run.steps:
        assert step.link_wan_round_trips == step.statements, step


def test_single_pays_one_client_round_trip_per_request(lab_factory):
    single = lab_factory("single")
    before = balancer_status(single)["regions"]["us-east1"]["client_round_trips"]
    run = run_journey(single, PRESET, "rome", single.scale)
    after = balancer_status(single)["regions"]["us-east1"]["client_round_trips"]
    assert {s.served_by for s in run.steps} == {"us-east1"}
    assert after - before == len(STEPS)
    assert all(s.link_wan_round_trips == 0 for s in run.steps)


def test_bench_journey_reports_every_figure_and_where_the_excess_goes(tmp_path):
    from click.testing import CliRunner

    from movr.cli import main

    out = tmp_path / "journey.json"
    args = ["bench", "journey", "--from", "rome", "--topologies", "hybrid,multi", "--repeats", "1"]
    args += ["--scale", str(LAB_SCALE), "--json", str(out), "--run-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "time above the floor" in result.output and "after 20 ms idle" in result.output
    assert processes_left(tmp_path / "run") == [], "the benchmark left processes running"
    figures = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    rows = {(r["topology"], r["step"]): r for r in figures["rows"]}
    assert len(rows) == 2 * len(STEPS)
    for row in rows.values():
        assert sum(row["excess_parts_ms"].values()) == pytest.approx(row["excess_ms"], abs=0.01)
        assert row["x_floor"] == pytest.approx(row["client_ms"] / row["floor_ms"])
        # On the wire, within the time around the client's call (which adds the client's own work).
        assert 0 < row["client_ms"] <= row["client_process_ms"]
    assert (
        rows[("hybrid", "view rides")]["wan_round_trips"] == 1 and rows[("multi", "view rides")]["wan_round_trips"] == 0
    )
    idle = figures["machine"]["idle_cost"]
    assert idle["select_busy_ms"] > 0 and idle["select_after_idle_ms"] > 0 and idle["insert_after_idle_ms"] > 0
    # The ratio is a timing, so it is checked for consistency with the rows, never for its size (law 2).
    rome = figures["ratios"]["rome"]
    assert rome["hybrid/multi"] == pytest.approx(rome["hybrid_avg_sql_ms"] / rome["multi_avg_sql_ms"])
