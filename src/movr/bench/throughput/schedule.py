"""The open-loop schedule of one offered rate, what it recorded, and whether the lab sustained it.

A slot every 1/R s; slot i belongs to user i mod N and carries an *intended send time*. Latency is measured
from that time (coordinated-omission safe), so a lab that falls behind is charged for every request it made
wait. A request belongs to the window in which it was *intended*; "achieved" counts successful responses
that *completed* inside the window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from movr.bench.client import STEPS
from movr.bench.histograms import HIST_LOWEST_US, encode_histogram, floor_figures, new_histogram, summarize
from movr.bench.markup import ms
from movr.bench.throughput.settings import MAX_ERROR_RATE, MIN_ACHIEVED_FRACTION


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
