"""`movr bench throughput`: the journey mix, open loop, at rising request rates, per topology.

The tutorial article measured one user and says it "did not explore" higher throughput. This experiment
offers the lab a fixed schedule of requests and watches where each topology stops keeping up.

**The load.** For each topology a lab is stood up (and always taken down), loaded with the sample data,
and calibrated: one journey from each client city on the idle lab, one step at a time (floors as
`movr.bench.journey` defines them), which also warms every pool. Then, for each rate R (requests per
second, every step of the journey mix counted):

- The schedule is a fixed grid of *slots*, one every 1/R s. Slot i belongs to user i mod N (N users, so
  each user's slots are N/R ≈ the think time apart) and carries an *intended send time*. A user runs
  journeys back to back, one step per slot, in order (a step needs what the one before returned); the
  users' first journeys start at staggered steps, so that once every user has begun, the mix at any moment
  is spread evenly over the eight steps. Each journey comes from the next city of the preset (round robin),
  as header ``X-Client-City`` through the balancer, like any client.
- Open loop and coordinated-omission safe: a step is sent at its intended time, or as soon as the user's
  previous step answered if that was later, and its latency is measured **from the intended send time**.
  A lab that falls behind is charged for every request it made wait, not only for the one it was slow on.
  A request that has not answered ``timeout`` after its intended time is an error; so is any status >= 400
  (and the user then starts a new journey at its next slot).
- A warm-up (at least one journey's length, so the mix is steady) precedes the measured window. A request
  belongs to the window in which it was *intended* to be sent; "achieved" counts successful responses that
  *completed* inside the window.

**Judging a rate.** A rate is sustained when the error rate is <= 1 %, the achieved rate is >= 90 % of R,
and the p99 latency (HdrHistogram, from intended send times) is <= the p99 target. The target, unless
``--p99-target-ms`` states one, is per topology: **4 x the slowest step's floor**, where a step's floor is
its physical floor as `movr bench journey` defines it (client RTT to the serving region + unavoidable WAN
round trips + one intra-region RTT per local statement + the step's password hashing), and the slowest is
the largest over the calibration journeys from every client city. The rates rise until one is not sustained;
the highest sustained rate is the topology's result.

**Floors under load.** Every request's floor is computed from what its response says (serving region,
statements) with the calibrated CPU work of its step (the median password-hashing time on the idle lab: the
loaded figure would fold CPU queueing into the floor). Reports give p50 latency / p50 floor per step.

**CPU.** During each measured window a sampler thread reads, with psutil, the CPU time of every process the
lab state names (with its children: gunicorn workers, link threads) and of every PostgreSQL server (the
postmaster and its backends), of this bench client, and of the whole machine: per process, % of one core
over the window; "rest of machine" is what other work on the machine used meanwhile.

Waiting for a slot's intended send time is pacing of an open-loop schedule, not distance (law 1): distance
is in the links only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import platform
import secrets
import statistics
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import click
import psutil
from hdrh.histogram import HdrHistogram
from rich.table import Table

from movr import __version__
from movr.bench.common import (
    HIST_LOWEST_US,
    console,
    default_run_dir,
    encode_histogram,
    floor_figures,
    machine,
    ms,
    new_histogram,
    progress_bar,
    summarize,
    write_json,
)
from movr.bench.journey import PASSWORD, STEPS, unavoidable_wan
from movr.bench.plots import save_figure
from movr.cli_support import CliError
from movr.geo import Preset, PresetError, load_preset
from movr.lab.layout import TOPOLOGIES
from movr.lab.state import LabState

DEFAULT_RATES = (10, 20, 40, 80, 160, 320)
FULL = {"scale": 1.0, "duration": 20.0, "warmup": 5.0, "rates": DEFAULT_RATES}
# Quick: a smoke run for tests (the whole command well under a minute), not for numbers.
QUICK = {"scale": 0.05, "duration": 1.5, "warmup": 0.5, "rates": (10, 20)}

TARGET_FACTOR = 4.0  # default p99 target: this many times the slowest step's floor
THINK_FACTOR = 2.0  # a user's steps are this many times the slowest floor apart: an idle lab never lags
MAX_ERROR_RATE = 0.01
MIN_ACHIEVED_FRACTION = 0.9
TIMEOUT_FACTOR = 5.0  # a request unanswered this many p99 targets after its intended time is an error
MIN_TIMEOUT_S = 2.0
CPU_SAMPLE_S = 1.0  # short-lived PostgreSQL backends are caught by sampling, not only at the window's ends


# --------------------------------------------------------------------------------------------------------
# Calibration: the idle lab's floors


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


def request_floor_ms(
    preset: Preset,
    topology: str,
    scale: float,
    step: str,
    city: str,
    username: str,
    served_by: str,
    statements: int,
    cpu_ms: float,
) -> float | None:
    """A request's physical floor, as `movr.bench.journey.run_journey` computes it for a plain topology
    (no survival goal): client RTT + unavoidable WAN round trips + one intra-region RTT per local statement,
    scaled, + deliberate local CPU work. None when the response did not say which region served it."""
    if served_by not in preset.regions:
        return None
    wan = unavoidable_wan(preset, topology, step, served_by, city, username, statements)
    local = max(0, statements - len(wan)) * preset.intra_region_rtt_ms
    return (preset.client_rtt_ms(city, served_by) + sum(wan) + local) * scale + cpu_ms


# --------------------------------------------------------------------------------------------------------
# The schedule and what one rate recorded


@dataclass(frozen=True)
class Schedule:
    """A slot every 1/rate s from `start` (monotonic seconds); slot i is user i mod `users`'."""

    rate: float
    users: int
    start: float
    warmup: float
    duration: float
    timeout: float

    @property
    def measure_from(self) -> float:
        return self.start + self.warmup

    @property
    def end(self) -> float:
        return self.measure_from + self.duration

    def at(self, slot: int) -> float:
        return self.start + slot / self.rate

    def first_round(self, user: int) -> int:
        """Users begin their first journey in different rounds, spreading the mix over the eight steps."""
        return (user * len(STEPS)) // self.users


