"""`movr bench path` run as a user runs it: one multi lab, every hop of the request path against the request
that skips it (first the bare process hop, a loopback echo), the result and its figure in the run directory,
and nothing left running; where this user can, with the CPUs held awake (`--hold-cpus-awake`).

Timings are never judged here (they depend on the machine): the result's shape is, and that each hop's cost
is the difference of what was measured with and without it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from movr.bench.awake import DEVICE
from movr.bench.path import HOPS, MODES, REQUESTS
from movr.cli import main
from movr.lab.supervisor import processes_left


@pytest.mark.lab
def test_bench_path_quick_measures_every_hop_and_stops_its_lab(tmp_path: Path) -> None:
    hold = os.access(DEVICE, os.W_OK)  # root: as docs/lab.md shows it, with the CPUs held awake
    args = ["bench", "path", "--quick", "--preset", "gcp-3", "--region", "us-west1", "--scale", "0.05"]
    args += ["--hold-cpus-awake"] if hold else []
    result = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "each hop's cost, ms" in result.output
    assert ("CPUs held awake for the run" in result.output) is hold

    data = json.loads((tmp_path / "path.json").read_text())
    assert data["benchmark"] == "path" and data["preset"] == "gcp-3" and data["scale"] == 0.05
    assert data["region"] == "us-west1" and data["samples"] == 10
    assert "postgresql" in data["versions"] and "load_1m_at_start" in data["machine"]
    assert data["machine"]["cpus_held_awake"] is hold
    assert set(data["requests"]) == set(REQUESTS)
    for figures in data["requests"].values():
        assert set(figures) == set(MODES)
        for mode in MODES:
            assert 0 < figures[mode]["p50_ms"] <= figures[mode]["p90_ms"]
    assert [(row["hop"], row["request"]) for row in data["hops"]] == [(hop, kind) for hop, kind, _, _ in HOPS]
    first = data["hops"][0]  # the machine's own cost of one process hop: nothing to subtract
    assert (first["hop"], first["with"], first["without"]) == ("process hop", "bare hop", None)
    for row in data["hops"]:
        with_hop, without = data["requests"][row["with"]], data["requests"].get(row["without"] or "")
        for mode in MODES:
            for p in ("p50_ms", "p90_ms"):
                cost = row[f"{mode}_{p}"]
                assert isinstance(cost, float) and math.isfinite(cost)
                assert cost == pytest.approx(with_hop[mode][p] - (without[mode][p] if without else 0.0), abs=0.001)
    # The balancer carried the client's RTT on the access link; it was read from its header and taken off.
    assert data["client_rtt_ms"] == pytest.approx(data["model_client_rtt_ms"], abs=0.001)
    assert (tmp_path / "path.png").stat().st_size > 0
    assert processes_left(tmp_path / "path") == []


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--region", "mars-1"], "--region: mars-1 is not a region of preset gcp-3"),
        (["--preset", "no-such-preset"], "no-such-preset"),
        (["--samples", "0"], "--samples"),
        (["--scale", "-1"], "--scale"),
    ],
)
def test_bench_path_refuses_bad_options_with_status_2_before_standing_anything_up(
    tmp_path: Path, options: list[str], reason: str
) -> None:
    result = CliRunner().invoke(main, ["bench", "path", *options, "--run-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert reason in result.output and "Traceback" not in result.output
    assert not (tmp_path / "path").exists()
