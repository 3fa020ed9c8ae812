"""One shape for every experiment: options -> run -> result, and one runner that does the rest.

An `Experiment` says what is particular to it: its name and help, its own command-line options, how to
run it, and how to show its result (terminal tables, PNG figures, an HTML section for `movr bench report`,
checks of the claims it tests, and the headline it contributes to the report's opening). Everything else
is the same for every experiment and lives here, once:

- the result's envelope (law 7): the experiment's name, preset, delay scale, versions, machine, start time;
- where the result goes: `<run-dir>/<name>.json` by default (`--json` to choose), each figure beside it as
  `<stem>.png` or `<stem>-<figure>.png`, so `movr bench report` finds every result where the runner put it;
- the terminal: the experiment's tables, then its checks, then where the files are;
- exit codes: 0 when the run is done and every check holds, 1 when a check the experiment says must hold
  does not, 2 with one line when the input is bad or the run is impossible (`ExperimentError`).

`movr bench <name>` is built from the registry (movr.bench.registry) by `command_for`, and `movr bench
report` reads the same registry, so a new experiment is one module and one line there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from movr import __version__
from movr.bench.output import console
from movr.cli_support import CliError

Result = Mapping[str, Any]
OptionDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class ExperimentError(Exception):
    """The options cannot be run, or the run could not be done: one line, exit status 2."""


@dataclass(frozen=True)
class Check:
    """A claim the result tests; `holds` None: not judged by this run (say why in `detail`)."""

    name: str
    holds: bool | None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "holds": self.holds, "detail": self.detail}


@dataclass(frozen=True)
class Figure:
    """One PNG of a result. `suffix` "" is the main picture (`<stem>.png`), else `<stem>-<suffix>.png`."""

    title: str
    draw: Callable[[Result, Path], None]
    suffix: str = ""

    def path_beside(self, json_path: Path) -> Path:
        name = f"{json_path.stem}-{self.suffix}.png" if self.suffix else f"{json_path.stem}.png"
        return json_path.with_name(name)


def _no_figures(_result: Result) -> list[Figure]:
    return []


def _no_checks(_result: Result) -> list[Check]:
    return []


def _no_headline(_result: Result) -> list[str]:
    return []


@dataclass(frozen=True)
class Experiment:
    """What is particular to one experiment; see the module docstring for what the runner does with it.

    `run(run_dir, **options)` returns the result's body: a JSON-able dict that names at least `preset` and
    `scale` (None where they do not apply); the runner adds the envelope. `tables` prints to the terminal;
    `report` returns the HTML of the report's section (escaped); `headline` one-line findings for the
    report's opening. `must_hold`: a failed check makes the command exit 1 (a drill that did not keep its
    promises is a failed run, not a figure).
    """

    name: str
    summary: str
    run: Callable[..., dict[str, Any]]
    tables: Callable[[Result], None]
    report: Callable[[Result], list[str]]
    options: Sequence[OptionDecorator] = ()
    figures: Callable[[Result], list[Figure]] = _no_figures
    checks: Callable[[Result], list[Check]] = _no_checks
    headline: Callable[[Result], list[str]] = _no_headline
    must_hold: bool = False
    run_dir_help: str = "Where the experiment's labs, logs and results go."


def versions(**extra: str) -> dict[str, str]:
    """The versions a result was made with (law 7); `extra` adds what only the experiment knows."""
    import psycopg  # a heavy import, only for a run that writes a result

    return {"movr": __version__, "python": platform.python_version(), "psycopg": psycopg.__version__, **extra}


def machine() -> dict[str, Any]:
    import psutil  # a heavy import, only for a run that writes a result

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def envelope(experiment: Experiment, started_at: dt.datetime) -> dict[str, Any]:
    return {
        "benchmark": experiment.name,
        "started_at": started_at.isoformat(timespec="seconds"),
        "versions": versions(),
        "machine": machine(),
    }


def write_json(path: Path, result: Result) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def execute(experiment: Experiment, run_dir: Path, json_path: Path | None, options: Mapping[str, Any]) -> dict:
    """Run one experiment and put its result where the report finds it; returns the whole result."""
    started_at = dt.datetime.now(dt.UTC)
    try:
        body = experiment.run(run_dir, **options)
    except ExperimentError as error:
        raise CliError(str(error)) from None
    result = envelope(experiment, started_at)
    # The experiment's own versions and machine facts (e.g. PostgreSQL's, the idle probe) add to the envelope's.
    for key in ("versions", "machine"):
        result[key] = {**result[key], **body.pop(key, {})}
    result.update(body)
    result["checks"] = [check.as_dict() for check in experiment.checks(result)]
    json_path = json_path or run_dir / f"{experiment.name}.json"
    write_json(json_path, result)
    written = [json_path]
    for figure in experiment.figures(result):
        png = figure.path_beside(json_path)
        figure.draw(result, png)
        written.append(png)
    experiment.tables(result)
    failed = print_checks(result["checks"])
    console.print("figures: " + ", ".join(str(path) for path in written))
    if failed and experiment.must_hold:
        raise click.exceptions.Exit(1)
    return result


def print_checks(checks: Sequence[Mapping[str, Any]]) -> int:
    """The checks as lines, failed ones marked; returns how many failed."""
    failed = 0
    for check in checks:
        holds = check.get("holds")
        mark = {True: "[green]holds[/]", False: "[red]FAILS[/]", None: "[yellow]not judged[/]"}[holds]
        failed += holds is False
        detail = f" — {check['detail']}" if check.get("detail") else ""
        console.print(f"{mark}  {check['name']}{detail}", highlight=False)
    return failed


def command_for(experiment: Experiment) -> click.Command:
    """`movr bench <name>`: the experiment's options plus `--json` and `--run-dir`, run by `execute`."""

    def callback(json_path: Path | None, run_dir: Path, **options: Any) -> None:
        execute(experiment, run_dir, json_path, options)

    command: Callable[..., Any] = callback
    for option in reversed(
        [
            *experiment.options,
            click.option(
                "--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help=_json_help(experiment)
            ),
            click.option(
                "--run-dir",
                type=click.Path(path_type=Path, file_okay=False),
                default=lambda: Path.cwd() / "run" / "bench",
                help=f"{experiment.run_dir_help} [./run/bench]",
            ),
        ]
    ):
        command = option(command)
    return click.command(experiment.name, help=experiment.summary)(command)


def _json_help(experiment: Experiment) -> str:
    return f"Write the result here [<run-dir>/{experiment.name}.json]; figures go beside it."


@dataclass
class Registry:
    """The experiments by name, in the order the report shows them."""

    experiments: dict[str, Experiment] = field(default_factory=dict)

    def add(self, experiment: Experiment) -> None:
        if experiment.name in self.experiments:
            raise ValueError(f"two experiments named {experiment.name!r}")
        self.experiments[experiment.name] = experiment

    def get(self, name: str) -> Experiment | None:
        return self.experiments.get(name)

    def names(self) -> list[str]:
        return list(self.experiments)
