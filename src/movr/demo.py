"""`movr demo` (`make demo`): the main job. A three-region lab, sample data, the journey (movr.bench.journey,
through the one MovR client) from three cities beside its floor, then the web app at one URL."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

console = Console()
DEMO_CITIES = ("rome", "new york", "los angeles")


def run_demo(*, run_dir: Path, serve: bool, preset_source: str = "gcp-3", scale: float = 1.0, repeats: int = 3) -> None:
    """The main job: a three-region lab, sample data, a journey table from three cities, then serve."""
    # The lab, the benchmarks and the store are heavy: `movr --help` must not import them.
    from movr.bench.journey import run_journey, summarize
    from movr.bench.journey_views import print_tables
    from movr.lab.cli import wait_for_interrupt
    from movr.lab.supervisor import lab_down, lab_up, processes_left
    from movr.store.sample import SAMPLE_PASSWORD, generate

    lab_dir = run_dir / "demo"
    try:
        with console.status("standing up a three-region lab") as status:
            state = lab_up(lab_dir, preset_source, "multi", scale, say=lambda m: status.update(m))
        preset = state.preset
        console.print(
            f"[bold green]lab up[/]: {len(state.plan.servers)} PostgreSQL 18 primaries, "
            f"{len(state.plan.links)} links, {len(state.plan.app_regions)} app servers, one balancer"
        )
        data = generate(preset, users=90, vehicles=180, rides=360, seed=42)
        with Progress(console=console) as progress:
            task = progress.add_task("loading sample data", total=data.total)
            state.load_sample(data, lambda n: progress.advance(task, n))
        runs = []
        with Progress(console=console) as progress:
            task = progress.add_task("journeys", total=len(DEMO_CITIES) * (repeats + 1))
            for city in DEMO_CITIES:
                run_journey(state, preset, city, scale)  # warm-up, not recorded
                progress.advance(task)
                for _ in range(repeats):
                    runs.append(run_journey(state, preset, city, scale))
                    progress.advance(task)
        rows = summarize(runs)
        print_tables(
            {
                "rows": rows,
                "cities": list(DEMO_CITIES),
                "topologies": ["multi"],
                "preset": preset.name,
                "scale": scale,
                "repeats": repeats,
                "ratios": {c: {} for c in DEMO_CITIES},
            }
        )
        console.print(
            "ms (floor): median client-observed latency and its physical floor; "
            "stmts/WAN: SQL statements and WAN round trips the links counted."
        )
        if serve:
            console.print(
                f"\n[bold]MovR is at {state.balancer_url}[/] — sign up, or log in as any sample user "
                f"(e.g. {data.users[0]['username']}, password {SAMPLE_PASSWORD!r}); "
                "pick where you browse from in the navigation."
            )
            wait_for_interrupt()
    finally:
        console.print("stopping the lab")
        lab_down(lab_dir)
        left = processes_left(lab_dir)
        if left:
            console.print(f"[red]still running after lab down:[/] {', '.join(str(p.pid) for p in left)}")
        else:
            console.print("stopped; nothing left running.")