class RateRecorder:
    """HdrHistograms (µs) of the requests intended inside the measured window, and the counts."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.latency = new_histogram()  # from the intended send time: what a user waited
        self.service = new_histogram()  # from the actual send: what the lab took once asked
        self.send_lag = new_histogram()  # actual send - intended: how late the user could send
        self.step_latency: dict[str, HdrHistogram] = {step: new_histogram() for step in STEPS}
        self.step_floor: dict[str, HdrHistogram] = {step: new_histogram() for step in STEPS}
        self.floor = new_histogram()
        self.sent = 0  # every request, warm-up included (progress)
        self.intended = 0
        self.ok = 0
        self.completed_in_window = 0
        self.errors: Counter[str] = Counter()
        self.first_error = ""
        self.floorless = 0

    def in_window(self, intended: float) -> bool:
        return self.schedule.measure_from <= intended < self.schedule.end

    def success(self, step: str, intended: float, sent: float, done: float, floor_ms: float | None) -> None:
        if self.schedule.measure_from <= done < self.schedule.end:
            self.completed_in_window += 1
        if not self.in_window(intended):
            return
        self.intended += 1
        self.ok += 1
        latency = max(HIST_LOWEST_US, round((done - intended) * 1e6))
        self.latency.record_value(latency)
        self.step_latency[step].record_value(latency)
        self.service.record_value(max(HIST_LOWEST_US, round((done - sent) * 1e6)))
        self.send_lag.record_value(max(HIST_LOWEST_US, round((sent - intended) * 1e6)))
        if floor_ms is None:
            self.floorless += 1
        else:
            floor = max(HIST_LOWEST_US, round(floor_ms * 1000))
            self.floor.record_value(floor)
            self.step_floor[step].record_value(floor)

    def failure(self, intended: float, kind: str, detail: str) -> None:
        if not self.in_window(intended):
            return
        self.intended += 1
        self.errors[kind] += 1
        if not self.first_error:
            self.first_error = detail[:300]

    def result(self) -> dict[str, Any]:
        schedule = self.schedule
        errors = sum(self.errors.values())
        latency = with_floor(self.latency, self.floor)
        steps = {step: with_floor(self.step_latency[step], self.step_floor[step]) for step in STEPS}
        return {
            "rate": schedule.rate,
            "users": schedule.users,
            "think_ms": schedule.users / schedule.rate * 1000,
            "warmup_s": schedule.warmup,
            "duration_s": schedule.duration,
            "timeout_s": schedule.timeout,
            "intended": self.intended,
            "ok": self.ok,
            "errors": errors,
            "errors_by_kind": dict(self.errors),
            "first_error": self.first_error,
            "error_rate": errors / self.intended if self.intended else None,
            "achieved_rate": self.completed_in_window / schedule.duration,
            "requests_without_floor": self.floorless,
            "latency": latency,
            "service": {**summarize(self.service), "histogram": encode_histogram(self.service)},
            "send_lag": {**summarize(self.send_lag), "histogram": encode_histogram(self.send_lag)},
            "steps": steps,
        }


def with_floor(latency: HdrHistogram, floor: HdrHistogram) -> dict[str, Any]:
    """Percentiles, the floor's percentiles, p50 / floor p50, and both raw histograms."""
    figures = summarize(latency)
    figures["floor"] = floor_figures(floor)
    p50, floor_p50 = figures["p50_ms"], figures["floor"]["p50_ms"]
    figures["ratio_p50"] = p50 / floor_p50 if p50 is not None and floor_p50 else None
    figures["histogram"] = encode_histogram(latency)
    figures["floor_histogram"] = encode_histogram(floor)
    return figures


