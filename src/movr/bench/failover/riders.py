"""The drill's load: one rider per chosen city, each a thread riding its own vehicle through the balancer.

A rider signs up, logs in and adds a vehicle, then, like a browser, rides it again and again: start ride,
view vehicles, end ride, view vehicles. It never retries a write blindly: after a write whose answer was
lost it reads what happened (view rides) or, for an end, asks again and takes `409 ride_already_ended` as
the service's word that the first attempt happened. What it was told (acknowledged) or found by reading
goes into the ledger; every request, as the rider saw it, into its samples.
"""

from __future__ import annotations

import http.client
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from movr.bench import client as api
from movr.bench.client import Client, Figures, Reply, Request, caller_headers
from movr.bench.experiment import ExperimentError
from movr.bench.failover.ledger import Ledger

PASSWORD = "failover-password-1"
READS = ("view vehicles", "view rides")
ANSWER_TIMEOUT_S = 30.0


class DrillError(ExperimentError):
    """The drill could not run (the lab or its riders could not be set up)."""


@dataclass
class Sample:
    """One request of the load, as the client saw it (times in seconds from the start of the load)."""

    city: str
    home: str
    op: str
    write: bool
    t0: float
    t1: float
    status: int  # 0: no HTTP answer (connection failed or timed out)
    ok: bool  # a success, or the answer that a retried write's first attempt happened (see Rider.call)
    ms: float
    served_by: str
    statements: int
    cpu_ms: float
    floor_ms: float | None = None
    phase: str = ""

    def request(self) -> dict[str, Any]:
        """What the request was, as the floor model asks (movr.floors.failover_floor)."""
        return {
            "city": self.city,
            "home": self.home,
            "served_by": self.served_by,
            "statements": self.statements,
            "write": self.write,
            "cpu_ms": self.cpu_ms,
        }


class Rider(threading.Thread):
    """One client in one city: signs up, then rides its own vehicle until told to stop."""

    def __init__(self, base_url: str, city: str, home: str, ledger: Ledger, clock: Callable[[], float], think_s: float):
        super().__init__(name=f"rider-{city}", daemon=True)
        self.city, self.home = city, home
        self.ledger = ledger
        self.clock = clock
        self.think_s = think_s
        self.samples: list[Sample] = []
        # Never resends: a write whose answer is lost stays unknown until the rider reads what happened.
        self.http = Client(base_url, timeout=ANSWER_TIMEOUT_S, reconnect=False)
        self.token = ""
        self.stop = threading.Event()
        self.ride: dict[str, Any] | None = None
        self.vehicle_id = ""
        self.pending_start = False
        self.pending_end = False
        self.error: BaseException | None = None

    def set_up(self) -> None:
        username = f"fo{''.join(c for c in self.city if c.isalpha())[:8]}{secrets.token_hex(4)}"
        user = self._must(api.sign_up(self.city, username, PASSWORD))
        self.ledger.users[user["id"]] = self.city
        self.token = self._must(api.log_in(username, PASSWORD))["token"]
        vehicle = self._must(api.add_vehicle(brand="Drill", location="Depot"))
        self.vehicle_id = vehicle["id"]
        self.ledger.vehicles[vehicle["id"]] = self.city

    def _must(self, request: Request) -> dict[str, Any]:
        try:
            reply = self.http.send(request, caller_headers(self.city, self.token))
        except (OSError, http.client.HTTPException) as error:
            raise DrillError(f"{self.city}: set-up {request.method} {request.path}: no answer ({error})") from None
        if reply.status >= 300:
            raise DrillError(
                f"{self.city}: set-up {request.method} {request.path} -> {reply.status}: {reply.body[:200]!r}"
            )
        return reply.json()

    def call(self, op: str, request: Request, answers: frozenset[str] = frozenset()) -> Reply | None:
        """One request of the load. `answers`: error codes that are the service's correct answer here, not a
        failure (a retried write told that its first attempt, whose reply was lost, did happen)."""
        t0 = self.clock()
        started = time.perf_counter()
        try:
            reply: Reply | None = self.http.send(request, caller_headers(self.city, self.token))
        except (OSError, http.client.HTTPException):
            reply = None
        ms = (time.perf_counter() - started) * 1000
        figures = reply.figures if reply is not None else Figures()
        self.samples.append(
            Sample(
                city=self.city,
                home=self.home,
                op=op,
                write=op not in READS,
                t0=t0,
                t1=self.clock(),
                status=reply.status if reply is not None else 0,
                ok=reply is not None and (200 <= reply.status < 300 or reply.error_code() in answers),
                ms=ms,
                served_by=figures.served_by,
                statements=figures.statements,
                cpu_ms=figures.cpu_ms,
            )
        )
        return reply

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
                self.stop.wait(self.think_s)  # the client's think time, not a distance
        except BaseException as err:  # reported by the drill, which then fails
            self.error = err

    def step(self) -> None:
        if self.pending_start or self.pending_end:
            self.reconcile()
            return
        if self.ride is None:
            reply = self.call("start ride", api.start_ride(self.city, self.vehicle_id))
            if reply is not None and reply.status == 201:
                self.ride = reply.json()
                self.ledger.note("started", self.ride["id"], self.city)
            else:
                # Lost answer, or a conflict that says an earlier lost answer was a success: find out by reading.
                self.pending_start = True
        else:
            self.end_ride(retry=False)
        # The steady read is the city's vehicles, a list of constant size: a rider's own ride history grows
        # all drill long, and serializing it would slowly raise every request's cost (not the failover's).
        self.call("view vehicles", api.view_vehicles(self.city))

    def end_ride(self, *, retry: bool) -> None:
        """End the open ride; on a lost answer, leave it pending (the next step asks again)."""
        assert self.ride is not None
        ride = self.ride
        answers = frozenset({"ride_already_ended"}) if retry else frozenset()
        reply = self.call("end ride", api.end_ride(ride, location="Drill station"), answers)
        if reply is not None and reply.status == 200:
            self.ledger.note("ended", ride["id"], self.city)
            self.ride, self.pending_end = None, False
        elif reply is not None and reply.error_code() == "ride_already_ended":
            self.ledger.note("ended_unacked", ride["id"], self.city)
            self.ride, self.pending_end = None, False
        else:
            self.pending_end = True

    def reconcile(self) -> None:
        """After a write whose answer was lost: read what happened (never assume, never count it acked)."""
        if self.pending_end:
            self.end_ride(retry=True)
            return
        reply = self.call("view rides", api.view_rides())
        if reply is None or reply.status != 200:
            return
        open_rides = [r for r in reply.json() if r.get("end_time") is None]
        if open_rides:
            self.ride = open_rides[0]
            if self.ride["id"] not in self.ledger.started:
                self.ledger.note("adopted", self.ride["id"], self.city)
        self.pending_start = False
