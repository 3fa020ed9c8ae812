"""The container's command, run outside a container: the wheel built from what the Containerfile copies,
installed into a fresh virtual environment, and the Containerfile's exact command line run with the
environment the rendered us-east1 Deployment gives it (the Secret's values and the port filled in here),
against the embedded PostgreSQL. It must answer /healthz, the Containerfile's HEALTHCHECK, and the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from movr import __version__
from movr.deploy.containerfile import BUILD_FILES, BUILD_TREE, DISTRIBUTION
from movr.deploy.manifests import CONFIG_DIR
from movr.deploy.render import render_kit
from movr.lab.ports import free_port
from movr.placement.spec import load_spec
from servekit import running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east1"


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the project's wheel and its dependencies, and nothing else."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # exactly what the Containerfile's builder stage copies
    source.mkdir()
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / BUILD_TREE, source / BUILD_TREE, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # No build isolation: this environment's setuptools builds it, instead of a download of one.
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(base / "dist"), str(source)])
    (wheel,) = (base / "dist").glob("*.whl")
    assert wheel.name.startswith(f"{DISTRIBUTION.replace('-', '_')}-{__version__}-")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    # This environment's pip installs into the new one; dependencies come from pip's cache or the index.
    run([*pip, "--python", str(python), "install", str(wheel)])
    where = run([str(python), "-c", "import movr; print(movr.__file__)"], cwd=base).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's movr, not this checkout's
    return venv / "bin"


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, **kwargs)
    assert result.returncode == 0, f"{argv[:4]}...: {result.stderr[-2000:]}"
    return result


def container_env(kit: dict[str, str], config_dir: Path, database_url: str, port: int, venv_bin: Path) -> dict:
    """The us-east1 Deployment's environment, with what Kubernetes would supply supplied here instead."""
    config = yaml.safe_load(kit[f"{REGION}/10-configmap.yaml"])["data"]
    for name, text in config.items():
        (config_dir / name).write_text(text)
    deployment = yaml.safe_load(kit[f"{REGION}/20-deployment.yaml"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {"PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "HOME": str(config_dir), "LANG": "C.UTF-8"}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace(CONFIG_DIR, str(config_dir))
    secret = {
        "MOVR_DATABASE_URL": database_url,
        "MOVR_SECRET_KEY": secrets.token_urlsafe(32),
        "MOVR_METRICS_TOKEN": secrets.token_urlsafe(16),
    }
    from_secret = {item["name"] for item in container["env"] if "valueFrom" in item}
    assert from_secret == set(secret)
    # The port from the environment, as the Containerfile's command reads it; the loopback interface only.
    return {**env, **secret, "PORT": str(port), "MOVR_HOST": "127.0.0.1"}


def test_the_containers_command_serves_health_and_the_api_from_the_installed_wheel(venv_bin, store, movr_dsn, tmp_path):
    kit = render_kit(load_spec("gcp-3"), "movr:test")
    containerfile = kit["Containerfile"]
    command = json.loads(re.search(r"^CMD (\[.*\])$", containerfile, re.MULTILINE)[1])
    healthcheck = json.loads(re.search(r"^    CMD (\[.*\])$", containerfile, re.MULTILINE)[1])
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    port = free_port()
    env = container_env(kit, config_dir, movr_dsn, port, venv_bin)
    base = f"http://127.0.0.1:{port}"
    with running(command, env, tmp_path / "serve.log", base, cwd=tmp_path):
        health = requests.get(base + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok", "region": REGION}
        # Docker's HEALTHCHECK, run by the environment's python as the image would run it.
        assert subprocess.run(healthcheck, env=env, timeout=30).returncode == 0
        # An API call, located the way the load balancer locates a client in Rome.
        promos = requests.get(base + "/api/v1/promo-codes", headers={"X-Client-Geo-Location": "IT62, Rome"}, timeout=10)
        assert promos.status_code == 200 and promos.json(), promos.text
        assert promos.headers["X-Movr-Region"] == REGION
        assert promos.headers["X-Movr-Client-City"] == "rome"
        page = requests.get(base + "/", timeout=10)  # templates and static files are in the wheel
        assert page.status_code == 200 and "MovR" in page.text
    with contextlib.suppress(requests.RequestException):
        requests.get(base + "/healthz", timeout=2)
        pytest.fail("the server still answers after it was stopped")
    # Nothing answers any more: the HEALTHCHECK reports the container unhealthy.
    assert subprocess.run(healthcheck, env=env, capture_output=True, timeout=30).returncode != 0
