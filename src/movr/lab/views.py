"""How `movr lab status` and `movr lab audit-domicile` draw what they found: rich tables that name every
process, server and region whole at 80 columns. The links are one matrix per purpose (`link_matrices`): a row
per region a link leaves from, a column per server it reaches, each cell what that link adds and counted."""

from __future__ import annotations

import datetime as dt

from rich.console import Console
from rich.table import Table

from movr.lab.domicile import AuditReport


def print_status(console: Console, status: dict) -> None:
    """`movr lab status`: `status` is movr.lab.status.collect_status's."""
    console.print(
        f"[bold]{status['topology']}[/] lab, preset {status['preset']}, delays x{status['scale']:g}, "
        + (f"balancer {status['balancer_url']}" if status["balancer_url"] else "servers and links only")
    )
    if status.get("console_url"):
        # On a line of its own: at 80 columns the URL (its token included) still reads whole.
        console.print("lab console (the URL carries the lab's token):")
        console.print(status["console_url"], soft_wrap=True)
    processes = Table(title="processes")
    for column in ("name", "kind", "pid", "port", "alive"):
        processes.add_column(column)
    for p in status["processes"]:
        processes.add_row(p["name"], p["kind"], str(p["pid"]), str(p["port"] or ""), "yes" if p["alive"] else "NO")
    console.print(processes)
    servers = Table(title="database servers")
    for column in ("server", "region", "port", "running", "unsettled claims"):
        servers.add_column(column)
    for server in status["servers"]:
        in_doubt = server["in_doubt"]
        servers.add_row(
            server["name"],
            server["region"],
            str(server["port"]),
            "yes" if server["running"] else "NO",
            "unreachable" if in_doubt is None else str(in_doubt),
        )
    console.print(servers)
    for matrix in link_matrices(status["links"]):
        console.print(matrix)
    console.print(f"[dim]{LINK_CELL_LEGEND}[/]")
    if "survival" in status:
        print_survival(console, status["survival"])


LINK_PURPOSES = {
    "app": "app servers to databases",
    "repl": "GLOBAL-table replication",
    "standby": "standbys to their primary",
    "client": "benchmark clients to databases",
}
LINK_CELL_LEGEND = "links: each cell is the RTT the link adds, round trips, connections, bytes to / from the server"


def link_matrices(links: list[dict]) -> list[Table]:
    """The links as one matrix per purpose: a row per region they leave from, a column per server they reach
    (its region below its name), each cell the round-trip time the link adds and what it counted."""
    by_purpose: dict[str, list[dict]] = {}
    for link in links:
        by_purpose.setdefault(link["name"].partition(":")[0], []).append(link)
    tables = []
    for purpose, members in by_purpose.items():
        sources = list(dict.fromkeys(link["src"] for link in members))
        targets = list(dict.fromkeys(link["dst"] for link in members))
        regions = {link["dst"]: link.get("dst_region") or "" for link in members}
        table = Table(title=f"{purpose} links: {LINK_PURPOSES.get(purpose, purpose)}")
        table.add_column("from \\ to", no_wrap=True)
        for target in targets:
            table.add_column(f"{target}\n[dim]{regions[target]}[/]", justify="right", no_wrap=True)
        cells = {(link["src"], link["dst"]): link for link in members}
        for source in sources:
            table.add_row(source, *(_link_cell(cells.get((source, target))) for target in targets))
        tables.append(table)
    return tables


def _link_cell(link: dict | None) -> str:
    if link is None:
        return "-"
    c = link.get("counters", {})
    lines = [
        f"{2 * link['one_way_ms']:.2f} ms" + (" [bold red]DOWN[/]" if link.get("down") else ""),
        f"{c.get('round_trips', '?')} rt",
        f"{c.get('connections_total', '?')} conn",
        f"{_bytes(c.get('bytes_c2s'))} / {_bytes(c.get('bytes_s2c'))}",
    ]
    return "\n".join(lines)


def _bytes(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def print_survival(console: Console, survival: dict) -> None:
    """A table per region's data (its goal, its primary now, its standbys as the primary sees them), narrow
    enough for 80 columns with every server named whole; then faults and the controller's decisions."""
    console.print(f"[bold]survival goal {survival['goal']}[/]: each region's data, its primary now and its standbys")
    for group in survival["groups"]:
        lost = "" if group["primary_reachable"] else " [bold red]LOST[/]"
        table = Table(
            title=f"{group['group']} ({group['goal']} goal): primary {group['primary']} "
            f"in {group['primary_region']}{lost}",
            caption=f"commits wait for {group['synchronous_standby_names']}",
        )
        for column in ("standby", "region", "state", "sync", "lag bytes"):
            table.add_column(column, justify="right" if column == "lag bytes" else "left", no_wrap=column != "sync")
        for member in group["members"]:
            if member["role"] == "primary":
                continue
            table.add_row(
                member["name"],
                member["region"],
                (member["state"] or "-") if member["running"] else "[bold red]NOT RUNNING[/]",
                member["sync_state"] or "-",
                "" if member["replay_lag_bytes"] is None else str(member["replay_lag_bytes"]),
            )
        console.print(table)
    if survival["partitions"] or survival["lost_regions"]:
        parts = [" | ".join(p) for p in survival["partitions"]]
        console.print(f"faults: lost regions {survival['lost_regions'] or '-'}; partitions {parts or '-'}")
    if survival["events"]:
        events = Table(title="recent faults and controller decisions")
        events.add_column("time")
        events.add_column("event")
        events.add_column("what")
        for event in survival["events"]:
            when = dt.datetime.fromtimestamp(event["time"]).strftime("%H:%M:%S.%f")[:-3]
            events.add_row(when, event["kind"], event["message"])
        console.print(events)


def print_audit(console: Console, report: AuditReport) -> None:
    """`movr lab audit-domicile`: rows per server, where each region's rows may be, and every violation."""
    table = Table(title="rows per server (every table with a city)")
    table.add_column("server")
    table.add_column("region")
    for name in ("users", "vehicles", "rides", "username_directory"):
        table.add_column(name, justify="right")
    for server, counts in report.scanned.items():
        table.add_row(server, report.regions[server], *(str(counts[t]) for t in counts))
    console.print(table)
    for home, allowed in report.allowed.items():
        console.print(f"  rows of {home} cities may be stored in: {', '.join(allowed)}")
    for server, why in report.not_audited.items():
        console.print(f"[red]not audited[/]: {server} ({report.regions[server]}): {why}")
    for v in report.violations:
        console.print(
            f"[bold red]VIOLATION[/]: {v.rows} {v.table} row(s) of {v.city} (home {v.home_region}, allowed "
            f"{', '.join(v.allowed) or 'nowhere'}) stored on {v.server} in {v.server_region}"
        )
    console.print(
        "[bold green]domicile audit passed[/]: every row is inside the regions its city allows"
        if report.ok
        else "[bold red]domicile audit failed[/]"
    )
