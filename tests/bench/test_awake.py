"""`--hold-cpus-awake` (movr.bench.awake): the kernel's CPU latency limit read back at 0 while a benchmark holds
it, released after, also when the block fails; and a machine where it cannot be held answers with exit
status 2 and one line, before anything is stood up.

The device is the real one: reading /dev/cpu_dma_latency answers the limit in force, the least any holder
asked for. Writing it needs root (CI runs the tests as root); the command line's refusal is shown on a
machine without the device (the path the runner opens, pointed elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from movr.bench.awake import DEVICE, AwakeError, cpus_held_awake, latency_in_force_us
from movr.cli import main

can_hold = pytest.mark.skipif(not os.access(DEVICE, os.W_OK), reason=f"{DEVICE} is not writable here (not root)")


@can_hold
def test_holding_reads_back_0_and_closing_releases_it_also_on_an_error() -> None:
    before = latency_in_force_us()
    if before == 0:
        pytest.skip("something else holds the CPUs awake already: a release could not be seen")
    with cpus_held_awake():
        assert latency_in_force_us() == 0
    assert latency_in_force_us() == before

    with pytest.raises(KeyboardInterrupt), cpus_held_awake():  # Ctrl-C in the middle of a run
        assert latency_in_force_us() == 0
        raise KeyboardInterrupt
    assert latency_in_force_us() == before


@pytest.mark.parametrize("kind", ["missing", "directory", "regular file"])
def test_a_path_that_is_not_the_device_is_refused_in_one_line_before_the_block_runs(tmp_path: Path, kind: str) -> None:
    path = {"missing": tmp_path / "nothing", "directory": tmp_path, "regular file": tmp_path / "file"}[kind]
    if kind == "regular file":
        path.write_bytes(b"")
    ran = False
    with pytest.raises(AwakeError) as refused, cpus_held_awake(path):
        ran = True
    assert not ran
    message = str(refused.value)
    assert message.startswith("--hold-cpus-awake: ") and str(path) in message and "\n" not in message
    if kind == "regular file":
        assert path.read_bytes() == b"", "nothing written to a file that is not the device"


@pytest.mark.parametrize("experiment", ["path", "journey"])
def test_the_option_where_the_cpus_cannot_be_held_exits_2_with_one_line_and_stands_nothing_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, experiment: str
) -> None:
    monkeypatch.setattr("movr.bench.awake.DEVICE", tmp_path / "no-cpu-latency-device")  # a machine without it
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["bench", experiment, "--hold-cpus-awake", "--run-dir", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"movr: --hold-cpus-awake: cannot open {tmp_path / 'no-cpu-latency-device'}: No such file or directory"
    ]
    assert not run_dir.exists()
