"""Running one data-homing experiment: its lab (movr.lab.supervisor.servers_up), its client fleet
(movr.bench.fleet), one measured run after another (`Bench.measure`), and the figures every experiment
reports under the same names (`MeasuredRun`). `experiment` declares one of the three.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movr.bench.experiment import (
    Check,
    Experiment,
    ExperimentError,
    Figure,
    OptionDecorator,
    Result,
    postgresql_version,
)
from movr.bench.fleet import ClientFleet
from movr.bench.histograms import figures
from movr.bench.output import Bars
from movr.bench.ycsb import views
from movr.bench.ycsb.options import OPTIONS, Settings
from movr.floors import YCSB_FLOORS, Network
from movr.lab.supervisor import LabError, ServerLab, servers_up

DATABASE = "movr_bench"


def op_figures(payload: Mapping[str, Any], op: str, labels: Sequence[str]) -> dict[str, Any]:
    """`op`'s figures overall, then per label: ``group=name`` labels under ``by_<group>``, others under
    ``by_access``."""
    result = figures(payload, op)
    for label in labels:
        group, _, name = label.partition("=")
        result.setdefault(f"by_{group}" if name else "by_access", {})[name or label] = figures(payload, f"{op}|{label}")
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
    bars: Bars  # the runs done, and the current run's warm-up and measured window

    def result(self, **described: Any) -> dict[str, Any]:
        """The result's body as every experiment here starts it; `described`: the experiment's own settings."""
        return {
            "preset": self.lab.preset.name,
            "preset_source": self.settings.preset,
            "scale": self.settings.scale,
            "settings": self.settings.describe(**described),
            "versions": {"postgresql": postgresql_version(self.lab.server_dsn(self.lab.regions[0]))},
            "network": Network(self.lab.preset, self.settings.scale).describe(),
            "floors": YCSB_FLOORS,
        }

    def measure(self, tasks: Mapping[str, Mapping[str, Any]], label: str) -> MeasuredRun:
        """Run the fleet once, warm-up and measured window, between two readings of the links' counters: they
        count from the lab's start, so only readings right around the run give its clients' round trips alone,
        not those of every run before it."""
        settings, bars = self.settings, self.bars
        before = self.lab.counters()
        bars.progress.reset(bars.current, total=settings.warmup + settings.duration, description=label, detail="")

        def update(elapsed: float, measured: int) -> None:
            bars.progress.update(bars.current, completed=elapsed, detail=f"{measured} ops measured")

        payloads = self.fleet.run(tasks, settings.warmup, settings.duration, settings.tail_s, update)
        after = self.lab.counters()
        bars.progress.advance(bars.runs)
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
        fleet = ClientFleet(lab, factory)
        stack.callback(fleet.close)
        bars = Bars("runs", runs)
        stack.enter_context(bars.progress)
        yield Bench(settings, lab, fleet, bars)


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
