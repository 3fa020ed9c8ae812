"""`movr demo` (`make demo`): the main job, the tutorial's story told on this machine.

From Rome, the journey (movr.bench.journey, through the one MovR client) in each topology — `single` (app
and database in the primary region), `hybrid` (an app in every region, the database in the primary region)
and `multi` (an app and a database per region, rows homed by city) — side by side beside its floor, with the
ratio the tutorial quotes; then New York and Los Angeles on `multi`; then the `multi` lab serves the web
app and the lab console at one URL. One lab per topology, one after the other, so that no lab's processes
share the machine with another's journeys; the first two are taken down once Rome's journeys are measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from movr.bench.output import console  # the tables' console: as wide as they are off a terminal too
from movr.lab.layout import TOPOLOGIES, Topology

if TYPE_CHECKING:
    from movr.bench.journey import JourneyRun
    from movr.lab.state import LabState
    from movr.store.sample import SampleData

STORY_CITY = "rome"
DEMO_CITIES = (STORY_CITY, "new york", "los angeles")
# /work/shared/reference: article 000 ("around 150ms" single-region, "under 2.5ms" multi-region, "over 60x").
ARTICLE_CLAIM = "~150 ms → < 2.5 ms, over 60x"
SAMPLE = {"users": 90, "vehicles": 180, "rides": 360, "seed": 42}  # the same rows in every lab


def run_demo(*, run_dir: Path, serve: bool, preset_source: str = "gcp-3", scale: float = 1.0, repeats: int = 3) -> None:
    """The main job: Rome's journey in three labs, two more cities on `multi`, the tables, then serve."""
    # The lab's supervisor, the benchmarks and the store are heavy: loaded when the demo runs, not before.
    from movr.bench.journey import ratios, summarize
    from movr.bench.journey_views import print_tables
    from movr.geo import load_preset
    from movr.lab.cli import wait_for_interrupt
    from movr.lab.console.page import console_url
    from movr.lab.supervisor import LabError, lab_down, processes_left
    from movr.store.sample import SAMPLE_PASSWORD, generate

    preset = load_preset(preset_source)
    missing = [city for city in DEMO_CITIES if not preset.is_city(city)]
    if missing:  # before any lab starts: the story is told from these cities
        raise LabError(
            f"preset {preset.name} has no city {', '.join(missing)}; the demo's journeys start in "
            f"{', '.join(DEMO_CITIES)}"
        )
    data = generate(preset, **SAMPLE)
    labs_dir = run_dir / "demo"
    started: list[Path] = []
    try:
        runs: list[JourneyRun] = []
        for topology in TOPOLOGIES[:-1]:  # single, hybrid: before
            state = _lab(labs_dir, topology, preset_source, scale, data, started)
            runs += _journeys(state, (STORY_CITY,), scale, repeats)
            with _phase(f"{topology}: taking the lab down"):
                lab_down(state.run_dir)
        state = _lab(labs_dir, "multi", preset_source, scale, data, started)
        runs += _journeys(state, DEMO_CITIES, scale, repeats)
        rows = summarize(runs)
        scope = {"rows": rows, "preset": preset.name, "scale": scale, "repeats": repeats}
        story = ratios(rows, STORY_CITY)
        print_tables({**scope, "cities": [STORY_CITY], "topologies": list(TOPOLOGIES), "ratios": {STORY_CITY: story}})
        console.print(f"\n{story_line(STORY_CITY, story, repeats)}\n")
        others = list(DEMO_CITIES[1:])
        print_tables(
            {**scope, "cities": others, "topologies": ["multi"], "ratios": {c: ratios(rows, c) for c in others}}
        )
        console.print(
            "ms (floor): median client-observed latency and its physical floor; SQL ms: the app's SQL time "
            "(X-Movr-Sql-Ms); stmts/WAN: SQL statements and WAN round trips the links counted."
        )
        if serve:
            console.print(
                f"\n[bold]MovR is at {state.balancer_url}[/] — sign up, or log in as any sample user "
                f"(e.g. {data.users[0]['username']}, password {SAMPLE_PASSWORD!r}); "
                "pick where you browse from in the navigation."
            )
            console.print(
                f"[bold]The lab console is at {console_url(state)}[/] — every region, server and link "
                "live, the requests as they cross them; break one and watch what happens."
            )
            wait_for_interrupt()
    finally:
        console.print("stopping the labs")
        left = []
        for lab_dir in started:
            lab_down(lab_dir)
            left += processes_left(lab_dir)
        if left:
            console.print(f"[red]still running after lab down:[/] {', '.join(str(p.pid) for p in left)}")
        else:
            console.print("stopped; nothing left running.")


