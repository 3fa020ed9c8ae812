"""The balancer's upstream connections: what an app server may answer, and connections it closes."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp_apps import serving

from movr.lab.upstream import UpstreamError, UpstreamPool


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


async def _answers() -> None:
    async with serving(echo) as (url, _):
        pool = UpstreamPool(url)
        try:
            made = await pool.request("POST", "/rides?x=1", [("X-Client-City", "rome")], b"body", timeout=5)
            assert (made.status, made.reason, made.body) == (201, "Made", b"POST /rides?x=1 body")
            assert ("X-Seen-City", "rome") in made.headers
            assert [v for k, v in made.headers if k.lower() == "set-cookie"] == ["a=1; Path=/", "b=2; Path=/"]

            chunked = await pool.request("GET", "/chunked", [], b"", timeout=5)
            assert chunked.body == b"one,two,three"

            head = await pool.request("HEAD", "/x", [], b"", timeout=5)
            assert head.status == 201 and head.body == b""
            assert dict((k.lower(), v) for k, v in head.headers)["content-length"] == str(len(b"HEAD /x "))

            empty = await pool.request("DELETE", "/empty", [], b"", timeout=5)
            assert (empty.status, empty.body) == (204, b"")

            # Kept alive: after all that, one idle connection serves the next request.
            again = await pool.request("GET", "/again", [], b"", timeout=5)
            assert again.body == b"GET /again "
            assert len(pool._idle) == 1
        finally:
            pool.close()


def test_answers_pass_through_whole():
    asyncio.run(_answers())


async def _stale_and_dead() -> None:
    async with serving(echo) as (url, _):
        pool = UpstreamPool(url)
        await pool.request("GET", "/first", [], b"", timeout=5)
        (idle,) = pool._idle
        assert idle.transport is not None
        idle.transport.close()  # as if the app server had closed its idle end
        await asyncio.sleep(0)
        answer = await pool.request("GET", "/second", [], b"", timeout=5)
        assert answer.body == b"GET /second "
        pool.close()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await UpstreamPool(url).request("GET", "/", [], b"", timeout=5)


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
            await UpstreamPool(f"http://127.0.0.1:{port}").request("GET", "/", [], b"", timeout=5)
    finally:
        server.close()
        await server.wait_closed()


def test_an_answer_cut_short_is_an_error_not_a_short_body():
    asyncio.run(_hangs_up())


def test_only_plain_http_app_urls():
    with pytest.raises(ValueError):
        UpstreamPool("https://127.0.0.1:8443")
