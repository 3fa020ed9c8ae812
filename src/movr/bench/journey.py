"""`movr bench journey`: the tutorial's eight steps from client cities, per topology, against the floor.

Per step: what the client saw (latency: `client_ms`, from the request leaving the client's socket to the
answer's last bytes reaching it, by the kernel's receive stamp; `client_process_ms`, the same timed around
the client's call, with its own request building, wake-up and parsing), what the app reported (statements,
SQL time, serving region, password hashing), what the links counted (WAN round trips of the app's database
traffic), and the step's physical floor (law 3, movr.floors). The steps are movr.bench.client's `Journey`;
`run_journey` walks them against a running lab (`movr demo`, the lab console and the lab tests use it as it
is); how a result is shown is movr.bench.journey_views.

Beside the floor, each step's *limit*: what this machine cannot go below with no code of ours
(`step_limit`, from the probe `machine_idle_cost` measures in the same run). Where a goal is out of reach
the limit shows why, and `x_limit` how close the lab comes to it.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress

from movr import floors
from movr.bench.client import STEPS, ApiError, Client, Journey
from movr.bench.echo import EchoServer
from movr.bench.experiment import Experiment, ExperimentError, choices, console, lab_options, preset_option, split
from movr.bench.journey_views import checks, figures, headline, print_tables, report
from movr.geo import Preset
from movr.lab.layout import TOPOLOGIES
from movr.lab.state import LabState


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
    # WAN round trips per link: parallel round trips on different links cost one round, so the step's WAN
    # rounds are the most any one link carried (a sign-up's claims: one on each other region's link).
    wan_by_link: dict[str, int] = field(default_factory=dict)
    app_ms: float = 0.0  # the app's own time for the request, SQL included (X-Movr-App-Ms)
    client_process_ms: float = 0.0  # client_ms plus the client's own work around it (see the module's doc)
    client_rtt_ms: float = 0.0  # the floor's parts: the client's round trip to the serving region,
    sql_floor_ms: float = 0.0  # and the network time SQL cannot avoid (WAN and in-region round trips, commit waits)
    sql_rounds: int = 0  # the floor's SQL round trips, WAN and in-region: each one wakes a PostgreSQL

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
    steps: list[StepResult] = field(default_factory=list)


def wan_app_links(state: LabState) -> set[str]:
    """The links that carry app servers' database traffic across regions."""
    return {link.name for link in state.plan.links if link.name.startswith("app:") and link.kind == "wan"}


def round_trips_by_link(links: set[str], before: dict[str, dict], after: dict[str, dict]) -> dict[str, int]:
    """The round trips each of `links` carried between two counter readings (links that carried none left out)."""
    counts = {
        name: after[name]["round_trips"] - before.get(name, {}).get("round_trips", 0) for name in links if name in after
    }
    return {name: count for name, count in sorted(counts.items()) if count}


def round_trips_on(links: set[str], before: dict[str, dict], after: dict[str, dict]) -> int:
    return sum(round_trips_by_link(links, before, after).values())


