"""Shared machinery of the data-homing benchmarks (`movr bench ycsb | insert | rehome`).

A *bench lab* is the smallest lab these experiments need: one PostgreSQL primary per region of a preset,
and a link from every client region to every server, carrying ``rtt(client region, server region) x scale
/ 2`` each way (the intra-region RTT when both are the same region). Clients are processes, one per
region, each closed-loop and measuring with its own HdrHistograms (microseconds, 3 significant digits);
they send their histograms back encoded, and the parent turns them into p50/p95/p99/max and writes them,
raw, into the result JSON with the preset, the scale, the versions and the machine (law 7).

Distance lives only in the links (law 1): nothing here waits to stand in for it. The only waits are a
start barrier (so every client's measured window is the same wall-clock interval) and polling.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from movr import __version__
from movr.geo import Preset, load_preset
from movr.lab import control
from movr.lab.links import LinkSpec, dump_specs, fetch_counters, run_links_in_thread
from movr.lab.pgserver import LAB_DEFAULTS, PostgresServer, conninfo, stop_stray_servers
from movr.lab.ports import free_port
from movr.store.backend import ServerPool
from movr.store.work import Rows, Statement

DATABASE = "movr_bench"
LINK_MODES = ("process", "thread")

HIST_LOWEST_US = 1
HIST_HIGHEST_US = 3_600_000_000  # an hour: far above any round trip we could see
HIST_DIGITS = 3

# Per-server pool of each client: enough spare connections that a search whose loser is still in flight
# (first hit wins, the farther region answers later) never makes the next operation open a connection
# across the WAN inside the measured window.
POOL_MIN = 4
POOL_MAX = 8

# Tables are wider than the 80 columns rich assumes when output is not a terminal (a log, CI, a pipe).
console = Console(width=None if sys.stdout.isatty() else 160)


# --------------------------------------------------------------------------------------------------------
# The network model, scaled


@dataclass(frozen=True)
class Network:
    """Round-trip times of the bench lab, in the scaled units every link and every floor uses."""

    preset: Preset
    scale: float

    @property
    def regions(self) -> list[str]:
        return self.preset.region_names

    def rtt_ms(self, a: str, b: str) -> float:
        """Scaled RTT between two regions; the scaled intra-region RTT when they are the same."""
        return self.preset.rtt_ms(a, b) * self.scale

    def rtt_us(self, a: str, b: str) -> int:
        return round(self.rtt_ms(a, b) * 1000)

    @property
    def intra_us(self) -> int:
        return round(self.preset.intra_region_rtt_ms * self.scale * 1000)

    def farthest_other_us(self, region: str) -> int:
        return max((self.rtt_us(region, other) for other in self.regions if other != region), default=0)

    def describe(self) -> dict[str, Any]:
        names = self.regions
        return {
            "intra_region_rtt_ms": self.preset.intra_region_rtt_ms,
            "rtt_ms": {f"{a}|{b}": self.preset.rtt_ms(a, b) for i, a in enumerate(names) for b in names[i + 1 :]},
            "scale": self.scale,
            "scaled_rtt_ms": {f"{a}|{b}": self.rtt_ms(a, b) for a in names for b in names},
        }


# --------------------------------------------------------------------------------------------------------
# Histograms


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def encode_histogram(histogram: HdrHistogram) -> str:
    """HdrHistogram's compressed, base64 form (readable by every HdrHistogram implementation)."""
    return histogram.encode().decode("ascii")


def decode_histogram(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded.encode("ascii"))


def merge_histograms(encoded: list[str]) -> HdrHistogram:
    merged = new_histogram()
    for text in encoded:
        merged.add(decode_histogram(text))
    return merged


