"""The options `movr bench ycsb | insert | rehome` share, validated into one `Settings` before anything starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import click

from movr.bench.experiment import ExperimentError, OptionDecorator, preset_option
from movr.bench.ycsb.keys import DISTRIBUTIONS
from movr.lab.supervisor import LINK_MODES, LinkMode

WORKLOADS = {"A": 0.50, "B": 0.95}  # share of reads; the rest are updates (YCSB core workloads A and B)
QUICK_SCALE = 0.05

OPTIONS: list[OptionDecorator] = [
    click.option("--preset", default="ycsb-3", show_default=True, help="Preset name or TOML file."),
    click.option("--scale", type=float, default=None, help="Multiplies every delay [default: 1; 0.05 with --quick]."),
    click.option("--duration", type=float, default=None, help="Measured seconds per run."),
    click.option("--warmup", type=float, default=None, help="Seconds of the same workload before measuring."),
    click.option("--quick", is_flag=True, help="Tiny data and runs at scale 0.05 (the whole command < 30 s)."),
    click.option("--links", default="process", show_default=True, help="Links as a process or a thread."),
]


def workload_options(distribution: str) -> list[OptionDecorator]:
    """--workload and --distribution, which `ycsb` and `rehome` both take (`distribution` is the default)."""
    return [
        click.option("--workload", default="B", show_default=True, help="YCSB B (95% reads) or A (50% reads)."),
        click.option("--distribution", default=distribution, show_default=True, help="zipfian or uniform."),
    ]


@dataclass
class Settings:
    """One experiment's validated options, full or quick defaults filled in."""

    preset: str  # as the user named it (a packaged name or a TOML file): what the client processes load
    scale: float
    duration: float
    warmup: float
    run_dir: Path  # the lab's: servers, links and logs
    link_mode: LinkMode = "process"
    quick: bool = False
    workload: str = "B"
    distribution: str = "zipfian"
    records: int = 0
    seed: int = 42

    @property
    def tail_s(self) -> float:
        return min(10.0, self.duration / 3)

    @property
    def read_proportion(self) -> float:
        return WORKLOADS[self.workload]

    def task(self, variant: str, run_number: int, index: int, buckets: Any = None, **more: Any) -> dict[str, Any]:
        """One client's part of one run: the variant, its own seed and, for reads and updates, the workload
        over `buckets` (keys with a weight, and the labels their operations are reported under)."""
        task = {"variant": variant, "seed": self.seed * 1000 + run_number * 10 + index, **more}
        if buckets is not None:
            task |= {"read_proportion": self.read_proportion, "distribution": self.distribution, "buckets": buckets}
        return task

    def describe(self, **extra: Any) -> dict[str, Any]:
        """The result's `settings`: what every experiment states, then `extra`, the experiment's own."""
        return {
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "tail_s": self.tail_s,
            "quick": self.quick,
            "links": self.link_mode,
            "clients": "one closed-loop process per client region, one operation at a time",
            "seed": self.seed,
            **extra,
        }

    def workload_description(self) -> dict[str, Any]:
        """The YCSB workload's part of `describe`, for the experiments that read and update rows."""
        return {
            "workload": self.workload,
            "read_proportion": self.read_proportion,
            "distribution": self.distribution,
            "records": self.records,
        }


def settings(
    experiment: str,
    run_dir: Path,
    defaults: Mapping[str, Mapping[str, Any]],
    *,
    preset: str,
    scale: float | None,
    duration: float | None,
    warmup: float | None,
    quick: bool,
    links: str,
    records: int | None = None,
    workload: str = "B",
    distribution: str = "zipfian",
) -> Settings:
    """Validate the shared options and fill in `defaults["quick"]` or `defaults["full"]` (duration, warmup,
    and records where the experiment loads rows); the lab goes under `run_dir/<experiment>`."""
    chosen = preset_option(preset)
    filled = defaults["quick" if quick else "full"]
    scale = scale if scale is not None else (QUICK_SCALE if quick else 1.0)
    duration = duration if duration is not None else filled["duration"]
    warmup = warmup if warmup is not None else filled["warmup"]
    if scale <= 0:
        raise ExperimentError("--scale must be positive")
    if duration <= 0:
        raise ExperimentError("--duration must be positive")
    if warmup < 0:
        raise ExperimentError("--warmup must not be negative")
    if links not in LINK_MODES:
        raise ExperimentError("--links must be process or thread")
    workload = workload.upper()
    if workload not in WORKLOADS:
        raise ExperimentError(f"--workload must be A or B, not {workload!r}")
    if distribution not in DISTRIBUTIONS:
        raise ExperimentError(f"--distribution must be zipfian or uniform, not {distribution!r}")
    regions = len(chosen.region_names)
    if regions < 2:
        raise ExperimentError(f"preset {chosen.name} has {regions} region; these experiments need at least two")
    result = Settings(
        preset=preset,
        scale=scale,
        duration=duration,
        warmup=warmup,
        run_dir=run_dir / experiment,
        link_mode=cast(LinkMode, links),  # one of LINK_MODES: checked above
        quick=quick,
        workload=workload,
        distribution=distribution,
    )
    if "records" in filled:
        result.records = records if records is not None else filled["records"]
        if result.records < regions * regions:
            raise ExperimentError(
                f"--records must be at least {regions * regions} (one row per client region in every region)"
            )
    return result
