"""A whole lab per topology: started once per module and always stopped, leaving nothing running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit import LAB_SCALE

from movr.geo import load_preset
from movr.lab.supervisor import processes_left


@pytest.fixture(scope="module")
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from movr.lab.supervisor import lab_down, lab_up
    from movr.store.sample import generate

    started: list[Path] = []

    def stand_up(topology: str, preset_name: str = "gcp-3", scale: float = LAB_SCALE):
        run_dir = tmp_path_factory.mktemp(f"lab-{topology}")
        started.append(run_dir)
        preset = load_preset(preset_name)
        state = lab_up(run_dir, preset_name, topology, scale)
        # The check made after `lab down` must see every process the lab started, or it proves nothing.
        seen = {process.pid for process in processes_left(run_dir)}
        assert {p.pid for p in state.processes} <= seen, "processes_left misses processes of a running lab"
        n = len(preset.cities)
        state.load_sample(generate(preset, users=n * 2, vehicles=n * 2, rides=n, seed=3))
        return state

    yield stand_up
    for run_dir in started:
        lab_down(run_dir)
        assert processes_left(run_dir) == [], "lab down left processes running"
