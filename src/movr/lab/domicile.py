"""`movr lab audit-domicile`: prove that no row is stored outside the regions its city allows.

Data domiciling in the lab (ARCHITECTURE.md, semantics map): a region's rows live on its primary and on its
standbys, and standbys are placed only in `PlacementSpec.allowed_regions(home)` (super region; home only
under PLACEMENT RESTRICTED). The audit does not trust that layout: it reads every running server - primaries
and hot standbys alike - and counts, per table and city, the rows it holds. A row of a city whose home region
does not allow the server's region is a violation.

Audited: every table with a `city` column - users, vehicles, rides, idempotency_keys (REGIONAL BY ROW: the
stored answers to retried writes are personal data too) and the lab's
`username_directory` (the global-uniqueness index: its entries name a user and a city, so they are personal
data too; under domiciling the lab homes them only in regions every city allows). GLOBAL tables (promo_codes)
are stored in every region by definition and carry no city. A server that is down cannot be read: it is
listed as not audited, and the audit fails, since its disk was not proven clean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from movr.lab.state import LabState
from movr.lab.survival import server_index

AUDITED_TABLES = ("users", "vehicles", "rides", "idempotency_keys", "username_directory")


@dataclass
class Violation:
    server: str
    server_region: str
    table: str
    city: str
    home_region: str
    allowed: list[str]
    rows: int


@dataclass
class AuditReport:
    allowed: dict[str, list[str]]  # home region -> regions its rows may be stored in
    scanned: dict[str, dict[str, int]] = field(default_factory=dict)  # server -> table -> rows
    regions: dict[str, str] = field(default_factory=dict)  # server -> its region
    violations: list[Violation] = field(default_factory=list)
    not_audited: dict[str, str] = field(default_factory=dict)  # server -> why

    @property
    def ok(self) -> bool:
        return not self.violations and not self.not_audited

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def allowed_regions(state: LabState) -> dict[str, list[str]]:
    """Home region -> where its rows may live: from the survival layout (the spec it was laid out from);
    a lab without a survival goal places nothing beyond the home primary, and restricts nothing."""
    layout = state.plan.survival
    if layout is not None:
        return {group: list(info.allowed) for group, info in layout.groups.items()}
    regions = state.preset.region_names
    return {region: list(regions) for region in regions}


def audit(state: LabState) -> AuditReport:
    preset = state.preset
    report = AuditReport(allowed=allowed_regions(state))
    for name, info in server_index(state).items():
        report.regions[name] = info.region
        dsn = state.dsn(info.port, connect_timeout=3)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                counts: dict[str, int] = {}
                for table in AUDITED_TABLES:
                    rows = conn.execute(f"SELECT city, count(*) FROM {table} GROUP BY city ORDER BY city").fetchall()
                    counts[table] = sum(n for _, n in rows)
                    for city, n in rows:
                        home = preset.region_of(city) if preset.is_city(city) else None
                        allowed = report.allowed.get(home, []) if home else []
                        if info.region not in allowed:
                            report.violations.append(
                                Violation(name, info.region, table, city, home or "(unknown city)", allowed, n)
                            )
                report.scanned[name] = counts
        except psycopg.Error as err:
            report.not_audited[name] = str(err).strip().splitlines()[0] if str(err).strip() else "not reachable"
    return report
