"""What the lab tests share: their delay scale, and a way to find processes a lab left behind."""

from __future__ import annotations

from pathlib import Path

import psutil

# Small delays keep the suite quick; the assertions count round trips, they never time them.
LAB_SCALE = 0.05


def processes_under(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory names the run directory."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
            if str(run_dir) in text and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
