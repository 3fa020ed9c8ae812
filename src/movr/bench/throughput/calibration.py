"""Calibration: one journey from each client city on the idle lab (movr.bench.journey.run_journey), before
any load. It gives every step its floor as `movr bench journey` reports it, and warms every pool. The slowest
step's floor sets the users' think time and the default p99 target; the median hashing time per step is the
CPU part of every loaded request's floor (the loaded figure would fold CPU queueing into the floor).
"""

from __future__ import annotations

import http.client
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from movr.bench.client import STEPS, ApiError
from movr.bench.journey import run_journey
from movr.geo import Preset
from movr.lab.state import LabState


class CalibrationError(RuntimeError):
    """A journey on the idle lab failed: the lab cannot be measured."""


@dataclass
class Calibration:
    """What one journey from each client city on the idle lab says about the floors."""

    cpu_ms: dict[str, float]  # median password hashing (deliberate local work) per step
    slowest_floor_ms: float
    slowest_step: str
    slowest_city: str
    steps: list[dict[str, Any]]

    @classmethod
    def from_samples(cls, samples: list[dict[str, Any]]) -> Calibration:
        """`samples`: one per (city, step), with client_ms, floor_ms, cpu_ms and statements."""
        slowest = max(samples, key=lambda sample: sample["floor_ms"])
        steps = []
        for step in STEPS:
            mine = [sample for sample in samples if sample["step"] == step]
            if not mine:
                continue
            steps.append(
                {
                    "step": step,
                    "client_ms_median": statistics.median(s["client_ms"] for s in mine),
                    "floor_ms_median": statistics.median(s["floor_ms"] for s in mine),
                    "floor_ms_max": max(s["floor_ms"] for s in mine),
                    "cpu_ms_median": statistics.median(s["cpu_ms"] for s in mine),
                    "statements_max": max(s["statements"] for s in mine),
                }
            )
        return cls(
            cpu_ms={row["step"]: row["cpu_ms_median"] for row in steps},
            slowest_floor_ms=slowest["floor_ms"],
            slowest_step=slowest["step"],
            slowest_city=slowest["city"],
            steps=steps,
        )


def calibrate(
    state: LabState, preset: Preset, scale: float, cities: list[str], on_journey: Callable[[], None]
) -> list[dict[str, Any]]:
    """One journey from each city: every step's floor with its own hashing time, and what it took."""
    samples = []
    for city in cities:
        try:
            run = run_journey(state, preset, city, scale)
        except (ApiError, OSError, http.client.HTTPException) as error:
            raise CalibrationError(f"calibration journey from {city} failed: {error}") from None
        keys = ("step", "served_by", "statements", "client_ms", "floor_ms", "cpu_ms")
        samples += [{"city": city, **{key: getattr(step, key) for key in keys}} for step in run.steps]
        on_journey()
    return samples
