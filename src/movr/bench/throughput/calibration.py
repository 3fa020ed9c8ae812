"""Calibration: one journey from each client city on the idle lab, one step at a time, before any load.

It gives every step its floor as `movr bench journey` reports it (movr.bench.floors), with its own password
hashing time, and warms every pool. The slowest step's floor sets the users' think time and the default
p99 target; the median hashing time per step is the CPU part of every loaded request's floor (the loaded
figure would fold CPU queueing into the floor).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from movr.bench.client import STEPS, open_session
from movr.bench.throughput.load import StepFailed, exchange, floor_ms, new_journey
from movr.geo import Preset

CALIBRATION_TIMEOUT_S = 60.0


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


def calibration_cities(preset: Preset, quick: bool) -> list[str]:
    """Every client city (quick: the first of each region)."""
    if quick:
        return [region.cities[0] for region in preset.regions.values() if region.cities]
    return preset.cities


async def calibrate(
    base_url: str, preset: Preset, topology: str, scale: float, cities: list[str], on_journey: Callable[[], None]
) -> list[dict[str, Any]]:
    """One journey from each city, one step at a time: every step's floor with its own hashing time, and
    what it took."""
    samples = []
    async with open_session() as session:
        for city in cities:
            journey = new_journey(city, "tc")
            for step in STEPS:
                started = time.monotonic()
                try:
                    figures = await exchange(session, base_url, journey, step, CALIBRATION_TIMEOUT_S)
                except StepFailed as failed:
                    raise CalibrationError(f"calibration journey from {city} failed: {failed.detail}") from None
                client_ms = (time.monotonic() - started) * 1000
                floor = floor_ms(preset, topology, scale, journey, step, figures, figures.cpu_ms)
                if floor is None:
                    raise CalibrationError(f"{step} from {city}: the response did not say which region served it")
                samples.append(
                    {
                        "city": city,
                        "step": step,
                        "served_by": figures.served_by,
                        "statements": figures.statements,
                        "client_ms": client_ms,
                        "floor_ms": floor,
                        "cpu_ms": figures.cpu_ms,
                    }
                )
            on_journey()
    return samples