def judge(cell: Mapping[str, Any], target_ms: float) -> list[str]:
    """Why a rate was not sustained (empty: it was)."""
    reasons = []
    if not cell["intended"]:
        reasons.append("no request was intended inside the window")
        return reasons
    if cell["error_rate"] > MAX_ERROR_RATE:
        reasons.append(f"error rate {cell['error_rate']:.1%} > {MAX_ERROR_RATE:.0%}")
    p99 = cell["latency"]["p99_ms"]
    if p99 is None or p99 > target_ms:
        reasons.append(f"p99 {ms(p99)} ms > target {target_ms:.0f} ms")
    if cell["achieved_rate"] < MIN_ACHIEVED_FRACTION * cell["rate"]:
        reasons.append(f"achieved {cell['achieved_rate']:.1f}/s < {MIN_ACHIEVED_FRACTION:.0%} of {cell['rate']:g}/s")
    return reasons


# --------------------------------------------------------------------------------------------------------
# The users: asyncio + aiohttp, one coroutine per user


class UserJourney:
    """One journey's state: the same eight requests as `movr.bench.journey.journey_steps`, built from what
    the earlier steps returned (that module's client is synchronous; this one shares a connection pool)."""

    def __init__(self, city: str, username: str) -> None:
        self.city = city
        self.username = username
        self.token = ""
        self.vehicle_id = ""
        self.ride: dict[str, Any] = {}

    def request(self, step: str) -> tuple[str, str, dict[str, Any] | None]:
        """(method, path under /api/v1, JSON body) of a step."""
        city = urllib.parse.quote(self.city)
        if step == "sign up":
            body = {
                "city": self.city,
                "username": self.username,
                "password": PASSWORD,
                "first_name": "Throughput",
                "last_name": "Bench",
            }
            return "POST", "/users", body
        if step == "log in":
            return "POST", "/sessions", {"username": self.username, "password": PASSWORD}
        if step == "view vehicles":
            return "GET", f"/cities/{city}/vehicles", None
        if step == "add vehicle":
            return "POST", "/vehicles", {"type": "scooter", "brand": "Vespa", "color": "red", "location": "Main St"}
        if step == "start ride":
            return "POST", "/rides", {"city": self.city, "vehicle_id": self.vehicle_id}
        if step == "end ride":
            ride_city = urllib.parse.quote(self.ride["city"])
            return "PATCH", f"/rides/{ride_city}/{self.ride['id']}", {"location": "Station"}
        if step == "view rides":
            return "GET", "/rides", None
        if step == "log out":
            return "DELETE", "/sessions", None
        raise ValueError(f"unknown step {step!r}")

    def needs_body(self, step: str) -> bool:
        return step in ("log in", "add vehicle", "start ride")

    def absorb(self, step: str, payload: Any) -> None:
        if step == "log in":
            self.token = payload.get("token", "")
        elif step == "add vehicle":
            self.vehicle_id = payload["id"]
        elif step == "start ride":
            self.ride = payload
        elif step == "log out":
            self.token = ""

    def headers(self) -> dict[str, str]:
        headers = {"X-Client-City": self.city, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


@dataclass
class LoadContext:
    preset: Preset
    topology: str
    scale: float
    base_url: str
    cities: list[str]
    cpu_ms: dict[str, float]
    recorder: RateRecorder
    session: aiohttp.ClientSession
    journeys: int = 0

    def next_journey(self) -> UserJourney:
        city = self.cities[self.journeys % len(self.cities)]
        self.journeys += 1
        return UserJourney(city, f"tp{secrets.token_hex(6)}")


@dataclass
class Answer:
    """What a successful step's response said about where and how it was served."""

    served_by: str
    statements: int
    cpu_ms: float


class StepFailed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


async def exchange(
    session: aiohttp.ClientSession, base_url: str, journey: UserJourney, step: str, timeout_s: float
) -> Answer:
    """One step's request and response; StepFailed on a timeout, a broken connection or a status >= 400."""
    method, path, body = journey.request(step)
    try:
        async with session.request(
            method,
            base_url + "/api/v1" + path,
            json=body,
            headers=journey.headers(),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            raw = await response.read()
            status = response.status
            headers = response.headers
    except TimeoutError:
        raise StepFailed("timeout", f"{step}: no answer in time") from None
    except aiohttp.ClientError as error:
        raise StepFailed(type(error).__name__, f"{step}: {type(error).__name__}: {error}") from None
    if status >= 400:
        raise StepFailed(f"http {status}", f"{method} {path} -> {status}: {raw[:200]!r}")
    journey.absorb(step, json.loads(raw or b"null") if journey.needs_body(step) else None)
    return Answer(
        served_by=headers.get("X-Movr-Region", ""),
        statements=int(headers.get("X-Movr-Statements", "0") or 0),
        cpu_ms=float(headers.get("X-Movr-Cpu-Ms", "0") or 0),
    )


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),  # users authenticate by bearer token; a shared jar would mix them
        skip_auto_headers=("User-Agent",),
    )


