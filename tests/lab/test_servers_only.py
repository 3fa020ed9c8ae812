"""A servers-only lab (`servers_up`, the data-homing benchmarks' lab): a primary per region, a client link from
every region to each, counted like the whole lab's links, and nothing left running afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from labkit import LAB_SCALE, assert_links_shown_whole, lab_status

from movr.geo import load_preset
from movr.lab.state import LabState
from movr.lab.supervisor import LabError, lab_down, lab_up, processes_left, servers_up

pytestmark = pytest.mark.lab

GCP = load_preset("gcp-3")


@pytest.mark.parametrize("links", ["process", "thread"])
def test_every_client_region_reaches_every_server_through_its_own_counted_link(tmp_path: Path, links: str) -> None:
    run_dir = tmp_path / "servers"
    with servers_up(run_dir, "gcp-3", LAB_SCALE, database="movr_bench", links=links) as lab:  # type: ignore[arg-type]
        assert lab.regions == GCP.region_names and lab.preset.name == "gcp-3" and lab.scale == LAB_SCALE
        assert len(lab.links) == 9 and {link.name.partition(":")[0] for link in lab.links} == {"client"}
        far = lab.link("us-west1", "europe-west1")
        assert far.kind == "wan" and far.one_way_ms == pytest.approx(GCP.rtt_ms("us-west1", "europe-west1") * 0.025)
        assert lab.link("us-west1", "us-west1").kind == "local"
        before = lab.counters()
        with psycopg.connect(lab.client_dsn("us-west1", "europe-west1"), autocommit=True) as conn:
            for _ in range(3):
                conn.execute("SELECT 1")
        trips = lab.round_trips(before, lab.counters())
        # Connecting takes round trips of its own (start-up, SCRAM); the three statements take one each.
        assert trips["us-west1"]["wan"] >= 3 and trips["us-west1"]["local"] == 0
        assert trips["europe-west1"] == {"wan": 0, "local": 0} and trips["us-east1"] == {"wan": 0, "local": 0}
        with psycopg.connect(lab.server_dsn("europe-west1"), autocommit=True) as conn:
            name, prepared, commit = conn.execute(
                "SELECT current_database(), current_setting('max_prepared_transactions'), "
                "current_setting('synchronous_commit')"
            ).fetchone()
        assert (name, prepared, commit) == ("movr_bench", "64", "local")  # two-phase commit on, commits local
        if links == "process":
            text, status = lab_status(run_dir, columns=80)
            assert "servers and links only" in text and status["balancer_url"] is None
            assert_links_shown_whole(text, status)
    assert processes_left(run_dir) == []
    assert not (run_dir / "lab.json").exists()


def test_a_killed_run_is_cleaned_up_by_the_next_but_a_whole_lab_is_never_taken_down(tmp_path: Path) -> None:
    run_dir = tmp_path / "servers"
    script = (
        "import sys, time; from pathlib import Path; from movr.lab.supervisor import servers_up\n"
        "with servers_up(Path(sys.argv[1]), 'gcp-3', 0.05, database='movr_bench'):\n"
        "    print('up', flush=True); time.sleep(300)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None and runner.stdout.readline() == "up\n"
        os.kill(runner.pid, signal.SIGKILL)  # no clean-up: its servers and links keep running
        runner.wait(10)
        left = LabState.read(run_dir)
        assert processes_left(run_dir), "a killed run leaves its lab running"
        with servers_up(run_dir, "gcp-3", LAB_SCALE, database="movr_bench") as lab:
            assert lab.state.control_token != left.control_token
            with psycopg.connect(lab.client_dsn("us-east1", "us-east1"), autocommit=True) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert processes_left(run_dir) == []
    finally:
        runner.kill()
        runner.wait(10)
        lab_down(run_dir)

    whole = tmp_path / "whole"
    lab_up(whole, "gcp-3", "single", LAB_SCALE)
    try:
        with pytest.raises(LabError, match="already running"), servers_up(whole, "gcp-3", LAB_SCALE, database="x"):
            pass
        assert LabState.read(whole).plan.serves_app  # still there, untouched
    finally:
        lab_down(whole)
    assert processes_left(whole) == []


def test_bad_input_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no preset named"), servers_up(tmp_path / "a", "nowhere-9", 1.0, database="x"):
        pass
    with (
        pytest.raises(LabError, match="links must be one of"),
        servers_up(
            tmp_path / "b",
            "gcp-3",
            1.0,
            database="x",
            links="carrier-pigeon",  # type: ignore[arg-type]
        ),
    ):
        pass
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