def summarize(histogram: HdrHistogram) -> dict[str, Any]:
    """Count and percentiles in milliseconds; None for every figure of an empty histogram.

    (No mean: hdrh computes it by walking every bucket in Python, ~50 ms a histogram.)
    """
    count = histogram.get_total_count()
    if count == 0:
        return {"count": 0, **{key: None for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "min_ms")}}
    percentiles = histogram.get_percentile_to_value_dict([50.0, 95.0, 99.0])
    return {
        "count": count,
        "p50_ms": percentiles[50.0] / 1000.0,
        "p95_ms": percentiles[95.0] / 1000.0,
        "p99_ms": percentiles[99.0] / 1000.0,
        "max_ms": histogram.get_max_value() / 1000.0,
        "min_ms": histogram.get_min_value() / 1000.0,
    }


# --------------------------------------------------------------------------------------------------------
# Recording one client's operations


@dataclass
class Outcome:
    """What one operation did: its name, the classes it is reported under, and its floor."""

    name: str  # "read", "update", "insert"
    labels: tuple[str, ...]  # extra breakdowns, e.g. ("remote", "home=europe-west2")
    floor_us: int
    retries: int = 0
    moved: bool = False


class Recorder:
    """Histograms of latency and of floor per key, for operations *started* inside the measured window.

    Keys are the operation name and ``name|label`` for each of its labels; ``...@tail`` keys cover the
    last ``tail_s`` seconds of the window (did the workload converge?). A per-second timeline, warm-up
    included (negative seconds), keeps the median of each second for the plots and the JSON.
    """

    def __init__(self, measure_from_ns: int, end_ns: int, tail_s: float) -> None:
        self.measure_from_ns = measure_from_ns
        self.end_ns = end_ns
        self.tail_from_ns = end_ns - int(tail_s * 1e9)
        self.latency: dict[str, HdrHistogram] = defaultdict(new_histogram)
        self.floor: dict[str, HdrHistogram] = defaultdict(new_histogram)
        self.timeline: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.ops_total = 0
        self.ops_measured = 0
        self.retries = 0
        self.moves = 0
        self.moves_total = 0
        self.errors = 0
        self.first_error = ""

    def add(self, started_ns: int, latency_us: int, outcome: Outcome) -> None:
        self.ops_total += 1
        self.moves_total += outcome.moved
        keys = [outcome.name, *(f"{outcome.name}|{label}" for label in outcome.labels)]
        second = (started_ns - self.measure_from_ns) // 1_000_000_000
        for key in keys:
            self.timeline[key][second].append(latency_us)
        if started_ns < self.measure_from_ns:
            return
        self.ops_measured += 1
        self.retries += outcome.retries
        self.moves += outcome.moved
        value = max(latency_us, HIST_LOWEST_US)
        floor = max(outcome.floor_us, HIST_LOWEST_US)
        tail = started_ns >= self.tail_from_ns
        for key in keys:
            self.latency[key].record_value(value)
            self.floor[key].record_value(floor)
            if tail:
                self.latency[key + "@tail"].record_value(value)
                self.floor[key + "@tail"].record_value(floor)

    def error(self, error: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(error).__name__}: {error}"

    def result(self) -> dict[str, Any]:
        timeline = {}
        for key, seconds in self.timeline.items():
            rows = []
            for second in sorted(seconds):
                values = sorted(seconds[second])
                rows.append([second, len(values), values[len(values) // 2] / 1000.0])
            timeline[key] = rows
        return {
            "ops_total": self.ops_total,
            "ops_measured": self.ops_measured,
            "retries": self.retries,
            "moves": self.moves,
            "moves_total": self.moves_total,
            "errors": self.errors,
            "first_error": self.first_error,
            "histograms": {key: encode_histogram(h) for key, h in self.latency.items()},
            "floors": {key: encode_histogram(h) for key, h in self.floor.items()},
            "timeline": timeline,
        }


def figures(payload: Mapping[str, Any], key: str, *, histogram: bool = True) -> dict[str, Any]:
    """Latency percentiles of one key of a client's result, its floor percentiles, and the raw histogram."""
    encoded = payload["histograms"].get(key)
    floors = payload["floors"].get(key)
    result = summarize(decode_histogram(encoded) if encoded else new_histogram())
    result["floor"] = floor_figures(decode_histogram(floors) if floors else new_histogram())
    if histogram:
        result["histogram"] = encoded or encode_histogram(new_histogram())
    return result


def merged_figures(payloads: list[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """As `figures`, over several clients' results (histograms added together)."""
    latency = merge_histograms([p["histograms"][key] for p in payloads if key in p["histograms"]])
    floors = merge_histograms([p["floors"][key] for p in payloads if key in p["floors"]])
    result = summarize(latency)
    result["floor"] = floor_figures(floors)
    result["histogram"] = encode_histogram(latency)
    return result


def floor_figures(histogram: HdrHistogram) -> dict[str, Any]:
    summary = summarize(histogram)
    return {key: summary[key] for key in ("p50_ms", "p95_ms", "p99_ms")}


# --------------------------------------------------------------------------------------------------------
# The client process


class Report(Protocol):
    def __call__(self, ops_total: int, ops_measured: int) -> None: ...


class BenchClient:
    """One region's client: pools to every region's server through its links, and a closed loop.

    Subclasses implement `prepare(task)` (what the next run does) and `next_operation()`, which returns
    a callable performing one operation and returning its Outcome; choosing keys and values happens in
    `next_operation`, outside the timed part.
    """

    def __init__(self, init: Mapping[str, Any]) -> None:
        self.region: str = init["region"]
        self.preset = load_preset(init["preset"])
        self.network = Network(self.preset, float(init["scale"]))
        self.pools: dict[str, ServerPool] = {}
        for server_region, dsn in init["dsns"].items():
            pool = ServerPool(dsn, server_region, wan=server_region != self.region, max_size=POOL_MAX)
            pool.pool.resize(min_size=POOL_MIN, max_size=POOL_MAX)
            self.pools[server_region] = pool
        for pool in self.pools.values():
            pool.pool.wait(timeout=60)
        self.others = [region for region in self.pools if region != self.region]
        self.executor = ThreadPoolExecutor(max_workers=4 * max(1, len(self.pools)), thread_name_prefix="bench")
        self._in_flight: set[Future] = set()
        self._lock = threading.Lock()

    # --- what subclasses build on ---------------------------------------------------------------------

    def prepare(self, task: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def next_operation(self) -> Callable[[], Outcome]:
        raise NotImplementedError

    def one(self, region: str, action: str, statements: list[Statement]) -> list[Rows]:
        """Statements on one region's server: one round trip (a pipeline when there are several)."""
        return self.pools[region].execute(action, statements)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future = self.executor.submit(fn, *args)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def first_hit(self, regions: list[str], action: str, statement: Statement) -> tuple[str, Rows] | None:
        """Run `statement` on every region at once; the first that returns rows wins.

        The others keep running in the background (their answer is not needed); `drain` waits for them
        at the end of a run so nothing is left in flight.
        """
        futures = {self.submit(self.one, region, action, [statement]): region for region in regions}
        pending: set[Future] = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                rows = future.result()[0]
                if rows:
                    return futures[future], rows
        return None

    def drain(self) -> None:
        with self._lock:
            pending = list(self._in_flight)
        wait(pending, timeout=60)

    # --- the closed loop ----------------------------------------------------------------------------------

    def run(self, measure_from: float, end_at: float, tail_s: float, report: Report) -> dict[str, Any]:
        measure_from_ns = int(measure_from * 1e9)
        end_ns = int(end_at * 1e9)
        recorder = Recorder(measure_from_ns, end_ns, tail_s)
        clock = time.monotonic_ns  # CLOCK_MONOTONIC: the same clock in every process of the machine
        next_report = 0
        while True:
            operation = self.next_operation()
            started = clock()
            if started >= end_ns:
                break
            try:
                outcome = operation()
            except Exception as error:  # counted and reported; one bad operation must not end the run
                recorder.error(error)
                continue
            finished = clock()
            recorder.add(started, (finished - started) // 1000, outcome)
            if finished >= next_report:
                report(recorder.ops_total, recorder.ops_measured)
                next_report = finished + 250_000_000
        self.drain()
        return recorder.result()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        for pool in self.pools.values():
            pool.close()


def worker_main(conn: multiprocessing.connection.Connection, factory: str, init: dict[str, Any]) -> None:
    """A client process: build the client named by ``module:Class``, then serve prepare/go/stop.

    Messages to the parent: ("ready"), ("armed"), ("progress", total, measured), ("result", dict),
    ("error", text). Ctrl-C is the parent's to handle: it stops us in order.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    client: BenchClient | None = None
    try:
        module, _, name = factory.partition(":")
        client = getattr(importlib.import_module(module), name)(init)
        conn.send(("ready",))
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return  # the parent is gone
            if message[0] == "stop":
                return
            if message[0] == "prepare":
                client.prepare(message[1])
                conn.send(("armed",))
            elif message[0] == "go":
                window = message[1]
                # Start barrier: every client starts its warm-up at the same instant.
                delay = window["start_at"] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                # GC of start-up objects during the window would pause this client mid-operation.
                import gc

                gc.collect()
                gc.freeze()
                try:
                    result = client.run(
                        window["measure_from"],
                        window["end_at"],
                        window["tail_s"],
                        lambda total, measured: conn.send(("progress", total, measured)),
                    )
                finally:
                    gc.unfreeze()
                conn.send(("result", result))
    except Exception:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        conn.close()


class ClientError(RuntimeError):
    """A client process failed; the message carries its traceback."""


@dataclass
class _Worker:
    region: str
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection


class ClientFleet:
    """One client process per region (multiprocessing, spawn: safe beside the link thread, if any)."""

    def __init__(self, lab: BenchLab, regions: list[str], factory: str, timeout: float = 120.0) -> None:
        context = multiprocessing.get_context("spawn")
        self.workers: dict[str, _Worker] = {}
        self._busy = False  # a run is under way: the clients would not read "stop" until it ends
        try:
            for region in regions:
                parent_end, child_end = context.Pipe()
                init = {
                    "region": region,
                    "preset": lab.preset_source,
                    "scale": lab.network.scale,
                    "dsns": {server: lab.client_dsn(region, server) for server in lab.servers},
                }
                process = context.Process(
                    target=worker_main,
                    args=(child_end, factory, init),
                    name=f"movr-bench-client-{region}",
                    daemon=True,
                )
                process.start()
                child_end.close()
                self.workers[region] = _Worker(region, process, parent_end)
            self._expect(list(self.workers.values()), "ready", timeout)
        except BaseException:
            self.close()
            raise

    def _expect(self, workers: list[_Worker], kind: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in workers:
            remaining = deadline - time.monotonic()
            if not worker.conn.poll(max(0.0, remaining)):
                raise ClientError(f"client {worker.region} did not answer {kind!r} within {timeout:.0f} s")
            message = self._recv(worker)
            if message[0] != kind:
                raise ClientError(f"client {worker.region}: expected {kind!r}, got {message[0]!r}")

    @staticmethod
    def _recv(worker: _Worker) -> tuple:
        try:
            message = worker.conn.recv()
        except EOFError:
            raise ClientError(f"client {worker.region} exited (exit code {worker.process.exitcode})") from None
        if message[0] == "error":
            raise ClientError(f"client {worker.region} failed:\n{message[1]}")
        return message

    def run(
        self,
        tasks: Mapping[str, Mapping[str, Any]],
        warmup: float,
        duration: float,
        tail_s: float,
        on_progress: Callable[[float, int], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Run one task per named region at once: warm-up, then the measured window; the results by region."""
        workers = [self.workers[region] for region in tasks]
        for worker in workers:
            worker.conn.send(("prepare", dict(tasks[worker.region])))
        self._expect(workers, "armed", 120.0)
        start_at = time.monotonic() + 0.1
        window = {
            "start_at": start_at,
            "measure_from": start_at + warmup,
            "end_at": start_at + warmup + duration,
            "tail_s": tail_s,
        }
        self._busy = True
        for worker in workers:
            worker.conn.send(("go", window))
        results: dict[str, dict[str, Any]] = {}
        measured: dict[str, int] = defaultdict(int)
        deadline = window["end_at"] + 120.0
        by_conn = {worker.conn: worker for worker in workers}
        while len(results) < len(workers):
            if time.monotonic() > deadline:
                raise ClientError("clients did not report their results within 120 s of the window's end")
            ready = multiprocessing.connection.wait([w.conn for w in workers if w.region not in results], 0.2)
            for conn in ready:
                worker = by_conn[conn]  # type: ignore[index]
                message = self._recv(worker)
                if message[0] == "progress":
                    measured[worker.region] = message[2]
                elif message[0] == "result":
                    results[worker.region] = message[1]
            if on_progress is not None:
                elapsed = min(time.monotonic() - start_at, warmup + duration)
                on_progress(max(0.0, elapsed), sum(measured.values()))
        self._busy = False
        return results

    def close(self) -> None:
        """Stop every client: in order between runs; at once (SIGTERM) when interrupted mid-run."""
        for worker in self.workers.values():
            if self._busy:
                worker.process.terminate()
            else:
                with contextlib.suppress(OSError, BrokenPipeError):
                    worker.conn.send(("stop",))
        for worker in self.workers.values():
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            worker.conn.close()

    def __enter__(self) -> ClientFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------------
# The bench lab: servers and links


class _LinkProcess:
    """``python -m movr.lab.links`` with every link of the bench lab, as the lab itself runs links."""

    def __init__(self, specs: list[LinkSpec], run_dir: Path) -> None:
        spec_path = run_dir / "links.json"
        dump_specs(specs, spec_path)
        log_path = run_dir / "logs" / "links.log"
        self.token = control.new_token()  # the control API's token, handed over in the environment
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "movr.lab.links", "--spec", str(spec_path), "--control-port", "0"],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, control.TOKEN_ENV: self.token},
                text=True,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
            )
        try:
            assert self.process.stdout is not None
            ready, _, _ = select.select([self.process.stdout], [], [], 30)
            line = self.process.stdout.readline() if ready else ""
            if not line:
                raise RuntimeError(f"the link server did not start; see {log_path}")
            info = json.loads(line)
        except BaseException:
            self.close()
            raise
        self.control_port: int = info["control_port"]
        self.ports: dict[str, int] = info["links"]

    def port(self, name: str) -> int:
        return self.ports[name]

    def counters(self) -> dict[str, dict[str, int]]:
        return fetch_counters(self.control_port, token=self.token)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


class _LinkThread:
    def __init__(self, specs: list[LinkSpec]) -> None:
        self.handle = run_links_in_thread(specs)

    def port(self, name: str) -> int:
        return self.handle.port(name)

    def counters(self) -> dict[str, dict[str, int]]:
        return self.handle.counters()

    def close(self) -> None:
        self.handle.close()


def link_name(client_region: str, server_region: str) -> str:
    return f"client:{client_region}->{server_region}"


@dataclass
class BenchLab:
    preset: Preset
    preset_source: str
    network: Network
    run_dir: Path
    servers: dict[str, PostgresServer]
    links: _LinkProcess | _LinkThread | None = None
    link_mode: str = "process"
    specs: list[LinkSpec] = field(default_factory=list)

    def client_dsn(self, client_region: str, server_region: str) -> str:
        assert self.links is not None
        port = self.links.port(link_name(client_region, server_region))
        passfile = self.servers[server_region].passfile
        assert passfile is not None
        return conninfo(port, passfile, DATABASE)

    def direct_dsn(self, region: str) -> str:
        """Straight to the server, past the links: loading and checking data, never measuring."""
        return self.servers[region].dsn(DATABASE)

    def counters(self) -> dict[str, dict[str, int]]:
        assert self.links is not None
        return self.links.counters()

    def server_version(self) -> str:
        region = next(iter(self.servers))
        with psycopg.connect(self.direct_dsn(region), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"

    def each_server(self, fn: Callable[[str, psycopg.Connection], None]) -> None:
        """Run `fn(region, connection)` on every server at once (autocommit, direct)."""

        def one(region: str) -> None:
            with psycopg.connect(self.direct_dsn(region), autocommit=True) as conn:
                fn(region, conn)

        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            for future in [pool.submit(one, region) for region in self.servers]:
                future.result()

    def round_trips(self, before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
        """Round trips each client region's links counted between two snapshots: WAN and local."""
        result: dict[str, Any] = {}
        for spec in self.specs:
            delta = after[spec.name]["round_trips"] - before.get(spec.name, {}).get("round_trips", 0)
            entry = result.setdefault(spec.src, {"wan": 0, "local": 0})
            entry["wan" if spec.kind == "wan" else "local"] += delta
        return result


def server_settings() -> dict[str, str]:
    """The lab's settings (LAB_DEFAULTS: two-phase commit on), with commits durable and local as in the lab."""
    return {**LAB_DEFAULTS, "synchronous_commit": "local"}


@contextlib.contextmanager
def bench_lab(
    preset_source: str,
    scale: float,
    run_dir: Path,
    *,
    link_mode: str = "process",
    say: Callable[[str], None] = lambda _: None,
) -> Iterator[BenchLab]:
    """Start a server per region and the links; yield the lab; stop everything however the body ends."""
    if link_mode not in LINK_MODES:
        raise ValueError(f"link mode must be one of {LINK_MODES}")
    preset = load_preset(preset_source)
    network = Network(preset, scale)
    run_dir = run_dir.resolve()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    # A previous run killed hard may have left its servers running on these data directories.
    stop_stray_servers(run_dir)
    servers = {
        region: PostgresServer(region, run_dir / "servers" / region, free_port()) for region in preset.region_names
    }
    lab = BenchLab(preset, preset_source, network, run_dir, servers, link_mode=link_mode)
    try:
        say(f"PostgreSQL for {', '.join(servers)}")

        def start(server: PostgresServer) -> None:
            server.init(server_settings())
            server.start()
            server.create_database(DATABASE)

        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            for future in [pool.submit(start, server) for server in servers.values()]:
                future.result()
        lab.specs = [
            LinkSpec(
                name=link_name(client, server_region),
                listen_port=0,
                target_port=server.port,
                one_way_ms=network.rtt_ms(client, server_region) / 2,
                kind="local" if client == server_region else "wan",
                src=client,
                dst=server_region,
            )
            for client in preset.region_names
            for server_region, server in servers.items()
        ]
        say(f"{len(lab.specs)} links ({link_mode}), delays x{scale:g}")
        lab.links = _LinkProcess(lab.specs, run_dir) if link_mode == "process" else _LinkThread(lab.specs)
        yield lab
    finally:
        if lab.links is not None:
            with contextlib.suppress(Exception):
                lab.links.close()
        for server in servers.values():
            with contextlib.suppress(Exception):
                server.stop()


def roll_back_prepared(conn: psycopg.Connection) -> int:
    """Roll back prepared transactions a killed client left behind (they would hold their locks forever)."""
    gids = [row[0] for row in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")]
    for gid in gids:
        conn.execute(psycopg.sql.SQL("ROLLBACK PREPARED {}").format(psycopg.sql.Literal(gid)))
    return len(gids)


# --------------------------------------------------------------------------------------------------------
# Reports


def versions(lab: BenchLab) -> dict[str, str]:
    return {
        "movr": __version__,
        "python": platform.python_version(),
        "postgresql": lab.server_version(),
        "psycopg": psycopg.__version__,
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(Exception):
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def write_json(path: Path, result: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def ms(value: float | None, digits: int = 1) -> str:
    """A table cell for a duration in ms ('-' when there was nothing to measure)."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.{digits + 1}f}"
    return f"{value:.{digits}f}" if value < 100 else f"{value:.0f}"


def default_run_dir(experiment: str) -> Path:
    return Path.cwd() / "run" / "bench" / experiment
