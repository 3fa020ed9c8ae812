"""How the three data-homing experiments show a result, so their tables, charts and report sections read
alike: one title, one layout of figure columns, one kind of bar chart, one way to state a claim."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from movr.bench.experiment import Check
from movr.bench.markup import esc, table
from movr.bench.output import console, ms


def cell(rows: Sequence[Mapping[str, Any]], **match: Any) -> Any:
    """The first row whose values match every keyword (a result row by variant, locality, region...)."""
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def claim(name: str, measured: Any, holds: bool) -> Check:
    """A claim of the tracker, judged on the run, with what was measured for it."""
    return Check(name, holds, f"measured {json.dumps(measured, default=str)}")


@dataclass
class Grid:
    """One table of a result: printed by the command (rich) and shown in its report section (HTML)."""

    what: str
    columns: Sequence[str]
    left: Collection[str]  # the text columns, aligned left; figures are aligned right
    rows: list[list[str]] = field(default_factory=list)

    def title(self, result: Mapping[str, Any]) -> str:
        s = result["settings"]
        return (
            f"{self.what} — preset {result['preset']}, delays x{result['scale']:g}, {s['duration_s']:g} s measured "
            f"after {s['warmup_s']:g} s warm-up; ms"
        )

    def rich(self, result: Mapping[str, Any]) -> Table:
        shown = Table(title=self.title(result))
        for column in self.columns:
            shown.add_column(column, justify="left" if column in self.left else "right")
        for row in self.rows:
            shown.add_row(*row)
        return shown

    def html(self, result: Mapping[str, Any]) -> list[str]:
        numeric_from = 1 + max((i for i, column in enumerate(self.columns) if column in self.left), default=0)
        rows = [[esc(value) for value in row] for row in self.rows]
        return [f"<h4>{esc(self.title(result))}</h4>", table(self.columns, rows, numeric_from=numeric_from)]


# A line under the tables: (text, warning?).
Note = tuple[str, bool]


def show(result: Mapping[str, Any], grids: Sequence[Grid], notes: Sequence[Note]) -> None:
    """The command's terminal output: every table, then the notes (warnings in yellow)."""
    for grid in grids:
        console.print(grid.rich(result))
    for text, warning in notes:
        console.print(text, style="yellow" if warning else None, markup=False)


def section(result: Mapping[str, Any], grids: Sequence[Grid], notes: Sequence[Note]) -> list[str]:
    """The report's section: the same tables and notes as the terminal's, in HTML."""
    parts = [piece for grid in grids for piece in grid.html(result)]
    return parts + [f"<p{' class=warn' if warning else ''}>{esc(text)}</p>" for text, warning in notes]


# The figures `ycsb` and `insert` show for one client and one kind of operation, after the cells naming them.
CLIENT_FIGURE_COLUMNS = ("p50", "p95", "p99", "floor p50", "ops/s", "WAN rt/op")


def client_figure_cells(row: Mapping[str, Any], op: str) -> list[str]:
    """The `CLIENT_FIGURE_COLUMNS` of one result row for operation `op`."""
    f = row[op]
    wan = row["round_trips"]["wan_per_op"]
    return [
        ms(f["p50_ms"]),
        ms(f["p95_ms"]),
        ms(f["p99_ms"]),
        ms(f["floor"]["p50_ms"]),
        f"{row['throughput_ops_s']:.0f}",
        f"{wan:.2f}" if wan is not None else "-",
    ]


def error_notes(rows: Sequence[Mapping[str, Any]]) -> list[Note]:
    """A warning for every client that had failed operations."""
    return [
        (f"{row['region']}: {row['errors']} failed operations; first: {row['first_error']}", True)
        for row in rows
        if row.get("errors")
    ]


def bars(axis: Any, groups: list[str], series: Mapping[str, Sequence[Mapping[str, Any] | None]]) -> None:
    """Grouped bars of p50 with a whisker up to p99 and the floor (p50 of floors) marked."""
    width = 0.8 / max(1, len(series))
    for index, (name, cells) in enumerate(series.items()):
        positions = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        p50 = [(c or {}).get("p50_ms") or 0.0 for c in cells]
        p99 = [(c or {}).get("p99_ms") or 0.0 for c in cells]
        floors = [((c or {}).get("floor") or {}).get("p50_ms") or float("nan") for c in cells]
        whisker = [[0.0] * len(p50), [max(0.0, hi - lo) for lo, hi in zip(p50, p99, strict=True)]]
        axis.bar(positions, p50, width * 0.95, yerr=whisker, capsize=2, label=name)
        axis.scatter(
            positions, floors, marker="_", s=150, color="black", zorder=3, label="floor" if index == 0 else None
        )
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels(groups, fontsize=8)
    axis.set_yscale("log")
    axis.grid(axis="y", alpha=0.3)


def read_update_grid(plt: Any, columns: int) -> tuple[Any, Any]:
    """A figure of reads (top row) over updates (bottom row), `columns` panels wide, each row on one y axis:
    the layout of the `ycsb` and `rehome` charts, one column per locality or contention level."""
    return plt.subplots(2, columns, figsize=(5 * columns, 8), squeeze=False, sharey="row")
