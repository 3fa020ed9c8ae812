"""The lab's front: one app server per app region (`movr.web.serve`) and the balancer in front of them.

Each app server reaches every database server through its own region's `app:` links (law 1), and runs as the
plan's `AppSettings` say - the same when `lab up` starts it and when `movr lab heal` starts it again. The
balancer (`movr.lab.balancer`) is the one trusted proxy; its control endpoints want the lab's token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from movr.lab.layout import LabPlan
from movr.lab.processes import READY_TIMEOUT, Say, launch, spawn, start_guarded, wait_http
from movr.lab.state import LabState

ADDRESS_RATE_LIMITS = ("MOVR_LOGIN_RATE_LIMIT", "MOVR_SIGNUP_RATE_LIMIT")
LAB_ADDRESS_RATE_LIMIT = "100000/minute"


def _app_env(state: LabState, region: str) -> dict[str, str]:
    plan = state.plan
    env = {
        "MOVR_PRESET": plan.preset_source,
        "MOVR_REGION": region,
        "MOVR_SECRET_KEY": state.secret_key,
        "MOVR_TOPOLOGY": plan.topology,
        "MOVR_PROXY_HOPS": "1",  # the balancer is the one trusted proxy (client IPs for log-in limits)
        # Every lab client comes from loopback, so a per-address budget would be one budget for the whole
        # world: the lab's is sized for load tests (set either variable before `lab up` to choose another).
        # The per-username failed log-in limit lives in the database and holds as in production.
        **{name: os.environ.get(name, LAB_ADDRESS_RATE_LIMIT) for name in ADDRESS_RATE_LIMITS},
    }
    if plan.topology == "multi":
        urls = {
            server_region: state.dsn(plan.link("app", region, server.name).listen_port)
            for server_region, server in plan.servers.items()
        }
        env["MOVR_REGION_DATABASE_URLS"] = json.dumps(urls)
        layout = plan.survival
        if layout is not None:
            env["MOVR_POOL_TIMEOUT"] = str(layout.pool_timeout_s)
            if layout.directory_regions:
                env["MOVR_DIRECTORY_REGIONS"] = json.dumps(layout.directory_regions)
    else:
        primary = plan.preset.primary_region
        env["MOVR_DATABASE_URL"] = state.dsn(plan.link("app", region, plan.servers[primary].name).listen_port)
        env["MOVR_DATABASE_WAN"] = "1" if region != primary else "0"
    return env


def _app_argv(plan: LabPlan, region: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "movr.web.serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(plan.app_ports[region]),
        "--workers",
        str(plan.apps.workers),
        "--region",
        region,
        "--preset",
        plan.preset_source,
        "--threads",
        str(plan.apps.threads),
        "--server",
        plan.apps.server,
    ]


def _wait_app(state: LabState, region: str, process: subprocess.Popen, timeout: float = READY_TIMEOUT) -> None:
    wait_http(
        f"http://127.0.0.1:{state.plan.app_ports[region]}/healthz",
        process,
        f"app server {region}",
        state.run_dir / "logs" / f"app-{region}.log",
        timeout,
    )


def start_apps(state: LabState, say: Say) -> None:
    """An app server per app region, all started before any is waited for."""
    started = []
    for region in state.plan.app_regions:
        port = state.plan.app_ports[region]
        say(f"app server for {region} on 127.0.0.1:{port}")
        argv = _app_argv(state.plan, region)
        started.append((region, spawn(state, f"app-{region}", "app", argv, port, _app_env(state, region))))
    for region, process in started:
        _wait_app(state, region, process)


def restart_app_server(run_dir: Path, region: str, timeout: float = READY_TIMEOUT) -> int:
    """Start a lost region's app server again (movr lab heal), as lab_up started it; returns its pid.

    The state file is updated under its lock: the failover controller writes it too.
    """
    state = LabState.read(run_dir)
    name = f"app-{region}"
    port = state.plan.app_ports[region]
    process, started = launch(state.run_dir, name, "app", _app_argv(state.plan, region), port, _app_env(state, region))

    def record(current: LabState) -> None:
        current.processes = [p for p in current.processes if p.name != name]
        current.processes.append(started)

    LabState.update(state.run_dir, record)
    _wait_app(state, region, process, timeout)
    return process.pid


def start_balancer(state: LabState, say: Say) -> None:
    plan = state.plan
    assert plan.balancer_port is not None, "a servers-only plan has no balancer"
    config = {
        "preset": plan.preset_source,
        "scale": plan.scale,
        "topology": plan.topology,
        "primary_region": plan.preset.primary_region,
        "apps": {region: f"http://127.0.0.1:{port}" for region, port in plan.app_ports.items()},
        "default_city": None,
    }
    config_path = state.run_dir / "balancer.json"
    config_path.write_text(json.dumps(config, indent=2))
    say(f"balancer on http://127.0.0.1:{plan.balancer_port}")
    argv = [sys.executable, "-m", "movr.lab.balancer", "--config", str(config_path)]
    start_guarded(
        state, "balancer", [*argv, "--port", str(plan.balancer_port)], plan.balancer_port, "/_balancer/status"
    )
