"""Running one data-homing experiment: its lab, its client fleet, and one measured run after another.

`bench(settings, factory, runs)` stands up the lab (movr.lab.supervisor.servers_up: one PostgreSQL
primary per region and a link from every client region to every server), starts one client process per
region (movr.bench.fleet) and a progress bar, and stops all of it however the experiment ends. Each
`Bench.measure` is one run of the fleet between two readings of the links' counters, and `MeasuredRun`
turns its payloads into the figures every experiment reports under the same names. `experiment` declares
one of them the way all three are declared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movr.bench.experiment import Check, Experiment, ExperimentError, Figure, OptionDecorator, Result
from movr.bench.fleet import ClientFleet
from movr.bench.floors import YCSB_FLOORS, Network
from movr.bench.histograms import figures
from movr.bench.output import progress_bar
from movr.bench.ycsb import views
from movr.bench.ycsb.options import OPTIONS, Settings
from movr.bench.ycsb.tables import server_version
from movr.lab.supervisor import LabError, ServerLab, servers_up

DATABASE = "movr_bench"


class RunProgress:
    """One bar for the experiment's runs, one for the current run's warm-up and measured window."""

    def __init__(self, runs: int) -> None:
        self.bar = progress_bar()
        self.runs = self.bar.add_task("runs", total=runs, detail="")
        self.current = self.bar.add_task("", total=1, detail="")

    def __enter__(self) -> RunProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def start(self, label: str, seconds: float) -> Callable[[float, int], None]:
        self.bar.reset(self.current, total=seconds, description=label, detail="")

        def update(elapsed: float, measured: int) -> None:
            self.bar.update(self.current, completed=elapsed, detail=f"{measured} ops measured")

        return update

    def done(self) -> None:
        self.bar.advance(self.runs)


def op_figures(payload: Mapping[str, Any], op: str, labels: Sequence[str]) -> dict[str, Any]:
    """`op`'s figures overall, then per label: ``group=name`` labels under ``by_<group>``, others under
    ``by_access``."""
    result = figures(payload, op)
    for label in labels:
        group, _, name = label.partition("=")
        if name:
            result.setdefault(f"by_{group}", {})[name] = figures(payload, f"{op}|{label}")
        else:
            result.setdefault("by_access", {})[label] = figures(payload, f"{op}|{label}")
    return result


def timeline(payload: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: payload["timeline"].get(key, []) for key in keys}


@dataclass(frozen=True)
class MeasuredRun:
    """One run of the fleet: every client's payload, and the links' counters read just before and after it."""

    lab: ServerLab
    duration: float
    payloads: Mapping[str, Mapping[str, Any]]
    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]

    def client(self, region: str, *, searches: bool = True) -> dict[str, Any]:
        """The figures every experiment reports for one client, so that `ycsb`, `insert` and `rehome` rows
        agree on their names and meaning. `searches=False` for inserts: they never search for a row or move
        one, so their rows carry no retries or moves.
        """
        payload = self.payloads[region]
        contention = (
            {"retries": payload["retries"], "moves": payload["moves"], "moves_total": payload["moves_total"]}
            if searches
            else {}
        )
        return {
            "ops": payload["ops_measured"],
            "throughput_ops_s": payload["ops_measured"] / self.duration,
            **contention,
            "errors": payload["errors"],
            "first_error": payload["first_error"],
            "round_trips": self.round_trips(region, payload["ops_total"]),
        }

    def round_trips(self, region: str, ops_total: int) -> dict[str, Any]:
        counted = self.lab.round_trips(self.before, self.after).get(region, {"wan": 0, "local": 0})
        return {
            **counted,
            "ops_total": ops_total,
            "wan_per_op": counted["wan"] / ops_total if ops_total else None,
            "note": "links' counts over warm-up and measured window together, per operation of both",
        }

    def reads_and_updates(self, region: str, labels: Sequence[str]) -> dict[str, Any]:
        """One client's read and update figures, each overall and per label: `ycsb` and `rehome` rows carry
        both under the same names, so one place computes them."""
        payload = self.payloads[region]
        return {"read": op_figures(payload, "read", labels), "update": op_figures(payload, "update", labels)}


@dataclass(frozen=True)
class Bench:
    """A running experiment: its settings, lab, client fleet and progress bar."""

    settings: Settings
    lab: ServerLab
    fleet: ClientFleet
    progress: RunProgress

    def result(self, **described: Any) -> dict[str, Any]:
        """The result's body as every experiment here starts it; `described`: the experiment's own settings."""
        return {
            "preset": self.lab.preset.name,
            "preset_source": self.settings.preset,
            "scale": self.settings.scale,
            "settings": self.settings.describe(**described),
            "versions": {"postgresql": server_version(self.lab)},
            "network": Network(self.lab.preset, self.settings.scale).describe(),
            "floors": YCSB_FLOORS,
        }

    def measure(self, tasks: Mapping[str, Mapping[str, Any]], label: str) -> MeasuredRun:
        """Run the fleet once, warm-up and measured window, between two readings of the links' counters: they
        count from the lab's start, so only readings right around the run give its clients' round trips alone,
        not those of every run before it."""
        settings = self.settings
        before = self.lab.counters()
        update = self.progress.start(label, settings.warmup + settings.duration)
        payloads = self.fleet.run(tasks, settings.warmup, settings.duration, settings.tail_s, update)
        after = self.lab.counters()
        self.progress.done()
        return MeasuredRun(self.lab, settings.duration, payloads, before, after)


@contextlib.contextmanager
def bench(settings: Settings, factory: str, runs: int) -> Iterator[Bench]:
    """The lab, one client process per region (`factory`: ``module:Class``), and a bar for `runs` runs;
    all stopped however the body ends. A lab that cannot be stood up is a one-line ExperimentError."""
    with contextlib.ExitStack() as stack:
        try:
            lab = stack.enter_context(
                servers_up(
                    settings.run_dir, settings.preset, settings.scale, database=DATABASE, links=settings.link_mode
                )
            )
        except LabError as error:
            raise ExperimentError(str(error).splitlines()[0]) from None
        fleet = stack.enter_context(ClientFleet(lab, lab.regions, factory))
        progress = stack.enter_context(RunProgress(runs))
        yield Bench(settings, lab, fleet, progress)


def experiment(
    name: str,
    summary: str,
    run: Callable[..., dict[str, Any]],
    grids: Callable[[Result], list[views.Grid]],
    checks: Callable[[Result], list[Check]],
    headline: Callable[[Result], list[str]],
    plot: Callable[[Result, Path], None],
    own_options: Sequence[OptionDecorator],
    notes: Callable[[Result], list[views.Note]] = lambda result: views.error_notes(result["results"]),
) -> Experiment:
    """One of the data-homing experiments: the options they share, then its own; its tables (`grids`, then
    `notes`) on the terminal and in the report alike; one chart beside the JSON."""
    return Experiment(
        name=name,
        summary=summary,
        run=run,
        tables=lambda result: views.show(result, grids(result), notes(result)),
        report=lambda result: views.section(result, grids(result), notes(result)),
        options=[*OPTIONS, *own_options],
        figures=lambda _result: [Figure("p50 bars, p99 whiskers, floor marks", plot)],
        checks=checks,
        headline=headline,
        run_dir_help=f"The lab (under <run-dir>/{name}) and the result.",
    )
