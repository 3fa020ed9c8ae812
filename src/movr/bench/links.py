"""``movr bench links``: how faithfully does a link add the delay it is configured with?

Every lab result rests on links adding exactly the configured delay, so this bench measures it the way the
lab uses links: an echo server (its own process), a link server (its own process, the real
``python -m movr.lab.links``) in front of it, and an open-loop client here that sends small messages at a
fixed rate over a few connections, so several round trips are in flight at once. Open loop: a send time is
fixed by the schedule, never by the previous reply, so a slow reply cannot hide the next one's delay.

It reports the *added error*, measured RTT minus configured RTT, with microsecond resolution, and the
loopback RTT without a link as the baseline that error cannot go below. A round trip runs from just before
the client hands its message to the kernel to the kernel's receive timestamp of the reply on the client's
socket, so the client's own wake-ups and pauses (progress bar, collector) are not charged to the link; the
same figures up to the moment the client read the reply are reported too, as "app-level".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import platform
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import psutil

from movr.lab import control
from movr.lab.links import (
    RECEIVE_ANCILLARY_SIZE,
    LinkSpec,
    dump_specs,
    enable_receive_timestamps,
    fetch_counters,
    new_event_loop,
    receive_age,
    run_links_in_thread,
)

TARGET_P50_MS = 0.3
TARGET_P99_MS = 2.0

_MESSAGE = struct.Struct("!Q8x")  # sequence number, padded to 16 bytes: "small", like a short statement
_HIST_MAX_US = 3_600_000_000  # an hour: far above any plausible round trip


# --- the echo server ---------------------------------------------------------------------------------------


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _start_echo() -> asyncio.AbstractServer:
    return await asyncio.get_running_loop().create_server(_Echo, "127.0.0.1", 0)


def _echo_process_main() -> None:
    """Entry point of the echo server process: print the port, serve until stdin closes or SIGTERM."""
    loop = new_event_loop()
    server = loop.run_until_complete(_start_echo())
    print(server.sockets[0].getsockname()[1], flush=True)
    gc.freeze()  # no full collections of start-up objects while timing (see movr.lab.links.serve)
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the parent closing our stdin (or dying) ends us
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.run_until_complete(stop.wait())
    server.close()
    loop.close()


class _EchoProcess:
    """The echo server in its own process. A plain subprocess rather than multiprocessing, so callers need
    no ``if __name__ == "__main__"`` guard."""

    def __init__(self) -> None:
        code = "from movr.bench.links import _echo_process_main; _echo_process_main()"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.port = int(_read_line(self._process, "echo server"))

    def close(self) -> None:
        _stop_process(self._process)


class _EchoThread:
    """The echo server on a thread: only for ``isolate=False`` comparisons."""

    def __init__(self) -> None:
        import threading

        self._loop = new_event_loop()
        ready = threading.Event()
        self.port = 0

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(_start_echo())
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="echo", daemon=True)
        self._thread.start()
        ready.wait()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _read_line(process: subprocess.Popen[str], what: str, timeout_s: float = 30.0) -> str:
    """The first stdout line of a child that announces itself when ready."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if not line:
        _stop_process(process)
        raise RuntimeError(f"{what} process did not start")
    return line


def _stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


# --- the link server process -------------------------------------------------------------------------------


class _LinkProcess:
    """``python -m movr.lab.links`` with one link, exactly as the lab runs it."""

    def __init__(self, spec: LinkSpec) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="movr-bench-links-")
        spec_path = Path(self._dir.name) / "links.json"
        dump_specs([spec], spec_path)
        self._token = control.new_token()  # the control API's token, handed over in the environment
        self._process = subprocess.Popen(
            [sys.executable, "-m", "movr.lab.links", "--spec", str(spec_path), "--control-port", "0"],
            stdout=subprocess.PIPE,
            env={**os.environ, control.TOKEN_ENV: self._token},
            text=True,
        )
        try:
            info = json.loads(_read_line(self._process, "link server"))
        except BaseException:
            self.close()
            raise
        self.control_port: int = info["control_port"]
        self.port: int = info["links"][spec.name]
        self.precise_timer: bool = info["precise_timer"]

    def counters(self, name: str) -> dict[str, int]:
        return fetch_counters(self.control_port, token=self._token)[name]

    def cpu_seconds(self) -> float | None:
        """CPU time the link process has used so far: what carrying this load costs."""
        times = psutil.Process(self._process.pid).cpu_times()
        return times.user + times.system

    def close(self) -> None:
        _stop_process(self._process)
        self._dir.cleanup()


