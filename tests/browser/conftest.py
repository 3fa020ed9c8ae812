"""A real MovR server (`movr serve`: granian, its default) and Debian's chromium, for browser journeys.

Chromium comes from apt (`apt-get install -y chromium`), never from `playwright install`: the system
package is what the project supports. The fixture installs it when /usr/bin/chromium is missing and skips
the browser tests, saying why, only when apt cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servekit import served

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "run" / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        pytest.skip("Debian's chromium is not installed and there is no apt-get to install it")
    try:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(
                command,
                check=True,
                capture_output=True,
                timeout=1200,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        pytest.skip(f"could not install chromium with apt-get ({error}): {detail.decode(errors='replace')[-300:]}")
    if not CHROMIUM.exists():
        pytest.skip("apt-get installed chromium, but /usr/bin/chromium is not there")
    return CHROMIUM


@pytest.fixture(scope="module")  # module: Playwright's loop must stop before other tests use asyncio
def browser(chromium: Path) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


@pytest.fixture
def live_server(store, movr_dsn: str, artifacts: Path) -> Iterator[str]:
    """`python -m movr.web.serve` (granian, 2 workers) on a free port, on the emptied test database."""
    command = [sys.executable, "-m", "movr.web.serve"]
    with served(command, movr_dsn, artifacts / "server.log", extra=["--workers", "2", "--access-log"]) as base:
        yield base
