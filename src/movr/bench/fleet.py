"""The multiprocess client framework of the data-homing benchmarks: closed-loop clients, one process per region.

A `ClientFleet` starts one process per client region (spawn), each a `BenchClient` subclass named by
``module:Class`` with a pool to every region's server through the lab's links. Per run the clients start
together (a start barrier: one measured window for all), run a warm-up and the window in a closed loop, and
send back their `Recorder`'s payload (movr.bench.histograms). Distance lives only in the links (law 1): the
only waits here are the start barrier and polling.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from movr.bench.histograms import HIST_LOWEST_US, encode_histogram, new_histogram
from movr.floors import Network
from movr.geo import load_preset
from movr.store.backend import ServerPool
from movr.store.work import Rows, Statement

if TYPE_CHECKING:
    from movr.lab.supervisor import ServerLab

# Per-server pool of each client: enough spare connections that a search whose loser is still in flight
# (first hit wins, the farther region answers later) never makes the next operation open a connection
# across the WAN inside the measured window.
POOL_MIN = 4
POOL_MAX = 8


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

    def run(self, window: Mapping[str, float], report: Callable[[int, int], None]) -> dict[str, Any]:
        """The closed loop, warm-up and measured window (`measure_from`, `end_at`: monotonic seconds)."""
        end_ns = int(window["end_at"] * 1e9)
        recorder = Recorder(int(window["measure_from"] * 1e9), end_ns, window["tail_s"])
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
                gc.collect()
                gc.freeze()
                try:
                    result = client.run(window, lambda total, measured: conn.send(("progress", total, measured)))
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

    def __init__(self, lab: ServerLab, factory: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.workers: dict[str, _Worker] = {}
        self._busy = False  # a run is under way: the clients would not read "stop" until it ends
        try:
            for region in lab.regions:
                parent_end, child_end = context.Pipe()
                init = {
                    "region": region,
                    "preset": lab.preset_source,
                    "scale": lab.scale,
                    "dsns": {server: lab.client_dsn(region, server) for server in lab.regions},
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
            self._expect(list(self.workers.values()), "ready", 120.0)
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
        on_progress: Callable[[float, int], None],
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
