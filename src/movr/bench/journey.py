"""`movr bench journey`: the tutorial's eight steps from client cities, per topology, against the floor.

For every step it records what the client saw (latency), what the app reported (statements, SQL time,
the region that served, local CPU work such as password hashing), and what the links counted (WAN
round trips of the app's database traffic). The physical floor of a step (law 3) is

    client<->serving-region RTT + unavoidable WAN round trips x their RTT
    + one intra-region RTT per statement that stays in the region + local CPU work (password hashing)

where the unavoidable WAN round trips depend on the topology: none in `single` (app and data together)
and in `multi` for data homed in the client's region; one per statement to the primary region in
`hybrid`; and for a `multi` sign-up whose username directory is homed elsewhere, the two rounds of a
two-phase commit (prepare, commit) to that region.
"""

from __future__ import annotations

import http.client
import json
import platform
import secrets
import statistics
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from movr import __version__
from movr.bench.plots import save_figure
from movr.cli_support import figure_options
from movr.geo import Preset, load_preset
from movr.lab.layout import TOPOLOGIES
from movr.lab.state import LabState
from movr.store.regional import directory_region

STEPS = ("sign up", "log in", "view vehicles", "add vehicle", "start ride", "end ride", "view rides", "log out")
PASSWORD = "journey-password-1"
console = Console()


@dataclass
class StepResult:
    step: str
    status: int
    client_ms: float
    statements: int
    sql_ms: float
    cpu_ms: float
    served_by: str
    data_regions: list[str]
    app_wan_round_trips: int
    link_wan_round_trips: int
    floor_ms: float
    unavoidable_wan: int
    app_ms: float = 0.0  # the app's own time for the request, SQL included (X-Movr-App-Ms)
    client_rtt_ms: float = 0.0  # the floor's parts: the client's round trip to the serving region,
    sql_floor_ms: float = 0.0  # and the network time SQL cannot avoid (WAN and in-region round trips, commit waits)

    @property
    def excess_ms(self) -> float:
        return self.client_ms - self.floor_ms

    def excess_parts(self) -> dict[str, float]:
        """Where the time above the floor went; the three parts add up to `excess_ms`.

        sql: SQL time beyond its network floor (the database's execution and commit, the driver, the links'
        processing); app: the app's own work between receiving the request and answering (minus SQL and
        deliberate CPU work); path: everything outside the app (balancer, app server, client, the machine
        waking idle processes up).
        """
        return {
            "sql": self.sql_ms - self.sql_floor_ms,
            "app": self.app_ms - self.sql_ms - self.cpu_ms,
            "path": self.client_ms - self.app_ms - self.client_rtt_ms,
        }


@dataclass
class JourneyRun:
    topology: str
    city: str
    username: str
    directory_region: str
    steps: list[StepResult] = field(default_factory=list)


