"""A whole lab per topology: started once per module and always stopped, leaving nothing running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from movr.geo import load_preset

# Small delays keep the suite quick; the assertions count round trips, they never time them.
LAB_SCALE = 0.05


def processes_under(run_dir: Path) -> list[psutil.Process]:
    marker = str(run_dir)
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if marker in text and process.status() != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


@pytest.fixture(scope="module")
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from movr.lab.supervisor import lab_down, lab_up
    from movr.store.sample import generate

    started: list[Path] = []

    def stand_up(topology: str, preset_name: str = "gcp-3"):
        run_dir = tmp_path_factory.mktemp(f"lab-{topology}")
        started.append(run_dir)
        preset = load_preset(preset_name)
        state = lab_up(run_dir, preset, preset_name, topology, LAB_SCALE)
        n = len(preset.cities)
        state.load_sample(generate(preset, users=n * 2, vehicles=n * 2, rides=n, seed=3))
        return state

    yield stand_up
    for run_dir in started:
        lab_down(run_dir)
        assert processes_under(run_dir) == [], "lab down left processes running"
