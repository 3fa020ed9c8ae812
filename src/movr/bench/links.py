"""``movr bench links``: how faithfully does a link add the delay it is configured with?

Every lab result rests on that, so this measures it the way the lab uses links: an echo server and the
real ``python -m movr.lab.links`` in front of it, each its own process (movr.bench.links_rig), and an
open-loop client here sending small messages at a fixed rate over a few connections (a send time is fixed
by the schedule, never by the previous reply, so a slow reply cannot hide the next one's delay). It reports
the *added error*, measured minus configured RTT, in µs, beside the loopback RTT without a link. A round
trip ends at the kernel's receive timestamp of the reply, so the client's own pauses are not charged to the
link; up to the moment the client read the reply is reported too, as "app-level".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import math
import os
import platform
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from movr.bench.experiment import Check, Experiment, ExperimentError, Result, console
from movr.bench.histograms import new_histogram
from movr.bench.links_rig import EchoProcess, LinkProcess
from movr.bench.markup import esc, num, table
from movr.lab.links import (
    RECEIVE_ANCILLARY_SIZE,
    LinkSpec,
    enable_receive_timestamps,
    new_event_loop,
    receive_age,
)

TARGET_P50_MS = 0.3
TARGET_P99_MS = 2.0

_MESSAGE = struct.Struct("!Q8x")  # sequence number, padded to 16 bytes: "small", like a short statement


class _Connection:
    """One client socket. Matches each echoed message to its send time by sequence number.

    Two receive times per message: when the kernel put the reply in the socket (``SO_TIMESTAMPNS``) and
    when this process read it. The first is the path's RTT, what the link is responsible for; the second
    adds this client's own wake-ups and pauses (progress bar, collector), reported apart as app-level.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, run: _Run) -> None:
        self.sock = sock
        self._run = run
        self._buffer = b""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enable_receive_timestamps(sock)
        loop.add_reader(sock, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65536, RECEIVE_ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        wall = time.time()
        now_ns = time.monotonic_ns()  # first thing: every message in this chunk was read by now
        arrived_ns = now_ns - int(receive_age(ancillary, wall) * 1e9)
        if not data:
            asyncio.get_running_loop().remove_reader(self.sock)
            return
        run = self._run
        buffer = self._buffer + data if self._buffer else data
        size = _MESSAGE.size
        whole = len(buffer) - len(buffer) % size
        for offset in range(0, whole, size):
            (seq,) = _MESSAGE.unpack_from(buffer, offset)
            run.record(seq, arrived_ns, now_ns)
        self._buffer = buffer[whole:]

    def send(self, seq: int) -> int:
        sent_ns = time.monotonic_ns()
        self.sock.send(_MESSAGE.pack(seq))  # 16 bytes into an empty send buffer: never partial
        return sent_ns

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()


class _Run:
    """The state of one open-loop run; sequence numbers from ``count`` up are warm-up messages."""

    def __init__(self, count: int, connections: int) -> None:
        self.count = count
        self.sent_ns = [0] * (count + connections)
        self.rtt_ns: list[int] = []
        self.app_rtt_ns: list[int] = []
        self.warm_replies = 0
        self.all_back = asyncio.Event()

    def record(self, seq: int, arrived_ns: int, read_ns: int) -> None:
        if seq >= self.count:
            self.warm_replies += 1
            return
        sent = self.sent_ns[seq]
        self.rtt_ns.append(arrived_ns - sent)
        self.app_rtt_ns.append(read_ns - sent)
        if len(self.rtt_ns) >= self.count:
            self.all_back.set()


async def _run_client(
    port: int,
    rate: float,
    count: int,
    connections: int,
    timeout_s: float,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[int], list[int], float]:
    """Send ``count`` messages at ``rate``/s round-robin over ``connections``; return the RTTs (ns) by
    socket arrival and by read time, and the achieved send rate."""
    loop = asyncio.get_running_loop()
    run = _Run(count, connections)
    conns: list[_Connection] = []
    try:
        for _ in range(connections):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            conns.append(_Connection(loop, sock, run))
        # Warm-up: one exchange per connection, so the link's connection to the target is up and no
        # measured round trip pays for connection setup.
        for i, conn in enumerate(conns):
            run.sent_ns[count + i] = conn.send(count + i)
        deadline = time.monotonic() + timeout_s
        while run.warm_replies < connections and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

        async def report_progress() -> None:
            while on_progress is not None:
                on_progress(len(run.rtt_ns))
                await asyncio.sleep(0.25)

        reporter = loop.create_task(report_progress())
        interval = 1.0 / rate
        start = time.monotonic()
        i = 0
        while i < count:
            now = time.monotonic()
            while i < count and start + i * interval <= now:
                run.sent_ns[i] = conns[i % connections].send(i)
                i += 1
            if i < count:
                # Event-loop sleeps have ~1 ms granularity: a late send is fine (its time is recorded), so
                # wake at the next due send and catch up with everything due by then.
                await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        achieved_rate = count / max(time.monotonic() - start, 1e-9)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.all_back.wait(), timeout_s)
        reporter.cancel()
        if on_progress is not None:
            on_progress(len(run.rtt_ns))
    finally:
        for conn in conns:
            conn.close()
    return run.rtt_ns, run.app_rtt_ns, achieved_rate


