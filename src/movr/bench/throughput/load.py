"""The users of an open-loop load: one coroutine per user, every request at its slot of the schedule.

A user runs journeys (movr.bench.client.Journey: the one definition of the eight steps) back to back, one
step per slot of its own, in order (a step needs what the one before returned). A step is sent at its
intended time, or as soon as the user's previous step answered if that was later; a request that has not
answered `timeout` after its intended time is an error, and so is any status >= 400 (the user then starts
a new journey at its next slot). Each journey comes from the next city of the preset (round robin), as
header `X-Client-City` through the balancer, like any client.

One process: asyncio on uvloop with aiohttp (movr.bench.client's asynchronous transport), because a
blocking client could not keep hundreds of users on their schedule. Waiting for a slot's intended send
time is pacing of an open-loop schedule, not distance (law 1): distance is in the links only.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import uvloop

from movr.bench.client import STEPS, Figures, Journey, open_session, send_async
from movr.bench.throughput.schedule import RateRecorder, Schedule
from movr.floors import step_floor
from movr.geo import Preset


class StepFailed(Exception):
    """A step got no answer in time, lost its connection, or was answered with status >= 400."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


async def exchange(
    session: aiohttp.ClientSession, base_url: str, journey: Journey, step: str, timeout_s: float
) -> Figures:
    """One step's request and answer: what the answer's headers say about how it was served."""
    request = journey.request(step)
    try:
        reply = await send_async(session, base_url, request, journey.headers(), timeout_s)
    except TimeoutError:
        raise StepFailed("timeout", f"{step}: no answer in time") from None
    except aiohttp.ClientError as error:
        raise StepFailed(type(error).__name__, f"{step}: {type(error).__name__}: {error}") from None
    if reply.failed:
        raise StepFailed(
            f"http {reply.status}", f"{request.method} {request.path} -> {reply.status}: {reply.body[:200]!r}"
        )
    journey.keep(step, reply)
    return reply.figures


@dataclass
class LoadContext:
    preset: Preset
    topology: str
    scale: float
    base_url: str
    cities: list[str]
    cpu_ms: dict[str, float]  # the idle lab's hashing time per step: CPU queueing is not part of a floor
    recorder: RateRecorder
    session: aiohttp.ClientSession
    journeys: int = 0

    def next_journey(self) -> Journey:
        city = self.cities[self.journeys % len(self.cities)]
        self.journeys += 1
        return Journey(city, f"tp{secrets.token_hex(6)}", first_name="Throughput", last_name="Bench")


async def send(context: LoadContext, journey: Journey, step: str, intended: float) -> bool:
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
        figures = await exchange(context.session, context.base_url, journey, step, deadline - sent)
    except StepFailed as failed:
        recorder.failure(intended, failed.kind, failed.detail)
        return False
    done = time.monotonic()
    floor = step_floor(
        context.preset,
        context.scale,
        context.topology,
        step,
        city=journey.city,
        served_by=figures.served_by,
        statements=figures.statements,
        cpu_ms=context.cpu_ms.get(step, 0.0),  # the idle lab's: CPU queueing is not part of a floor
    )
    recorder.success(step, intended, sent, done, None if floor is None else floor.total_ms)
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
    """Every user of the schedule, ticking `on_tick` (progress) four times a second until they are done."""
    async with open_session() as session:
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


def run_async(coroutine: Coroutine[Any, Any, None]) -> None:
    """On uvloop: the client's own overhead is part of what every request waits for."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)
