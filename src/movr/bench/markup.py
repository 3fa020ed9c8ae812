"""The cells and tables every experiment's report section is made of (HTML, escaped here), so that every
section of `movr bench report` reads alike: numbers right-aligned, measured beside floor, "÷ floor" (law 3).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from movr.bench.output import ms

P50_P99 = ("p50_ms", "p99_ms")
P50_P95_P99 = ("p50_ms", "p95_ms", "p99_ms")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return ms(value, digits)
    return esc(value)


def ratio(measured: float | None, floor: float | None) -> str:
    """measured / floor, the yardstick of law 3."""
    if measured is None or not floor:
        return "–"
    return f"{measured / floor:.2f}×"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric_from: int = 1) -> str:
    """An HTML table; cells are already-escaped HTML. Columns from `numeric_from` on are right-aligned."""
    head = "".join(f"<th{' class=n' if i >= numeric_from else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f"<td{' class=n' if i >= numeric_from else ''}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def verdict(holds: bool | None) -> str:
    if holds is None:
        return "<span class=muted>not judged</span>"
    return "<span class=ok>holds</span>" if holds else "<span class=bad>does not hold</span>"


def checks_list(checks: Sequence[Mapping[str, Any]]) -> str:
    """A result's checks (movr.bench.experiment.Check, as the JSON holds them), each with its verdict."""
    if not checks:
        return ""
    items = "".join(
        f"<li>{verdict(check.get('holds'))}: {esc(check.get('name', ''))}"
        + (f" <span class=muted>— {esc(check['detail'])}</span>" if check.get("detail") else "")
        + "</li>"
        for check in checks
    )
    return f"<ul class=checks>{items}</ul>"


def figures_cells(f: Mapping[str, Any] | None, percentiles: Sequence[str] = P50_P99) -> list[str]:
    """The percentiles of a latency summary, then its floor's p50 and the p50's ratio to that floor."""
    f = f or {}
    floor = (f.get("floor") or {}).get("p50_ms")
    return [*(num(f.get(p)) for p in percentiles), num(floor), ratio(f.get("p50_ms"), floor)]
