"""`movr bench throughput --quick` and `movr bench report`.

The throughput smoke run checks the shape of the results (every topology and rate has its rates, errors,
percentiles with floors, raw histograms and CPU per lab process) and that nothing is left running; it
never judges timings, which is what the full run in docs/benchmarks.md is for. The report test renders a
page from real results — the quick throughput run, a links run and a one-city journey made here, and
trimmed copies of real quick runs of ycsb, insert, rehome and failover (tests/bench/results/) whose plots the
report must draw again from their JSON — opens it in Debian's chromium and checks that every plot loaded.
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

# Trimmed real quick runs (ycsb, insert, rehome at scale 0.05 on ycsb-3; a failover drill on aws-eu-us): raw
# histograms and most samples dropped. Their PNGs are not there on purpose: the report must draw them.
RESULTS = Path(__file__).parent / "results"
FIXTURES = ("ycsb", "insert", "rehome", "failover")


def write_fixtures(bench_dir: Path) -> list[str]:
    """The trimmed real results, each in a folder of its own under the run directory, without its PNG."""
    for kind in FIXTURES:
        path = bench_dir / kind / f"{kind}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((RESULTS / f"{kind}.json").read_text())
    return list(FIXTURES)


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
        assert html.escape(claim[0]) in page_html
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
