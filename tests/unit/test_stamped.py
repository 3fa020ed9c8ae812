"""The balancer's connections (movr.lab.stamped): reads stamped with when the kernel received them, writes that
the socket could not take sent later, and a close that never turns an answer into a reset."""

from __future__ import annotations

import asyncio
import socket
import time

from movr.lab import stamped
from movr.lab.links.timing import new_event_loop


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: stamped.StampedTransport | None = None
        self.reads: list[tuple[bytes, float, float]] = []  # data, arrived, when the protocol got it
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.reads.append((data, self.transport.arrived, time.monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def run(coroutine_function) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(coroutine_function())
    finally:
        loop.close()


async def _serving() -> tuple[stamped.StampedServer, list[Recorder], int]:
    protocols: list[Recorder] = []

    def factory() -> Recorder:
        protocols.append(Recorder())
        return protocols[-1]

    server = await stamped.serve(factory, "127.0.0.1", 0)
    return server, protocols, server.sockets[0].getsockname()[1]


async def _stamps() -> None:
    server, protocols, port = await _serving()
    client = socket.create_connection(("127.0.0.1", port))
    try:
        # Linux may start stamping a moment after it is asked to (a deferred switch): a first exchange
        # unstamped, the bytes count from when they were read, never earlier.
        client.sendall(b"warm")
        while not protocols or not protocols[0].reads:
            await asyncio.sleep(0.001)
        data, arrived, got = protocols[0].reads[0]
        assert data == b"warm" and arrived <= got
        sent_at = time.monotonic()
        client.sendall(b"hello")
        time.sleep(0.02)  # the loop is kept from reading: the bytes wait in the kernel, stamped on arrival
        read_by = time.monotonic()
        while len(protocols[0].reads) < 2:
            await asyncio.sleep(0.001)
        data, arrived, got = protocols[0].reads[1]
        assert data == b"hello"
        # Arrival is when the kernel had the bytes, not when the loop read them 20 ms later (give or take the
        # microseconds by which the wall clock, the stamp's, and the monotonic clock drift apart).
        assert sent_at - 0.001 <= arrived < read_by <= got
        assert got - arrived >= 0.015
    finally:
        client.close()
        server.close()
        await server.wait_closed()


def test_reads_carry_when_the_kernel_received_the_bytes_not_when_they_were_read():
    run(_stamps)


async def _writes_and_close() -> None:
    server, protocols, port = await _serving()
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        while not protocols:
            await asyncio.sleep(0.001)
        transport = protocols[0].transport
        assert transport is not None
        payload = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than the socket buffers take at once
        transport.write(payload[: len(payload) // 2])
        transport.write(payload[len(payload) // 2 :])
        # The client still sends while the server closes: unread bytes must not make the close a reset.
        await loop.sock_sendall(client, b"x" * 100_000)
        transport.close()
        assert transport.is_closing()
        transport.write(b"after close")  # goes nowhere, as with asyncio's transports
        received = bytearray()
        while chunk := await loop.sock_recv(client, 1 << 20):
            received += chunk
        assert bytes(received) == payload  # all of it, in order, then the end of stream (no reset)
        assert await asyncio.wait_for(protocols[0].lost, 5) is None
    finally:
        client.close()
        server.close()


def test_writes_the_socket_cannot_take_go_later_in_order_and_a_close_ends_the_stream_without_a_reset():
    run(_writes_and_close)


async def _connect() -> None:
    server, protocols, port = await _serving()
    try:
        transport, protocol = await stamped.connect(Recorder, "127.0.0.1", port)
        transport.write(b"ping")
        while not protocols or not protocols[0].reads:
            await asyncio.sleep(0.001)
        assert protocols[0].reads[0][0] == b"ping"
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        protocols[0].transport.close()  # the far end closes: this side hears the end of stream, and closes
        assert await asyncio.wait_for(protocol.lost, 5) is None
        assert transport.is_closing()
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))  # bound, never listening: nothing accepts on this port
        try:
            await stamped.connect(Recorder, "127.0.0.1", refused.getsockname()[1])
        except OSError:
            pass
        else:
            raise AssertionError("a connection to a port nobody listens on succeeded")
        finally:
            refused.close()
    finally:
        server.close()


def test_connect_dials_and_a_peer_that_ends_its_stream_closes_the_connection():
    run(_connect)


class Answering(Recorder):
    """Answers each read with a large answer, then closes: as the balancer does for a client that is done."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        assert self.transport is not None
        self.transport.write(ANSWER)

    def eof_received(self) -> None:
        return None  # as asyncio's default: the transport closes, after writing what is left


ANSWER = b"a" * (8 * 1024 * 1024)


async def _half_closed() -> None:
    server = await stamped.serve(Answering, "127.0.0.1", 0)
    client = socket.create_connection(("127.0.0.1", server.sockets[0].getsockname()[1]))
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(client, b"request")
        await asyncio.sleep(0.05)  # not a distance: the loop's turns in which the server reads and starts answering
        client.shutdown(socket.SHUT_WR)  # done sending, still reading: the whole answer must come
        received = bytearray()
        while chunk := await loop.sock_recv(client, 1 << 20):
            received += chunk
        assert len(received) == len(ANSWER)
    finally:
        client.close()
        server.close()


def test_a_peer_that_stops_sending_still_gets_all_that_was_written_to_it():
    run(_half_closed)
