"""`movr bench ycsb | insert | rehome --quick`: each command runs end to end and writes a complete result.

These tests look at the shape of the results (every cell has its percentiles, floor and histogram; the
preset, scale and versions are stated; the report's section has a row per cell) and at what is left
running afterwards. They never judge timings: that is what the full runs in docs/benchmarks.md are for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from movr.bench.experiment import command_for
from movr.bench.histograms import decode_histogram
from movr.bench.ycsb import insert, rehome, ycsb
from movr.lab.supervisor import processes_left

pytestmark = pytest.mark.lab

REGIONS = ["us-east1", "europe-west2", "asia-northeast1"]  # the ycsb-3 preset
PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")
ycsb_command, insert_command, rehome_command = (command_for(e.EXPERIMENT) for e in (ycsb, insert, rehome))


def run(command: Any, tmp_path: Path, *args: str) -> dict[str, Any]:
    run_dir = tmp_path / "run"
    json_path = tmp_path / "result.json"
    result = CliRunner().invoke(
        command, ["--quick", "--json", str(json_path), "--run-dir", str(run_dir), *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert processes_left(run_dir) == [], "a server, link or client process outlived the command"
    assert json_path.with_suffix(".png").stat().st_size > 0
    return json.loads(json_path.read_text())


def assert_header(data: dict[str, Any], benchmark: str) -> None:
    assert data["benchmark"] == benchmark
    assert data["preset"] == "ycsb-3"
    assert data["scale"] == 0.05
    assert data["settings"]["quick"] is True
    assert set(data["versions"]) >= {"movr", "python", "postgresql"}
    assert data["versions"]["postgresql"].startswith("18")
    assert data["machine"]["cpus"] >= 1 and data["machine"]["platform"]
    assert data["network"]["intra_region_rtt_ms"] > 0
    assert data["floors"]
    assert data["started_at"]
    assert data["checks"] and all({"name", "holds", "detail"} <= set(c) for c in data["checks"])
    assert all(c["detail"].startswith("measured {") for c in data["checks"])


def assert_figures(figures: dict[str, Any], *, must_have_samples: bool = True) -> None:
    """Percentiles (numbers when there were samples), a floor, and a decodable raw histogram."""
    assert figures["count"] >= (1 if must_have_samples else 0)
    for key in PERCENTILES:
        value = figures[key]
        assert (value is None) if figures["count"] == 0 else (isinstance(value, float) and value > 0)
        assert key in figures["floor"]
        if figures["count"]:
            assert figures["floor"][key] > 0
    if figures["count"]:
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert decode_histogram(figures["histogram"]).get_total_count() == figures["count"]


def assert_report_rows(section: list[str], rows: int) -> None:
    """The report's section for a result: the terminal's tables, `rows` body rows in all, nothing unescaped."""
    html = "".join(section)
    assert html.count("<tr>") == rows + html.count("<thead>")
    assert "<script" not in html


def test_ycsb_quick_covers_every_variant_locality_and_region(tmp_path: Path) -> None:
    data = run(ycsb_command, tmp_path)
    assert_header(data, "ycsb")
    cells = {(c["variant"], c["locality"], c["region"]): c for c in data["results"]}
    assert set(cells) == {(v, loc, r) for v in ycsb.VARIANTS for loc in (100, 95, 50) for r in REGIONS}
    for (_, locality, region), cell in cells.items():
        assert cell["errors"] == 0, cell["first_error"]
        assert cell["ops"] > 0 and cell["throughput_ops_s"] > 0
        assert_figures(cell["read"])
        # Updates are 5% of YCSB-B: a sub-second run has a handful, possibly none.
        assert_figures(cell["update"], must_have_samples=False)
        assert set(cell["read"]["by_access"]) == {"local", "remote"}
        assert set(cell["read"]["by_home"]) == set(REGIONS)
        if locality == 100:
            assert cell["read"]["by_access"]["remote"]["count"] == 0
            # Law 2: an all-local workload crosses no WAN link, whatever the variant.
            assert cell["round_trips"]["wan"] == 0
        assert cell["round_trips"]["local"] > 0
        assert region in cell["read"]["by_home"]
    # The terminal's tables: reads and updates per cell, then remote ones by home at 95% and 50% locality.
    remote_pairs = len(REGIONS) * (len(REGIONS) - 1)
    assert_report_rows(ycsb.EXPERIMENT.report(data), 2 * len(cells) + 2 * 2 * remote_pairs)
    assert [line.split("%")[0] for line in ycsb.EXPERIMENT.headline(data)[:-1]] == ["100", "95", "50"]


def test_insert_quick_reports_both_variants_and_leaves_consistent_data(tmp_path: Path) -> None:
    # The links on a thread of the command's process (`--links thread`): counted as the links process counts.
    data = run(insert_command, tmp_path, "--links", "thread")
    assert data["settings"]["links"] == "thread"
    assert_header(data, "insert")
    cells = {(c["variant"], c["region"]): c for c in data["results"]}
    assert set(cells) == {(v, r) for v in ("default", "computed") for r in REGIONS}
    for (variant, _), cell in cells.items():
        assert cell["errors"] == 0, cell["first_error"]
        assert_figures(cell["insert"])
        # Counted, not timed: computed inserts stay home; default ones claim the key in both other regions.
        assert cell["round_trips"]["wan_per_op"] == (0 if variant == "computed" else pytest.approx(2, abs=0.05))
    assert all(check["consistent"] for check in data["verification"].values())
    assert_report_rows(insert.EXPERIMENT.report(data), len(cells))
    assert any("median over client regions" in line for line in insert.EXPERIMENT.headline(data))


def test_rehome_quick_reports_every_contention_level(tmp_path: Path) -> None:
    data = run(rehome_command, tmp_path)
    assert_header(data, "rehome")
    summary = {(s["contending"], s["variant"]): s for s in data["summary"]}
    assert set(summary) == {(c, v) for c in (1, 2, 3) for v in ("default", "rehoming")}
    for (contending, _), row in summary.items():
        assert len(row["regions"]) == contending
        assert row["errors"] == 0
        assert row["throughput_ops_s"] > 0
        assert_figures(row["read"])
        assert_figures(row["hot_read"])
        assert_figures(row["update"], must_have_samples=False)
    assert summary[(1, "default")]["moves"] == 0
    per_client = {(c["contending"], c["variant"], c["region"]) for c in data["results"]}
    assert len(per_client) == 2 * (1 + 2 + 3)
    assert_report_rows(rehome.EXPERIMENT.report(data), len(per_client) + len(summary))
    assert all(f"c={c} " in rehome.EXPERIMENT.headline(data)[0] for c in (1, 2, 3))


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (ycsb_command, ["--locality", "100,120"]),
        (ycsb_command, ["--variants", "computed,sharded"]),
        (ycsb_command, ["--workload", "C"]),
        (ycsb_command, ["--records", "3"]),
        (insert_command, ["--duration", "0"]),
        (insert_command, ["--links", "carrier-pigeon"]),
        (rehome_command, ["--contending", "4"]),
        (rehome_command, ["--preset", "no-such-preset"]),
    ],
)
def test_bad_options_exit_with_status_2_and_one_line(command: Any, args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(command, ["--run-dir", str(tmp_path / "run"), *args])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists(), "a bad option must be refused before anything starts"
