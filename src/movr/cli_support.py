"""What every `movr` subcommand shares: the one-line error with exit status 2, and the run directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from movr.geo import Preset, PresetError, load_preset

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """Bad input or an impossible request: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"movr: {self.message}", err=True)


def default_run_dir() -> Path:
    return Path.cwd() / "run"


def preset_or_fail(source: str) -> Preset:
    """The preset a user named (a packaged name or a TOML file), or the one-line reason it cannot be used."""
    try:
        return load_preset(source)
    except PresetError as err:
        raise CliError(str(err)) from None


def figure_options(picture: str, run_dir: Callable[[], Path]) -> Callable[[F], F]:
    """`--json`, `--plot` (a PNG: `picture`, next to the JSON by default) and `--run-dir`, as the benchmarks
    that stand up their own lab and write their figures take them."""
    options = [
        click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write every figure here."),
        click.option(
            "--plot", "plot_path", type=click.Path(path_type=Path), help=f"{picture} (default: next to --json)."
        ),
        click.option("--run-dir", type=click.Path(path_type=Path), default=run_dir, help="The lab and its logs."),
    ]

    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
