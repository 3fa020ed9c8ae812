"""`movr bench report` with what the runner wrote: results found where `movr bench <name>` puts them by default,
each shown by its own experiment (the registry), the page opening with what the results say.

The results in tests/bench/results/ are real: `movr bench journey --scale 0.05 --repeats 1 --from rome
--topologies multi` and `movr bench failover --quick`, trimmed (the journey's raw runs and most of the drill's
samples dropped). Their PNGs are not kept: the report must draw them again from the JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from movr.bench.experiment import write_json
from movr.bench.registry import registry
from movr.bench.report import find_results
from movr.cli import main

RESULTS = Path(__file__).parent / "results"


def result(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def report(*args: str) -> Any:
    """`movr bench report ARGS` in the current directory."""
    return CliRunner().invoke(main, ["bench", "report", *args], catch_exceptions=False)


@pytest.fixture
def run_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose ./run/bench holds the journey's and the drill's results, as their commands'
    defaults write them (the runner's write_json, at <run-dir>/<name>.json)."""
    monkeypatch.chdir(tmp_path)
    bench = tmp_path / "run" / "bench"
    for name in ("journey", "failover"):
        write_json(bench / f"{name}.json", result(name))
    return bench


def sections(page: str) -> list[str]:
    return re.findall(r"<h2 id='([a-z]+)-\d+'>", page)


def test_the_report_with_its_defaults_shows_the_journey_and_the_failover_drill(run_bench: Path) -> None:
    outcome = report()
    assert outcome.exit_code == 0, outcome.output
    page = (run_bench / "report.html").read_text()
    assert sections(page) == ["journey", "failover"]
    # Each experiment's own section: the journey's steps beside their floors, the drill's cities.
    journey, failover = page.split("<h2 id='journey-0'>")[1].split("<h2 id='failover-1'>")
    assert "from rome — median of 1, ms" in journey and "÷ floor" in journey
    assert "per client city" in failover or "stockholm" in failover
    # Every figure, drawn again from the JSON (no PNG was kept): the journey's bars, the drill's timeline.
    assert page.count("<img ") == 2 and page.count("(drawn from the JSON)") == 2
    assert "could not" not in page
    assert "2 results (journey, failover), 2 plots" in " ".join(outcome.output.split())


def test_the_report_opens_with_what_the_results_say(run_bench: Path) -> None:
    assert report().exit_code == 0
    page = (run_bench / "report.html").read_text()
    findings, claims, first = (page.index(s) for s in ('id="findings"', 'id="claims"', "<h2 id='journey-0'>"))
    assert findings < claims < first, "the findings, then the articles' claims, then the sections"
    opening = page[findings:first]
    for name in ("journey", "failover"):
        data = json.loads((run_bench / f"{name}.json").read_text())
        for line in registry().experiments[name].headline(data):
            assert line.replace("'", "&#x27;") in opening, line
        for check in data["checks"]:
            assert check["name"].replace("'", "&#x27;") in opening
    assert "<span class=ok>1 hold</span>" in opening  # the journey's one check, on this run


def test_results_of_experiments_this_movr_does_not_know_are_listed_not_shown(run_bench: Path) -> None:
    write_json(run_bench / "old" / "teleport.json", {"benchmark": "teleport", "preset": "gcp-3", "scale": 1})
    (run_bench / "lab.json").write_text('{"topology": "multi", "plan": {}, "processes": []}')  # a lab's state
    (run_bench / "links.json").write_text('[{"name": "app:us-east1->us-east1-a"}]')  # a links spec
    (run_bench / "broken.json").write_text("{")
    (run_bench / "servers").mkdir()
    write_json(run_bench / "servers" / "stray.json", result("journey"))  # PostgreSQL data: never searched
    found, unknown = find_results(run_bench, registry())
    assert [f.name for f in found] == ["journey", "failover"]
    assert unknown == [(run_bench / "old" / "teleport.json", "teleport")]
    assert report().exit_code == 0
    page = (run_bench / "report.html").read_text()
    assert "<code>teleport</code> is not an experiment of this movr" in page
    assert sections(page) == ["journey", "failover"]


@pytest.mark.parametrize("make", ["missing", "empty", "output is a directory"])
def test_report_bad_input_exits_2_with_one_line(make: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "bench"
    args = ["--run-dir", str(run_dir)]
    if make != "missing":
        run_dir.mkdir()
    if make == "output is a directory":
        write_json(run_dir / "journey.json", result("journey"))
        args += ["--output", str(run_dir)]
    outcome = CliRunner().invoke(main, ["bench", "report", *args])
    assert outcome.exit_code == 2, outcome.output
    assert len(outcome.output.strip().splitlines()) == 1