class _LinkInThread:
    def __init__(self, spec: LinkSpec) -> None:
        self._name = spec.name
        self._handle = run_links_in_thread([spec])
        self.port = self._handle.port(spec.name)
        self.precise_timer = self._handle.server.precise_timer

    def counters(self, name: str) -> dict[str, int]:
        return self._handle.counters()[name]

    def cpu_seconds(self) -> float | None:
        return None  # shares this process with the client: not separable

    def close(self) -> None:
        self._handle.close()


# --- the open-loop client ----------------------------------------------------------------------------------


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


# --- figures -----------------------------------------------------------------------------------------------


def _summary(values_us: list[int]) -> dict[str, Any]:
    """Percentiles with an HDR histogram at microsecond resolution (3 significant digits)."""
    from hdrh.histogram import HdrHistogram

    histogram = HdrHistogram(1, _HIST_MAX_US, 3)
    below_zero = 0
    for v in values_us:
        if v < 0:
            below_zero += 1
        histogram.record_value(max(v, 0))  # a histogram holds no negatives; they are counted apart
    if not values_us:
        return {"count": 0}
    return {
        "count": len(values_us),
        "p50_ms": histogram.get_value_at_percentile(50.0) / 1000.0,
        "p90_ms": histogram.get_value_at_percentile(90.0) / 1000.0,
        "p99_ms": histogram.get_value_at_percentile(99.0) / 1000.0,
        "p999_ms": histogram.get_value_at_percentile(99.9) / 1000.0,
        "max_ms": max(values_us) / 1000.0,
        "min_ms": min(values_us) / 1000.0,
        "mean_ms": sum(values_us) / len(values_us) / 1000.0,
        "below_zero": below_zero,
    }


def measure_link_fidelity(
    rtt_ms: float = 66.0,
    rate: float = 1000.0,
    count: int = 5000,
    scale: float = 1.0,
    *,
    connections: int = 8,
    isolate: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure the error a link adds to round trips; returns every figure and the settings.

    ``isolate`` runs the echo server and the link in their own processes (the honest setting: the lab
    runs links as processes); False puts both on threads of this process, only to compare.
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

    echo = _EchoProcess() if isolate else _EchoThread()
    try:
        baseline_ns, baseline_app_ns, _ = _client(
            echo.port, rate, baseline_count, connections, timeout_s, progress("baseline", baseline_count)
        )
        spec = LinkSpec(
            name="bench",
            listen_port=0,
            target_port=echo.port,
            one_way_ms=one_way_ms,
            kind="wan",
            src="client",
            dst="echo",
        )
        link = _LinkProcess(spec) if isolate else _LinkInThread(spec)
        try:
            cpu_before = link.cpu_seconds()
            started = time.monotonic()
            rtt_ns, app_rtt_ns, achieved_rate = _client(
                link.port, rate, count, connections, timeout_s, progress("link", count)
            )
            elapsed = time.monotonic() - started
            cpu_after = link.cpu_seconds()
            link_cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / elapsed
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
            "isolate": isolate,
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


# --- the command -------------------------------------------------------------------------------------------


def _render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = result["settings"]
    table = Table(
        title=(
            f"link fidelity: RTT {s['configured_rtt_ms']:g} ms (rtt {s['rtt_ms']:g} x scale {s['scale']:g}), "
            f"{s['rate']:g} round trips/s, {s['count']} over {s['connections']} connections"
        )
    )
    table.add_column("")
    for column in ("p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "min ms"):
        table.add_column(column, justify="right")
    for label, key in (
        ("loopback RTT, no link", "baseline_rtt"),
        ("RTT through the link", "rtt"),
        ("[bold]added error[/] (RTT - configured)", "error"),
        ("app-level: loopback RTT", "app_baseline_rtt"),
        ("app-level: added error", "app_error"),
    ):
        f = result[key]
        table.add_row(label, *(f"{f[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "min_ms")))
    console.print(table)
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


@click.command("links")
@click.option("--rtt-ms", type=float, default=66.0, show_default=True, help="Configured round-trip time.")
@click.option("--rate", type=float, default=1000.0, show_default=True, help="Round trips per second.")
@click.option("--count", type=int, default=5000, show_default=True, help="Round trips to measure.")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Multiplies the delay.")
@click.option("--connections", type=int, default=8, show_default=True, help="Concurrent connections.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write every figure here.")
def links_command(
    rtt_ms: float, rate: float, count: int, scale: float, connections: int, json_path: str | None
) -> None:
    """Measure the error a link adds to round trips (targets: p50 <= 0.3 ms, p99 <= 2 ms)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # No refresh thread: the bar is redrawn from the client's loop, four times a second, so drawing never
    # takes the GIL at an arbitrary moment of the client being timed.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        auto_refresh=False,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)
            bar.refresh()

        result = measure_link_fidelity(rtt_ms, rate, count, scale, connections=connections, on_progress=on_progress)
    _render(result)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
    if not result["pass"]:
        sys.exit(1)


if __name__ == "__main__":
    links_command()
