"""One translation of the layers' errors into the command line's: one line, `movr: <reason>`, exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from movr.cli import main
from movr.cli_support import CliError, cli_errors
from movr.domain.errors import ConfigError
from movr.geo import PresetError


def one_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    (line,) = result.output.strip().splitlines()
    assert line.startswith("movr: ")
    return line


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["load", "--database-url", "mysql://somewhere/movr"], "unsupported database URL scheme in 'mysql'"),
        (["load", "--preset", "atlantis", "--database-url", "postgresql://u@h/movr"], "no preset named 'atlantis'"),
        (["demo", "--preset", "atlantis"], "no preset named 'atlantis'"),
        (["db", "render", "--preset", "atlantis"], "no preset named 'atlantis'"),
        (["db", "init", "--url", "mysql://somewhere/movr"], "expected a cockroachdb:// URL"),
        (["deploy", "render", "--image", "movr:1", "--preset", "gcp-3"], "--out is required"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(args: list[str], reason: str):
    assert reason in one_line(args)


@pytest.mark.parametrize("args", [["load"], ["lab", "status"], ["lab", "placement"], ["lab", "fail", "region", "x"]])
def test_no_lab_is_one_line_that_says_what_to_do(tmp_path: Path, args: list[str]):
    line = one_line([*args, "--run-dir", str(tmp_path / "nothing-here")])
    assert "lab" in line


class Refused(Exception):
    """An error some layer raises with a message written for a user."""


def test_only_the_named_errors_become_cli_errors():
    with pytest.raises(CliError, match=r"^no such thing$"), cli_errors(Refused):
        raise Refused("no such thing")
    for common in (ConfigError("bad url"), PresetError("no preset")):  # whatever the command names
        with pytest.raises(CliError), cli_errors():
            raise common
    with pytest.raises(ZeroDivisionError), cli_errors(Refused):  # a bug stays a bug, with its traceback
        raise ZeroDivisionError