def run_journey(state: LabState, preset: Preset, city: str, scale: float, username: str | None = None) -> JourneyRun:
    """One journey from `city` through the lab's balancer, each step beside its floor and the links' count."""
    # The supervisor pulls in the whole lab; `movr` builds every bench command at start-up.
    from movr.lab.supervisor import link_counters
    from movr.lab.survival import current_primaries

    username = username or f"j{city.replace(' ', '')[:10]}{secrets.token_hex(4)}"
    layout = state.plan.survival  # a survival goal: commits also wait for a synchronous standby
    # After a failover a region's data is served from where its new primary runs: the floor follows it.
    primaries = current_primaries(state) if layout is not None else None
    run = JourneyRun(state.topology, city, username)
    journey = Journey(city, username)
    client = Client(state.balancer_url or "", reconnect=True)
    wan_links = wan_app_links(state)
    try:
        for step in STEPS:
            request = journey.request(step)
            before = link_counters(state)
            started = time.perf_counter()
            reply = client.send(request, journey.headers())
            client_process_ms = (time.perf_counter() - started) * 1000
            after = link_counters(state)
            journey.keep(step, reply.raise_for_status(request))
            figures_ = reply.figures
            floor = floors.step_floor(
                preset,
                scale,
                state.topology,
                step,
                city=city,
                served_by=figures_.served_by,
                statements=figures_.statements,
                cpu_ms=figures_.cpu_ms,
                layout=layout,
                primaries=primaries,
            )
            if floor is None:
                raise ApiError(f"{step} from {city}: the response did not say which region served it")
            run.steps.append(
                StepResult(
                    step=step,
                    status=reply.status,
                    client_ms=reply.latency_ms,
                    client_process_ms=client_process_ms,
                    statements=figures_.statements,
                    sql_ms=figures_.sql_ms,
                    cpu_ms=figures_.cpu_ms,
                    served_by=figures_.served_by,
                    data_regions=list(figures_.data_regions),
                    app_wan_round_trips=figures_.wan_round_trips,
                    link_wan_round_trips=round_trips_on(wan_links, before, after),
                    wan_by_link=round_trips_by_link(wan_links, before, after),
                    floor_ms=floor.total_ms,
                    unavoidable_wan=floor.wan_round_trips,
                    app_ms=figures_.app_ms,
                    client_rtt_ms=floor.client_rtt_ms,
                    sql_floor_ms=floor.sql_ms,
                    sql_rounds=floor.wan_round_trips + floor.local_round_trips,
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
                "client_process_ms": statistics.median(r.client_process_ms for r in results),
                "sql_ms": statistics.median(r.sql_ms for r in results),
                "floor_ms": statistics.median(r.floor_ms for r in results),
                "sql_floor_ms": statistics.median(r.sql_floor_ms for r in results),
                "sql_rounds": max(r.sql_rounds for r in results),
                "excess_ms": statistics.median(r.excess_ms for r in results),
                "excess_parts_ms": {
                    part: statistics.median(r.excess_parts()[part] for r in results) for part in ("sql", "app", "path")
                },
                "statements": max(r.statements for r in results),
                "wan_round_trips": max(r.link_wan_round_trips for r in results),
                # The most any one link carried in a journey, and the links of the journey that crossed most.
                "wan_rounds": max(max(r.wan_by_link.values(), default=0) for r in results),
                "wan_by_link": max((r.wan_by_link for r in results), key=lambda links: sum(links.values())),
                "samples": len(results),
            }
        )
        # The goals' ratio: the median the client saw over what physics demands (law 3).
        rows[-1]["x_floor"] = rows[-1]["client_ms"] / rows[-1]["floor_ms"] if rows[-1]["floor_ms"] > 0 else None
    return rows


def ratios(rows: list[dict[str, Any]], city: str) -> dict[str, float | None]:
    """Average SQL and client-observed latency of a city's steps whose data is homed there (all but
    sign-up), per topology, and the SQL latency's ratios against `multi`.

    With the rows' limits (`add_limits`), the SQL side of this machine's limit too: `multi_sql_limit_ms`,
    the same average of multi's SQL at its limit (each step's local rounds x (in-region RTT + PostgreSQL
    after idling)); `hybrid/multi_at_limit`, the most `hybrid/multi` can be here with hybrid's SQL as
    measured; `multi_sql_x_limit`, how close multi's measured SQL comes to that limit."""

    def avg(topology: str, figure: str) -> float | None:
        values = [
            r[figure]
            for r in rows
            if r["topology"] == topology
            and r["city"] == city
            and r["step"] != "sign up"
            and r["statements"] > 0
            and figure in r
        ]
        return statistics.mean(values) if values else None

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    result: dict[str, float | None] = {f"{t}_avg_sql_ms": avg(t, "sql_ms") for t in TOPOLOGIES}
    result |= {f"{t}_avg_client_ms": avg(t, "client_ms") for t in TOPOLOGIES}
    multi = result["multi_avg_sql_ms"]
    for topology in ("single", "hybrid"):
        result[f"{topology}/multi"] = over(result[f"{topology}_avg_sql_ms"], multi)
    limit = avg("multi", "sql_limit_ms")
    result["multi_sql_limit_ms"] = limit
    result["hybrid/multi_at_limit"] = over(result["hybrid_avg_sql_ms"], limit)
    result["multi_sql_x_limit"] = over(multi, limit)
    return result


IDLE_GAP_S = 0.02  # about the gap a journey leaves between requests (a client<->region round trip)
# The processes a request passes besides PostgreSQL, each woken once: a bare process hop each in the limit.
# The links are not among them: they stand for the network, whose RTT is in the floor, and they wake on
# their own timer while they hold a round trip back (`movr bench path`: after idling, a link costs its RTT).
# Nor is the balancer: it carries the access link, whose legs set off when their bytes reached it
# (movr.lab.links_access), so it too wakes and works while the bytes travel.
PROCESSES_PASSED = ("app server",)