async def send(context: LoadContext, journey: UserJourney, step: str, intended: float) -> bool:
    """One step at its slot; True when it succeeded (the journey can go on)."""
    recorder, schedule = context.recorder, context.recorder.schedule
    wait = intended - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)  # pacing: the open-loop schedule's send time, not a distance
    deadline = intended + schedule.timeout
    sent = time.monotonic()
    if sent >= deadline:  # the user's earlier step answered too late for this one to be on time
        recorder.failure(intended, "timeout", f"{step}: not sent within {schedule.timeout:.1f} s of its slot")
        return False
    recorder.sent += 1
    try:
        answer = await exchange(context.session, context.base_url, journey, step, deadline - sent)
    except StepFailed as failed:
        recorder.failure(intended, failed.kind, failed.detail)
        return False
    done = time.monotonic()
    floor = request_floor_ms(
        context.preset,
        context.topology,
        context.scale,
        step,
        journey.city,
        journey.username,
        answer.served_by,
        answer.statements,
        context.cpu_ms.get(step, 0.0),  # the idle lab's hashing time: CPU queueing is not part of a floor
    )
    recorder.success(step, intended, sent, done, floor)
    return True


async def user(context: LoadContext, index: int) -> None:
    """Journeys back to back, one step per slot of this user, until the schedule ends."""
    schedule = context.recorder.schedule
    round_number = schedule.first_round(index)
    while True:
        journey = context.next_journey()
        for step in STEPS:
            intended = schedule.at(index + round_number * schedule.users)
            round_number += 1
            if intended >= schedule.end:
                return
            if not await send(context, journey, step, intended):
                break  # a failed step leaves nothing for the next to build on: a new journey, next slot


async def run_rate(
    context_args: dict[str, Any], schedule: Schedule, recorder: RateRecorder, on_tick: Callable[[], None]
) -> None:
    async with client_session() as session:
        context = LoadContext(**context_args, recorder=recorder, session=session)
        users = [asyncio.create_task(user(context, i)) for i in range(schedule.users)]
        done = asyncio.gather(*users)
        try:
            while not done.done():
                on_tick()
                await asyncio.wait([done], timeout=0.25)
            await done
        finally:
            for task in users:
                task.cancel()
            await asyncio.gather(*users, return_exceptions=True)
        on_tick()


async def calibrate(
    base_url: str, preset: Preset, topology: str, scale: float, cities: list[str], on_journey: Callable[[], None]
) -> list[dict[str, Any]]:
    """One journey from each city, one step at a time, on the idle lab: every step's floor with its own
    hashing time (as `movr bench journey` reports it), and what it took."""
    samples = []
    async with client_session() as session:
        for city in cities:
            journey = UserJourney(city, f"tc{secrets.token_hex(6)}")
            for step in STEPS:
                started = time.monotonic()
                try:
                    answer = await exchange(session, base_url, journey, step, 60.0)
                except StepFailed as failed:
                    raise CalibrationError(f"calibration journey from {city} failed: {failed.detail}") from None
                client_ms = (time.monotonic() - started) * 1000
                floor = request_floor_ms(
                    preset, topology, scale, step, city, journey.username, answer.served_by, answer.statements,
                    answer.cpu_ms,
                )  # fmt: skip
                if floor is None:
                    raise CalibrationError(f"{step} from {city}: the response did not say which region served it")
                samples.append(
                    {
                        "city": city,
                        "step": step,
                        "served_by": answer.served_by,
                        "statements": answer.statements,
                        "client_ms": client_ms,
                        "floor_ms": floor,
                        "cpu_ms": answer.cpu_ms,
                    }
                )
            on_journey()
    return samples


