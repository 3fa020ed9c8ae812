"""`movr bench throughput --quick` and `movr bench report`.

The throughput smoke run checks the shape of the results (every topology and rate has its rates, errors,
percentiles with floors, raw histograms and CPU per lab process) and that nothing is left running; it
never judges timings, which is what the full run in docs/benchmarks.md is for. The report test renders a
page from real results — the quick throughput run, a links run and a one-city journey made here, and
trimmed copies of real quick runs of ycsb, insert, rehome and failover (below) whose plots the report must
draw again from their JSON — opens it in Debian's chromium and checks that every plot loaded.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from movr.bench.client import STEPS, Journey
from movr.bench.histograms import decode_histogram
from movr.bench.report import CLAIMS
from movr.bench.throughput.schedule import Schedule, judge
from movr.cli import main
from movr.lab.supervisor import processes_left

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "run" / "artifacts" / "report"
TOPOLOGIES = ["single", "hybrid", "multi"]
QUICK_RATES = [10.0, 20.0]

# How the project launches Debian's chromium (never `playwright install`): the browser tests' conftest,
# loaded under its own name so that its session fixture `chromium` (installs chromium with apt when missing,
# else skips saying why) and its launch arguments are this module's too.
_spec = importlib.util.spec_from_file_location("movr_browser_conftest", REPO / "tests" / "browser" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_browser)
chromium = _browser.chromium
CHROMIUM_ARGS: list[str] = _browser.CHROMIUM_ARGS


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as `movr bench report` finds it: one folder per experiment."""
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def quick_throughput(bench_dir: Path) -> dict[str, Any]:
    """`movr bench throughput --quick --run-dir DIR`: the result where the runner puts it, DIR/throughput.json."""
    result = CliRunner().invoke(
        main, ["bench", "throughput", "--quick", "--run-dir", str(bench_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert processes_left(bench_dir / "throughput") == [], "a server, link, app or balancer outlived the command"
    return json.loads((bench_dir / "throughput.json").read_text())


# --------------------------------------------------------------------------------------------------------
# movr bench throughput


@pytest.mark.lab
def test_throughput_quick_results_are_complete_and_well_formed(quick_throughput: dict, bench_dir: Path) -> None:
    data = quick_throughput
    assert data["benchmark"] == "throughput"
    assert data["checks"] == [
        {"name": "every topology asked for was measured", "holds": True, "detail": ", ".join(TOPOLOGIES)}
    ]
    assert data["preset"] == "gcp-3" and data["scale"] == 0.05 and data["settings"]["quick"] is True
    assert data["versions"]["postgresql"].startswith("18") and data["versions"]["movr"]
    assert data["machine"]["cpus"] >= 1 and len(data["loadavg_at_start"]) == 3
    assert [entry["topology"] for entry in data["topologies"]] == TOPOLOGIES
    for entry in data["topologies"]:
        topology = entry["topology"]
        assert entry["target_ms"] == pytest.approx(4 * entry["slowest_floor"]["floor_ms"])
        assert "slowest step's floor" in entry["target_basis"]
        assert entry["slowest_floor"]["step"] in STEPS
        assert {row["step"] for row in entry["calibration"]["steps"]} == set(STEPS)
        assert (bench_dir / f"throughput-{topology}.png").stat().st_size > 0, "each topology's chart beside the JSON"
        rates = [cell["rate"] for cell in entry["rates"]]
        assert rates and rates == QUICK_RATES[: len(rates)], "rates run in order, stopping at the first failure"
        sustained = [cell["rate"] for cell in entry["rates"] if cell["sustained"]]
        assert entry["max_sustained_rate"] == (sustained[-1] if sustained else None)
        assert all(cell["sustained"] for cell in entry["rates"][:-1]), "only the last rate may have failed"
        lab_pids = {p["pid"] for p in entry["lab_processes"]}
        for cell in entry["rates"]:
            assert cell["sustained"] == (cell["failed_because"] == [])
            assert cell["ok"] + cell["errors"] == cell["intended"]
            # Open loop: every slot of the window was sent or counted as an error, however the lab kept up.
            assert abs(cell["intended"] - cell["rate"] * cell["duration_s"]) <= 1
            assert 0 <= cell["error_rate"] <= 1 and cell["achieved_rate"] > 0
            assert cell["users"] >= 1 and cell["warmup_s"] >= 8 * cell["users"] / cell["rate"] - 1e-9
            latency = cell["latency"]
            assert latency["count"] == cell["ok"] > 0
            assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
            assert latency["floor"]["p50_ms"] > 0 and latency["ratio_p50"] > 0
            assert decode_histogram(latency["histogram"]).get_total_count() == latency["count"]
            assert decode_histogram(latency["floor_histogram"]).get_total_count() == latency["count"]
            assert cell["requests_without_floor"] == 0, "every response said which region served it"
            assert set(cell["steps"]) == set(STEPS)
            assert sum(step["count"] for step in cell["steps"].values()) == latency["count"]
            cpu = cell["cpu"]
            kinds = {p["kind"] for p in cpu["processes"]}
            assert kinds == {"links", "app", "balancer", "postgres", "bench-client"}, topology
            assert lab_pids <= {p["pid"] for p in cpu["processes"]}
            assert all(p["cpu_percent"] >= 0 for p in cpu["processes"])
            # gunicorn: the app server's master and its two workers were all sampled
            assert all(p["pids_seen"] >= 3 for p in cpu["processes"] if p["kind"] == "app")
            postgres = [p for p in cpu["processes"] if p["kind"] == "postgres"]
            assert len(postgres) == (3 if topology == "multi" else 1)
            assert cpu["window_s"] > 0 and cpu["machine_percent"] >= 0


@pytest.mark.parametrize(
    "args",
    [
        ["--rates", "20,10"],
        ["--rates", "10,fast"],
        ["--rates", "0,10"],
        ["--topologies", "single,mesh"],
        ["--topologies", "multi,multi"],
        ["--duration", "0"],
        ["--warmup", "-1"],
        ["--p99-target-ms", "0"],
        ["--scale", "0"],
        ["--preset", "no-such-preset"],
    ],
)
def test_throughput_bad_options_exit_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "throughput", "--run-dir", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists(), "a bad option must be refused before anything starts"


def test_schedule_is_a_fixed_grid_and_spreads_the_users_over_the_steps() -> None:
    schedule = Schedule(rate=40, users=16, start=100.0, warmup=2.0, duration=5.0, timeout=2.0)
    assert [schedule.at(i) for i in range(3)] == [100.0, 100.025, 100.05]
    assert schedule.measure_from == 102.0 and schedule.end == 107.0
    first = [schedule.first_round(user) for user in range(schedule.users)]
    assert sorted(first) == [r for r in range(len(STEPS)) for _ in range(2)]


def test_every_journey_step_has_a_request() -> None:
    journey = Journey("new york", "tpabc", first_name="Throughput")
    journey.vehicle_id = "v1"
    journey.ride = {"city": "new york", "id": "r1"}
    requests = {step: journey.request(step) for step in STEPS}
    assert requests["view vehicles"].path == "/cities/new%20york/vehicles"
    assert (requests["end ride"].method, requests["end ride"].path) == ("PATCH", "/rides/new%20york/r1")


def test_judge_names_every_failed_criterion() -> None:
    cell = {"rate": 100.0, "intended": 1000, "error_rate": 0.02, "achieved_rate": 80.0, "latency": {"p99_ms": 90.0}}
    reasons = judge(cell, target_ms=50.0)
    assert len(reasons) == 3 and "error rate" in reasons[0] and "p99" in reasons[1] and "achieved" in reasons[2]
    assert judge({**cell, "error_rate": 0.0, "achieved_rate": 99.0, "latency": {"p99_ms": 40.0}}, 50.0) == []


# --------------------------------------------------------------------------------------------------------
# movr bench report

# Trimmed from real quick runs on this project's lab (ycsb, insert, rehome at scale 0.05 on ycsb-3; a
# failover drill at scale 0.05 on aws-eu-us): figures rounded to 3 digits, raw histograms and most samples
# dropped. Their PNGs are not here on purpose: the report must draw them from the JSON.
FIXTURES_JSON = (
    '{"ycsb":{"benchmark":"ycsb","preset":"ycsb-3","preset_source":"ycsb-3","scale":0.05,"versions":{"movr":"'
    '0.1.0","python":"3.11.7","postgresql":"18.6","psycopg":"3.3.9"},"machine":{"platform":"Linux-6.18.44-fc-'
    'v782-x86_64-with-glibc2.36","processor":"x86_64","cpus":2,"memory_gb":23.5},"started_at":"2026-11-23T12:'
    '38:40+0000","network":{"intra_region_rtt_ms":0.5,"scale":0.05},"checks":[{"claim":"100% locality: defaul'
    't median read exceeds the local floor (0.025 ms) by <= 2 ms, with no WAN round trip","holds":true,"measu'
    'red":"..."},{"claim":"100% locality: computed median read exceeds the local floor (0.025 ms) by <= 2 ms,'
    ' with no WAN round trip","holds":true,"measured":"..."},{"claim":"50% locality: default pays the local a'
    "ttempt before its remote search, computed goes straight to the home (remote reads: default p50 - compute"
    'd p50 > 0 for every client->home pair)","holds":true,"measured":"..."}],"settings":{"duration_s":1.0,"wa'
    'rmup_s":0.3,"workload":"B","quick":true,"localities":[50],"variants":["computed","default"]},"results":['
    '{"variant":"computed","locality":50,"region":"us-east1","ops":279,"throughput_ops_s":279.0,"errors":0,"r'
    'ound_trips":{"wan_per_op":0.439},"read":{"count":260,"p50_ms":0.826,"p95_ms":8.57,"p99_ms":8.71,"max_ms"'
    ':9.09,"floor":{"p50_ms":0.025,"p95_ms":7.9,"p99_ms":7.9}},"update":{"count":19,"p50_ms":1.6,"p95_ms":9.3'
    '4,"p99_ms":9.43,"max_ms":9.43,"floor":{"p50_ms":0.025,"p95_ms":7.9,"p99_ms":7.9}}},{"variant":"computed"'
    ',"locality":50,"region":"europe-west2","ops":205,"throughput_ops_s":205.0,"errors":0,"round_trips":{"wan'
    '_per_op":0.504},"read":{"count":195,"p50_ms":5.14,"p95_ms":11.8,"p99_ms":11.9,"max_ms":12.0,"floor":{"p5'
    '0_ms":4.75,"p95_ms":11.1,"p99_ms":11.1}},"update":{"count":10,"p50_ms":1.92,"p95_ms":12.5,"p99_ms":12.5,'
    '"max_ms":12.5,"floor":{"p50_ms":0.025,"p95_ms":11.1,"p99_ms":11.1}}},{"variant":"computed","locality":50'
    ',"region":"asia-northeast1","ops":179,"throughput_ops_s":179.0,"errors":0,"round_trips":{"wan_per_op":0.'
    '507},"read":{"count":173,"p50_ms":8.34,"p95_ms":12.0,"p99_ms":12.1,"max_ms":13.2,"floor":{"p50_ms":7.9,"'
    'p95_ms":11.1,"p99_ms":11.1}},"update":{"count":6,"p50_ms":1.54,"p95_ms":12.2,"p99_ms":12.2,"max_ms":12.2'
    ',"floor":{"p50_ms":0.025,"p95_ms":11.1,"p99_ms":11.1}}},{"variant":"default","locality":50,"region":"us-'
    'east1","ops":224,"throughput_ops_s":224.0,"errors":0,"round_trips":{"wan_per_op":1.02},"read":{"count":2'
    '07,"p50_ms":1.32,"p95_ms":10.0,"p99_ms":10.7,"max_ms":10.9,"floor":{"p50_ms":0.025,"p95_ms":7.93,"p99_ms'
    '":7.93}},"update":{"count":17,"p50_ms":6.58,"p95_ms":10.1,"p99_ms":11.2,"max_ms":11.2,"floor":{"p50_ms":'
    '4.78,"p95_ms":7.93,"p99_ms":7.93}}},{"variant":"default","locality":50,"region":"europe-west2","ops":170'
    ',"throughput_ops_s":170.0,"errors":0,"round_trips":{"wan_per_op":0.995},"read":{"count":165,"p50_ms":6.1'
    '2,"p95_ms":13.4,"p99_ms":14.0,"max_ms":14.2,"floor":{"p50_ms":4.78,"p95_ms":11.1,"p99_ms":11.1}},"update'
    '":{"count":5,"p50_ms":1.86,"p95_ms":13.6,"p99_ms":13.6,"max_ms":13.6,"floor":{"p50_ms":0.025,"p95_ms":11'
    '.1,"p99_ms":11.1}}},{"variant":"default","locality":50,"region":"asia-northeast1","ops":169,"throughput_'
    'ops_s":169.0,"errors":0,"round_trips":{"wan_per_op":0.959},"read":{"count":165,"p50_ms":1.12,"p95_ms":13'
    '.2,"p99_ms":13.4,"max_ms":14.5,"floor":{"p50_ms":0.025,"p95_ms":11.1,"p99_ms":11.1}},"update":{"count":4'
    ',"p50_ms":10.7,"p95_ms":13.8,"p99_ms":13.8,"max_ms":13.8,"floor":{"p50_ms":7.93,"p95_ms":11.1,"p99_ms":1'
    '1.1}}}]},"insert":{"benchmark":"insert","preset":"ycsb-3","preset_source":"ycsb-3","scale":0.05,"version'
    's":{"movr":"0.1.0","python":"3.11.7","postgresql":"18.6","psycopg":"3.3.9"},"machine":{"platform":"Linux'
    '-6.18.44-fc-v782-x86_64-with-glibc2.36","processor":"x86_64","cpus":2,"memory_gb":23.5},"started_at":"20'
    '26-11-23T12:39:02+0000","settings":{"duration_s":1.5,"warmup_s":0.3,"quick":true},"results":[{"variant":'
    '"default","region":"us-east1","throughput_ops_s":47.3,"errors":0,"round_trips":{"wan_per_op":2.0},"inser'
    't":{"count":71,"p50_ms":20.5,"p95_ms":29.7,"p99_ms":34.1,"max_ms":34.3,"floor":{"p50_ms":7.93,"p95_ms":7'
    '.93,"p99_ms":7.93}}},{"variant":"default","region":"europe-west2","throughput_ops_s":38.7,"errors":0,"ro'
    'und_trips":{"wan_per_op":2.0},"insert":{"count":58,"p50_ms":23.6,"p95_ms":38.0,"p99_ms":41.8,"max_ms":43'
    '.7,"floor":{"p50_ms":11.1,"p95_ms":11.1,"p99_ms":11.1}}},{"variant":"default","region":"asia-northeast1"'
    ',"throughput_ops_s":38.7,"errors":0,"round_trips":{"wan_per_op":2.0},"insert":{"count":58,"p50_ms":25.2,'
    '"p95_ms":35.4,"p99_ms":36.0,"max_ms":40.1,"floor":{"p50_ms":11.1,"p95_ms":11.1,"p99_ms":11.1}}},{"varian'
    't":"computed","region":"us-east1","throughput_ops_s":149.0,"errors":0,"round_trips":{"wan_per_op":0.0},"'
    'insert":{"count":224,"p50_ms":4.57,"p95_ms":14.4,"p99_ms":18.5,"max_ms":21.5,"floor":{"p50_ms":0.025,"p9'
    '5_ms":0.025,"p99_ms":0.025}}},{"variant":"computed","region":"europe-west2","throughput_ops_s":148.0,"er'
    'rors":0,"round_trips":{"wan_per_op":0.0},"insert":{"count":222,"p50_ms":5.28,"p95_ms":16.2,"p99_ms":19.8'
    ',"max_ms":20.5,"floor":{"p50_ms":0.025,"p95_ms":0.025,"p99_ms":0.025}}},{"variant":"computed","region":"'
    'asia-northeast1","throughput_ops_s":149.0,"errors":0,"round_trips":{"wan_per_op":0.0},"insert":{"count":'
    '223,"p50_ms":5.55,"p95_ms":13.6,"p99_ms":18.1,"max_ms":18.6,"floor":{"p50_ms":0.025,"p95_ms":0.025,"p99_'
    'ms":0.025}}}],"verification":{"default":{"consistent":true},"computed":{"consistent":true}},"checks":[{"'
    'claim":"default pays one parallel round trip to the farthest region: one WAN round trip to each other re'
    'gion per insert, farthest RTT <= p50 < farthest + nearest RTT","holds":false,"measured":"..."},{"claim":'
    '"computed pays none: no WAN round trip per insert, p50 below the nearest region\'s RTT","holds":false,"me'
    'asured":"..."}]},"rehome":{"benchmark":"rehome","preset":"ycsb-3","preset_source":"ycsb-3","scale":0.05,'
    '"versions":{"movr":"0.1.0","python":"3.11.7","postgresql":"18.6","psycopg":"3.3.9"},"machine":{"platform'
    '":"Linux-6.18.44-fc-v782-x86_64-with-glibc2.36","processor":"x86_64","cpus":2,"memory_gb":23.5},"started'
    '_at":"2026-11-23T12:39:15+0000","hot_home":"asia-northeast1","settings":{"duration_s":1.0,"warmup_s":0.4'
    ',"tail_s":0.333,"quick":true},"results":[{"contending":1,"variant":"default","region":"us-east1","throug'
    'hput_ops_s":164.0,"moves":0,"read":{"count":156,"p50_ms":3.71,"p99_ms":15.8,"floor":{"p50_ms":0.025,"p95'
    '_ms":7.93,"p99_ms":7.93},"by_access":{"hot":{"count":77,"p50_ms":10.5,"p99_ms":16.0,"floor":{"p50_ms":7.'
    '93,"p95_ms":7.93,"p99_ms":7.93}},"private":{"count":79,"p50_ms":0.827,"p99_ms":3.71,"floor":{"p50_ms":0.'
    '025,"p95_ms":0.025,"p99_ms":0.025}}}},"update":{"count":8,"p50_ms":2.72,"p99_ms":12.3,"floor":{"p50_ms":'
    '0.025,"p95_ms":7.93,"p99_ms":7.93},"by_access":{"hot":{"count":3,"p50_ms":11.9,"p99_ms":12.3,"floor":{"p'
    '50_ms":7.93,"p95_ms":7.93,"p99_ms":7.93}}}}},{"contending":1,"variant":"rehoming","region":"us-east1","t'
    'hroughput_ops_s":162.0,"moves":2,"read":{"count":154,"p50_ms":2.94,"p99_ms":14.8,"floor":{"p50_ms":0.025'
    ',"p95_ms":7.93,"p99_ms":7.93},"by_access":{"hot":{"count":71,"p50_ms":10.9,"p99_ms":16.4,"floor":{"p50_m'
    's":7.93,"p95_ms":7.93,"p99_ms":7.93}},"private":{"count":83,"p50_ms":1.02,"p99_ms":6.36,"floor":{"p50_ms'
    '":0.025,"p95_ms":0.025,"p99_ms":0.025}}}},"update":{"count":8,"p50_ms":1.84,"p99_ms":33.5,"floor":{"p50_'
    'ms":0.025,"p95_ms":23.7,"p99_ms":23.7},"by_access":{"hot":{"count":2,"p50_ms":30.4,"p99_ms":33.5,"floor"'
    ':{"p50_ms":23.7,"p95_ms":23.7,"p99_ms":23.7}}}}},{"contending":2,"variant":"default","region":"us-east1"'
    ',"throughput_ops_s":144.0,"moves":0,"read":{"count":136,"p50_ms":3.44,"p99_ms":18.4,"floor":{"p50_ms":0.'
    '025,"p95_ms":7.93,"p99_ms":7.93},"by_access":{"hot":{"count":61,"p50_ms":12.2,"p99_ms":18.4,"floor":{"p5'
    '0_ms":7.93,"p95_ms":7.93,"p99_ms":7.93}},"private":{"count":75,"p50_ms":1.18,"p99_ms":5.81,"floor":{"p50'
    '_ms":0.025,"p95_ms":0.025,"p99_ms":0.025}}}},"update":{"count":8,"p50_ms":3.11,"p99_ms":21.7,"floor":{"p'
    '50_ms":0.025,"p95_ms":7.93,"p99_ms":7.93},"by_access":{"hot":{"count":3,"p50_ms":11.3,"p99_ms":21.7,"flo'
    'or":{"p50_ms":7.93,"p95_ms":7.93,"p99_ms":7.93}}}}},{"contending":2,"variant":"default","region":"europe'
    '-west2","throughput_ops_s":110.0,"moves":0,"read":{"count":98,"p50_ms":5.68,"p99_ms":22.9,"floor":{"p50_'
    'ms":0.025,"p95_ms":11.1,"p99_ms":11.1},"by_access":{"hot":{"count":47,"p50_ms":15.5,"p99_ms":22.9,"floor'
    '":{"p50_ms":11.1,"p95_ms":11.1,"p99_ms":11.1}},"private":{"count":51,"p50_ms":1.55,"p99_ms":5.85,"floor"'
    ':{"p50_ms":0.025,"p95_ms":0.025,"p99_ms":0.025}}}},"update":{"count":12,"p50_ms":5.15,"p99_ms":24.5,"flo'
    'or":{"p50_ms":0.025,"p95_ms":11.1,"p99_ms":11.1},"by_access":{"hot":{"count":5,"p50_ms":21.1,"p99_ms":24'
    '.5,"floor":{"p50_ms":11.1,"p95_ms":11.1,"p99_ms":11.1}}}}},{"contending":2,"variant":"rehoming","region"'
    ':"us-east1","throughput_ops_s":133.0,"moves":6,"read":{"count":123,"p50_ms":3.04,"p99_ms":21.8,"floor":{'
    '"p50_ms":0.025,"p95_ms":7.93,"p99_ms":7.93},"by_access":{"hot":{"count":59,"p50_ms":11.0,"p99_ms":21.8,"'
    'floor":{"p50_ms":7.93,"p95_ms":7.93,"p99_ms":7.93}},"private":{"count":64,"p50_ms":1.33,"p99_ms":6.21,"f'
    'loor":{"p50_ms":0.025,"p95_ms":0.025,"p99_ms":0.025}}}},"update":{"count":10,"p50_ms":30.3,"p99_ms":51.2'
    ',"floor":{"p50_ms":14.3,"p95_ms":23.7,"p99_ms":23.7},"by_access":{"hot":{"count":6,"p50_ms":33.5,"p99_ms'
    '":51.2,"floor":{"p50_ms":23.7,"p95_ms":23.7,"p99_ms":23.7}}}}},{"contending":2,"variant":"rehoming","reg'
    'ion":"europe-west2","throughput_ops_s":84.0,"moves":4,"read":{"count":79,"p50_ms":11.8,"p99_ms":21.3,"fl'
    'oor":{"p50_ms":4.78,"p95_ms":11.1,"p99_ms":11.1},"by_access":{"hot":{"count":46,"p50_ms":15.9,"p99_ms":2'
    '3.9,"floor":{"p50_ms":11.1,"p95_ms":11.1,"p99_ms":11.1}},"private":{"count":33,"p50_ms":1.84,"p99_ms":10'
    '.1,"floor":{"p50_ms":0.025,"p95_ms":0.025,"p99_ms":0.025}}}},"update":{"count":5,"p50_ms":34.4,"p99_ms":'
    '87.6,"floor":{"p50_ms":14.3,"p95_ms":33.3,"p99_ms":33.3},"by_access":{"hot":{"count":4,"p50_ms":34.4,"p9'
    '9_ms":87.6,"floor":{"p50_ms":14.3,"p95_ms":33.3,"p99_ms":33.3}}}}}],"summary":[{"contending":1,"variant"'
    ':"default","throughput_ops_s":164.0,"moves":0,"read":{"count":156,"p50_ms":3.71,"p99_ms":15.8,"floor":{"'
    'p50_ms":0.025,"p95_ms":7.93,"p99_ms":7.93}},"update":{"count":8,"p50_ms":2.72,"p99_ms":12.3,"floor":{"p5'
    '0_ms":0.025,"p95_ms":7.93,"p99_ms":7.93}},"hot_read_tail":{"count":23,"p50_ms":10.7,"p99_ms":16.0,"floor'
    '":{"p50_ms":7.93,"p95_ms":7.93,"p99_ms":7.93}}},{"contending":1,"variant":"rehoming","throughput_ops_s":'
    '162.0,"moves":2,"read":{"count":154,"p50_ms":2.94,"p99_ms":14.8,"floor":{"p50_ms":0.025,"p95_ms":7.93,"p'
    '99_ms":7.93}},"update":{"count":8,"p50_ms":1.84,"p99_ms":33.5,"floor":{"p50_ms":0.025,"p95_ms":23.7,"p99'
    '_ms":23.7}},"hot_read_tail":{"count":22,"p50_ms":11.3,"p99_ms":16.4,"floor":{"p50_ms":7.93,"p95_ms":7.93'
    ',"p99_ms":7.93}}},{"contending":2,"variant":"default","throughput_ops_s":254.0,"moves":0,"read":{"count"'
    ':234,"p50_ms":4.61,"p99_ms":21.9,"floor":{"p50_ms":0.025,"p95_ms":11.1,"p99_ms":11.1}},"update":{"count"'
    ':20,"p50_ms":5.1,"p99_ms":24.5,"floor":{"p50_ms":0.025,"p95_ms":11.1,"p99_ms":11.1}},"hot_read_tail":{"c'
    'ount":34,"p50_ms":14.3,"p99_ms":22.9,"floor":{"p50_ms":7.93,"p95_ms":11.1,"p99_ms":11.1}}},{"contending"'
    ':2,"variant":"rehoming","throughput_ops_s":217.0,"moves":10,"read":{"count":202,"p50_ms":4.32,"p99_ms":2'
    '1.8,"floor":{"p50_ms":0.025,"p95_ms":11.1,"p99_ms":11.1}},"update":{"count":15,"p50_ms":32.9,"p99_ms":87'
    '.6,"floor":{"p50_ms":14.3,"p95_ms":23.7,"p99_ms":33.3}},"hot_read_tail":{"count":35,"p50_ms":11.5,"p99_m'
    's":23.9,"floor":{"p50_ms":7.93,"p95_ms":11.1,"p99_ms":11.1}}}],"checks":[{"claim":"c = 1: rehoming conve'
    'rges to local latency (hot-range reads in the last 0.333333 s: p50 <= local floor 0.025 ms + 2 ms)","hol'
    'ds":false,"measured":"..."},{"claim":"rehoming loses its value as contention rises: its throughput relat'
    'ive to default (all contending clients together) falls as c grows","holds":true,"measured":"..."}]},"fai'
    'lover":{"benchmark":"failover","preset":"aws-eu-us","scale":0.05,"survival":"region","super_regions":tru'
    'e,"kill":"eu-central-1","kill_kind":"region","duration_s":12.0,"kill_at_s":4.0,"failovers":[],"versions"'
    ':{"movr":"0.1.0","python":"3.11.7"},"machine":{"platform":"Linux-6.18.44-fc-v782-x86_64-with-glibc2.36",'
    '"processor":"x86_64"},"passed":true,"cities":[{"city":"stockholm","home":"eu-central-1","longest_write_g'
    'ap_s":7.78,"writes_resumed_after_kill_s":null,"resumed":false,"before":{"errors":0,"median_ms":11.4,"med'
    'ian_floor_ms":1.0,"median_write_ms":13.6},"after":{"errors":3,"median_ms":null,"median_floor_ms":null,"m'
    'edian_write_ms":null}},{"city":"dublin","home":"eu-west-3","longest_write_gap_s":0.144,"writes_resumed_a'
    'fter_kill_s":8.05,"resumed":true,"before":{"errors":0,"median_ms":10.5,"median_floor_ms":0.698,"median_w'
    'rite_ms":13.4},"after":{"errors":0,"median_ms":10.5,"median_floor_ms":0.698,"median_write_ms":12.6}},{"c'
    'ity":"new york","home":"us-east-2","longest_write_gap_s":0.117,"writes_resumed_after_kill_s":0.155,"resu'
    'med":true,"before":{"errors":0,"median_ms":13.4,"median_floor_ms":2.87,"median_write_ms":17.0},"after":{'
    '"errors":0,"median_ms":13.4,"median_floor_ms":0.675,"median_write_ms":16.7}}],"samples":[{"home":"eu-cen'
    'tral-1","op":"start ride","ok":true,"t1":0.0306,"ms":30.4},{"home":"eu-central-1","op":"view vehicles","'
    'ok":true,"t1":1.1,"ms":11.8},{"home":"eu-central-1","op":"end ride","ok":true,"t1":2.04,"ms":10.3},{"hom'
    'e":"eu-central-1","op":"view vehicles","ok":true,"t1":2.9,"ms":5.84},{"home":"eu-central-1","op":"start '
    'ride","ok":true,"t1":3.97,"ms":20.8},{"home":"eu-west-3","op":"view vehicles","ok":true,"t1":0.711,"ms":'
    '114.0},{"home":"eu-west-3","op":"start ride","ok":true,"t1":1.61,"ms":7.65},{"home":"eu-west-3","op":"vi'
    'ew vehicles","ok":true,"t1":2.45,"ms":5.2},{"home":"eu-west-3","op":"end ride","ok":true,"t1":3.42,"ms":'
    '9.01},{"home":"eu-west-3","op":"view vehicles","ok":true,"t1":4.47,"ms":4.63},{"home":"eu-west-3","op":"'
    'start ride","ok":true,"t1":5.36,"ms":9.23},{"home":"eu-west-3","op":"view vehicles","ok":true,"t1":6.2,"'
    'ms":8.37},{"home":"eu-west-3","op":"end ride","ok":true,"t1":7.12,"ms":10.2},{"home":"eu-west-3","op":"v'
    'iew vehicles","ok":true,"t1":8.0,"ms":7.77},{"home":"eu-west-3","op":"start ride","ok":true,"t1":8.96,"m'
    's":19.3},{"home":"eu-west-3","op":"view vehicles","ok":true,"t1":9.85,"ms":11.4},{"home":"eu-west-3","op'
    '":"end ride","ok":true,"t1":10.8,"ms":10.2},{"home":"eu-west-3","op":"view vehicles","ok":true,"t1":11.7'
    ',"ms":7.07},{"home":"us-east-2","op":"start ride","ok":true,"t1":0.81,"ms":19.6},{"home":"us-east-2","op'
    '":"view vehicles","ok":true,"t1":1.72,"ms":5.7},{"home":"us-east-2","op":"end ride","ok":true,"t1":2.65,'
    '"ms":17.0},{"home":"us-east-2","op":"view vehicles","ok":true,"t1":3.58,"ms":13.5},{"home":"us-east-2","'
    'op":"start ride","ok":true,"t1":4.63,"ms":11.7},{"home":"us-east-2","op":"view vehicles","ok":true,"t1":'
    '5.53,"ms":5.76},{"home":"us-east-2","op":"end ride","ok":true,"t1":6.49,"ms":17.3},{"home":"us-east-2","'
    'op":"view vehicles","ok":true,"t1":7.37,"ms":6.36},{"home":"us-east-2","op":"start ride","ok":true,"t1":'
    '8.4,"ms":14.9},{"home":"us-east-2","op":"view vehicles","ok":true,"t1":9.36,"ms":7.77},{"home":"us-east-'
    '2","op":"end ride","ok":true,"t1":10.4,"ms":25.3},{"home":"us-east-2","op":"view vehicles","ok":true,"t1'
    '":11.3,"ms":11.0}]}}'
)


def write_fixtures(bench_dir: Path) -> list[str]:
    """The trimmed real results, each where its command would have written it, without its PNG."""
    kinds = []
    for kind, data in json.loads(FIXTURES_JSON).items():
        path = bench_dir / kind / f"{kind}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        kinds.append(kind)
    return kinds


@pytest.mark.lab
@pytest.mark.browser
def test_report_opens_in_chromium_with_every_plot(quick_throughput: dict, bench_dir: Path, chromium: Path) -> None:
    runner = CliRunner()
    args = ["--scale", "0.05", "--repeats", "1", "--from", "rome", "--topologies", "single"]
    journey = runner.invoke(main, ["bench", "journey", *args, "--run-dir", str(bench_dir)], catch_exceptions=False)
    assert journey.exit_code == 0, journey.output
    args = ["--count", "200", "--rate", "400", "--rtt-ms", "10", "--run-dir", str(bench_dir)]
    links = runner.invoke(main, ["bench", "links", *args])
    assert links.exit_code in (0, 1), links.output  # 1: the link missed its targets
    assert (bench_dir / "journey.json").exists() and (bench_dir / "links.json").exists(), "where the runner puts them"
    fixtures = write_fixtures(bench_dir)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    output = ARTIFACTS / "report.html"
    result = runner.invoke(main, ["bench", "report", "--run-dir", str(bench_dir), "--output", str(output)])
    assert result.exit_code == 0, result.output
    page_html = output.read_text()
    kinds = ["journey", "links", *fixtures, "throughput"]
    for kind in kinds:
        assert re.search(rf"<h2 id='{kind}-\d+'>{kind}</h2>", page_html), kind
    for claim in CLAIMS:
        assert html.escape(claim["claim"]) in page_html
    assert "÷ floor" in page_html and "could not" not in page_html
    # One file: nothing fetched from anywhere (no external URL, no script).
    assert not re.search(r"""(src|href)=['"]?(https?:)?//|@import|url\(|<script""", page_html)
    expected_plots = 1 + len(fixtures) + len(quick_throughput["topologies"])  # links has none

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(output.as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"
            )
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) == expected_plots, images
    assert all(image["complete"] and image["width"] > 0 for image in images), images
    assert (ARTIFACTS / "report.png").stat().st_size > 0
