"""The make targets README.md names: `make test` is the whole suite (and CI runs it); `make test-fast` is
ruff and the unit and in-process web tests, without labs, browsers, clusters or server processes."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
    pytest.mark.slow,  # collects the whole fast tier in a pytest of its own: seconds
]


def dry_run(target: str) -> list[list[str]]:
    """The commands `make` would run for `target`, split as the shell would."""
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def pytest_line(commands: list[list[str]]) -> list[str]:
    (line,) = [words for words in commands if words and words[0].endswith("/pytest")]
    return line[1:]


def lints(commands: list[list[str]]) -> bool:
    named = [[Path(words[0]).name, *words[1:]] for words in commands if words]
    return ["ruff", "check", "src", "tests"] in named and ["ruff", "format", "--check", "src", "tests"] in named


def test_make_test_is_ruff_and_the_whole_suite_and_ci_runs_it():
    commands = dry_run("test")
    assert lints(commands)
    assert pytest_line(commands) == []  # every test path of pyproject.toml, every marker
    assert (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1] == "make test"


def test_make_test_fast_is_ruff_and_the_unit_and_web_tests_without_labs_browsers_or_servers():
    commands = dry_run("test-fast")
    assert lints(commands)
    args = pytest_line(commands)
    assert args[: args.index("-m")] == ["tests/unit", "tests/web"]
    # What that selection holds, as pytest collects it.
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stdout[-2000:]
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert any("test_regional_routing.py::" in i for i in ids) and any("test_pages.py::" in i for i in ids)
    for left_out in (
        "test_serve.py::test_movr_serve_serves_health_and_the_api",  # slow: a real `movr serve`
        "test_api_contract.py::",  # slow: a real `movr serve`, fuzzed
        "test_api_fuzz.py::",  # slow: fuzzing
        "test_balancer.py::test_balancer_process_serves_and_stops_on_sigterm",  # slow: a process of its own
    ):
        assert not any(left_out in i for i in ids), left_out
