"""Links: bytes intact and in order, delay as a lower bound, counters, run-time changes, the process.

Timing is asserted only as a lower bound (a link may never be faster than its delay); how close it gets to
the delay is `movr bench links`' business, not a test's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from movr.bench.links import measure_link_fidelity
from movr.lab import control
from movr.lab.links import (
    LinkSpec,
    LinkThread,
    dump_specs,
    fetch_counters,
    fetch_links,
    load_specs,
    post_link,
    reset_counters,
    run_links_in_thread,
)

pytestmark = pytest.mark.timeout(60)


class _EchoHandler(socketserver.BaseRequestHandler):
    """Echo until the client half-closes, then close: so end of stream is tested as well as bytes."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            pass  # a dropped link resets us; nothing to echo any more


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_link(echo_port: int) -> Iterator[Callable[..., tuple[LinkThread, int]]]:
    handles: list[LinkThread] = []

    def make(one_way_ms: float = 1.0, target_port: int | None = None) -> tuple[LinkThread, int]:
        spec = LinkSpec(
            name="l",
            listen_port=0,
            target_port=echo_port if target_port is None else target_port,
            one_way_ms=one_way_ms,
            kind="wan",
            src="a",
            dst="b",
        )
        handle = run_links_in_thread([spec])
        handles.append(handle)
        return handle, handle.port("l")

    yield make
    for handle in handles:
        handle.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise EOFError("connection closed early")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _exchange(sock: socket.socket, message: bytes = b"ping") -> float:
    """One request/response turn; returns its duration in seconds."""
    start = time.monotonic()
    sock.sendall(message)
    assert _recv_exactly(sock, len(message)) == message
    return time.monotonic() - start


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_large_payload_arrives_intact_and_in_order_both_ways(make_link) -> None:
    handle, port = make_link(one_way_ms=2.0)
    payload = os.urandom(4 * 1024 * 1024)
    received = bytearray()
    with _connect(port) as sock:

        def send_all() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # end of stream must cross the link too

        sender = threading.Thread(target=send_all)
        sender.start()
        while chunk := sock.recv(1 << 20):  # ends when the echo's close has crossed back
            received += chunk
        sender.join()
    assert bytes(received) == payload
    counters = handle.counters()["l"]
    assert counters["bytes_c2s"] == counters["bytes_s2c"] == len(payload)


def test_delay_is_added_each_way(make_link) -> None:
    handle, port = make_link(one_way_ms=20.0)
    with _connect(port) as sock:
        _exchange(sock)  # the first also opens the link's connection to the target
        assert min(_exchange(sock) for _ in range(3)) >= 0.040
        handle.set_delay("l", 30.0)
        assert _exchange(sock) >= 0.060
    assert handle.describe()[0]["one_way_ms"] == 30.0


def test_round_trips_count_turns_not_messages(make_link) -> None:
    handle, port = make_link(one_way_ms=1.0)
    with _connect(port) as sock:
        for i in range(10):
            _exchange(sock, f"request {i}".encode())
        assert handle.counters()["l"]["round_trips"] == 10
        # Three statements sent together (pipelined): one turn, however the reply is split.
        burst = b"one;" + b"two;" + b"three;"
        sock.sendall(burst)
        assert _recv_exactly(sock, len(burst)) == burst
        assert handle.counters()["l"]["round_trips"] == 11
    handle.reset_counters()
    assert handle.counters()["l"]["round_trips"] == 0


def test_connection_counters(make_link) -> None:
    handle, port = make_link(one_way_ms=1.0)
    socks = [_connect(port) for _ in range(3)]
    for sock in socks:
        _exchange(sock)
    counters = handle.counters()["l"]
    assert counters["connections_total"] == 3
    assert counters["connections_current"] == 3
    for sock in socks:
        sock.close()
    _wait_for(lambda: handle.counters()["l"]["connections_current"] == 0)
    assert handle.counters()["l"]["connections_total"] == 3


def test_down_link_drops_connections_and_refuses_new_ones(make_link) -> None:
    handle, port = make_link(one_way_ms=1.0)
    with _connect(port) as sock:
        _exchange(sock)
        handle.set_down("l", True)
        with pytest.raises((ConnectionError, EOFError)):
            _exchange(sock)  # dropped: reset or closed, never answered
    with pytest.raises(ConnectionRefusedError):
        _connect(port)
    assert handle.counters()["l"]["connections_current"] == 0
    handle.set_down("l", False)
    with _connect(port) as sock:
        _exchange(sock)


def test_unreachable_target_is_counted_and_closes_the_client(make_link) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]  # bound but not listening: connecting is refused
        handle, port = make_link(one_way_ms=1.0, target_port=dead_port)
        with _connect(port) as sock, pytest.raises((ConnectionError, EOFError)):
            _exchange(sock)
    _wait_for(lambda: handle.counters()["l"]["connect_errors"] == 1)