def _client(
    port: int,
    rate: float,
    count: int,
    connections: int,
    timeout_s: float,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[int], list[int], float]:
    loop = new_event_loop()
    # Freeze what exists (rich, click, hdrh...) so a full collection cannot pause the client mid-measure.
    gc.collect()
    gc.freeze()
    try:
        return loop.run_until_complete(_run_client(port, rate, count, connections, timeout_s, on_progress))
    finally:
        gc.unfreeze()
        loop.close()


def _summary(values_us: list[int]) -> dict[str, Any]:
    """Percentiles with an HDR histogram at microsecond resolution (3 significant digits)."""
    if not values_us:
        return {"count": 0}
    histogram = new_histogram()
    for v in values_us:
        histogram.record_value(max(v, 0))  # a histogram holds no negatives; they are counted apart
    at = histogram.get_value_at_percentile
    return {
        "count": len(values_us),
        "p50_ms": at(50.0) / 1000.0,
        "p90_ms": at(90.0) / 1000.0,
        "p99_ms": at(99.0) / 1000.0,
        "p999_ms": at(99.9) / 1000.0,
        "max_ms": max(values_us) / 1000.0,
        "min_ms": min(values_us) / 1000.0,
        "mean_ms": sum(values_us) / len(values_us) / 1000.0,
        "below_zero": sum(v < 0 for v in values_us),
    }


