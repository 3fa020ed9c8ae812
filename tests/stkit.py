"""README's schemathesis command (`st run <server>/api/v1/openapi.json --checks all -H "Authorization: Bearer
..."`) run against a live server or lab, and what its NDJSON report says ran, for the contract tests."""

from __future__ import annotations

import collections
import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

ST = Path(sys.executable).with_name("st")
SPEC = "/api/v1/openapi.json"
PASSWORD = "contract-password"
PHASES = ("examples", "coverage", "fuzzing", "stateful")
TIMEOUT_S = 900


def fresh_token(base: str, city: str = "rome") -> str:
    """The bearer token of a new user (README: the `token` that `POST /api/v1/sessions` returns)."""
    username = f"contract{secrets.token_hex(4)}"
    created = requests.post(f"{base}/api/v1/users", json={"username": username, "password": PASSWORD, "city": city})
    assert created.status_code == 201, created.text
    session = requests.post(f"{base}/api/v1/sessions", json={"username": username, "password": PASSWORD})
    assert session.status_code == 201, session.text
    return session.json()["token"]


def operations_of(base: str) -> set[tuple[str, str]]:
    spec = requests.get(base + SPEC, timeout=30).json()
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


@dataclass
class Run:
    done: subprocess.CompletedProcess
    events: list[dict]

    @property
    def output(self) -> str:
        return self.done.stdout[-6000:] + self.done.stderr[-2000:]

    def failed_checks(self) -> list[str]:
        failed = []
        for scenario in self._scenarios():
            for case_id, checks in ((scenario.get("recorder") or {}).get("checks") or {}).items():
                failed += [f"{case_id}: {check['name']}" for check in checks if check["status"] == "failure"]
        return failed

    def phases(self) -> dict[str, str]:
        finished = (event["PhaseFinished"] for event in self.events if "PhaseFinished" in event)
        return {phase["phase"]["name"]: phase["status"] for phase in finished}

    def calls(self) -> collections.Counter:
        """(phase, method, path template, status, whether a link built it) of every request sent."""
        tally: collections.Counter = collections.Counter()
        for scenario in self._scenarios():
            recorder = scenario.get("recorder") or {}
            interactions = recorder.get("interactions") or {}
            for case_id, case in (recorder.get("cases") or {}).items():
                status = ((interactions.get(case_id) or {}).get("response") or {}).get("status_code")
                value = case["value"]
                linked = bool(case.get("is_transition_applied"))
                tally[(scenario["phase"], value["method"], value["path"], status, linked)] += 1
        return tally

    def _scenarios(self) -> list[dict]:
        return [event["ScenarioFinished"] for event in self.events if "ScenarioFinished" in event]


def st_run(base: str, token: str, *options: str, examples: int, workdir: Path) -> Run:
    """README's command with `--max-examples examples` and `options`, plus an NDJSON report; run in
    `workdir`, where schemathesis keeps its example database and reports (never the repository)."""
    command = [
        str(ST), "run", f"{base}{SPEC}", "--checks", "all", "-H", f"Authorization: Bearer {token}",
        "--max-examples", str(examples), *options,
        "--report", "ndjson", "--report-dir", str(workdir / "report"), "--no-color",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    reports = list((workdir / "report").glob("*.ndjson"))
    assert len(reports) == 1, done.stdout[-3000:] + done.stderr[-2000:]
    return Run(done, [json.loads(line) for line in reports[0].read_text().splitlines() if line.strip()])


def assert_no_failure_in_any_phase(run: Run, base: str) -> None:
    """Exit 0, no failed check, every phase run (examples: none in the document, so skipped), every operation
    of the document exercised, and no 5xx."""
    assert run.done.returncode == 0, run.output
    assert run.failed_checks() == [], run.output
    phases = run.phases()
    assert phases.get("examples") in ("success", "skip"), phases
    assert all(phases.get(phase) == "success" for phase in PHASES[1:]), phases
    sent = run.calls()
    assert {(method, path) for (_, method, path, *_rest) in sent} >= operations_of(base)
    assert not [key for key in sent if key[3] is not None and key[3] >= 500]
