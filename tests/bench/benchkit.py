"""What the bench tests share: a way to find processes a command left behind."""

from __future__ import annotations

from pathlib import Path

import psutil


def processes_under(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory mentions `run_dir` (servers, links, clients,
    apps, balancers): a bench command must leave none behind."""
    marker = str(run_dir.resolve())
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
            if marker in text and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
