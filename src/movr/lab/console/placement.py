"""Rows per table on each region's primary server (`movr lab placement`, and the console's placement view),
and the domicile audit's verdict (movr.lab.domicile) for a lab whose survival goal sets super regions or
restricts placement. Blocking: the console calls these in a worker thread.
"""

from __future__ import annotations

from typing import Any

import psycopg

from movr.lab.domicile import AuditReport, audit
from movr.lab.state import LabState
from movr.lab.survival import current_primaries

TABLES = ("users", "vehicles", "rides", "promo_codes", "username_directory")
CONNECT_TIMEOUT_S = 3


def rows_per_server(state: LabState) -> list[dict[str, Any]]:
    """For each region's server that is primary now: rows per table (`rows`), or why it could not be read."""
    primaries = current_primaries(state)
    regions = state.plan.server_regions()
    found = []
    for region in state.plan.servers:
        name = primaries[region]
        row: dict[str, Any] = {
            "server": name,
            "region": regions.get(name, region),
            "group": region,
            "role": "primary",
            "running": True,
            "rows": None,
            "error": None,
        }
        try:
            with psycopg.connect(state.server_dsn(region), connect_timeout=CONNECT_TIMEOUT_S) as conn:
                # Table names from the constant above, never from a request.
                row["rows"] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        except psycopg.Error as err:
            row["running"] = False
            row["error"] = str(err).strip().splitlines()[0] if str(err).strip() else "not reachable"
        found.append(row)
    return found


def domiciled(state: LabState) -> bool:
    """Does the lab domicile data (super regions, or placement restricted), so that the audit has a verdict?"""
    layout = state.plan.survival
    return layout is not None and (bool(layout.super_regions) or layout.placement_restricted)


def verdict(report: AuditReport) -> str:
    audited = len(report.scanned)
    if report.violations:
        rows = sum(v.rows for v in report.violations)
        return f"{rows} row(s) stored outside the regions their city allows ({len(report.violations)} violation(s))"
    if report.not_audited:
        return f"not proven: {len(report.not_audited)} server(s) could not be read ({audited} audited, clean)"
    return f"no row is stored outside the regions its city allows ({audited} servers audited)"


def describe(state: LabState) -> dict[str, Any]:
    """`GET /lab/api/placement` (docs/console-api.md)."""
    domicile = None
    if domiciled(state):
        report = audit(state)
        domicile = {
            "ok": report.ok,
            "verdict": verdict(report),
            "violations": len(report.violations),
            "not_audited": report.not_audited,
        }
    return {"tables": list(TABLES), "servers": rows_per_server(state), "domicile": domicile}
