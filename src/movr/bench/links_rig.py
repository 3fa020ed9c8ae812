"""The rig `movr bench links` measures a link on: an echo server and the real ``python -m movr.lab.links``
in front of it, each in its own process as the lab runs links, so neither's pauses are charged to the other.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from movr.lab import control
from movr.lab.links import LinkSpec, dump_specs, fetch_counters, new_event_loop


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


def echo_process_main() -> None:
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


class EchoProcess:
    """The echo server in its own process. A plain subprocess rather than multiprocessing, so callers need
    no ``if __name__ == "__main__"`` guard."""

    def __init__(self) -> None:
        code = "from movr.bench.links_rig import echo_process_main; echo_process_main()"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.port = int(_read_line(self._process, "echo server"))

    def close(self) -> None:
        _stop_process(self._process)


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


class LinkProcess:
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

    def cpu_seconds(self) -> float:
        """CPU time the link process has used so far: what carrying this load costs."""
        times = psutil.Process(self._process.pid).cpu_times()
        return times.user + times.system

    def close(self) -> None:
        _stop_process(self._process)
        self._dir.cleanup()