class JourneyError(RuntimeError):
    pass


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class JourneyClient:
    """A MovR user in a city, talking to the balancer's one URL over one kept-alive connection.

    Plain `http.client`: a heavier client library costs milliseconds per request on a small machine,
    and that time would be charged to the lab and the app in every measurement.
    """

    def __init__(self, base_url: str, city: str) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.headers = {"X-Client-City": city, "Accept": "application/json"}
        self.city = city

    def call(self, method: str, path: str, json_body: dict | None = None) -> Reply:
        headers = dict(self.headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.connection.request(method, "/api/v1" + path, body=body, headers=headers)
                response = self.connection.getresponse()
                reply = Reply(response.status, response.headers, response.read())
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle kept-alive connection: reconnect once.
                self.connection.close()
                if attempt == 2:
                    raise
        if reply.status >= 400:
            raise JourneyError(f"{method} {path} -> {reply.status}: {reply.body[:300]!r}")
        return reply

    def close(self) -> None:
        self.connection.close()


def journey_steps(client: JourneyClient, username: str) -> list[tuple[str, Callable[[], Reply]]]:
    """The eight steps, each a closure over what earlier steps returned."""
    found: dict[str, Any] = {}
    city = client.city

    def sign_up() -> Reply:
        return client.call(
            "POST",
            "/users",
            {
                "city": city,
                "username": username,
                "password": PASSWORD,
                "first_name": "Journey",
                "last_name": "Bench",
            },
        )

    def log_in() -> Reply:
        response = client.call("POST", "/sessions", {"username": username, "password": PASSWORD})
        token = response.json().get("token")
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        return response

    def view_vehicles() -> Reply:
        return client.call("GET", f"/cities/{urllib.parse.quote(city)}/vehicles")

    def add_vehicle() -> Reply:
        response = client.call(
            "POST", "/vehicles", {"type": "scooter", "brand": "Vespa", "color": "red", "location": "Main St"}
        )
        found["vehicle"] = response.json()
        return response

    def start_ride() -> Reply:
        response = client.call("POST", "/rides", {"city": city, "vehicle_id": found["vehicle"]["id"]})
        found["ride"] = response.json()
        return response

    def end_ride() -> Reply:
        ride = found["ride"]
        return client.call("PATCH", f"/rides/{urllib.parse.quote(ride['city'])}/{ride['id']}", {"location": "Station"})

    def view_rides() -> Reply:
        return client.call("GET", "/rides")

    def log_out() -> Reply:
        response = client.call("DELETE", "/sessions")
        client.headers.pop("Authorization", None)
        return response

    return list(
        zip(
            STEPS, (sign_up, log_in, view_vehicles, add_vehicle, start_ride, end_ride, view_rides, log_out), strict=True
        )
    )


def unavoidable_wan(
    preset: Preset,
    topology: str,
    step: str,
    served_by: str,
    city: str,
    username: str,
    statements: int,
    directory_regions: list[str] | None = None,
) -> list[float]:
    """The RTTs (ms, unscaled) of the WAN round trips this step cannot avoid in this topology."""
    primary = preset.primary_region
    if topology == "single":
        return []
    if topology == "hybrid":
        return [preset.rtt_ms(served_by, primary)] * statements if served_by != primary else []
    home = preset.region_of(city)
    rtts = [preset.rtt_ms(served_by, home)] * statements if served_by != home else []
    if step == "sign up":
        directory = directory_region(preset, username, directory_regions)
        if directory != served_by:
            rtts += [preset.rtt_ms(served_by, directory)] * 2
    return rtts


def wan_app_links(plan: dict[str, Any]) -> set[str]:
    """The links that carry app servers' database traffic across regions."""
    return {link["name"] for link in plan["links"] if link["name"].startswith("app:") and link["kind"] == "wan"}


def round_trips_on(links: set[str], before: dict[str, dict], after: dict[str, dict]) -> int:
    return sum(
        after[name]["round_trips"] - before.get(name, {}).get("round_trips", 0) for name in links if name in after
    )


def run_journey(state: LabState, preset: Preset, city: str, scale: float, username: str | None = None) -> JourneyRun:
    from movr.lab.links import fetch_counters
    from movr.lab.survival import journey_commit_ms, layout_of

    username = username or f"j{city.replace(' ', '')[:10]}{secrets.token_hex(4)}"
    layout = layout_of(state)  # a survival goal: commits also wait for a synchronous standby
    directories = (layout or {}).get("directory_regions")
    run = JourneyRun(state.topology, city, username, directory_region(preset, username, directories))
    client = JourneyClient(state.balancer_url, city)
    wan_links = wan_app_links(state.plan)
    try:
        for step, call in journey_steps(client, username):
            before = fetch_counters(state.links_control_port, token=state.control_token)
            started = time.perf_counter()
            response = call()
            client_ms = (time.perf_counter() - started) * 1000
            after = fetch_counters(state.links_control_port, token=state.control_token)
            headers = response.headers
            served_by = headers.get("X-Movr-Region", "")
            statements = int(headers.get("X-Movr-Statements", 0))
            cpu_ms = float(headers.get("X-Movr-Cpu-Ms", 0))
            wan = unavoidable_wan(preset, state.topology, step, served_by, city, username, statements, directories)
            # Statements that stay in the region still cross the intra-region network once each.
            local_rtts = max(0, statements - len(wan)) * preset.intra_region_rtt_ms
            commit = journey_commit_ms(layout, preset, step, served_by, city, run.directory_region)
            client_rtt = preset.client_rtt_ms(city, served_by) * scale
            sql_floor = (sum(wan) + local_rtts + commit) * scale
            run.steps.append(
                StepResult(
                    step=step,
                    status=response.status,
                    client_ms=client_ms,
                    statements=statements,
                    sql_ms=float(headers.get("X-Movr-Sql-Ms", 0)),
                    cpu_ms=cpu_ms,
                    served_by=served_by,
                    data_regions=[r for r in headers.get("X-Movr-Data-Regions", "").split(",") if r],
                    app_wan_round_trips=int(headers.get("X-Movr-Wan-Round-Trips", 0)),
                    link_wan_round_trips=round_trips_on(wan_links, before, after),
                    floor_ms=client_rtt + sql_floor + cpu_ms,
                    unavoidable_wan=len(wan),
                    app_ms=float(headers.get("X-Movr-App-Ms", 0)),
                    client_rtt_ms=client_rtt,
                    sql_floor_ms=sql_floor,
                )
            )
    finally:
        client.close()
    return run


def summarize(runs: list[JourneyRun]) -> list[dict[str, Any]]:
    """Median per (topology, city, step) over repeated journeys."""
    groups: dict[tuple[str, str, str], list[StepResult]] = {}
    for run in runs:
        for result in run.steps:
            groups.setdefault((run.topology, run.city, result.step), []).append(result)
    rows = []
    for (topology, city, step), results in groups.items():
        rows.append(
            {
                "topology": topology,
                "city": city,
                "step": step,
                "served_by": results[0].served_by,
                "client_ms": statistics.median(r.client_ms for r in results),
                "sql_ms": statistics.median(r.sql_ms for r in results),
                "floor_ms": statistics.median(r.floor_ms for r in results),
                "excess_ms": statistics.median(r.excess_ms for r in results),
                "excess_parts_ms": {
                    part: statistics.median(r.excess_parts()[part] for r in results) for part in ("sql", "app", "path")
                },
                "statements": max(r.statements for r in results),
                "wan_round_trips": max(r.link_wan_round_trips for r in results),
                "samples": len(results),
            }
        )
    return rows


def find_row(rows: list[dict[str, Any]], topology: str, city: str, step: str) -> dict[str, Any] | None:
    """The summary row of one step of one city's journey in one topology."""
    return next((r for r in rows if r["topology"] == topology and r["city"] == city and r["step"] == step), None)


def ratios(rows: list[dict[str, Any]], city: str) -> dict[str, float | None]:
    """Average SQL latency of a city's steps whose data is homed there (all but sign-up), per topology,
    and the ratios against `multi`."""

    def avg_sql(topology: str) -> float | None:
        values = [
            r["sql_ms"]
            for r in rows
            if r["topology"] == topology and r["city"] == city and r["step"] != "sign up" and r["statements"] > 0
        ]
        return statistics.mean(values) if values else None

    result: dict[str, float | None] = {f"{t}_avg_sql_ms": avg_sql(t) for t in TOPOLOGIES}
    multi = result["multi_avg_sql_ms"]
    for topology in ("single", "hybrid"):
        value = result[f"{topology}_avg_sql_ms"]
        result[f"{topology}/multi"] = value / multi if value is not None and multi else None
    return result


def run_benchmark(
    *,
    preset_source: str,
    scale: float,
    cities: list[str],
    topologies: list[str],
    repeats: int,
    run_dir: Path,
    json_path: Path | None,
    plot_path: Path | None,
    super_regions: bool = True,
) -> dict[str, Any]:
    """`topologies` may name survival variants of multi, `multi+zone` and `multi+region` (movr.lab.survival):
    the same journey with standbys and synchronous commits, so the table shows what each goal costs."""
    from movr.lab.supervisor import SurvivalOptions, lab_down, lab_up
    from movr.store.sample import generate

    preset = load_preset(preset_source)
    runs: list[JourneyRun] = []
    idle_cost: dict[str, float] | None = None
    with Progress(console=console) as progress:
        task = progress.add_task("journeys", total=len(topologies) * len(cities) * repeats)
        for label in topologies:
            topology, _, goal = label.partition("+")
            survival = SurvivalOptions(goal, super_regions) if goal else None  # type: ignore[arg-type]
            lab_dir = run_dir / f"journey-{label}"
            progress.update(task, description=f"{label}: standing the lab up")
            state = lab_up(lab_dir, preset, preset_source, topology, scale, survival=survival)
            try:
                n = len(preset.cities)
                state.load_sample(generate(preset, users=n * 3, vehicles=n * 3, rides=n * 3, seed=7))
                if idle_cost is None:
                    progress.update(task, description=f"{label}: timing this machine's idle wake-up")
                    idle_cost = machine_idle_cost(state.server_dsn(preset.primary_region))
                progress.update(task, description=f"{label}: warming up")
                for city in cities:
                    run_journey(state, preset, city, scale)  # warm pools and caches; not recorded
                for city in cities:
                    for _ in range(repeats):
                        progress.update(task, description=f"{label}: from {city}")
                        run = run_journey(state, preset, city, scale)
                        run.topology = label
                        runs.append(run)
                        progress.advance(task)
            finally:
                lab_down(lab_dir)
    rows = summarize(runs)
    result = {
        "benchmark": "journey",
        "preset": preset.name,
        "scale": scale,
        "repeats": repeats,
        "cities": cities,
        "topologies": topologies,
        "versions": {"movr": __version__, "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "idle_cost": idle_cost},
        "rows": rows,
        "ratios": {city: ratios(rows, city) for city in cities},
        "runs": [{**asdict(run), "steps": [asdict(s) for s in run.steps]} for run in runs],
    }
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str))
    if plot_path:
        plot_journey(rows, cities, topologies, plot_path, preset.name, scale)
    return result


