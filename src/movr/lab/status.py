"""What `movr lab status` reports: every process, server, link and the balancer, as one dict."""

from __future__ import annotations

from typing import Any

import psycopg

from movr.lab import control
from movr.lab.console.page import console_url
from movr.lab.links import fetch_links
from movr.lab.processes import is_alive
from movr.lab.standbys import replication_status
from movr.lab.state import LabState, SurvivalRecord, lab_server
from movr.lab.survival import current_primaries, sync_standby_names
from movr.store.claims import unsettled_claims_statement


def collect_status(state: LabState) -> dict[str, Any]:
    try:
        live = {link["name"]: link for link in fetch_links(state.links_control_port, token=state.control_token)}
    except OSError:
        live = {}
    regions = state.plan.server_regions()
    servers = []
    for region, server in state.plan.servers.items():
        pg = lab_server(state.run_dir, server)
        servers.append(
            {
                "name": server.name,
                "region": region,
                "port": server.port,
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
        "console_url": console_url(state) if state.balancer_url else None,  # carries the token: 0600 state
        # Alive: the recorded pid still runs what the lab started there (not whatever reused it).
        "processes": [{**vars(p), "alive": is_alive(p)} for p in state.processes],
        "servers": servers,
        # Each link with the region its far end runs in now (a standby's, after a failover): the status matrix.
        "links": [
            {
                **link.to_dict(),
                "dst_region": regions.get(link.dst),
                "down": live.get(link.name, {}).get("down", False),
                "counters": live.get(link.name, {}).get("counters", {}),
            }
            for link in state.plan.links
        ],
        "balancer": _balancer_status(state),
        **_survival_status(state),
    }


def _in_doubt(state: LabState, region: str) -> int | None:
    """Username claims on the server that is primary for `region` now that no resolver has seen settled
    (None: not reachable). A few for a moment is normal (sign-ups in flight); the app servers' resolvers
    settle or clear the rest (movr.store.claims)."""
    query = unsettled_claims_statement()
    try:
        with psycopg.connect(state.server_dsn(region), connect_timeout=2, autocommit=True) as conn:
            return conn.execute(query.sql, query.params).fetchone()[0]
    except psycopg.Error:
        return None


def _survival_status(state: LabState) -> dict[str, Any]:
    """Survival goals only: each group's primary now, its standbys as the primary sees them, and the recent
    faults and controller decisions. Absent for a lab without a survival goal."""
    layout = state.plan.survival
    if layout is None:
        return {}
    primaries = current_primaries(state)
    groups = []
    for group, info in layout.groups.items():
        primary = primaries[group]
        try:
            replication = {r["application_name"]: r for r in replication_status(layout.port(primary), state.passfile)}
            reachable = True
        except Exception:  # a lost primary: report it, do not fail the status
            replication, reachable = {}, False
        members = []
        for name in info.members:
            server = layout.servers[name]
            pg = lab_server(state.run_dir, server)
            seen = replication.get(server.app_name, {})
            members.append(
                {
                    "name": name,
                    "region": server.region,
                    "port": server.port,
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
                "goal": info.goal,
                "allowed_regions": info.allowed,
                "primary": primary,
                "primary_region": layout.servers[primary].region,
                "primary_reachable": reachable,
                "synchronous_standby_names": sync_standby_names(layout, group, primary),
                "members": members,
            }
        )
    survival = state.survival or SurvivalRecord(primaries={})
    return {
        "survival": {
            "goal": layout.goal,
            "super_regions": layout.super_regions,
            "placement_restricted": layout.placement_restricted,
            "directory_regions": layout.directory_regions,
            "groups": groups,
            "partitions": survival.partitions,
            "lost_regions": survival.lost_regions,
            "failovers": survival.failovers,
            "events": survival.events[-15:],
        }
    }


def _balancer_status(state: LabState) -> dict[str, Any]:
    if state.balancer_url is None:  # a servers-only lab
        return {"reachable": False}
    try:
        return control.call(f"{state.balancer_url}/_balancer/status", state.control_token, timeout=3)
    except (OSError, ValueError):
        return {"reachable": False}
