"""What `movr lab status` reports: every process, server, link and the balancer, as one dict."""

from __future__ import annotations

from typing import Any

import psycopg

from movr.lab import control
from movr.lab.state import LabState, lab_server


def collect_status(state: LabState) -> dict[str, Any]:
    from movr.lab.links import fetch_counters
    from movr.lab.supervisor import is_alive

    try:
        counters = fetch_counters(state.links_control_port, token=state.control_token)
    except OSError:
        counters = {}
    servers = []
    for region, server in state.plan["servers"].items():
        pg = lab_server(state.run_dir, server)
        servers.append(
            {
                "name": server["name"],
                "region": region,
                "port": server["port"],
                "running": pg.is_running(),
                "pid": pg.pid,
                "in_doubt": _in_doubt(state, region),
            }
        )
    return {
        "topology": state.topology,
        "preset": state.preset.name,
        "scale": state.scale,
        "balancer_url": state.balancer_url,
        # Alive: the recorded pid still runs what the lab started there (not whatever reused it).
        "processes": [{**vars(p), "alive": is_alive(p)} for p in state.processes],
        "servers": servers,
        "links": [{**link, "counters": counters.get(link["name"], {})} for link in state.plan["links"]],
        "balancer": _balancer_status(state),
        **_survival_status(state),
    }


def _in_doubt(state: LabState, region: str) -> int | None:
    """MovR two-phase commit parts prepared on the server that is primary for `region` now (None: not
    reachable). A few for a moment is normal; parts that stay are what the app servers' resolvers finish."""
    from movr.store.twophase import prepared_parts_statement

    query = prepared_parts_statement(0)
    try:
        with psycopg.connect(state.server_dsn(region), connect_timeout=2, autocommit=True) as conn:
            return len(conn.execute(query.sql, query.params).fetchall())
    except psycopg.Error:
        return None


def _survival_status(state: LabState) -> dict[str, Any]:
    """Survival goals only: each group's primary now, its standbys as the primary sees them, and the recent
    faults and controller decisions. Absent for a lab without a survival goal."""
    from movr.lab.standbys import replication_status
    from movr.lab.survival import current_primaries, layout_of, sync_standby_names

    layout = layout_of(state)
    if layout is None:
        return {}
    primaries = current_primaries(state)
    groups = []
    for group, info in layout["groups"].items():
        primary = primaries[group]
        try:
            replication = {
                r["application_name"]: r for r in replication_status(layout["servers"][primary]["port"], state.passfile)
            }
            reachable = True
        except Exception:  # a lost primary: report it, do not fail the status
            replication, reachable = {}, False
        members = []
        for name in info["members"]:
            server = layout["servers"][name]
            pg = lab_server(state.run_dir, server)
            seen = replication.get(server["app_name"], {})
            members.append(
                {
                    "name": name,
                    "region": server["region"],
                    "port": server["port"],
                    "role": "primary" if name == primary else "standby",
                    "running": pg.is_running(),
                    "state": "primary" if name == primary else seen.get("state"),
                    "sync_state": seen.get("sync_state"),
                    "replay_lag_bytes": seen.get("replay_lag_bytes"),
                }
            )
        groups.append(
            {
                "group": group,
                "goal": info["goal"],
                "allowed_regions": info["allowed"],
                "primary": primary,
                "primary_region": layout["servers"][primary]["region"],
                "primary_reachable": reachable,
                "synchronous_standby_names": sync_standby_names(layout, group, primary),
                "members": members,
            }
        )
    survival = state.survival
    return {
        "survival": {
            "goal": layout["goal"],
            "super_regions": layout["super_regions"],
            "placement_restricted": layout["placement_restricted"],
            "directory_regions": layout.get("directory_regions"),
            "groups": groups,
            "partitions": survival.get("partitions", []),
            "lost_regions": survival.get("lost_regions", []),
            "failovers": survival.get("failovers", []),
            "events": survival.get("events", [])[-15:],
        }
    }


def _balancer_status(state: LabState) -> dict[str, Any]:
    try:
        return control.call(f"{state.balancer_url}/_balancer/status", state.control_token, timeout=3)
    except (OSError, ValueError):
        return {"reachable": False}
