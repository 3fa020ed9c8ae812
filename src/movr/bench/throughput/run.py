"""A throughput run: per topology, a lab stood up (and always taken down) and calibrated, then each rate
offered in turn (users: `load`, CPU: `cpu`) until one is not sustained. A topology whose lab did not come
up or whose calibration failed is recorded with its error, and the others are still measured.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from movr.bench.client import STEPS
from movr.bench.experiment import postgresql_version
from movr.bench.output import Bars, console
from movr.bench.throughput.calibration import Calibration, CalibrationError, calibrate
from movr.bench.throughput.cpu import CpuSampler, cpu_groups
from movr.bench.throughput.load import run_async, run_rate
from movr.bench.throughput.schedule import RateRecorder, Schedule, judge
from movr.bench.throughput.settings import MIN_TIMEOUT_S, TARGET_FACTOR, THINK_FACTOR, TIMEOUT_FACTOR, Settings
from movr.geo import Preset, load_preset
from movr.lab.state import LabState
from movr.lab.supervisor import LabError, lab_down, lab_up
from movr.store.sample import generate


def run_benchmark(settings: Settings) -> dict[str, Any]:
    """The result's body: every topology's calibration and rates (the runner adds the envelope)."""
    preset = load_preset(settings.preset)
    result: dict[str, Any] = {
        "preset": preset.name,
        "preset_source": settings.preset,
        "scale": settings.scale,
        "settings": settings.describe(),
        "loadavg_at_start": list(os.getloadavg()),
        "topologies": [],
    }
    started = time.monotonic()
    bar = Bars("rates", len(settings.topologies) * len(settings.rates))
    with bar.progress:
        for topology in settings.topologies:
            try:
                entry = run_topology(settings, preset, topology, bar)
            except (LabError, CalibrationError) as err:
                # Keep what the other topologies measured; the run's check says this one was not.
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                entry = {"topology": topology, "error": first, "rates": [], "max_sustained_rate": None}
            result["topologies"].append(entry)
            # Rates not run after a failure still count as done for the bar.
            bar.progress.advance(bar.runs, len(settings.rates) - len(entry["rates"]))
    postgresql = next((t["postgresql"] for t in result["topologies"] if "postgresql" in t), "unknown")
    result["versions"] = {"postgresql": postgresql, "aiohttp": aiohttp.__version__}
    result["loadavg_at_end"] = list(os.getloadavg())
    result["elapsed_s"] = time.monotonic() - started
    return result


def stand_up(settings: Settings, topology: str, lab_dir: Path) -> LabState:
    """lab_up, tried twice: a lab's ports are picked free when it is planned, and on a shared machine another
    process can take one before our server binds it (the second try plans fresh ports)."""
    try:
        return lab_up(lab_dir, settings.preset, topology, settings.scale)
    except LabError as err:
        first = (str(err).strip().splitlines() or ["?"])[0]
        console.print(f"[yellow]{topology}: the lab did not come up ({first}); trying once more")
    return lab_up(lab_dir, settings.preset, topology, settings.scale)


def run_topology(settings: Settings, preset: Preset, topology: str, bar: Bars) -> dict[str, Any]:
    lab_dir = settings.lab_dir(topology)
    bar.now(f"{topology}: standing the lab up", completed=0, total=1)
    state = stand_up(settings, topology, lab_dir)
    try:
        n = len(preset.cities)
        state.load_sample(generate(preset, users=n * 3, vehicles=n * 3, rides=n * 3, seed=7))
        regions = preset.regions.values()
        cities = [region.cities[0] for region in regions if region.cities] if settings.quick else preset.cities
        bar.now(f"{topology}: calibrating", total=len(cities), completed=0)

        def advance() -> None:  # one journey calibrated
            bar.progress.advance(bar.current)

        samples = calibrate(state, preset, settings.scale, cities, advance)
        calibration = Calibration.from_samples(samples)
        target_ms = settings.p99_target_ms or TARGET_FACTOR * calibration.slowest_floor_ms
        think_s = THINK_FACTOR * calibration.slowest_floor_ms / 1000
        timeout_s = max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * target_ms / 1000)
        basis = (
            "stated by --p99-target-ms"
            if settings.p99_target_ms
            else (
                f"{TARGET_FACTOR:g} x the slowest step's floor, {calibration.slowest_floor_ms:.1f} ms "
                f"('{calibration.slowest_step}' from {calibration.slowest_city})"
            )
        )
        console.print(f"{topology}: p99 target {target_ms:.0f} ms = {basis}; users' think time {think_s * 1000:.0f} ms")
        entry: dict[str, Any] = {
            "topology": topology,
            "target_ms": target_ms,
            "target_basis": basis,
            "slowest_floor": {
                "floor_ms": calibration.slowest_floor_ms,
                "step": calibration.slowest_step,
                "city": calibration.slowest_city,
            },
            "think_ms": think_s * 1000,
            "calibration": {"cities": cities, "steps": calibration.steps, "cpu_ms": calibration.cpu_ms},
            "postgresql": postgresql_version(state.server_dsn(next(iter(state.plan.servers)))),
            "lab_processes": [{"name": p.name, "kind": p.kind, "pid": p.pid} for p in state.processes],
            "rates": [],
            "max_sustained_rate": None,
        }
        for rate in settings.rates:
            cell = run_one_rate(settings, preset, state, calibration, rate, think_s, timeout_s, bar)
            cell["failed_because"] = judge(cell, target_ms)
            cell["sustained"] = not cell["failed_because"]
            entry["rates"].append(cell)
            bar.progress.advance(bar.runs)
            if not cell["sustained"]:
                break  # the rate failed: higher ones would only fail harder
            entry["max_sustained_rate"] = rate
        return entry
    finally:
        bar.now(f"{topology}: taking the lab down")
        lab_down(lab_dir)


def run_one_rate(
    settings: Settings,
    preset: Preset,
    state: LabState,
    calibration: Calibration,
    rate: float,
    think_s: float,
    timeout_s: float,
    bar: Bars,
) -> dict[str, Any]:
    users = max(1, math.ceil(rate * think_s))
    journey_s = len(STEPS) * users / rate  # the staggered users have all begun after one journey's length
    warmup = max(settings.warmup, journey_s)
    schedule = Schedule(rate, users, time.monotonic() + 0.2, warmup, settings.duration, timeout_s)
    recorder = RateRecorder(schedule)
    total = warmup + settings.duration
    bar.now(f"{state.topology} @ {rate:g}/s", total=total, completed=0)

    def tick() -> None:
        elapsed = min(total, max(0.0, time.monotonic() - schedule.start))
        errors = sum(recorder.errors.values())
        bar.progress.update(bar.current, completed=elapsed, detail=f"{recorder.sent} sent, {errors} errors")

    context_args = {
        "preset": preset,
        "topology": state.topology,
        "scale": settings.scale,
        "base_url": state.balancer_url,
        "cities": preset.cities,
        "cpu_ms": calibration.cpu_ms,
    }
    loadavg_before = os.getloadavg()
    with CpuSampler(cpu_groups(state), schedule.measure_from, schedule.end) as sampler:
        run_async(run_rate(context_args, schedule, recorder, tick))
    cell = recorder.result()
    cell["warmup_s_requested"] = settings.warmup
    cell["cpu"] = sampler.result()
    cell["loadavg_before"] = list(loadavg_before)
    return cell