def run_async(coroutine: Any) -> Any:
    """uvloop when present: the client's own overhead is part of what every request waits for."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


# --------------------------------------------------------------------------------------------------------
# CPU per lab process


@dataclass
class _Group:
    name: str
    kind: str
    root: int
    first: dict[int, float] = field(default_factory=dict)  # pid -> CPU seconds when first seen in the window
    last: dict[int, float] = field(default_factory=dict)
    baseline_taken: set[int] = field(default_factory=set)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _family(pid: int, children: bool) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return []


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class CpuSampler:
    """CPU time of each process group over the measured window, sampled in a thread.

    A pid already alive at the window's start counts from its CPU time then; one first seen later (a new
    PostgreSQL backend) from zero, since it began inside the window (or just before, a small overcount).
    """

    def __init__(self, groups: list[tuple[str, str, int]], start: float, end: float) -> None:
        self.groups = [_Group(name, kind, pid) for name, kind, pid in groups]
        self.start, self.end = start, end
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="throughput-cpu", daemon=True)
        self.machine_busy = (0.0, 0.0)
        self.loadavg: tuple[float, ...] = ()
        self.elapsed = 0.0

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _sample(self, baseline: bool) -> None:
        for group in self.groups:
            # The bench client's children are the lab's processes themselves: counted in their own groups.
            for process in _family(group.root, children=group.kind != "bench-client"):
                try:
                    seconds = _cpu_seconds(process)
                except psutil.Error:
                    continue
                if process.pid not in group.first:
                    group.first[process.pid] = seconds if baseline else 0.0
                group.last[process.pid] = seconds

    def _run(self) -> None:
        if self.stop.wait(max(0.0, self.start - time.monotonic())):
            return
        started = time.monotonic()
        busy_before = _busy_seconds()
        self._sample(baseline=True)
        # Until the window ends, or the load ends first (the users' last slots came before the end).
        while not self.stop.wait(min(CPU_SAMPLE_S, max(0.0, self.end - time.monotonic()))):
            if time.monotonic() >= self.end:
                break
            self._sample(baseline=False)
        self._sample(baseline=False)
        self.elapsed = time.monotonic() - started
        self.machine_busy = (busy_before, _busy_seconds())
        self.loadavg = os.getloadavg()

    def result(self) -> dict[str, Any]:
        if not self.elapsed:
            return {}
        processes = []
        for group in self.groups:
            seconds = sum(group.last[pid] - group.first[pid] for pid in group.last)
            processes.append(
                {
                    "name": group.name,
                    "kind": group.kind,
                    "pid": group.root,
                    "pids_seen": len(group.last),
                    "cpu_percent": 100 * seconds / self.elapsed,
                }
            )
        busy = self.machine_busy[1] - self.machine_busy[0]
        measured = sum(p["cpu_percent"] for p in processes)
        machine_percent = 100 * busy / self.elapsed
        return {
            "window_s": self.elapsed,
            "unit": "% of one core, averaged over the measured window",
            "processes": processes,
            "lab_percent": sum(p["cpu_percent"] for p in processes if p["kind"] != "bench-client"),
            "machine_percent": machine_percent,
            "machine_cores": psutil.cpu_count(),
            "rest_of_machine_percent": max(0.0, machine_percent - measured),
            "loadavg_at_end": list(self.loadavg),
        }


def cpu_groups(state: LabState) -> list[tuple[str, str, int]]:
    """(name, kind, root pid) of every lab process, every PostgreSQL server, and this client."""
    from movr.lab.pgserver import PostgresServer

    groups = [(record.name, record.kind, record.pid) for record in state.processes]
    for server in state.plan.get("servers", {}).values():
        pg = PostgresServer(
            name=server["name"], base_dir=state.run_dir / "servers" / server["name"], port=server["port"]
        )
        pid = pg.pid
        if pid is not None:
            groups.append((f"postgres {server['name']}", "postgres", pid))
    groups.append(("bench client", "bench-client", os.getpid()))
    return groups


# --------------------------------------------------------------------------------------------------------
# The experiment


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
    run_dir: Path
    json_path: Path

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


def calibration_cities(preset: Preset, quick: bool) -> list[str]:
    """Every client city (quick: the first of each region)."""
    if quick:
        return [region.cities[0] for region in preset.regions.values() if region.cities]
    return preset.cities


def plot_path_for(json_path: Path, topology: str) -> Path:
    return json_path.with_name(f"{json_path.stem}-{topology}.png")


def _postgres_version(state: LabState) -> str:
    import psycopg

    region = next(iter(state.plan["servers"]))
    with psycopg.connect(state.server_dsn(region), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def versions(postgresql: str) -> dict[str, str]:
    import psycopg

    return {
        "movr": __version__,
        "python": platform.python_version(),
        "postgresql": postgresql,
        "psycopg": psycopg.__version__,
        "aiohttp": aiohttp.__version__,
    }


def stand_up(settings: Settings, preset: Preset, topology: str, lab_dir: Path) -> LabState:
    """lab_up, tried twice: a lab's ports are picked free when it is planned, and on a shared machine another
    process can take one before our server binds it (the second try plans fresh ports)."""
    from movr.lab.supervisor import LabError, lab_up

    try:
        return lab_up(lab_dir, preset, settings.preset, topology, settings.scale)
    except LabError as err:
        first = (str(err).strip().splitlines() or ["?"])[0]
        console.print(f"[yellow]{topology}: the lab did not come up ({first}); trying once more")
    return lab_up(lab_dir, preset, settings.preset, topology, settings.scale)


def run_topology(settings: Settings, preset: Preset, topology: str, progress: Any, tasks: dict[str, Any]) -> dict:
    from movr.lab.supervisor import lab_down
    from movr.store.sample import generate, load_sample

    lab_dir = settings.run_dir / topology
    bar = progress.progress
    bar.update(tasks["current"], description=f"{topology}: standing the lab up", completed=0, total=1, detail="")
    state = stand_up(settings, preset, topology, lab_dir)
    try:
        loader = state.loader_backend()
        try:
            n = len(preset.cities)
            load_sample(loader, generate(preset, users=n * 3, vehicles=n * 3, rides=n * 3, seed=7))
        finally:
            loader.close()
        cities = calibration_cities(preset, settings.quick)
        bar.update(tasks["current"], description=f"{topology}: calibrating", total=len(cities), completed=0)

        def advance() -> None:  # one journey calibrated
            bar.advance(tasks["current"])

        samples = run_async(calibrate(state.balancer_url, preset, topology, settings.scale, cities, advance))
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
            "postgresql": _postgres_version(state),
            "lab_processes": [{"name": p.name, "kind": p.kind, "pid": p.pid} for p in state.processes],
            "rates": [],
            "max_sustained_rate": None,
        }
        for rate in settings.rates:
            cell = run_one_rate(settings, preset, state, calibration, rate, think_s, timeout_s, progress, tasks)
            cell["failed_because"] = judge(cell, target_ms)
            cell["sustained"] = not cell["failed_because"]
            entry["rates"].append(cell)
            bar.advance(tasks["rates"])
            if not cell["sustained"]:
                break  # the rate failed: higher ones would only fail harder
            entry["max_sustained_rate"] = rate
        return entry
    finally:
        bar.update(tasks["current"], description=f"{topology}: taking the lab down", detail="")
        lab_down(lab_dir)


def run_one_rate(
    settings: Settings,
    preset: Preset,
    state: LabState,
    calibration: Calibration,
    rate: float,
    think_s: float,
    timeout_s: float,
    progress: Any,
    tasks: dict[str, Any],
) -> dict[str, Any]:
    users = max(1, math.ceil(rate * think_s))
    journey_s = len(STEPS) * users / rate  # the staggered users have all begun after one journey's length
    warmup = max(settings.warmup, journey_s)
    schedule = Schedule(rate, users, time.monotonic() + 0.2, warmup, settings.duration, timeout_s)
    recorder = RateRecorder(schedule)
    bar = progress.progress
    total = warmup + settings.duration
    bar.update(tasks["current"], description=f"{state.topology} @ {rate:g}/s", total=total, completed=0, detail="")

    def tick() -> None:
        elapsed = min(total, max(0.0, time.monotonic() - schedule.start))
        errors = sum(recorder.errors.values())
        bar.update(tasks["current"], completed=elapsed, detail=f"{recorder.sent} sent, {errors} errors")

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


class _Progress:
    def __init__(self, runs: int) -> None:
        self.progress = progress_bar()
        self.tasks = {
            "rates": self.progress.add_task("rates", total=runs, detail=""),
            "current": self.progress.add_task("", total=1, detail=""),
        }

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)


def run_benchmark(settings: Settings) -> dict[str, Any]:
    from movr.lab.supervisor import LabError

    preset = load_preset(settings.preset)
    result: dict[str, Any] = {
        "benchmark": "throughput",
        "preset": preset.name,
        "preset_source": settings.preset,
        "scale": settings.scale,
        "settings": settings.describe(),
        "machine": machine(),
        "loadavg_at_start": list(os.getloadavg()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "topologies": [],
    }
    started = time.monotonic()
    with _Progress(len(settings.topologies) * len(settings.rates)) as progress:
        for topology in settings.topologies:
            try:
                entry = run_topology(settings, preset, topology, progress, progress.tasks)
            except (LabError, CalibrationError) as err:
                # Keep what the other topologies measured; the command reports the failure after writing it.
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                entry = {"topology": topology, "error": first, "rates": [], "max_sustained_rate": None}
            entry["plot"] = plot_path_for(settings.json_path, topology).name
            result["topologies"].append(entry)
            # Rates not run after a failure still count as done for the bar.
            skipped = len(settings.rates) - len(entry["rates"])
            progress.progress.advance(progress.tasks["rates"], skipped)
    postgresql = next((t["postgresql"] for t in result["topologies"] if "postgresql" in t), "unknown")
    result["versions"] = versions(postgresql)
    result["loadavg_at_end"] = list(os.getloadavg())
    result["elapsed_s"] = time.monotonic() - started
    return result


# --------------------------------------------------------------------------------------------------------
# Output


def print_report(result: Mapping[str, Any]) -> None:
    for entry in result["topologies"]:
        if entry.get("error"):
            console.print(f"[bold red]{entry['topology']}: not measured: {entry['error']}")
            continue
        table = Table(
            title=(
                f"throughput, {entry['topology']} — preset {result['preset']}, delays x{result['scale']:g}; "
                f"p99 target {entry['target_ms']:.0f} ms ({entry['target_basis']}); ms from intended send time"
            )
        )
        columns = ("rate/s", "users", "achieved/s", "errors", "p50", "p95", "p99", "floor p50", "p50/floor")
        for column in (*columns, "lab CPU %", "client CPU %", "rest %", "verdict"):
            table.add_column(column, justify="left" if column == "verdict" else "right")
        for cell in entry["rates"]:
            latency, cpu = cell["latency"], cell["cpu"]
            client = next((p["cpu_percent"] for p in cpu.get("processes", []) if p["kind"] == "bench-client"), None)
            ratio = latency["ratio_p50"]
            table.add_row(
                f"{cell['rate']:g}",
                str(cell["users"]),
                f"{cell['achieved_rate']:.1f}",
                f"{cell['error_rate']:.1%}" if cell["error_rate"] is not None else "-",
                ms(latency["p50_ms"]),
                ms(latency["p95_ms"]),
                ms(latency["p99_ms"]),
                ms(latency["floor"]["p50_ms"]),
                f"{ratio:.1f}x" if ratio else "-",
                f"{cpu.get('lab_percent', 0):.0f}",
                f"{client:.0f}" if client is not None else "-",
                f"{cpu.get('rest_of_machine_percent', 0):.0f}",
                "sustained" if cell["sustained"] else "; ".join(cell["failed_because"]),
            )
        console.print(table)
        for cell in entry["rates"]:
            if cell["errors"]:
                console.print(f"[yellow]{entry['topology']} @ {cell['rate']:g}/s: first error: {cell['first_error']}")
    summary = ", ".join(
        f"{e['topology']} {e['max_sustained_rate']:g}/s" if e["max_sustained_rate"] else f"{e['topology']} none"
        for e in result["topologies"]
    )
    console.print(f"highest sustained rate: {summary}")


def plot_topology(result: Mapping[str, Any], entry: Mapping[str, Any], path: Path) -> None:
    """Latency percentiles and the floor against the offered rate; achieved rate on a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cells = entry["rates"]
    rates = [c["rate"] for c in cells]
    fig, (axis, achieved) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        values = [c["latency"][key] if c["latency"][key] is not None else float("nan") for c in cells]
        axis.plot(rates, values, marker="o", label=label)
    floors = [c["latency"]["floor"]["p50_ms"] or float("nan") for c in cells]
    axis.plot(rates, floors, linestyle=":", color="black", label="floor p50")
    axis.axhline(entry["target_ms"], color="red", linestyle="--", label=f"p99 target {entry['target_ms']:.0f} ms")
    for cell in cells:
        if not cell["sustained"]:
            axis.axvline(cell["rate"], color="grey", alpha=0.4)
    axis.set_yscale("log")
    axis.set_xlabel("offered rate, requests/s (log)")
    axis.set_ylabel("ms from intended send time (log)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    sustained = entry["max_sustained_rate"]
    axis.set_title(f"{entry['topology']}: highest sustained rate {f'{sustained:g}/s' if sustained else 'none'}")
    for panel in (axis, achieved):
        panel.set_xscale("log")
        panel.set_xticks(rates, [f"{rate:g}" for rate in rates])
        panel.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    achieved.plot(rates, [c["achieved_rate"] for c in cells], marker="o", label="achieved")
    achieved.plot(rates, rates, linestyle=":", color="black", label="offered")
    achieved.set_yscale("log")
    achieved.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    achieved.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    achieved.set_xlabel("offered rate, requests/s (log)")
    achieved.set_ylabel("successful responses/s (log)")
    achieved.grid(alpha=0.3, which="both")
    achieved.legend(fontsize=8)
    fig.suptitle(
        f"journey mix, open loop — preset {result['preset']}, delays x{result['scale']:g}, "
        f"{entry['rates'][0]['duration_s']:g} s measured per rate"
        if cells
        else "no rate measured",
        fontsize=10,
    )
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------------------
# The command


def _parse_rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"--rates takes comma-separated numbers, not {text!r}") from None
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise CliError(f"--rates must be positive numbers: {text!r}")
    if any(later <= earlier for earlier, later in itertools.pairwise(rates)):
        raise CliError(f"--rates must rise: {text!r}")
    return rates