IDLE_GAP_S = 0.02  # about the gap a journey leaves between requests (a client<->region round trip)


def machine_idle_cost(dsn: str, samples: int = 100) -> dict[str, float]:
    """A `SELECT 1` and a committed one-row INSERT on a local server, straight (no link), back to back and
    after the machine idled for IDLE_GAP_S.

    Not part of any floor: context for reading the excess. On small virtual machines a process woken after
    a few idle milliseconds runs several times slower than one kept busy (caches, CPU wake-up), and every
    request of a journey wakes the balancer, an app server, a link and a database in turn. The figures after
    idling are also a lower bound for local SQL in `multi` (add the in-region RTT): no code of ours runs in them.
    """
    import psycopg

    def timed(conn: psycopg.Connection, statement: str) -> float:
        started = time.perf_counter()
        conn.execute(statement).fetchall()
        return (time.perf_counter() - started) * 1000

    select, insert = "SELECT 1", "INSERT INTO movr_idle_probe DEFAULT VALUES RETURNING id"
    figures: dict[str, list[float]] = {"select_busy": [], "select_after_idle": [], "insert_after_idle": []}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS movr_idle_probe (id bigserial PRIMARY KEY)")
        try:
            for _ in range(20):
                timed(conn, select)
            for _ in range(samples):  # in pairs, so that a machine whose speed drifts affects both alike
                time.sleep(IDLE_GAP_S)  # the gap being measured, not a distance
                figures["select_after_idle"].append(timed(conn, select))
                figures["select_busy"].append(timed(conn, select))
                time.sleep(IDLE_GAP_S)
                figures["insert_after_idle"].append(timed(conn, insert))
        finally:
            conn.execute("DROP TABLE movr_idle_probe")
    return {"gap_ms": IDLE_GAP_S * 1000, **{f"{k}_ms": statistics.median(v) for k, v in figures.items()}}