def measure_link_fidelity(
    rtt_ms: float = 66.0,
    rate: float = 1000.0,
    count: int = 5000,
    scale: float = 1.0,
    *,
    connections: int = 8,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure the error a link adds to round trips; returns every figure and the settings.

    The echo server and the link run in their own processes, as the lab runs links (movr.bench.links_rig).
    ``on_progress(phase, done, total)`` is called about ten times a second.
    """
    if rate <= 0 or count <= 0 or connections <= 0:
        raise ValueError("rate, count and connections must be positive")
    configured_ms = rtt_ms * scale
    one_way_ms = configured_ms / 2.0
    baseline_count = min(count, 2000)
    timeout_s = 10.0 + 4 * configured_ms / 1000.0

    def progress(phase: str, total: int) -> Callable[[int], None] | None:
        if on_progress is None:
            return None
        return lambda done: on_progress(phase, done, total)

    echo = EchoProcess()
    try:
        baseline_ns, baseline_app_ns, _ = _client(
            echo.port, rate, baseline_count, connections, timeout_s, progress("baseline", baseline_count)
        )
        spec = LinkSpec("bench", 0, echo.port, one_way_ms, kind="wan", src="client", dst="echo")
        link = LinkProcess(spec)
        try:
            cpu_before = link.cpu_seconds()
            started = time.monotonic()
            rtt_ns, app_rtt_ns, achieved_rate = _client(
                link.port, rate, count, connections, timeout_s, progress("link", count)
            )
            link_cpu = (link.cpu_seconds() - cpu_before) / (time.monotonic() - started)
            counters = link.counters(spec.name)
            precise_timer = link.precise_timer
        finally:
            link.close()
    finally:
        echo.close()

    configured_us = round(configured_ms * 1000)
    error = _summary([round(v / 1000) - configured_us for v in rtt_ns])
    app_error = _summary([round(v / 1000) - configured_us for v in app_rtt_ns])
    passed = (
        len(rtt_ns) == count
        and error["p50_ms"] <= TARGET_P50_MS
        and error["p99_ms"] <= TARGET_P99_MS
        and error["below_zero"] == 0
    )
    return {
        "settings": {
            "rtt_ms": rtt_ms,
            "scale": scale,
            "configured_rtt_ms": configured_ms,
            "one_way_ms": one_way_ms,
            "rate": rate,
            "count": count,
            "connections": connections,
            "message_bytes": _MESSAGE.size,
            "isolate": True,  # the echo server and the link each in its own process
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "event_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "precise_timer": precise_timer,
        },
        "baseline_rtt": _summary([round(v / 1000) for v in baseline_ns]),
        "rtt": _summary([round(v / 1000) for v in rtt_ns]),
        "error": error,
        "app_baseline_rtt": _summary([round(v / 1000) for v in baseline_app_ns]),
        "app_rtt": _summary([round(v / 1000) for v in app_rtt_ns]),
        "app_error": app_error,
        "received": len(rtt_ns),
        "lost": count - len(rtt_ns),
        "achieved_rate": achieved_rate,
        "link_counters": counters,
        "link_process_cpu_fraction": link_cpu,
        "targets": {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS},
        "pass": passed,
    }


def run(run_dir: Path, *, rtt_ms: float, rate: float, count: int, scale: float, connections: int) -> dict[str, Any]:
    """One measurement, with a progress bar per phase; nothing is kept in `run_dir` but the result."""
    if not all(math.isfinite(v) and v > 0 for v in (rtt_ms, rate, scale)) or count <= 0 or connections <= 0:
        raise ExperimentError("--rtt-ms, --rate, --scale, --count and --connections must be positive")
    # No refresh thread: the bar is redrawn from the client's loop, four times a second, so drawing never
    # takes the GIL at an arbitrary moment of the client being timed.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        auto_refresh=False,
        transient=True,
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)
            bar.refresh()

        result = measure_link_fidelity(rtt_ms, rate, count, scale, connections=connections, on_progress=on_progress)
    if not result["received"]:  # nothing to judge: a result without figures would only mislead
        raise ExperimentError(f"no round trip came back through the link ({result['lost']} lost)")
    return {"preset": None, "scale": scale, **result}


_ROWS = (
    ("loopback RTT, no link", "baseline_rtt"),
    ("RTT through the link", "rtt"),
    ("added error (RTT - configured)", "error"),
    ("app-level: loopback RTT", "app_baseline_rtt"),
    ("app-level: added error", "app_error"),
)
_PERCENTILES = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "min_ms")


def print_tables(result: Result) -> None:
    s = result["settings"]
    figures = Table(
        title=(
            f"link fidelity: RTT {s['configured_rtt_ms']:g} ms (rtt {s['rtt_ms']:g} x scale {s['scale']:g}), "
            f"{s['rate']:g} round trips/s, {s['count']} over {s['connections']} connections"
        )
    )
    figures.add_column("")
    for column in ("p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "min ms"):
        figures.add_column(column, justify="right")
    for label, key in _ROWS:
        shown = label.replace("added error", "[bold]added error[/]") if key == "error" else label
        figures.add_row(shown, *(f"{result[key][k]:.3f}" for k in _PERCENTILES))
    console.print(figures)
    console.print(
        "RTT: from handing a message to the kernel to the reply reaching the client's socket (kernel receive "
        "timestamp). App-level: to the client reading it, which adds the client's own wake-ups."
    )
    counters = result["link_counters"]
    console.print(
        f"sent at {result['achieved_rate']:.0f}/s; received {result['received']}/{s['count']}; "
        f"link counted {counters['round_trips']} round trips (pipelined replies count once), "
        f"{counters['connections_total']} connections; timer: "
        f"{'timerfd' if result['environment']['precise_timer'] else 'event loop'}"
    )
    if result["link_process_cpu_fraction"] is not None:
        console.print(f"link process CPU: {result['link_process_cpu_fraction']:.0%} of one core")
    e = result["error"]
    verdict = "[bold green]PASS[/]" if result["pass"] else "[bold red]FAIL[/]"
    console.print(
        f"{verdict}: error p50 {e['p50_ms']:.3f} ms (target <= {TARGET_P50_MS}), "
        f"p99 {e['p99_ms']:.3f} ms (target <= {TARGET_P99_MS}), {e['below_zero']} early, "
        f"{result['lost']} lost"
    )


def report(result: Result) -> list[str]:
    s = result.get("settings", {})
    rows = [
        [esc(label), *(num(result.get(key, {}).get(k), 3) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))]
        for label, key in _ROWS[1:3]
    ]
    intro = (
        f"<p>configured RTT {num(s.get('configured_rtt_ms'))} ms ({num(s.get('rtt_ms'))} × {num(s.get('scale'))}), "
        f"{num(s.get('count'))} round trips at {num(s.get('rate'))}/s over {num(s.get('connections'))} connections; "
        f"received {num(result.get('received'))}, lost {num(result.get('lost'))}.</p>"
    )
    return [intro, table(("ms", "p50", "p90", "p99", "max"), rows)]


def headline(result: Result) -> list[str]:
    e, s = result["error"], result["settings"]
    return [
        f"a link configured for {s['configured_rtt_ms']:g} ms adds {e['p50_ms']:.3f} ms at p50 and "
        f"{e['p99_ms']:.3f} ms at p99 ({s['rate']:g} round trips/s)"
    ]


def checks(result: Result) -> list[Check]:
    e = result["error"]
    return [
        Check(
            f"a link adds the configured delay: error p50 <= {TARGET_P50_MS} ms, p99 <= {TARGET_P99_MS} ms, none "
            "early, none lost",
            bool(result["pass"]),
            f"p50 {e['p50_ms']:.3f} ms, p99 {e['p99_ms']:.3f} ms, {e['below_zero']} early, {result['lost']} lost",
        )
    ]


EXPERIMENT = Experiment(
    name="links",
    summary=(
        f"Measure the error a link adds to round trips (targets: p50 <= {TARGET_P50_MS} ms, "
        f"p99 <= {TARGET_P99_MS:g} ms)."
    ),
    run=run,
    options=(
        click.option("--rtt-ms", type=float, default=66.0, show_default=True, help="Configured round-trip time."),
        click.option("--rate", type=float, default=1000.0, show_default=True, help="Round trips per second."),
        click.option("--count", type=int, default=5000, show_default=True, help="Round trips to measure."),
        click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplies the delay."),
        click.option("--connections", type=int, default=8, show_default=True, help="Concurrent connections."),
    ),
    tables=print_tables,
    report=report,
    checks=checks,
    headline=headline,
    must_hold=True,  # a link that misses its targets makes every lab figure suspect: the command exits 1
    run_dir_help="Where the result goes (the echo server and link need no files).",
)
