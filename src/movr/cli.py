"""The `movr` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.progress import Progress

from movr import __version__
from movr.bench.experiment import command_for
from movr.bench.registry import registry
from movr.bench.report import report_command
from movr.cli_support import CliError, cli_errors, default_run_dir, preset_or_fail
from movr.deploy.cli import deploy_group
from movr.lab.cli import lab_group
from movr.placement.cli import db_group
from movr.web.serve import serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="movr")
def main() -> None:
    """MovR Global: a multi-region vehicle-sharing app, its one-machine lab, and its benchmarks."""


@main.command("load")
@click.option("--preset", default="gcp-3", show_default=True, help="Preset name or TOML file.")
@click.option("--database-url", envvar="MOVR_DATABASE_URL", help="Load into this database (default: the running lab).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=default_run_dir, help="The lab's run directory.")
@click.option("--users", default=90, show_default=True, type=click.IntRange(0, 1_000_000))
@click.option("--vehicles", default=180, show_default=True, type=click.IntRange(0, 1_000_000))
@click.option("--rides", default=360, show_default=True, type=click.IntRange(0, 10_000_000))
@click.option("--seed", default=42, show_default=True, type=int)
def load_command(
    preset: str, database_url: str | None, run_dir: Path, users: int, vehicles: int, rides: int, seed: int
) -> None:
    """Replace the data with deterministic sample users, vehicles and rides."""
    # Start-up time: the store (psycopg pools, argon2) is for the commands that touch a database.
    from movr.store.sample import SAMPLE_PASSWORD, generate, load_sample

    chosen = preset_or_fail(preset)
    backend = _backend_for(chosen, database_url, run_dir)
    try:
        data = generate(chosen, users=users, vehicles=vehicles, rides=rides, seed=seed)
        with Progress() as progress:
            task = progress.add_task("loading", total=data.total)
            load_sample(backend, data, lambda n: progress.advance(task, n))
    finally:
        backend.close()
    click.echo(
        f"loaded {users} users, {vehicles} vehicles, {rides} rides (seed {seed}); "
        f"every sample user's password is {SAMPLE_PASSWORD!r}"
    )


def _backend_for(preset, database_url: str | None, run_dir: Path):
    # Start-up time: `movr --help` and the commands that never load data import neither the store nor the lab.
    from movr.lab.state import LabState, LabStateError
    from movr.store.factory import make_backend

    with cli_errors():
        if database_url:
            return make_backend(preset, database_url=database_url)
        try:
            state = LabState.read(run_dir)
        except LabStateError as err:
            raise CliError(f"{err}; pass --database-url or start a lab with 'movr lab up'") from None
        return state.loader_backend()


@main.group("bench")
def bench_group() -> None:
    """Experiments that measure every request against the physical floor."""


@main.command("demo")
@click.option("--no-serve", is_flag=True, help="Exit after the tables, stopping every lab, instead of serving.")
@click.option("--preset", default="gcp-3", show_default=True, help="Preset name or TOML file.")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.001, 100))
@click.option("--run-dir", type=click.Path(path_type=Path), default=default_run_dir)
def demo_command(no_serve: bool, preset: str, scale: float, run_dir: Path) -> None:
    """The main job: Rome's journey in single, hybrid and multi labs side by side, New York and Los Angeles
    on multi, then the multi lab's web app and console."""
    # Start-up time: the lab and the benchmarks are heavy, and only this command needs them.
    from movr.demo import run_demo
    from movr.lab.supervisor import LabError

    preset_or_fail(preset)
    with cli_errors(LabError):
        run_demo(run_dir=run_dir, serve=not no_serve, preset_source=preset, scale=scale)


def _register_commands() -> None:
    """Subcommands live beside what they drive (none of them imports this module)."""
    for group, command in (
        (bench_group, report_command),
        (main, lab_group),
        (main, db_group),
        (main, serve_command),
        (main, deploy_group),
    ):
        group.add_command(command)
    for experiment in registry().experiments.values():
        bench_group.add_command(command_for(experiment))


_register_commands()


if __name__ == "__main__":
    sys.exit(main())
