"""What is up in the lab, as the console's stream shows it: every database server, app server, region and link.

Read from where each fact lives: the state file (the plan, the faults in force, each group's primary now),
the processes (a database server runs on its data directory; an app server's recorded pid still runs what
the lab started), the links' control API (down, delay, counters) and the balancer's own region table
(passed in: the console runs inside the balancer). Blocking: the console calls it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from movr.lab.links import fetch_links
from movr.lab.processes import is_alive
from movr.lab.state import LabState, lab_server
from movr.lab.survival import current_primaries, server_index

LINKS_TIMEOUT_S = 0.4  # the stream's period is 0.5 s: a slow links process must not hold an update back


def live_links(state: LabState) -> dict[str, dict[str, Any]] | None:
    """The links process's view of every link (spec now, down, counters), by name; None when it does not
    answer."""
    try:
        links = fetch_links(state.links_control_port, token=state.control_token, timeout=LINKS_TIMEOUT_S)
    except (OSError, ValueError):
        return None
    return {link["name"]: link for link in links}


def added_rtt_ms(state: LabState, live: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The round trip a delay fault added to each link: its live one-way delay beyond the plan's, twice."""
    added = {}
    for spec in state.plan.links:
        now = live.get(spec.name)
        if now is not None:
            extra = 2 * (float(now.get("one_way_ms", spec.one_way_ms)) - spec.one_way_ms)
            added[spec.name] = round(extra, 3) if extra > 0.0005 else 0.0
    return added


def collect(
    state: LabState, balancer_regions: Mapping[str, Mapping[str, Any]], live: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The `health` object of the stream's update (docs/console-api.md); `balancer_regions`: the
    balancer's region table (`Balancer.describe()["regions"]`), `live`: `live_links(state)`."""
    primaries = current_primaries(state)
    survival = state.survival
    lost = set(survival.lost_regions if survival is not None else [])
    servers: dict[str, dict[str, Any]] = {}
    for name, info in server_index(state).items():
        servers[name] = {
            "region": info.region,
            "group": info.group,
            "role": "primary" if primaries.get(info.group) == name else "standby",
            "up": lab_server(state.run_dir, info).is_running(),
        }
    alive = {p.name: is_alive(p) for p in state.processes if p.kind == "app"}
    apps = {}
    for region in state.plan.app_regions:
        table = balancer_regions.get(region, {})
        in_rotation = bool(table.get("healthy")) and not table.get("forced_down")
        apps[region] = {"up": alive.get(f"app-{region}", False), "in_rotation": in_rotation}
    regions = {}
    for region in state.preset.region_names:
        here = [s for s in servers.values() if s["region"] == region]
        running = sum(1 for s in here if s["up"])
        app = apps.get(region)
        app_ok = app is None or (app["up"] and app["in_rotation"])
        regions[region] = {
            "up": region not in lost and app_ok and (running > 0 or not here),
            "app": bool(app and app["up"]),
            "in_rotation": bool(app and app["in_rotation"]),
            "servers_up": running,
            "servers": len(here),
            "lost": region in lost,
        }
    added = added_rtt_ms(state, live or {})
    links = {
        spec.name: {
            "down": bool((live or {}).get(spec.name, {}).get("down", False)),
            "rtt_ms": round(2 * spec.one_way_ms + added.get(spec.name, 0.0), 3),
            "added_ms": added.get(spec.name, 0.0),
        }
        for spec in state.plan.links
    }
    return {
        "regions": regions,
        "servers": servers,
        "apps": apps,
        "links": links,
        "links_reachable": live is not None,
        "partitions": [list(pair) for pair in (survival.partitions if survival is not None else [])],
        "primaries": primaries,
    }
