"""What one request cost and where it was served (law 2): the figures that movr.web.telemetry writes into
each response's `Server-Timing` and `X-Movr-*` headers and movr.web.metrics adds to /metrics. A module of its
own so that both can import it, and neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    served_by: str
    data_regions: tuple[str, ...]
    statements: int
    sql_ms: float
    wan_round_trips: int
    app_ms: float
    cpu_ms: float

    @property
    def server_timing(self) -> str:
        return (
            f"app;dur={self.app_ms:.1f}, "
            f'sql;dur={self.sql_ms:.1f};desc="{self.statements} statements", '
            f'wan;desc="{self.wan_round_trips} round trips"'
        )