def print_report(result: dict[str, Any]) -> None:
    rows = result["rows"]
    for city in result["cities"]:
        table = Table(
            title=f"journey from {city} — preset {result['preset']}, delays x{result['scale']:g}, "
            f"median of {result['repeats']}"
        )
        table.add_column("step")
        for topology in result["topologies"]:
            table.add_column(f"{topology}\nms (floor)", justify="right")
            table.add_column(f"{topology}\nstmts/WAN", justify="right")
        for step in STEPS:
            cells = [step]
            for topology in result["topologies"]:
                row = find_row(rows, topology, city, step)
                if row is None:
                    cells += ["", ""]
                    continue
                cells.append(f"{row['client_ms']:.1f} ({row['floor_ms']:.1f})")
                cells.append(f"{row['statements']}/{row['wan_round_trips']}")
            table.add_row(*cells)
        console.print(table)
        console.print(excess_table(rows, city, [t for t in result["topologies"] if t.startswith("multi")]))
        ratio = result["ratios"][city]
        parts = [
            f"avg SQL ms {t}: {ratio[f'{t}_avg_sql_ms']:.2f}"
            for t in result["topologies"]
            if ratio.get(f"{t}_avg_sql_ms") is not None
        ]
        for topology in ("single", "hybrid"):
            if ratio.get(f"{topology}/multi"):
                parts.append(f"{topology}/multi = {ratio[f'{topology}/multi']:.1f}x")
        console.print("   ".join(parts))
    idle = result.get("machine", {}).get("idle_cost")
    if idle:
        console.print(
            f"this machine: SELECT 1 on a local server takes {idle['select_busy_ms']:.2f} ms back to back and "
            f"{idle['select_after_idle_ms']:.2f} ms after {idle['gap_ms']:.0f} ms idle (a committed INSERT: "
            f"{idle['insert_after_idle_ms']:.2f} ms); every request wakes the balancer, an app server, the links "
            "and a database in turn"
        )


