"""The balancer's upstream connections: what an app server may answer, and connections it closes."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp_apps import serving

from movr.lab.upstream import UpstreamError, UpstreamPool, UpstreamResponse, encode_request


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.path == "/chunked":
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        await response.write_eof()
        return response
    if request.path == "/empty":
        return web.Response(status=204)
    response = web.Response(
        status=201, reason="Made", body=b"%s %s %s" % (request.method.encode(), request.path_qs.encode(), body)
    )
    response.headers["X-Seen-City"] = request.headers.get("X-Client-City", "")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


async def request(
    pool: UpstreamPool, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes, **kwargs
) -> UpstreamResponse:
    message = encode_request(method, target.encode(), pool.host_header, headers, body)
    return await pool.send(message, head=method == "HEAD", timeout=5, **kwargs)


async def _answers() -> None:
    async with serving(echo) as (url, _):
        pool = UpstreamPool(url)
        try:
            made = await request(pool, "POST", "/rides?x=1", [(b"X-Client-City", b"rome")], b"body")
            assert (made.status, made.reason, made.body) == (201, b"Made", b"POST /rides?x=1 body")
            assert (b"X-Seen-City", b"rome") in made.headers
            assert [v for k, v in made.headers if k.lower() == b"set-cookie"] == [b"a=1; Path=/", b"b=2; Path=/"]

            chunked = await request(pool, "GET", "/chunked", [], b"")
            assert chunked.body == b"one,two,three"

            head = await request(pool, "HEAD", "/x", [], b"")
            assert head.status == 201 and head.body == b""
            assert dict((k.lower(), v) for k, v in head.headers)[b"content-length"] == b"%d" % len(b"HEAD /x ")

            empty = await request(pool, "DELETE", "/empty", [], b"")
            assert (empty.status, empty.body) == (204, b"")

            # A request sent when `deliver` says: not before.
            writes: list[object] = []
            later = await request(pool, "GET", "/later", [], b"", deliver=lambda write: writes.append(write) or write())
            assert later.body == b"GET /later " and len(writes) == 1

            # Kept alive: after all that, one idle connection serves the next request.
            again = await request(pool, "GET", "/again", [], b"")
            assert again.body == b"GET /again "
            assert len(pool._idle) == 1
        finally:
            pool.close()


def test_a_request_is_encoded_in_one_piece_with_its_length():
    message = encode_request("POST", b"/a%0Ab?x=1", b"127.0.0.1:9", [(b"X-A", b"1"), (b"x-a", b"2")], b"\x1f\x8b")
    assert message == (
        b"POST /a%0Ab?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\n\x1f\x8b"
    )
    assert encode_request("GET", b"/", None, [(b"Host", b"h")], b"") == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_answers_pass_through_whole():
    asyncio.run(_answers())


async def _stale_and_dead() -> None:
    async with serving(echo) as (url, _):
        pool = UpstreamPool(url)
        await request(pool, "GET", "/first", [], b"")
        (idle,) = pool._idle
        assert idle.transport is not None
        idle.transport.close()  # as if the app server had closed its idle end
        await asyncio.sleep(0)
        answer = await request(pool, "GET", "/second", [], b"")
        assert answer.body == b"GET /second "
        pool.close()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await request(UpstreamPool(url), "GET", "/", [], b"")


def test_a_closed_idle_connection_is_replaced_and_a_dead_app_is_an_error():
    asyncio.run(_stale_and_dead())


async def _hangs_up() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(rude, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamError, match="closed"):
            await request(UpstreamPool(f"http://127.0.0.1:{port}"), "GET", "/", [], b"")
    finally:
        server.close()
        await server.wait_closed()


def test_an_answer_cut_short_is_an_error_not_a_short_body():
    asyncio.run(_hangs_up())


def test_only_plain_http_app_urls():
    with pytest.raises(ValueError):
        UpstreamPool("https://127.0.0.1:8443")