def _parse_topologies(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [name for name in names if name not in TOPOLOGIES]
    if bad or not names:
        raise CliError(f"--topologies: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(TOPOLOGIES)}")
    if len(set(names)) != len(names):
        raise CliError(f"--topologies repeats a topology: {text!r}")
    return names


def build_settings(
    *,
    preset: str,
    scale: float | None,
    topologies_text: str,
    rates_text: str | None,
    duration: float | None,
    warmup: float | None,
    p99_target_ms: float | None,
    quick: bool,
    json_path: Path | None,
    run_dir: Path | None,
) -> Settings:
    """Validate every option before anything starts (exit status 2, one line) and fill in the defaults."""
    try:
        load_preset(preset)
    except PresetError as err:
        raise CliError(str(err)) from None
    defaults = QUICK if quick else FULL
    scale = scale if scale is not None else defaults["scale"]
    duration = duration if duration is not None else defaults["duration"]
    warmup = warmup if warmup is not None else defaults["warmup"]
    if not math.isfinite(scale) or not 0.001 <= scale <= 100:
        raise CliError("--scale must be between 0.001 and 100")
    if not math.isfinite(duration) or duration <= 0:
        raise CliError("--duration must be positive")
    if not math.isfinite(warmup) or warmup < 0:
        raise CliError("--warmup must not be negative")
    if p99_target_ms is not None and (not math.isfinite(p99_target_ms) or p99_target_ms <= 0):
        raise CliError("--p99-target-ms must be positive")
    rates = _parse_rates(rates_text) if rates_text is not None else [float(r) for r in defaults["rates"]]
    run_dir = (run_dir or default_run_dir("throughput")).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise CliError(f"--run-dir {run_dir} is not a directory")
    return Settings(
        preset=preset,
        scale=scale,
        topologies=_parse_topologies(topologies_text),
        rates=rates,
        duration=duration,
        warmup=warmup,
        p99_target_ms=p99_target_ms,
        quick=quick,
        run_dir=run_dir,
        json_path=(json_path or run_dir / "throughput.json").resolve(),
    )


@click.command("throughput")
@click.option("--preset", default="gcp-3", show_default=True, help="Preset name or TOML file.")
@click.option("--scale", type=float, default=None, help="Multiplies every delay [default: 1; 0.05 with --quick].")
@click.option("--topologies", "topologies_text", default="single,hybrid,multi", show_default=True)
@click.option("--rates", "rates_text", default=None, help="Rising offered rates, requests/s [10,20,40,80,160,320].")
@click.option("--duration", type=float, default=None, help="Measured seconds per rate [20; 2 with --quick].")
@click.option("--warmup", type=float, default=None, help="Seconds before measuring, at least one journey [5].")
@click.option("--p99-target-ms", type=float, default=None, help="p99 target [4 x the slowest step's floor].")
@click.option("--quick", is_flag=True, help="Two short rates at scale 0.05: a smoke run, not numbers.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), help="Result file.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="Labs and logs here.")
def throughput_command(**options: Any) -> None:
    """The journey mix, open loop, at rising rates per topology: the highest rate each sustains."""
    # The options pass through as click parsed them: build_settings alone names, types and checks them, so
    # an option is declared once above and once there, not a third and fourth time here.
    settings = build_settings(**options)
    result = run_benchmark(settings)
    write_json(settings.json_path, result)
    for entry in result["topologies"]:
        if entry["rates"]:
            plot_topology(result, entry, plot_path_for(settings.json_path, entry["topology"]))
    print_report(result)
    console.print(f"figures: {settings.json_path}, charts: {settings.json_path.stem}-<topology>.png beside it")
    failed = [f"{e['topology']}: {e['error']}" for e in result["topologies"] if e.get("error")]
    if failed:
        raise CliError("throughput: not measured: " + "; ".join(failed))
