"""A bare process hop: this machine's own cost of one round trip to another process, with no code of ours.

`EchoServer` starts a minimal echo server - this file, run by a bare interpreter (`python -I -S`: no site,
no environment, the standard library only) - and always stops it; `round_trip()` sends a few bytes over
one kept-open loopback TCP connection and waits for them to come back. Timed back to back, that is the
kernel's loopback and two context switches; timed after the machine idled (movr.bench.journey.IDLE_GAP_S),
it is what waking one idle process costs here, which a request pays for each process it passes (the
balancer, an app server): the limit of movr.bench.journey and the first row of movr.bench.path.

The listening socket is bound here, on a loopback port the kernel picks, and handed to the server open: no
fixed port, and nothing can take the port between choosing and binding it (the race movr.lab.ports avoids
for the lab's processes, which bind their own ports later).

This file runs as that server, so it imports nothing beyond the standard library at its top.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from types import TracebackType

PAYLOAD = b"movr-hop"  # a few bytes: one segment each way
START_TIMEOUT_S = 10.0


class EchoServer:
    """`with EchoServer() as echo: echo.round_trip()`; the server process ends with the block, whatever
    ends it (or `start()` ... `stop()`). `env`: added to the server's environment (the lab's marker, so
    `processes_left` finds a server that outlived its benchmark)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: socket.socket | None = None
        self.said = ""  # the last line the server wrote to stderr, once stopped

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def __enter__(self) -> EchoServer:
        return self.start()

    def start(self) -> EchoServer:
        """Start the server and prove it answers; `stop()` ends it (the block's end, when used in `with`)."""
        with socket.create_server(("127.0.0.1", 0)) as listener:
            address = listener.getsockname()
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__, str(listener.fileno())],
                pass_fds=(listener.fileno(),),
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        # The server holds the only listening socket now: one round trip proves it answers.
        try:
            self._conn = socket.create_connection(address, timeout=START_TIMEOUT_S)
            self._conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.round_trip()
            self._conn.settimeout(None)
        except OSError as error:
            self.stop()
            # Not at the top: this file also runs as the bare server, which cannot import movr.
            from movr.bench.experiment import ExperimentError

            raise ExperimentError(
                f"the echo server (a bare process hop) did not answer: {self.said or error}"
            ) from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def round_trip(self) -> None:
        """PAYLOAD there and back."""
        assert self._conn is not None, "not started"
        self._conn.sendall(PAYLOAD)
        received = 0
        while received < len(PAYLOAD):
            chunk = self._conn.recv(len(PAYLOAD) - received)
            if not chunk:
                raise ConnectionError("the echo server closed the connection")
            received += len(chunk)

    def stop(self) -> None:
        """Close the connection (the server ends when it sees it closed), make sure the process is gone, and
        keep the last line it wrote to stderr in `said`."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        process, self._process = self._process, None
        if process is None:
            return
        try:
            _, errors = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
        lines = (errors or b"").decode(errors="replace").strip().splitlines()
        self.said = lines[-1] if lines else ""


def serve(listener_fd: int) -> None:
    """The server: echo what the one connection sends until it closes."""
    with socket.socket(fileno=listener_fd) as listener:
        conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(4096):
            conn.sendall(data)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
