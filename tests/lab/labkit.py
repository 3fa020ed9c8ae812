"""What the lab tests share: their delay scale, and `movr lab status` as a user at an 80-column terminal sees it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from movr.lab.state import LabState
from movr.store.regional import RegionalPostgresBackend

# Small delays keep the suite quick; the assertions count round trips, they never time them.
LAB_SCALE = 0.05

MOVR = str(Path(sys.executable).with_name("movr"))


def lab_status(run_dir: Path, columns: int = 80) -> tuple[str, dict]:
    """`movr lab status` at a terminal `columns` wide, and `movr lab status --json`, for the lab in `run_dir`."""
    env = {**os.environ, "COLUMNS": str(columns)}
    command = [MOVR, "lab", "status", "--run-dir", str(run_dir)]
    text = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=60).stdout
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, check=True, timeout=60).stdout
    return text, json.loads(as_json)


def assert_links_shown_whole(text: str, status: dict, columns: int = 80) -> None:
    """Every link is a cell of its purpose's matrix, every region and server is named whole, and nothing is
    wider than the terminal or cut short."""
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= columns, text
    for link in status["links"]:
        purpose = link["name"].partition(":")[0]
        assert f"{purpose} links" in text
        assert link["src"] in text and link["dst"] in text and link["dst_region"] in text, link["name"]
    # One "rt" line per cell, and one cell per link.
    assert sum(line.count(" rt ") for line in text.splitlines()) == len(status["links"]), text


def app_backend(lab: LabState, region: str) -> RegionalPostgresBackend:
    """What `region`'s app server uses: every region's server reached through that region's app links."""
    urls = {
        server_region: lab.server_dsn(server_region, via_link=f"app:{region}->{server.name}")
        for server_region, server in lab.plan.servers.items()
    }
    return RegionalPostgresBackend.from_urls(urls, lab.preset, region)
