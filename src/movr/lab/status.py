"""What `movr lab status` reports: every process, server, link and the balancer, as one dict."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import psutil

from movr.lab.state import LabState


def collect_status(state: LabState) -> dict[str, Any]:
    from movr.lab.links import fetch_counters
    from movr.lab.pgserver import PostgresServer

    try:
        counters = fetch_counters(state.links_control_port)
    except OSError:
        counters = {}
    servers = []
    for region, server in state.plan["servers"].items():
        pg = PostgresServer(
            name=server["name"], base_dir=state.run_dir / "servers" / server["name"], port=server["port"]
        )
        servers.append(
            {
                "name": server["name"],
                "region": region,
                "port": server["port"],
                "running": pg.is_running(),
                "pid": pg.pid,
            }
        )
    return {
        "topology": state.topology,
        "preset": state.preset.name,
        "scale": state.scale,
        "balancer_url": state.balancer_url,
        "processes": [{**vars(p), "alive": psutil.pid_exists(p.pid)} for p in state.processes],
        "servers": servers,
        "links": [{**link, "counters": counters.get(link["name"], {})} for link in state.plan["links"]],
        "balancer": _balancer_status(state),
    }


def _balancer_status(state: LabState) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{state.balancer_url}/_balancer/status", timeout=3) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {"reachable": False}