def excess_table(rows: list[dict[str, Any]], city: str, topologies: list[str]) -> Table:
    """Where each step's time above the floor went (medians; see StepResult.excess_parts)."""
    table = Table(title=f"time above the floor from {city}, ms: total = SQL beyond its network + app + path")
    table.add_column("step")
    for topology in topologies:
        table.add_column(f"{topology}\ntotal = sql + app + path", justify="right")
    for step in STEPS:
        cells = [step]
        for topology in topologies:
            row = find_row(rows, topology, city, step)
            parts = row and row.get("excess_parts_ms")
            cells.append(
                f"{row['excess_ms']:.1f} = {parts['sql']:.1f} + {parts['app']:.1f} + {parts['path']:.1f}"
                if row and parts
                else ""
            )
        table.add_row(*cells)
    return table


def plot_journey(
    rows: list[dict[str, Any]], cities: list[str], topologies: list[str], path: Path, preset: str, scale: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cities), figsize=(6 * len(cities), 4.5), squeeze=False, sharey=True)
    width = 0.8 / max(1, len(topologies))
    for axis, city in zip(axes[0], cities, strict=True):
        for index, topology in enumerate(topologies):
            found = [find_row(rows, topology, city, step) for step in STEPS]
            values = [row["client_ms"] if row else 0.0 for row in found]
            floors = [row["floor_ms"] if row else 0.0 for row in found]
            positions = [i + index * width for i in range(len(STEPS))]
            axis.bar(positions, values, width, label=topology)
            axis.scatter(
                positions, floors, marker="_", color="black", s=120, zorder=3, label="floor" if index == 0 else None
            )
        axis.set_title(f"from {city}")
        axis.set_xticks([i + width * (len(topologies) - 1) / 2 for i in range(len(STEPS))])
        axis.set_xticklabels(STEPS, rotation=35, ha="right")
        axis.set_ylabel("client-observed ms (median)")
        axis.legend()
    fig.suptitle(f"MovR journey per topology — preset {preset}, delays x{scale:g}; black marks: physical floor")
    save_figure(fig, path)


@click.command("journey")
@click.option("--preset", default="gcp-3", show_default=True, help="Preset name or TOML file.")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.001, 100))
@click.option(
    "--from",
    "cities_text",
    default="rome,new york,los angeles",
    show_default=True,
    help="Comma-separated client cities.",
)
@click.option("--topologies", "topologies_text", default="single,hybrid,multi", show_default=True)
@click.option(
    "--survival",
    "survival_text",
    default="",
    help="Also run multi with these survival goals (zone,region): the write latency each goal costs.",
)
@click.option("--no-super-regions", is_flag=True, help="With --survival: switch the preset's super regions off.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1, 1000))
@figure_options("PNG bar chart", run_dir=lambda: Path.cwd() / "run" / "bench")
def journey_command(
    preset: str,
    scale: float,
    cities_text: str,
    topologies_text: str,
    survival_text: str,
    no_super_regions: bool,
    repeats: int,
    json_path: Path | None,
    plot_path: Path | None,
    run_dir: Path,
) -> None:
    """The tutorial's journey through the balancer, from each city, in each topology."""
    from movr.cli_support import CliError, preset_or_fail

    chosen = preset_or_fail(preset)
    cities = [c.strip() for c in cities_text.split(",") if c.strip()]
    unknown = [c for c in cities if not chosen.is_city(c)]
    if unknown:
        raise CliError(f"not cities of preset {chosen.name}: {', '.join(unknown)}")
    topologies = [t.strip() for t in topologies_text.split(",") if t.strip()]
    bad = [t for t in topologies if t not in TOPOLOGIES]
    if bad or not topologies:
        raise CliError(f"unknown topology {', '.join(bad) or '(none)'}: choose from {', '.join(TOPOLOGIES)}")
    goals = [g.strip() for g in survival_text.split(",") if g.strip()]
    if [g for g in goals if g not in ("zone", "region")]:
        raise CliError(f"unknown survival goal in {survival_text!r}: choose from zone, region")
    topologies += [f"multi+{goal}" for goal in goals]
    if plot_path is None and json_path is not None:
        plot_path = json_path.with_suffix(".png")
    result = run_benchmark(
        preset_source=preset,
        scale=scale,
        cities=cities,
        topologies=topologies,
        repeats=repeats,
        run_dir=run_dir,
        json_path=json_path,
        plot_path=plot_path,
        super_regions=not no_super_regions,
    )
    print_report(result)
    if json_path:
        console.print(f"figures: {json_path}" + (f", chart: {plot_path}" if plot_path else ""))
