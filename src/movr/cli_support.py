"""What every `movr` subcommand shares: the one-line error with exit status 2, and the run directory.

`cli_errors` is the one place where the errors of the layers below (bad settings, an unknown preset, a
lab that is not running, a spec the target cannot run...) become what a user of the command line sees:
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from movr.domain.errors import ConfigError
from movr.geo import Preset, PresetError, load_preset

# Errors that any command may meet, whatever it drives: settings and presets.
COMMON_ERRORS: tuple[type[Exception], ...] = (ConfigError, PresetError)


class CliError(click.ClickException):
    """Bad input or an impossible request: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"movr: {self.message}", err=True)


@contextlib.contextmanager
def cli_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Inside the block, an error of `kinds` (or of COMMON_ERRORS) ends the command as a CliError.

    Each error's message is already written for a user (it says what is wrong and what to do), so it is
    the line itself; the traceback is dropped. Also a decorator: `@cli_errors(LabError)`.
    """
    try:
        yield
    except (*COMMON_ERRORS, *kinds) as err:
        raise CliError(str(err)) from None


def default_run_dir() -> Path:
    return Path.cwd() / "run"


def preset_or_fail(source: str) -> Preset:
    """The preset a user named (a packaged name or a TOML file), or the one-line reason it cannot be used."""
    with cli_errors():
        return load_preset(source)
