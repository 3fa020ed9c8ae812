"""`make demo`: the main job, on the embedded default."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from movr.geo import load_preset

console = Console()


def run_action_report(*, iterations: int, database_url: str | None, run_dir: Path) -> None:
    """Start one embedded PostgreSQL (unless given a URL), load it, and report every action's cost."""
    from movr.bench.actions import measure_actions
    from movr.store.backend import PostgresBackend
    from movr.store.sample import generate, load_sample
    from movr.store.schema import create_schema

    preset = load_preset("gcp-3")
    with ExitStack() as stack:
        if database_url is None:
            from movr.lab.pgserver import running_server

            with console.status("starting an embedded PostgreSQL 18 server"):
                server = stack.enter_context(running_server(run_dir / "actions", "local"))
                server.create_database("movr")
            database_url = server.dsn("movr")
            console.print(f"PostgreSQL 18 on 127.0.0.1:{server.port} (data in {server.base_dir})")
        create_schema(database_url)
        backend = PostgresBackend(database_url.replace("postgresql+psycopg://", "postgresql://"), preset)
        stack.callback(backend.close)
        data = generate(preset, users=90, vehicles=180, rides=360, seed=42)
        with Progress(console=console) as progress:
            task = progress.add_task("loading sample data", total=data.total)
            load_sample(backend, data, lambda n: progress.advance(task, n))
            figures = measure_actions(backend, iterations, progress)
    table = Table(title=f"MovR actions on one local server ({iterations} runs each)")
    table.add_column("action")
    table.add_column("statements", justify="right")
    table.add_column("median ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for figure in figures:
        table.add_row(figure.action, str(figure.statements), f"{figure.median_ms:.2f}", f"{figure.p95_ms:.2f}")
    console.print(table)
    console.print("authenticate includes verifying an argon2id hash (19 MiB, 2 passes): CPU work, not SQL.")
    console.print("server stopped; nothing left running.")


DEMO_CITIES = ("rome", "new york", "los angeles")


def run_demo(*, run_dir: Path, serve: bool, preset_source: str = "gcp-3", scale: float = 1.0, repeats: int = 3) -> None:
    """The main job: a three-region lab, sample data, a journey table from three cities, then serve."""
    from movr.bench.journey import print_report, run_journey, summarize
    from movr.lab.cli import wait_for_interrupt
    from movr.lab.supervisor import lab_down, lab_up, processes_left
    from movr.store.sample import SAMPLE_PASSWORD, generate

    preset = load_preset(preset_source)
    lab_dir = run_dir / "demo"
    try:
        with console.status("standing up a three-region lab") as status:
            state = lab_up(lab_dir, preset, preset_source, "multi", scale, say=lambda m: status.update(m))
        console.print(
            f"[bold green]lab up[/]: {len(state.plan['servers'])} PostgreSQL 18 primaries, "
            f"{len(state.plan['links'])} links, {len(state.plan['app_regions'])} app servers, one balancer"
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
        print_report(
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
