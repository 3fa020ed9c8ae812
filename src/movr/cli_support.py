"""What every `movr` subcommand shares: the one-line error with exit status 2, and the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import click

from movr.geo import Preset, PresetError, load_preset


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