def story_line(city: str, figures: dict[str, float | None], repeats: int) -> str:
    """The tutorial's comparison, measured: what each ratio divides, and the article's claim beside it.

    `single` keeps the app beside its database, so its SQL stays local and distance shows in what the client
    waits for; `hybrid` brings the app near the client and leaves the database far, so distance shows in SQL.
    """

    def divided(kind: str, slow: str) -> str:
        over, under = figures.get(f"{slow}_avg_{kind}_ms"), figures.get(f"multi_avg_{kind}_ms")
        if over is None or not under:
            return f"{slow} ÷ multi: not measured"
        return f"{slow} {over:.2f} ms ÷ multi {under:.2f} ms = {over / under:.1f}x"

    return (
        f"from {city}, the mean over the steps after sign up of each step's median of {repeats}:\n"
        f"  client latency  {divided('client', 'single')}\n"
        f"  SQL latency     {divided('sql', 'hybrid')}"
        f"   (the article, single region → multi-region, SQL from Rome: {ARTICLE_CLAIM})"
    )


@contextmanager
def _phase(what: str) -> Iterator[Callable[[str], None]]:
    """A phase of the demo under a spinner, then one line saying how long it took (where the time goes)."""
    started = time.perf_counter()
    with console.status(what) as status:
        yield lambda message: status.update(f"{what}: {message}")
    console.print(f"[dim]·[/] {what} [dim]({time.perf_counter() - started:.1f} s)[/]")


def _lab(
    labs_dir: Path, topology: Topology, preset_source: str, scale: float, data: SampleData, started: list[Path]
) -> LabState:
    """Stand up one topology's lab in its own run dir (recorded in `started` first, for the clean-up),
    with the sample data loaded."""
    from movr.lab.supervisor import lab_up

    lab_dir = labs_dir / topology
    started.append(lab_dir)
    with _phase(f"{topology}: standing the lab up") as say:
        state = lab_up(lab_dir, preset_source, topology, scale, say=say)
    plan = state.plan
    console.print(
        f"[bold green]{topology} lab up[/]: {_count(plan.servers, 'PostgreSQL 18 primary', 'PostgreSQL 18 primaries')} "
        f"({', '.join(plan.servers)}), {_count(plan.links, 'link', 'links')}, "
        f"{_count(plan.app_regions, 'app server', 'app servers')} ({', '.join(plan.app_regions)}), one balancer"
    )
    with _phase(f"{topology}: loading sample data"):
        state.load_sample(data)
    return state


def _count(items: Sized, one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


def _journeys(state: LabState, cities: tuple[str, ...], scale: float, repeats: int) -> list[JourneyRun]:
    """A warm-up journey from each city (pools and caches; not recorded), then `repeats` measured ones."""
    from movr.bench.journey import run_journey

    runs = []
    with _phase(f"{state.topology}: journeys from {', '.join(cities)}") as say:
        for city in cities:
            for index in range(repeats + 1):
                say(f"{city}, {'warm-up' if index == 0 else f'{index} of {repeats}'}")
                measured = run_journey(state, state.preset, city, scale)
                if index:
                    runs.append(measured)
    return runs