def machine_idle_cost(dsn: str, samples: int = 100, env: dict[str, str] | None = None) -> dict[str, float]:
    """A `SELECT 1` and a committed one-row INSERT on a local server, straight (no link), and a bare process
    hop (movr.bench.echo: a round trip to a minimal echo server this probe starts and always stops), each
    back to back and after the machine idled for IDLE_GAP_S; medians of `samples`, interleaved. `env`: for
    the echo server's environment (the lab's marker).

    On small virtual machines a process woken after a few idle milliseconds runs several times slower than
    one kept busy (caches, CPU wake-up), and every request of a journey wakes the balancer, an app server, a
    link and a database in turn. No code of ours runs in the figures after idling: they make this machine's
    limit (`step_limit`), not any floor.
    """
    import psycopg  # heavy, and only a run needs it: `movr` builds every bench command at start-up

    def timed(probe: Any, *args: Any) -> float:
        started = time.perf_counter()
        probe(*args)
        return (time.perf_counter() - started) * 1000

    def sql(statement: str) -> None:
        conn.execute(statement).fetchall()

    select, insert = "SELECT 1", "INSERT INTO movr_idle_probe DEFAULT VALUES RETURNING id"
    kinds = ("select_busy", "select_after_idle", "insert_after_idle", "hop_busy", "hop_after_idle")
    figures_: dict[str, list[float]] = {kind: [] for kind in kinds}
    with psycopg.connect(dsn, autocommit=True) as conn, EchoServer(env) as echo:
        conn.execute("CREATE TABLE IF NOT EXISTS movr_idle_probe (id bigserial PRIMARY KEY)")
        try:
            for _ in range(20):
                timed(sql, select)
                timed(echo.round_trip)
            for _ in range(samples):  # interleaved, so that a machine whose speed drifts affects all alike
                time.sleep(IDLE_GAP_S)  # the gap being measured, not a distance
                figures_["select_after_idle"].append(timed(sql, select))
                figures_["select_busy"].append(timed(sql, select))
                time.sleep(IDLE_GAP_S)
                figures_["insert_after_idle"].append(timed(sql, insert))
                time.sleep(IDLE_GAP_S)
                figures_["hop_after_idle"].append(timed(echo.round_trip))
                figures_["hop_busy"].append(timed(echo.round_trip))
        finally:
            conn.execute("DROP TABLE movr_idle_probe")
    return {"gap_ms": IDLE_GAP_S * 1000, **{f"{k}_ms": statistics.median(v) for k, v in figures_.items()}}


def step_limit(row: Mapping[str, Any], idle: Mapping[str, float]) -> dict[str, float]:
    """This machine's limit for one step's summary row: what it cannot go below with no code of ours.

        limit = the step's floor
              + for each SQL round of the floor (WAN and in-region: `sql_rounds`), PostgreSQL's own time
                after idling: the committed INSERT for a step that writes (movr.floors.JOURNEY_WRITES, what
                its SQL does: a log-in only reads, a log-out writes), else `SELECT 1`
              + a bare process hop after idling for each process it passes besides PostgreSQL
                (PROCESSES_PASSED)

    Returns `limit_ms`; `sql_limit_ms` (the SQL floor plus those rounds); `limit_x_floor`, how much of
    "x times the floor" the machine alone takes; `x_limit`, the measured client latency over the limit."""
    per_round = idle["insert_after_idle_ms"] if row["step"] in floors.JOURNEY_WRITES else idle["select_after_idle_ms"]
    postgresql = row["sql_rounds"] * per_round
    limit = row["floor_ms"] + postgresql + len(PROCESSES_PASSED) * idle["hop_after_idle_ms"]
    return {
        "limit_ms": limit,
        "sql_limit_ms": row["sql_floor_ms"] + postgresql,
        "limit_x_floor": limit / row["floor_ms"],
        "x_limit": row["client_ms"] / limit,
    }


def add_limits(rows: list[dict[str, Any]], idle: Mapping[str, float] | None) -> None:
    """Each row's limit (`step_limit`), when the run measured this machine (`machine_idle_cost`)."""
    if idle:
        for row in rows:
            row |= step_limit(row, idle)


