"""`movr bench failover`: lose a region (or a server) under load, and prove that nothing acknowledged is lost.

    movr bench failover [--preset aws-eu-us] [--survival region|zone] [--no-super-regions] [--kill REGION|SERVER]
                        [--duration 60] [--kill-at 20] [--scale 1.0] [--cities-per-region 2] [--quick]
                        [--json PATH] [--plot PATH]

The drill stands a lab up with the survival goal, loads sample data, and starts one client per chosen city
(`--cities-per-region` of every region), each a rider who signs up, logs in, adds a vehicle and then, through
the balancer like a browser, rides it again and again: start ride, view vehicles, end ride, view vehicles
(and, after a write whose answer was lost, view rides to find out what happened). At
`--kill-at` seconds it kills the region (its servers, app server and balancer target: `movr lab fail region`)
or the server named by `--kill`; the failover controller does the rest. At `--duration` the load stops, the
lab is healed (`movr lab heal`), and the drill checks:

- a client-side ledger of every *acknowledged* write (users, vehicles, ride starts, ride ends) against the
  databases: every one present on its region's current primary, exactly once; every acknowledged end has its
  end time. A write whose answer was lost (an error, a timeout) is not in the ledger: the client finds out
  what happened by reading, as a real client would, and never counts it as acknowledged;
- invariants: no vehicle in two open rides, no ride with an end location but no end time, and a vehicle is
  `in_use` exactly when it has an open ride;
- replicas: once healed, every member of every group holds the same rows as its primary.

Per city it reports the unavailability window (last successful write before the loss, first successful write
started after it), when writes resumed (first success minus the moment of the kill), error rates and latency
before and after, each request beside its physical floor (law 3): client<->serving-region RTT + one round trip
per statement to the data's primary if that is in another region + for writes the commit's wait for the
nearest synchronous standby still alive. After the loss the floor is the new one: the data may be served from
another region and commits may wait for a farther standby. JSON and a PNG timeline record everything.
"""

from __future__ import annotations

import http.client
import itertools
import json
import platform
import secrets
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import psycopg
from rich.console import Console
from rich.table import Table

from movr import __version__
from movr.bench.plots import save_figure
from movr.cli_support import figure_options
from movr.geo import Preset, load_preset

console = Console()
PASSWORD = "failover-password-1"
READS = ("view vehicles", "view rides")


class DrillError(RuntimeError):
    """The drill could not run (the lab or its clients could not be set up)."""


@dataclass
class DrillConfig:
    preset_source: str = "aws-eu-us"
    survival: str = "region"
    super_regions: bool = True
    kill: str | None = None  # a region or a server name; default: the preset's primary region
    duration: float = 60.0
    kill_at: float = 20.0
    scale: float = 1.0
    cities_per_region: int = 2
    think_ms: float = 50.0
    run_dir: Path = field(default_factory=lambda: Path.cwd() / "run" / "failover")
    keep: bool = False  # leave the lab running afterwards (inspect it with movr lab status)
    heal_after: bool = True


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


