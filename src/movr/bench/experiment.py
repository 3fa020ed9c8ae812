"""One shape for every experiment: options -> run -> result, and one runner that does the rest.

An `Experiment` says what is particular to it (options, run, tables, figures, report section, checks,
headline). The runner does the rest, once: the result's envelope (law 7: preset, scale, versions, machine,
start time); `<run-dir>/<name>.json` by default with each figure beside it, where `movr bench report` looks;
tables, checks, then where the files are; exit 0, 1 when a check that must hold does not, 2 with one line
on bad input (`ExperimentError`); on request, the CPUs held awake for the run (`--hold-cpus-awake`,
movr.bench.awake). Also here: the option parsing every experiment shares.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from movr import __version__
from movr.bench.awake import AwakeError, cpus_held_awake
from movr.bench.output import console
from movr.cli_support import cli_errors
from movr.geo import Preset, PresetError, load_preset
from movr.lab.processes import LabError

Result = Mapping[str, Any]
HELD_AWAKE = "/dev/cpu_dma_latency held at 0"  # how a run with --hold-cpus-awake is labelled
OptionDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class ExperimentError(Exception):
    """The options cannot be run, or the run could not be done: one line, exit status 2."""


@dataclass(frozen=True)
class Check:
    """A claim the result tests; `holds` None: not judged by this run (say why in `detail`)."""

    name: str
    holds: bool | None
    detail: str = ""


@dataclass(frozen=True)
class Figure:
    """One PNG of a result. `suffix` "" is the main picture (`<stem>.png`), else `<stem>-<suffix>.png`."""

    title: str
    draw: Callable[[Result, Path], None]
    suffix: str = ""

    def path_beside(self, json_path: Path) -> Path:
        name = f"{json_path.stem}-{self.suffix}.png" if self.suffix else f"{json_path.stem}.png"
        return json_path.with_name(name)


def _nothing(_result: Result) -> list[Any]:
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
    figures: Callable[[Result], list[Figure]] = _nothing
    checks: Callable[[Result], list[Check]] = _nothing
    headline: Callable[[Result], list[str]] = _nothing
    must_hold: bool = False
    run_dir_help: str = "Where the experiment's labs, logs and results go."


def versions() -> dict[str, str]:
    """The versions a result was made with (law 7); an experiment's result adds its own (PostgreSQL's)."""
    import psycopg  # a heavy import, only for a run that writes a result

    return {"movr": __version__, "python": platform.python_version(), "psycopg": psycopg.__version__}


def machine() -> dict[str, Any]:
    import psutil  # a heavy import, only for a run that writes a result

    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def postgresql_version(dsn: str) -> str:
    import psycopg  # a heavy import, only for a run that writes a result

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def write_json(path: Path, result: Result) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def execute(
    experiment: Experiment,
    run_dir: Path,
    json_path: Path | None,
    options: Mapping[str, Any],
    *,
    hold_cpus_awake: bool = False,
) -> dict:
    """Run one experiment and put its result where the report finds it; returns the whole result.
    `hold_cpus_awake`: for the run's duration (movr.bench.awake); the result's `machine` says whether."""
    started_at = dt.datetime.now(dt.UTC)
    # Bad options, a lab that would not come up, CPUs that cannot be held awake: exit 2, one line.
    holding = cpus_held_awake() if hold_cpus_awake else contextlib.nullcontext()
    with cli_errors(ExperimentError, LabError, AwakeError), holding:
        body = experiment.run(run_dir, **options)
    result = {"benchmark": experiment.name, "started_at": started_at.isoformat(timespec="seconds")}
    # The experiment's own versions and machine facts (e.g. PostgreSQL's, the idle probe) add to the envelope's.
    held = {"cpus_held_awake": hold_cpus_awake}
    result |= {"versions": versions() | body.pop("versions", {}), "machine": machine() | held | body.pop("machine", {})}
    result.update(body)
    result["checks"] = [asdict(check) for check in experiment.checks(result)]
    json_path = json_path or run_dir / f"{experiment.name}.json"
    write_json(json_path, result)
    written = [json_path]
    for figure in experiment.figures(result):
        png = figure.path_beside(json_path)
        figure.draw(result, png)
        written.append(png)
    experiment.tables(result)
    if hold_cpus_awake:
        console.print(f"CPUs held awake for the run: {HELD_AWAKE}")
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
    """`movr bench <name>`: the experiment's options plus `--json`, `--run-dir` and `--hold-cpus-awake`, run by
    `execute`."""

    def callback(json_path: Path | None, run_dir: Path, hold_cpus_awake: bool, **options: Any) -> None:
        execute(experiment, run_dir, json_path, options, hold_cpus_awake=hold_cpus_awake)

    command: Callable[..., Any] = callback
    for option in reversed(
        [
            *experiment.options,
            click.option(
                "--json",
                "json_path",
                type=click.Path(path_type=Path, dir_okay=False),
                help=f"Write the result here [<run-dir>/{experiment.name}.json]; figures go beside it.",
            ),
            click.option(
                "--run-dir",
                type=click.Path(path_type=Path, file_okay=False),
                default=lambda: Path.cwd() / "run" / "bench",
                help=f"{experiment.run_dir_help} [./run/bench]",
            ),
            click.option(
                "--hold-cpus-awake",
                is_flag=True,
                help="For the run, hold /dev/cpu_dma_latency at 0 (as cyclictest does; needs root): no idle CPU "
                "sleeps, so no request waits for one to wake. It costs a busy core: on a virtual machine (cpuidle "
                "haltpoll) every idle vCPU spins. The result and its report say it was used.",
            ),
        ]
    ):
        command = option(command)
    return click.command(experiment.name, help=experiment.summary)(command)


def lab_options(default_preset: str = "gcp-3") -> tuple[OptionDecorator, OptionDecorator]:
    """`--preset` and `--scale` as the experiments that stand up a whole lab take them."""
    return (
        click.option("--preset", default=default_preset, show_default=True, help="Preset name or TOML file."),
        click.option(
            "--scale", default=1.0, show_default=True, type=click.FloatRange(0.001, 100), help="Multiplies every delay."
        ),
    )


def preset_option(source: str) -> Preset:
    try:
        return load_preset(source)
    except PresetError as error:
        raise ExperimentError(str(error)) from None


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def choices(text: str, option: str, known: Sequence[str]) -> tuple[str, ...]:
    """A comma-separated choice among `known`, at least one, none twice."""
    values = tuple(split(text))
    bad = [v for v in values if v not in known]
    if bad or not values:
        raise ExperimentError(f"{option}: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(known)}")
    if len(set(values)) != len(values):
        raise ExperimentError(f"{option} repeats a value: {text!r}")
    return values


def numbers(text: str, option: str, kind: type[int] | type[float], low: float, high: float) -> tuple[Any, ...]:
    """Comma-separated numbers between `low` and `high`, at least one, none twice."""
    try:
        values = tuple(kind(part) for part in split(text))
    except ValueError:
        raise ExperimentError(f"{option} takes comma-separated numbers, not {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise ExperimentError(f"{option} values must be between {low:g} and {high:g}: {text!r}")
    if len(set(values)) != len(values):
        raise ExperimentError(f"{option} repeats a value: {text!r}")
    return values