def _labels(preset: Preset, cities: list[str], topologies_text: str, survival_text: str) -> list[str]:
    """The topologies to run: plain ones, then `multi+<goal>` for each survival goal (movr.lab.survival)."""
    unknown = [c for c in cities if not preset.is_city(c)]
    if unknown:
        raise ExperimentError(f"not cities of preset {preset.name}: {', '.join(unknown)}")
    goals = choices(survival_text, "--survival", ("zone", "region")) if split(survival_text) else ()
    return [*choices(topologies_text, "--topologies", TOPOLOGIES), *(f"multi+{goal}" for goal in goals)]


def run(
    run_dir: Path,
    *,
    preset: str,
    scale: float,
    cities_text: str,
    topologies_text: str,
    survival_text: str,
    no_super_regions: bool,
    repeats: int,
) -> dict[str, Any]:
    """Every topology in its own lab (always taken down), a warm-up journey from each city, then `repeats`
    measured journeys from each. `multi+zone` and `multi+region` are multi with standbys and synchronous
    commits, so the table shows what each survival goal costs."""
    # The supervisor and the sample data pull in the whole lab and store; `movr` builds every bench
    # command at start-up.
    from movr.lab.processes import RUN_DIR_MARKER
    from movr.lab.supervisor import SurvivalOptions, lab_down, lab_up
    from movr.store.sample import generate

    chosen = preset_option(preset)
    cities = split(cities_text)
    labels = _labels(chosen, cities, topologies_text, survival_text)
    runs: list[JourneyRun] = []
    idle_cost: dict[str, float] | None = None
    with Progress(console=console) as progress:
        task = progress.add_task("journeys", total=len(labels) * len(cities) * repeats)
        for label in labels:
            topology, _, goal = label.partition("+")
            survival = SurvivalOptions(goal, not no_super_regions) if goal else None  # type: ignore[arg-type]
            lab_dir = run_dir / f"journey-{label}"
            progress.update(task, description=f"{label}: standing the lab up")
            state = lab_up(lab_dir, preset, topology, scale, survival=survival)  # type: ignore[arg-type]
            try:
                n = len(chosen.cities)
                state.load_sample(generate(chosen, users=n * 3, vehicles=n * 3, rides=n * 3, seed=7))
                if idle_cost is None:
                    progress.update(task, description=f"{label}: timing this machine's idle wake-up")
                    marker = {RUN_DIR_MARKER: str(lab_dir.resolve())}  # `processes_left` finds a lost echo server
                    idle_cost = machine_idle_cost(state.server_dsn(chosen.primary_region), env=marker)
                progress.update(task, description=f"{label}: warming up")
                for city in cities:
                    run_journey(state, chosen, city, scale)  # warm pools and caches; not recorded
                for city in cities:
                    for _ in range(repeats):
                        progress.update(task, description=f"{label}: from {city}")
                        measured = run_journey(state, chosen, city, scale)
                        measured.topology = label
                        runs.append(measured)
                        progress.advance(task)
            finally:
                lab_down(lab_dir)
    rows = summarize(runs)
    add_limits(rows, idle_cost)
    return {
        "preset": chosen.name,
        "scale": scale,
        "repeats": repeats,
        "cities": cities,
        "topologies": labels,
        "machine": {"idle_cost": idle_cost},
        "rows": rows,
        "ratios": {city: ratios(rows, city) for city in cities},
        "runs": [asdict(r) for r in runs],
    }


EXPERIMENT = Experiment(
    name="journey",
    summary="The tutorial's journey through the balancer, from each city, in each topology.",
    run=run,
    options=(
        *lab_options(),
        click.option(
            "--from",
            "cities_text",
            default="rome,new york,los angeles",
            show_default=True,
            help="Comma-separated client cities.",
        ),
        click.option("--topologies", "topologies_text", default="single,hybrid,multi", show_default=True),
        click.option(
            "--survival",
            "survival_text",
            default="",
            help="Also run multi with these survival goals (zone,region): the write latency each goal costs.",
        ),
        click.option(
            "--no-super-regions", is_flag=True, help="With --survival: switch the preset's super regions off."
        ),
        click.option("--repeats", default=5, show_default=True, type=click.IntRange(1, 1000)),
    ),
    tables=print_tables,
    report=report,
    figures=figures,
    checks=checks,
    headline=headline,
    run_dir_help="Where the labs (journey-<topology>/), their logs and the result go.",
)
