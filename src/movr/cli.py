"""The `movr` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from movr import __version__
from movr.cli_support import CliError, default_run_dir, preset_or_fail


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
    from rich.progress import Progress

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
    from movr.store.factory import ConfigError, make_backend

    try:
        if database_url:
            return make_backend(preset, database_url=database_url)
        from movr.lab.state import LabState, LabStateError

        try:
            state = LabState.read(run_dir)
        except LabStateError as err:
            raise CliError(f"{err}; pass --database-url or start a lab with 'movr lab up'") from None
        return state.loader_backend()
    except ConfigError as err:
        raise CliError(str(err)) from None


@main.group("bench")
def bench_group() -> None:
    """Experiments that measure every request against the physical floor."""


@bench_group.command("actions")
@click.option("--iterations", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--database-url", envvar="MOVR_DATABASE_URL", help="Use this PostgreSQL (default: start one).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=default_run_dir)
def bench_actions_command(iterations: int, database_url: str | None, run_dir: Path) -> None:
    """Each action's statement count and latency on one local PostgreSQL server."""
    from movr.demo import run_action_report

    run_action_report(iterations=iterations, database_url=database_url, run_dir=run_dir)


@main.command("demo")
@click.option("--no-serve", is_flag=True, help="Exit after the report instead of serving the web app.")
@click.option("--preset", default="gcp-3", show_default=True, help="Preset name or TOML file.")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.001, 100))
@click.option("--run-dir", type=click.Path(path_type=Path), default=default_run_dir)
def demo_command(no_serve: bool, preset: str, scale: float, run_dir: Path) -> None:
    """The main job: a three-region lab, sample data, a journey table from three cities, then the web app."""
    from movr.demo import run_demo
    from movr.geo import PresetError, load_preset
    from movr.lab.supervisor import LabError

    try:
        load_preset(preset)
        run_demo(run_dir=run_dir, serve=not no_serve, preset_source=preset, scale=scale)
    except (PresetError, LabError) as err:
        raise CliError(str(err)) from None


def _register_commands() -> None:
    """Subcommands live beside what they drive; imported here, after `main` exists."""
    from movr.bench.failover import failover_command
    from movr.bench.journey import journey_command
    from movr.bench.links import links_command
    from movr.bench.report import report_command
    from movr.bench.throughput import throughput_command
    from movr.bench.ycsb import insert_command, rehome_command, ycsb_command
    from movr.deploy.cli import deploy_group
    from movr.lab.cli import lab_group
    from movr.placement.cli import db_group
    from movr.web.serve import serve_command

    for group, command in (
        (bench_group, links_command),
        (bench_group, journey_command),
        (bench_group, ycsb_command),
        (bench_group, insert_command),
        (bench_group, rehome_command),
        (bench_group, failover_command),
        (bench_group, throughput_command),
        (bench_group, report_command),
        (main, lab_group),
        (main, db_group),
        (main, serve_command),
        (main, deploy_group),
    ):
        group.add_command(command)


_register_commands()


if __name__ == "__main__":
    sys.exit(main())