@dataclass
class Ledger:
    """What the clients know was written, by what they were told (acknowledged) or read back."""

    users: dict[str, str] = field(default_factory=dict)  # id -> city
    vehicles: dict[str, str] = field(default_factory=dict)
    started: dict[str, str] = field(default_factory=dict)  # ride id -> city, start acknowledged
    ended: dict[str, str] = field(default_factory=dict)  # ride id -> city, end acknowledged
    adopted: dict[str, str] = field(default_factory=dict)  # rides whose start's answer was lost, found by reading
    ended_unacked: dict[str, str] = field(default_factory=dict)  # an end whose answer was lost, found done
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, kind: str, ride_id: str, city: str) -> None:
        with self.lock:
            getattr(self, kind)[ride_id] = city

    def as_dict(self) -> dict[str, int]:
        return {
            name: len(getattr(self, name))
            for name in ("users", "vehicles", "started", "ended", "adopted", "ended_unacked")
        }


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class Client:
    """One kept-alive HTTP connection to the balancer (plain http.client: a heavier client library would add
    milliseconds of its own to every measured request). Never retries: a write whose answer is lost stays
    unknown, and the rider finds out what happened by reading."""

    def __init__(self, base_url: str, city: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self.headers = {"X-Client-City": city, "Accept": "application/json"}
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        """Raises OSError or http.client.HTTPException when no answer came back."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.connection.request(method, "/api/v1" + path, body=data, headers=headers)
            response = self.connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise


class Rider(threading.Thread):
    """One client in one city: signs up, then rides its own vehicle until told to stop."""

    def __init__(self, base_url: str, city: str, home: str, ledger: Ledger, clock: Callable[[], float], think_s: float):
        super().__init__(name=f"rider-{city}", daemon=True)
        self.city, self.home = city, home
        self.ledger = ledger
        self.clock = clock
        self.think_s = think_s
        self.samples: list[Sample] = []
        self.http = Client(base_url, city, timeout=30.0)
        self.stop = threading.Event()
        self.ride: dict[str, Any] | None = None
        self.vehicle_id = ""
        self.pending_start = False
        self.pending_end = False
        self.error: BaseException | None = None

    # --- set-up (before the clock starts) ---

    def set_up(self) -> None:
        username = f"fo{''.join(c for c in self.city if c.isalpha())[:8]}{secrets.token_hex(4)}"
        user = self._must("POST", "/users", {"city": self.city, "username": username, "password": PASSWORD})
        self.ledger.users[user["id"]] = self.city
        session = self._must("POST", "/sessions", {"username": username, "password": PASSWORD})
        self.http.headers["Authorization"] = f"Bearer {session['token']}"
        vehicle = self._must(
            "POST", "/vehicles", {"type": "scooter", "brand": "Drill", "color": "red", "location": "Depot"}
        )
        self.vehicle_id = vehicle["id"]
        self.ledger.vehicles[vehicle["id"]] = self.city

    def _must(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.request(method, path, body)
        if reply.status >= 300:
            raise DrillError(f"{self.city}: set-up {method} {path} -> {reply.status}: {reply.body[:200]!r}")
        return reply.json()

    # --- the load ---

    def call(
        self, op: str, method: str, path: str, body: dict[str, Any] | None = None, answers: frozenset[str] = frozenset()
    ) -> Reply | None:
        """One request of the load. `answers`: error codes that are the service's correct answer here, not a
        failure (a retried write told that its first attempt, whose reply was lost, did happen)."""
        t0 = self.clock()
        started = time.perf_counter()
        try:
            response: Reply | None = self.http.request(method, path, body)
        except (OSError, http.client.HTTPException):
            response = None
        ms = (time.perf_counter() - started) * 1000
        status = response.status if response is not None else 0
        headers = response.headers if response is not None else {}
        self.samples.append(
            Sample(
                city=self.city,
                home=self.home,
                op=op,
                write=op not in READS,
                t0=t0,
                t1=self.clock(),
                status=status,
                ok=200 <= status < 300 or (response is not None and _code(response) in answers),
                ms=ms,
                served_by=headers.get("X-Movr-Region", ""),
                statements=int(headers.get("X-Movr-Statements", 0) or 0),
                cpu_ms=float(headers.get("X-Movr-Cpu-Ms", 0) or 0),
            )
        )
        return response

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
            response = self.call("start ride", "POST", "/rides", {"city": self.city, "vehicle_id": self.vehicle_id})
            if response is not None and response.status == 201:
                self.ride = response.json()
                self.ledger.note("started", self.ride["id"], self.city)
            else:
                # Lost answer, or a conflict that says an earlier lost answer was a success: find out by reading.
                self.pending_start = True
        else:
            ride = self.ride
            response = self.end_ride(ride)
            if response is not None and response.status == 200:
                self.ledger.note("ended", ride["id"], self.city)
                self.ride = None
            elif response is not None and _code(response) == "ride_already_ended":
                self.ledger.note("ended_unacked", ride["id"], self.city)
                self.ride = None
            else:
                self.pending_end = True
        # The steady read is the city's vehicles, a list of constant size: a rider's own ride history grows
        # all drill long, and serializing it would slowly raise every request's cost (not the failover's).
        self.call("view vehicles", "GET", f"/cities/{urllib.parse.quote(self.city)}/vehicles")

    def end_ride(self, ride: dict[str, Any], *, retry: bool = False) -> Reply | None:
        path = f"/rides/{urllib.parse.quote(ride['city'])}/{ride['id']}"
        answers = frozenset({"ride_already_ended"}) if retry else frozenset()
        return self.call("end ride", "PATCH", path, {"location": "Drill station"}, answers)

    def reconcile(self) -> None:
        """After a write whose answer was lost: read what happened (never assume, never count it acked)."""
        if self.pending_end:
            assert self.ride is not None
            ride = self.ride
            response = self.end_ride(ride, retry=True)
            if response is not None and response.status == 200:
                self.ledger.note("ended", ride["id"], self.city)
                self.ride, self.pending_end = None, False
            elif response is not None and _code(response) == "ride_already_ended":
                self.ledger.note("ended_unacked", ride["id"], self.city)
                self.ride, self.pending_end = None, False
            return
        response = self.call("view rides", "GET", "/rides")
        if response is None or response.status != 200:
            return
        open_rides = [r for r in response.json() if r.get("end_time") is None]
        if open_rides:
            self.ride = open_rides[0]
            if self.ride["id"] not in self.ledger.started:
                self.ledger.note("adopted", self.ride["id"], self.city)
        self.pending_start = False


def _code(response: Reply) -> str:
    """The app's error code of a failed answer ("" when the body is not an app error)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return str(error.get("code", "")) if isinstance(error, dict) else ""


# --- floors ------------------------------------------------------------------------------------------------


def request_floor(
    sample: Sample, preset: Preset, layout: dict[str, Any], primaries: dict[str, str], lost: set[str], scale: float
) -> float | None:
    """The physical floor of one request (ms): see the module docstring."""
    from movr.lab.survival import commit_wait_ms

    if not sample.served_by:
        return None
    primary = primaries[sample.home]
    data_region = layout["servers"][primary]["region"]
    floor = preset.client_rtt_ms(sample.city, sample.served_by)
    if data_region != sample.served_by:
        floor += preset.rtt_ms(sample.served_by, data_region) * max(1, sample.statements)
    if sample.write:
        wait = commit_wait_ms(layout, preset, sample.home, primary, lost)
        if wait is None:
            return None
        floor += wait
    return floor * scale + sample.cpu_ms


# --- the drill ---------------------------------------------------------------------------------------------


def choose_cities(preset: Preset, per_region: int) -> list[str]:
    """The first cities of every region (the preset's order: its main cities first)."""
    return [city for region in preset.regions.values() for city in region.cities[:per_region]]


def run_drill(config: DrillConfig, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    from movr.lab.faults import fail_region, fail_server, heal
    from movr.lab.state import LabState
    from movr.lab.supervisor import SurvivalOptions, lab_down, lab_up
    from movr.lab.survival import layout_of
    from movr.store.sample import generate

    preset = load_preset(config.preset_source)
    kill = config.kill or preset.primary_region
    run_dir = config.run_dir.resolve()
    options = SurvivalOptions(config.survival, config.super_regions)  # type: ignore[arg-type]
    say(f"standing up the lab: {config.survival} survival on {preset.name}, delays x{config.scale:g}")
    state = lab_up(run_dir, preset, config.preset_source, "multi", config.scale, say=say, survival=options)
    try:
        layout = layout_of(state)
        assert layout is not None
        if kill not in preset.regions and kill not in layout["servers"]:
            raise DrillError(f"--kill {kill!r} is neither a region of {preset.name} nor a server of this lab")
        n = len(preset.cities)
        state.load_sample(generate(preset, users=n * 2, vehicles=n * 2, rides=n * 2, seed=11))

        ledger = Ledger()
        base = time.monotonic()
        wall_base = time.time()

        def clock() -> float:
            return time.monotonic() - base

        riders = [
            Rider(state.balancer_url, city, preset.region_of(city), ledger, clock, config.think_ms / 1000)
            for city in choose_cities(preset, config.cities_per_region)
        ]
        say(f"{len(riders)} riders sign up, log in and add a vehicle")
        for rider in riders:
            rider.set_up()
        base = time.monotonic()
        wall_base = time.time()
        for rider in riders:
            rider.start()
        say(f"load running; {kill} will be killed at {config.kill_at:g} s")
        _sleep_until(clock, config.kill_at)
        t_kill = clock()
        if kill in preset.regions:
            fail_region(run_dir, kill)
        else:
            fail_server(run_dir, kill)
        t_killed = clock()
        say(f"{kill} killed ({t_killed - t_kill:.2f} s to kill); load continues until {config.duration:g} s")
        _sleep_until(clock, config.duration)
        t_load_end = clock()  # riders finish the request they are in; gaps are measured up to here
        for rider in riders:
            rider.stop.set()
        for rider in riders:
            rider.join(timeout=60)
        t_stop = clock()
        errors = [f"{r.city}: {r.error!r}" for r in riders if r.error is not None]
        if errors:
            raise DrillError("a rider failed: " + "; ".join(errors))

        after_kill = LabState.read(run_dir)
        failovers = [f for f in after_kill.survival.get("failovers", []) if f["detected_at"] >= wall_base]
        primaries_after = {**after_kill.survival["primaries"]}
        lost = _lost_servers(layout, preset, kill)
        heal_s = None
        if config.heal_after:
            say("healing: lost servers rejoin as standbys, the app server restarts")
            started = time.monotonic()
            heal(run_dir, ["all"])
            _wait_replicas(run_dir)
            heal_s = time.monotonic() - started
        final = LabState.read(run_dir)
        checks = check_ledger(final, ledger)
        invariants = check_invariants(final)
        replicas = check_replicas(final) if config.heal_after else {}
        samples = [s for r in riders for s in r.samples]
        routed_at = max((f["routed_at"] - wall_base for f in failovers), default=None)
        before = state.survival["primaries"]
        _label(samples, preset, layout, before, primaries_after, lost, config.scale, t_kill, routed_at)
        cities = per_city(samples, riders, t_kill, t_load_end)
        result = {
            "benchmark": "failover",
            "preset": preset.name,
            "scale": config.scale,
            "survival": config.survival,
            "super_regions": config.super_regions,
            "goals": {group: info["goal"] for group, info in layout["groups"].items()},
            "kill": kill,
            "kill_kind": "region" if kill in preset.regions else "server",
            "duration_s": config.duration,
            "kill_at_s": t_kill,
            "kill_took_s": t_killed - t_kill,
            "stopped_at_s": t_stop,
            "load_ended_at_s": t_load_end,
            "think_ms": config.think_ms,
            "failovers": [
                {
                    **f,
                    "first_miss_s": f["first_miss_at"] - wall_base,
                    "routed_s": f["routed_at"] - wall_base,
                    "after_kill_s": f["routed_at"] - wall_base - t_kill,
                }
                for f in failovers
            ],
            "primaries_before": state.survival["primaries"],
            "primaries_after": primaries_after,
            "heal_s": heal_s,
            "ledger": ledger.as_dict(),
            "ledger_check": checks,
            "invariants": invariants,
            "replicas": replicas,
            "cities": cities,
            "versions": {"movr": __version__, "python": platform.python_version()},
            "machine": {"platform": platform.platform(), "processor": platform.machine()},
            "samples": [asdict(s) for s in samples],
        }
        result["expectations"] = expectations(result, layout, before, lost)
        result["passed"] = not result["expectations"]["unmet"]
        return result
    finally:
        if not config.keep:
            lab_down(run_dir)


def expectations(
    result: dict[str, Any], layout: dict[str, Any], primaries_before: dict[str, str], lost: set[str]
) -> dict[str, Any]:
    """What the survival goals promise for this fault, and each promise the drill saw broken.

    A drill passes only when it shows what it exists to show: no acknowledged write lost, invariants held,
    replicas identical after the heal; every group whose primary was lost and whose goal survives the
    fault failed over and its cities' writes resumed; every other city kept writing without an error.
    A group whose goal does not survive the fault (zone survival, its region lost) is expected to be
    unavailable: the article's trade, reported, not failed.
    """
    region_fault = result["kill_kind"] == "region"
    failed_over = {f["group"] for f in result["failovers"]}
    survives, unavailable, unmet = [], [], []
    for group, info in layout["groups"].items():
        if primaries_before.get(group, info["primary"]) not in lost:
            continue
        if region_fault and info["goal"] != "region":
            unavailable.append(group)
            continue
        survives.append(group)
        if group not in failed_over:
            unmet.append(f"{group} lost its primary and its {info['goal']} goal survives that, but no failover")
    for row in result["cities"]:
        if row["home"] in unavailable:
            continue
        if not row["resumed"]:
            unmet.append(f"writes for {row['city']} never resumed after the fault")
        elif row["home"] not in survives and row["failed_after_kill"]:
            unmet.append(f"{row['city']} ({row['home']}, not hit by the fault) saw {row['failed_after_kill']} errors")
    if not result["ledger_check"]["ok"]:
        checks = result["ledger_check"]
        unmet.append(f"acknowledged writes lost {len(checks['lost'])}, duplicated {len(checks['duplicated'])}")
    if not result["invariants"]["ok"]:
        unmet.append(f"invariants broken: {result['invariants']['violations']}")
    if result["replicas"] and not result["replicas"].get("ok", True):
        unmet.append("replicas differ after the heal")
    return {"survive": survives, "unavailable_by_design": unavailable, "unmet": unmet}


def _sleep_until(clock: Callable[[], float], when: float) -> None:
    while (left := when - clock()) > 0:
        time.sleep(min(left, 0.2))  # the drill's own schedule, not a distance


def _lost_servers(layout: dict[str, Any], preset: Preset, kill: str) -> set[str]:
    if kill in preset.regions:
        return {name for name, info in layout["servers"].items() if info["region"] == kill}
    return {kill}


def _label(
    samples: list[Sample],
    preset: Preset,
    layout: dict[str, Any],
    before: dict[str, str],
    after: dict[str, str],
    lost: set[str],
    scale: float,
    t_kill: float,
    routed_at: float | None,
) -> None:
    """Phase and floor of every sample: before the kill; during the outage; after (the new layout: from the
    last failover's re-routing on, or a second after the kill when nothing failed over)."""
    settled = routed_at if routed_at is not None else t_kill + 1.0
    for sample in samples:
        if sample.t0 < t_kill:
            sample.phase = "before"
            sample.floor_ms = request_floor(sample, preset, layout, before, set(), scale)
        elif sample.t0 >= settled:
            sample.phase = "after"
            sample.floor_ms = request_floor(sample, preset, layout, after, lost, scale)
        else:
            sample.phase = "outage"


def phase_stats(samples: list[Sample], phase: str) -> dict[str, Any]:
    """Errors and medians of one phase; latency and excess over the floor from successful requests."""
    chosen = [s for s in samples if s.phase == phase]
    ok = [s for s in chosen if s.ok]
    with_floor = [s for s in ok if s.floor_ms is not None]
    return {
        "requests": len(chosen),
        "errors": len(chosen) - len(ok),
        "error_rate": (len(chosen) - len(ok)) / len(chosen) if chosen else None,
        "median_ms": _median([s.ms for s in ok]),
        "median_floor_ms": _median([s.floor_ms for s in with_floor if s.floor_ms is not None]),
        "median_excess_ms": _median([s.ms - s.floor_ms for s in with_floor if s.floor_ms is not None]),
        "median_write_ms": _median([s.ms for s in ok if s.write]),
        "median_read_ms": _median([s.ms for s in ok if not s.write]),
        "median_write_floor_ms": _median([s.floor_ms for s in with_floor if s.write and s.floor_ms is not None]),
        "served_by": sorted({s.served_by for s in ok}),
    }


def per_city(samples: list[Sample], riders: list[Any], t_kill: float, t_stop: float) -> list[dict]:
    """Per city: the longest time without a successful write once the fault began (from the last success
    before it), and when that outage ended, as seconds after the fault began (the killing is inside)."""
    rows = []
    for rider in riders:
        mine = [s for s in samples if s.city == rider.city]
        times = sorted(s.t1 for s in mine if s.write and s.ok)
        before = [t for t in times if t <= t_kill]
        after = [t for t in times if t > t_kill]
        points = [before[-1] if before else t_kill, *after]
        # The last stretch, from the last success to the end of the load, is a gap too: a region that died
        # after one last write slipped through never resumed, and its outage lasted at least that long.
        gaps: list[tuple[float, float, float | None]] = [(b - a, a, b) for a, b in itertools.pairwise(points)]
        gaps.append((t_stop - points[-1], points[-1], None))
        gap, start, end = max(gaps, key=lambda g: g[0])
        resumed: float | None = None if end is None else end - t_kill
        rows.append(
            {
                "city": rider.city,
                "home": rider.home,
                "last_write_ok_before_s": before[-1] if before else None,
                "longest_write_gap_s": gap,
                "longest_write_gap_from_s": start,
                "writes_resumed_after_kill_s": resumed,
                "resumed": end is not None,
                "failed_after_kill": sum(1 for s in mine if s.t0 >= t_kill and not s.ok),
                "before": phase_stats(mine, "before"),
                "after": phase_stats(mine, "after"),
            }
        )
    return rows


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- checks after the heal ---------------------------------------------------------------------------------


def _dsn(state: Any, name: str) -> str:
    from movr.lab.survival import server_index

    return state.dsn(server_index(state)[name]["port"], connect_timeout=5)


def _primary_conns(state: Any) -> dict[str, psycopg.Connection]:
    from movr.lab.survival import current_primaries

    primaries = current_primaries(state)
    return {group: psycopg.connect(_dsn(state, name), autocommit=True) for group, name in primaries.items()}


def check_ledger(state: Any, ledger: Ledger) -> dict[str, Any]:
    """Every acknowledged write on its region's current primary, exactly once across all of them."""
    preset = state.preset
    conns = _primary_conns(state)
    try:
        missing: list[str] = []
        duplicated: list[str] = []

        def count(table: str, ids: dict[str, str], extra: str = "") -> None:
            for row_id, city in ids.items():
                home = preset.region_of(city)
                found = (
                    conns[home]
                    .execute(f"SELECT count(*) FROM {table} WHERE city = %s AND id = %s {extra}", (city, row_id))
                    .fetchone()[0]
                )
                everywhere = sum(
                    conn.execute(f"SELECT count(*) FROM {table} WHERE id = %s", (row_id,)).fetchone()[0]
                    for conn in conns.values()
                )
                if found == 0:
                    missing.append(f"{table} {row_id} ({city}){' ' + extra if extra else ''}")
                if everywhere > 1:
                    duplicated.append(f"{table} {row_id} ({city}) x{everywhere}")

        count("users", ledger.users)
        count("vehicles", ledger.vehicles)
        count("rides", {**ledger.started, **ledger.adopted})
        count("rides", {**ledger.ended, **ledger.ended_unacked}, "AND end_time IS NOT NULL")
    finally:
        for conn in conns.values():
            conn.close()
    acknowledged = len(ledger.users) + len(ledger.vehicles) + len(ledger.started) + len(ledger.ended)
    return {
        "acknowledged_writes": acknowledged,
        "lost": missing,
        "duplicated": duplicated,
        "ok": not missing and not duplicated,
    }


INVARIANTS = {
    "vehicle_in_two_open_rides": "SELECT count(*) FROM (SELECT city, vehicle_id FROM rides WHERE end_time IS NULL "
    "GROUP BY city, vehicle_id HAVING count(*) > 1) AS twice",
    "ended_ride_without_end_time": "SELECT count(*) FROM rides WHERE end_location IS NOT NULL AND end_time IS NULL",
    "vehicle_status_disagrees_with_rides": "SELECT count(*) FROM vehicles v WHERE (v.status = 'in_use') <> EXISTS "
    "(SELECT 1 FROM rides r WHERE r.city = v.city AND r.vehicle_id = v.id AND r.end_time IS NULL)",
}


def check_invariants(state: Any) -> dict[str, Any]:
    conns = _primary_conns(state)
    try:
        found = {
            name: sum(conn.execute(query).fetchone()[0] for conn in conns.values())
            for name, query in INVARIANTS.items()
        }
    finally:
        for conn in conns.values():
            conn.close()
    return {"violations": found, "ok": not any(found.values())}


FINGERPRINT = (
    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM vehicles), (SELECT count(*) FROM rides), "
    "(SELECT md5(coalesce(string_agg(city || id::text || coalesce(end_time::text, '-'), ',' ORDER BY city, id), '')) "
    "FROM rides), (SELECT md5(coalesce(string_agg(city || id::text || status, ',' ORDER BY city, id), '')) "
    "FROM vehicles)"
)


def check_replicas(state: Any) -> dict[str, Any]:
    """After the heal, every member of every group holds exactly its primary's rows."""
    from movr.lab.survival import current_primaries, layout_of

    layout = layout_of(state)
    assert layout is not None
    groups = {}
    ok = True
    for group, primary in current_primaries(state).items():
        prints = {}
        for name in layout["groups"][group]["members"]:
            try:
                with psycopg.connect(_dsn(state, name), autocommit=True) as conn:
                    prints[name] = list(conn.execute(FINGERPRINT).fetchone())
            except psycopg.Error as err:
                prints[name] = [f"unreachable: {err}"]
        same = all(value == prints[primary] for value in prints.values())
        ok = ok and same
        groups[group] = {"primary": primary, "identical": same, "rows": prints[primary][:3]}
    return {"groups": groups, "ok": ok}


def _wait_replicas(run_dir: Path, timeout: float = 60.0) -> None:
    from movr.lab.standbys import wait_caught_up
    from movr.lab.state import LabState
    from movr.lab.survival import current_primaries, layout_of

    state = LabState.read(run_dir)
    layout = layout_of(state)
    assert layout is not None
    for group, primary in current_primaries(state).items():
        for name in layout["groups"][group]["members"]:
            if name != primary:
                wait_caught_up(
                    layout["servers"][name]["port"], layout["servers"][primary]["port"], state.passfile, timeout
                )


# --- report ------------------------------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    title = (
        f"failover drill: {result['survival']} survival on {result['preset']}"
        f"{'' if result['super_regions'] else ' (no super regions)'}, kill {result['kill']} at "
        f"{result['kill_at_s']:.1f} s, delays x{result['scale']:g}"
    )
    table = Table(title=title)
    for column in (
        "city",
        "home",
        "longest write gap\nsince kill (s)",
        "it ended (s\nafter kill)",
        "errors\nbefore/after",
        "write ms before\n(floor)",
        "write ms after\n(floor)",
        "read ms\nbefore/after",
        "excess ms\nbefore/after",
        "served by\nafter",
    ):
        table.add_column(column, justify="left" if column in ("city", "home") else "right")

    def fmt(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for row in result["cities"]:
        before, after = row["before"], row["after"]
        table.add_row(
            row["city"],
            row["home"],
            fmt(row["longest_write_gap_s"], 2) + ("" if row["resumed"] else "+"),
            fmt(row["writes_resumed_after_kill_s"], 2) if row["resumed"] else "never",
            f"{before['errors']}/{after['errors']}",
            f"{fmt(before['median_write_ms'])} ({fmt(before['median_write_floor_ms'])})",
            f"{fmt(after['median_write_ms'])} ({fmt(after['median_write_floor_ms'])})",
            f"{fmt(before['median_read_ms'])}/{fmt(after['median_read_ms'])}",
            f"{fmt(before['median_excess_ms'])}/{fmt(after['median_excess_ms'])}",
            ",".join(after["served_by"]) or "-",
        )
    console.print(table)
    for failover in result["failovers"]:
        console.print(
            f"failover {failover['group']}: {failover['old']} -> {failover['new']} ({failover['new_region']}), "
            f"routed {failover['after_kill_s']:.2f} s after the kill"
        )
    checks, invariants, replicas = result["ledger_check"], result["invariants"], result["replicas"]
    console.print(
        f"ledger: {checks['acknowledged_writes']} acknowledged writes ({result['ledger']}); "
        f"lost {len(checks['lost'])}, duplicated {len(checks['duplicated'])}"
    )
    console.print(f"invariants: {invariants['violations']}")
    if replicas:
        console.print(f"replicas identical after heal: {replicas['ok']} (heal took {result['heal_s']:.1f} s)")
    promised = result["expectations"]
    if promised["unavailable_by_design"]:
        console.print(f"unavailable by design (goal does not survive this fault): {promised['unavailable_by_design']}")
    for reason in promised["unmet"]:
        console.print(f"[red]unmet:[/] {reason}")
    console.print("[bold green]drill passed[/]" if result["passed"] else "[bold red]drill FAILED[/]")


def plot_timeline(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    homes = list(dict.fromkeys(row["home"] for row in result["cities"]))
    fig, axes = plt.subplots(len(homes), 1, figsize=(11, 2.8 * len(homes)), sharex=True, squeeze=False)
    t_kill = result["kill_at_s"]
    for axis, home in zip(axes[:, 0], homes, strict=True):
        samples = [s for s in result["samples"] if s["home"] == home]
        for op, marker in (("start ride", "o"), ("end ride", "s"), ("view vehicles", "."), ("view rides", "+")):
            ok = [s for s in samples if s["op"] == op and s["ok"]]
            axis.scatter([s["t1"] - t_kill for s in ok], [s["ms"] for s in ok], s=8, marker=marker, label=op)
        failed = [s for s in samples if not s["ok"]]
        if failed:
            axis.scatter(
                [s["t1"] - t_kill for s in failed],
                [max(s["ms"], 1) for s in failed],
                s=18,
                marker="x",
                color="red",
                label="failed",
            )
        axis.axvline(0, color="black", linestyle="--", linewidth=1)
        for failover in result["failovers"]:
            axis.axvline(failover["after_kill_s"], color="green", linestyle=":", linewidth=1)
        axis.set_yscale("log")
        axis.set_ylabel("ms")
        axis.set_title(f"clients whose data is homed in {home}", fontsize=10)
        axis.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel(f"seconds since {result['kill']} was killed (dashed); dotted: failover routed")
    fig.suptitle(
        f"failover drill — {result['survival']} survival, preset {result['preset']}, delays x{result['scale']:g}"
    )
    save_figure(fig, path)


@click.command("failover")
@click.option("--preset", default="aws-eu-us", show_default=True, help="Preset name or TOML file.")
@click.option("--survival", type=click.Choice(("zone", "region")), default="region", show_default=True)
@click.option("--no-super-regions", is_flag=True, help="Switch the preset's super regions off.")
@click.option("--kill", default=None, help="A region or a server to kill (default: the preset's primary region).")
@click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(2, 3600), help="Seconds of load.")
@click.option("--kill-at", default=None, type=click.FloatRange(0.5, 3600), help="When to kill (default: a third in).")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.001, 100))
@click.option("--cities-per-region", default=2, show_default=True, type=click.IntRange(1, 20))
@click.option("--think-ms", default=50.0, show_default=True, type=click.FloatRange(0, 10_000))
@click.option("--quick", is_flag=True, help="A short drill: 12 s of load, kill at 4 s, one city per region.")
@click.option("--keep", is_flag=True, help="Leave the lab running afterwards (stop it with movr lab down).")
@figure_options("PNG timeline", run_dir=lambda: Path.cwd() / "run" / "failover")
def failover_command(
    preset: str,
    survival: str,
    no_super_regions: bool,
    kill: str | None,
    duration: float,
    kill_at: float | None,
    scale: float,
    cities_per_region: int,
    think_ms: float,
    quick: bool,
    keep: bool,
    json_path: Path | None,
    plot_path: Path | None,
    run_dir: Path,
) -> None:
    """Kill a region (or a server) under load; measure unavailability; prove no acknowledged write is lost."""
    from movr.cli_support import CliError, preset_or_fail
    from movr.lab.supervisor import LabError

    preset_or_fail(preset)
    if quick:
        duration, kill_at, cities_per_region = 12.0, kill_at or 4.0, 1
    kill_at = kill_at if kill_at is not None else duration / 3
    if kill_at >= duration:
        raise CliError("--kill-at must come before the end of --duration")
    config = DrillConfig(
        preset_source=preset,
        survival=survival,
        super_regions=not no_super_regions,
        kill=kill,
        duration=duration,
        kill_at=kill_at,
        scale=scale,
        cities_per_region=cities_per_region,
        think_ms=think_ms,
        run_dir=run_dir,
        keep=keep,
    )
    try:
        result = run_drill(config, say=lambda m: console.print(f"[dim]·[/] {m}"))
    except (DrillError, LabError) as err:
        raise CliError(str(err)) from None
    print_report(result)
    if plot_path is None and json_path is not None:
        plot_path = json_path.with_suffix(".png")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str))
    if plot_path:
        plot_timeline(result, plot_path)
    if json_path or plot_path:
        console.print(f"figures: {json_path or '-'}, timeline: {plot_path or '-'}")
    if not result["passed"]:
        raise click.exceptions.Exit(1)