def test_specs_validate_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LinkSpec("x", 0, 1, 1.0, kind="lan", src="a", dst="b")
    specs = [LinkSpec("a-b", 7001, 5432, 33.0, "wan", "a", "b"), LinkSpec("a-a", 7002, 5433, 0.25, "local", "a", "a")]
    dump_specs(specs, tmp_path / "links.json")
    assert load_specs(tmp_path / "links.json") == specs


@pytest.mark.slow  # a process of its own
def test_link_server_process_reports_counters_and_stops_on_sigterm(echo_port: int, tmp_path: Path) -> None:
    spec_path = tmp_path / "links.json"
    dump_specs([LinkSpec("a-b", 0, echo_port, 1.0, "wan", "a", "b")], spec_path)
    token = control.new_token()
    process = subprocess.Popen(
        [sys.executable, "-m", "movr.lab.links", "--spec", str(spec_path), "--control-port", "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, control.TOKEN_ENV: token},  # the environment, never the command line
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "ready"
        control_port = ready["control_port"]
        port = ready["links"]["a-b"]
        with _connect(port) as sock:
            _exchange(sock)
            _exchange(sock)
            counters = fetch_counters(control_port, token=token)["a-b"]
            assert counters["round_trips"] == 2
            assert counters["connections_current"] == 1
        (link,) = fetch_links(control_port, token=token)
        assert link["name"] == "a-b" and link["listen_port"] == port and link["down"] is False
        assert post_link(control_port, "a-b", token=token, one_way_ms=5.0)["one_way_ms"] == 5.0
        assert post_link(control_port, "a-b", token=token, down=True)["down"] is True
        with pytest.raises(ConnectionRefusedError):
            _connect(port)
        reset_counters(control_port, token=token)
        assert fetch_counters(control_port, token=token)["a-b"]["round_trips"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert not psutil.pid_exists(process.pid)


@pytest.mark.slow  # the links benchmark, in small
def test_measure_link_fidelity_smoke() -> None:
    result = measure_link_fidelity(rtt_ms=4.0, rate=200.0, count=40, connections=2)
    assert {"settings", "environment", "baseline_rtt", "rtt", "error", "app_error", "link_counters", "pass"} <= (
        result.keys()
    )
    assert {"p50_ms", "p99_ms", "max_ms"} <= result["error"].keys()
    assert result["received"] == 40
    assert result["rtt"]["min_ms"] >= 4.0  # a link is never faster than its delay
    assert result["settings"]["one_way_ms"] == 2.0


def _refusal(url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    error = json.loads(refused.value.read())["error"]
    assert error["message"]
    return refused.value.code, error["code"]


@pytest.mark.slow  # a process of its own
def test_link_control_wants_the_token_and_json(echo_port: int, tmp_path: Path) -> None:
    spec_path = tmp_path / "links.json"
    dump_specs([LinkSpec("a-b", 0, echo_port, 1.0, "wan", "a", "b")], spec_path)
    command = [sys.executable, "-m", "movr.lab.links", "--spec", str(spec_path), "--control-port", "0"]
    without = {k: v for k, v in os.environ.items() if k != control.TOKEN_ENV}
    refused = subprocess.run(command, env=without, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and control.TOKEN_ENV in refused.stderr  # never unguarded

    token = control.new_token()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env={**without, control.TOKEN_ENV: token}, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        base = f"http://127.0.0.1:{ready['control_port']}"
        down = json.dumps({"down": True}).encode()
        # A cross-site form a web page could send (text/plain, no token): refused, the link stays up.
        page = {"Content-Type": "text/plain", "Origin": "https://evil.example"}
        assert _refusal(f"{base}/links/a-b", page, down) == (401, "unauthorized")
        wrong = {control.TOKEN_HEADER: "x" * 43, "Content-Type": "application/json"}
        assert _refusal(f"{base}/links/a-b", wrong, down) == (403, "forbidden")
        plain = {control.TOKEN_HEADER: token, "Content-Type": "text/plain"}
        assert _refusal(f"{base}/links/a-b", plain, down) == (415, "unsupported_media_type")
        assert _refusal(f"{base}/reset", {"Content-Type": "application/json"}, b"{}") == (401, "unauthorized")
        assert _refusal(f"{base}/links", {}, None) == (401, "unauthorized")
        assert fetch_links(ready["control_port"], token=token)[0]["down"] is False
        with _connect(ready["links"]["a-b"]) as sock:
            _exchange(sock)
        # Errors of the API itself come in the same shape.
        json_headers = {control.TOKEN_HEADER: token, "Content-Type": "application/json"}
        assert _refusal(f"{base}/links/nope", json_headers, down) == (404, "not_found")
        assert _refusal(f"{base}/links/a-b", json_headers, b"{}") == (400, "bad_request")
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
