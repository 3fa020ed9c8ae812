"""What a throughput run is asked to do: its options checked and completed, and the rules it judges by."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from movr.bench.experiment import ExperimentError, choices, numbers, preset_option
from movr.lab.layout import TOPOLOGIES

DEFAULT_RATES = (10, 20, 40, 80, 160, 320)
FULL = {"scale": 1.0, "duration": 20.0, "warmup": 5.0, "rates": DEFAULT_RATES}
# Quick: a smoke run for tests (the whole command well under a minute), not for numbers.
QUICK = {"scale": 0.05, "duration": 1.5, "warmup": 0.5, "rates": (10, 20)}

TARGET_FACTOR = 4.0  # default p99 target: this many times the slowest step's floor
THINK_FACTOR = 2.0  # a user's steps are this many times the slowest floor apart: an idle lab never lags
TIMEOUT_FACTOR = 5.0  # a request unanswered this many p99 targets after its intended time is an error
MIN_TIMEOUT_S = 2.0
# A rate is sustained when the error rate is at most this, the achieved rate at least this fraction of the
# offered one, and the p99 within the target (movr.bench.throughput.schedule.judge).
MAX_ERROR_RATE = 0.01
MIN_ACHIEVED_FRACTION = 0.9


@dataclass
class Settings:
    preset: str
    scale: float
    topologies: list[str]
    rates: list[float]
    duration: float
    warmup: float
    p99_target_ms: float | None
    quick: bool
    run_dir: Path  # the labs go in <run_dir>/throughput/<topology>

    def lab_dir(self, topology: str) -> Path:
        return self.run_dir / "throughput" / topology

    def describe(self) -> dict[str, Any]:
        return {
            "topologies": self.topologies,
            "rates": self.rates,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "p99_target_ms": self.p99_target_ms,
            "quick": self.quick,
            "target_rule": (
                f"--p99-target-ms {self.p99_target_ms:g} for every topology"
                if self.p99_target_ms
                else f"{TARGET_FACTOR:g} x the slowest step's floor of the topology (calibration journeys)"
            ),
            "think_rule": f"{THINK_FACTOR:g} x the slowest step's floor (users = ceil(rate x think))",
            "criteria": {
                "max_error_rate": MAX_ERROR_RATE,
                "min_achieved_fraction": MIN_ACHIEVED_FRACTION,
                "p99": "<= target",
            },
            "timeout_rule": f"max({MIN_TIMEOUT_S:g} s, {TIMEOUT_FACTOR:g} x target) after the intended send time",
            "load": "open loop on a fixed schedule; latency from intended send time (coordinated-omission safe)",
            "client": "one process: asyncio (uvloop) + aiohttp, one coroutine per user",
        }


def _parse_rates(text: str) -> list[float]:
    rates = list(numbers(text, "--rates", float, 0, 1e9))
    if rates[0] <= 0 or any(later <= earlier for earlier, later in itertools.pairwise(rates)):
        raise ExperimentError(f"--rates must be positive and rise: {text!r}")
    return rates


def build_settings(
    run_dir: Path,
    *,
    preset: str,
    scale: float | None,
    topologies_text: str,
    rates_text: str | None,
    duration: float | None,
    warmup: float | None,
    p99_target_ms: float | None,
    quick: bool,
) -> Settings:
    """Check every option before anything starts (ExperimentError: exit status 2, one line) and fill in the
    defaults."""
    preset_option(preset)
    defaults = QUICK if quick else FULL
    scale = scale if scale is not None else defaults["scale"]
    duration = duration if duration is not None else defaults["duration"]
    warmup = warmup if warmup is not None else defaults["warmup"]
    if not math.isfinite(scale) or not 0.001 <= scale <= 100:
        raise ExperimentError("--scale must be between 0.001 and 100")
    if not math.isfinite(duration) or duration <= 0:
        raise ExperimentError("--duration must be positive")
    if not math.isfinite(warmup) or warmup < 0:
        raise ExperimentError("--warmup must not be negative")
    if p99_target_ms is not None and (not math.isfinite(p99_target_ms) or p99_target_ms <= 0):
        raise ExperimentError("--p99-target-ms must be positive")
    rates = _parse_rates(rates_text) if rates_text is not None else [float(r) for r in defaults["rates"]]
    return Settings(
        preset=preset,
        scale=scale,
        topologies=list(choices(topologies_text, "--topologies", TOPOLOGIES)),
        rates=rates,
        duration=duration,
        warmup=warmup,
        p99_target_ms=p99_target_ms,
        quick=quick,
        run_dir=run_dir.resolve(),
    )
