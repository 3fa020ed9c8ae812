"""The lab's geo load balancer: routing decisions, city resolution, forwarding end to end, and the process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import psutil
import pytest
from aiohttp import web
from aiohttp_apps import BalancerServer, serving
from multidict import CIMultiDict

from movr.geo import Preset
from movr.lab import control
from movr.lab.balancer import (
    BALANCER_KEY,
    Balancer,
    BalancerConfigError,
    build_app,
    choose_region,
    parse_config,
    resolve_city,
)
from movr.lab.links_access import AccessDelay, AccessLinkCounters

ALL = ["us-east1", "us-west1", "europe-west1"]
TOKEN = control.new_token()
CONTROL = {control.TOKEN_HEADER: TOKEN}


# --- pure decisions -----------------------------------------------------------------------------------------


def test_choose_region_picks_the_nearest_healthy_region(preset: Preset):
    assert choose_region(preset, "rome", ALL, "multi", "us-east1") == "europe-west1"
    assert choose_region(preset, "seattle", ALL, "multi", "us-east1") == "us-west1"
    assert choose_region(preset, "new york", ALL, "hybrid", "us-east1") == "us-east1"
    # Rome's nearest is down: next comes us-east1 (~119 ms), not us-west1 (~141 ms).
    assert choose_region(preset, "rome", ["us-east1", "us-west1"], "multi", "us-east1") == "us-east1"
    assert choose_region(preset, "rome", [], "multi", "us-east1") is None


def test_single_topology_sends_everything_to_the_primary(preset: Preset):
    for city in preset.cities:
        assert choose_region(preset, city, ALL, "single", "us-east1") == "us-east1"
    assert choose_region(preset, "rome", ["europe-west1"], "single", "us-east1") is None


def test_city_resolution_order_and_fall_through(preset: Preset):
    def city(headers: dict[str, str], cookies: dict[str, str] | None = None) -> str:
        return resolve_city(preset, CIMultiDict(headers), cookies or {}, "boston")

    cookie = {"movr_browsing_from": "new%20york"}
    geo = {"X-Client-Geo-Location": "europe-west1, Paris"}
    assert city({"X-Client-City": "Rome", **geo}, cookie) == "rome"  # header beats geo header
    assert city(geo, cookie) == "paris"  # geo header beats cookie, trimmed, case-insensitive
    assert city({}, cookie) == "new york"  # cookie, URL-decoded
    assert city({}, {"movr_browsing_from": "los+angeles"}) == "los angeles"
    assert city({}) == "boston"  # the default
    # Unknown names fall through to the next source.
    assert city({"X-Client-City": "atlantis", **geo}, cookie) == "paris"
    assert city({"X-Client-City": "atlantis", "X-Client-Geo-Location": "x,nowhere"}, cookie) == "new york"
    assert city({"X-Client-Geo-Location": "no comma"}, {"movr_browsing_from": "gotham"}) == "boston"


def test_config_defaults_and_errors():
    apps = {"us-east1": "http://127.0.0.1:1/", "europe-west1": "http://127.0.0.1:2"}
    cfg = parse_config({"preset": "gcp-3", "topology": "multi", "apps": apps})
    assert cfg.default_city == "new york"  # the first city of the primary region
    assert cfg.apps["us-east1"] == "http://127.0.0.1:1"
    assert cfg.scale == 1.0
    single = parse_config({"preset": "gcp-3", "topology": "single", "apps": apps, "default_city": "Rome"})
    assert list(single.apps) == ["us-east1"] and single.default_city == "rome"
    for bad in (
        {"preset": "gcp-3", "topology": "mesh", "apps": apps},
        {"preset": "gcp-3", "apps": {"mars-1": "http://127.0.0.1:3"}},
        {"preset": "gcp-3", "topology": "single", "apps": {"europe-west1": "http://127.0.0.1:2"}},
        {"preset": "gcp-3", "apps": apps, "default_city": "atlantis"},
        {"preset": "no-such-preset", "apps": apps},
    ):
        with pytest.raises(BalancerConfigError):
            parse_config(bad)


def test_an_app_is_unhealthy_after_two_failed_checks_and_back_after_one_pass():
    balancer = Balancer(parse_config({"preset": "gcp-3", "apps": {"us-east1": "http://127.0.0.1:1"}}))
    balancer.record_probe("us-east1", False)
    assert balancer.regions_in_rotation() == ["us-east1"]
    balancer.record_probe("us-east1", False)
    assert balancer.regions_in_rotation() == []
    balancer.record_probe("us-east1", True)
    assert balancer.regions_in_rotation() == ["us-east1"]


def test_access_link_counters():
    counters = AccessLinkCounters(["a"])
    counters.count_request("a", 10)
    counters.count_response("a", 20)
    assert counters.snapshot() == {"a": {"requests": 1, "client_round_trips": 1, "bytes_in": 10, "bytes_out": 20}}
    counters.reset()
    assert counters.snapshot()["a"]["requests"] == 0


async def _deliveries() -> tuple[list[tuple[float, float, float]], list[str]]:
    """(due, delivered, one way) of legs set off together with delays out of order; what ran at once."""
    access = AccessDelay(asyncio.get_running_loop())
    delivered: list[tuple[float, float, float]] = []
    at_once: list[str] = []
    done = asyncio.get_running_loop().create_future()
    one_ways = [3.0, 0.2, 1.5, 0.05, 2.2, 0.7, 0.7, 5.0] * 5

    def arrive(due: float, one_way_ms: float) -> None:
        delivered.append((due, time.monotonic(), one_way_ms))
        if len(delivered) == len(one_ways):
            done.set_result(None)

    try:
        # Set off together, once all are handed over: a leg whose time had come while the others were still
        # being handed over (a pause of the test's own process) would rightly go at once, out of this order.
        set_off = time.monotonic() + 0.010
        for one_way_ms in one_ways:
            due = access.due(one_way_ms, not_before=set_off)
            access.deliver(due, lambda due=due, one_way_ms=one_way_ms: arrive(due, one_way_ms))
        access.deliver(access.due(0.0), lambda: at_once.append("zero"))  # nothing to carry: delivered now
        access.deliver(time.monotonic() - 1.0, lambda: at_once.append("past"))
        assert at_once == ["zero", "past"]
        access.deliver(time.monotonic() - 1.0, lambda: 1 / 0)  # due already and failing: logged, not raised
        access.deliver(access.due(1.0), lambda: 1 / 0)  # a delivery that fails is logged; the rest go on
        await asyncio.wait_for(done, 10)
    finally:
        access.close()
    return delivered, at_once


def test_a_carried_leg_is_delivered_at_its_due_time_never_before(caplog):
    with caplog.at_level(logging.ERROR, logger="movr.lab.balancer"):
        delivered, _ = asyncio.run(_deliveries())
    failed = [record for record in caplog.records if "across the access link failed" in record.getMessage()]
    assert len(failed) == 2  # the one due at once and the one the scheduler woke for
    assert len(delivered) == 40
    for due, arrived, _one_way in delivered:
        assert arrived >= due, f"delivered {(due - arrived) * 1e6:.0f} us early"
    # Delivered in the order they fall due, whatever order they set off in.
    assert [row[0] for row in delivered] == sorted(row[0] for row in delivered)


def test_a_leg_sets_off_when_its_last_byte_reached_the_balancer_not_when_the_balancer_got_to_it():
    """As a link's leg does: the balancer's own wake-up and work happen while the bytes travel."""
    read_at = time.monotonic() - 0.5
    assert AccessDelay.due(10.0, since=read_at) == pytest.approx(read_at + 0.010)
    # An answer never sets off before its request reached the region.
    assert AccessDelay.due(10.0, since=read_at, not_before=read_at + 1) == pytest.approx(read_at + 1.010)
    before = time.monotonic()
    due = AccessDelay.due(10.0)  # not known when the bytes came: from now
    assert before + 0.010 <= due <= time.monotonic() + 0.010


# --- end to end ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def fake_app(region: str, seen: list[web.Request]) -> AsyncIterator[tuple[str, web.AppRunner]]:
    """A tiny stand-in for a region's app server: echoes what it received and sets two cookies."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/healthz":
            return web.Response(text="ok")
        seen.append(request)
        body = await request.read()
        response = web.json_response({"region": region, "path": request.path_qs, "body": body.decode()})
        response.set_cookie("movr_session", region)
        response.set_cookie("movr_flash", "hello")
        return response

    async with serving(handle) as served:
        yield served


async def _end_to_end(preset: Preset) -> None:
    eu_seen: list[web.Request] = []
    us_seen: list[web.Request] = []
    async with fake_app("europe-west1", eu_seen) as (eu_url, eu_runner), fake_app("us-east1", us_seen) as (us_url, _):
        config = {
            "preset": "gcp-3",
            "scale": 1.0,
            "topology": "multi",
            "apps": {"europe-west1": eu_url, "us-east1": us_url},
            "default_city": None,
        }
        server = BalancerServer(build_app(config, TOKEN))
        await server.start_server()
        balancer = server.app[BALANCER_KEY]
        jar = aiohttp.DummyCookieJar()  # send only the cookies each request names
        async with aiohttp.ClientSession(cookie_jar=jar) as client:

            async def status() -> dict:
                async with client.get(server.make_url("/_balancer/status"), headers=CONTROL) as resp:
                    return await resp.json()

            # From Rome: Europe serves, with the location headers added and the client RTT carried.
            rtt_ms = preset.client_rtt_ms("rome", "europe-west1")
            start = time.perf_counter()
            async with client.get(server.make_url("/rides?page=2"), headers={"X-Client-City": "Rome"}) as resp:
                body = await resp.read()
                elapsed = time.perf_counter() - start
                assert resp.status == 200
                assert json.loads(body)["region"] == "europe-west1"
                assert json.loads(body)["path"] == "/rides?page=2"
                assert resp.headers["X-Movr-Balancer-Region"] == "europe-west1"
                assert float(resp.headers["X-Movr-Client-Rtt-Ms"]) == pytest.approx(rtt_ms, abs=0.001)
                cookies = resp.headers.getall("Set-Cookie")
                assert len(cookies) == 2 and any("movr_session=europe-west1" in c for c in cookies)
            assert elapsed >= rtt_ms / 1000  # a lower bound only: never assert an upper one
            (request,) = eu_seen
            assert request.headers["X-Client-City"] == "rome"
            assert request.headers["X-Client-Geo-Location"] == "europe-west1,rome"
            assert request.headers["X-Forwarded-For"] == "127.0.0.1"
            assert request.headers["X-Forwarded-Proto"] == "http"
            assert request.headers["X-Forwarded-Host"] == f"{server.host}:{server.port}"

            regions = (await status())["regions"]
            assert regions["europe-west1"]["requests"] == 1
            assert regions["europe-west1"]["client_round_trips"] == 1
            assert regions["europe-west1"]["bytes_out"] == len(body)
            assert regions["us-east1"]["client_round_trips"] == 0

            # The body passes through; a cookie locates a New Yorker.
            headers = {"Cookie": "movr_browsing_from=new%20york"}
            async with client.post(server.make_url("/echo"), data=b"abc", headers=headers) as resp:
                assert (await resp.json()) == {"region": "us-east1", "path": "/echo", "body": "abc"}
            assert us_seen[-1].headers["X-Client-Geo-Location"] == "us-east1,new york"

            # A failure drill: Europe forced out, Rome is rerouted to the next nearest region.
            drill = server.make_url("/_balancer/regions/europe-west1")
            async with client.post(drill, json={"down": True}, headers=CONTROL) as resp:
                assert resp.status == 200
            async with client.get(server.make_url("/"), headers={"X-Client-City": "rome"}) as resp:
                assert resp.headers["X-Movr-Balancer-Region"] == "us-east1"
            state = await status()
            assert state["topology"] == "multi" and state["preset"] == "gcp-3" and state["scale"] == 1.0
            assert state["regions"]["europe-west1"]["forced_down"] is True
            assert state["regions"]["us-east1"]["client_round_trips"] == 2
            async with client.post(drill, json={"down": False}, headers=CONTROL):
                pass
            mars = server.make_url("/_balancer/regions/mars-1")
            async with client.post(mars, json={"down": True}, headers=CONTROL) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "not_found"

            async with client.post(server.make_url("/_balancer/reset"), json={}, headers=CONTROL) as resp:
                assert all(r["requests"] == 0 for r in (await resp.json())["regions"].values())

            # Europe's app dies: the request in flight gets a 502 and Europe leaves the rotation at once.
            await eu_runner.cleanup()
            start = time.perf_counter()
            async with client.get(server.make_url("/"), headers={"X-Client-City": "rome"}) as resp:
                assert resp.status == 502
                assert "Traceback" not in await resp.text()
                assert (await resp.json())["error"]["code"] == "bad_gateway"
            # Found out in the region, so known to the client no sooner than a round trip (a lower bound only).
            assert time.perf_counter() - start >= rtt_ms / 1000
            assert "europe-west1" not in balancer.regions_in_rotation()
            async with client.get(server.make_url("/"), headers={"X-Client-City": "rome"}) as resp:
                assert resp.headers["X-Movr-Balancer-Region"] == "us-east1"
            assert (await status())["regions"]["europe-west1"]["healthy"] is False

            # Nothing left in rotation: 503.
            async with client.post(
                server.make_url("/_balancer/regions/us-east1"), json={"down": True}, headers=CONTROL
            ):
                pass
            async with client.get(server.make_url("/"), headers={"Accept": "application/json"}) as resp:
                assert resp.status == 503
                error = (await resp.json())["error"]  # shaped as the app's errors
                assert error["code"] == "unavailable" and "no healthy region" in error["message"]
        await server.close()


def test_end_to_end_through_two_apps(preset: Preset):
    asyncio.run(_end_to_end(preset))


async def _control_refusals() -> None:
    seen: list[web.Request] = []
    async with fake_app("europe-west1", seen) as (url, _):
        server = BalancerServer(build_app({"preset": "gcp-3", "apps": {"europe-west1": url}}, TOKEN))
        await server.start_server()
        balancer = server.app[BALANCER_KEY]
        drill = server.make_url("/_balancer/regions/europe-west1")
        down = json.dumps({"down": True})
        async with aiohttp.ClientSession() as client:

            async def answer(method: str, target, headers: dict[str, str], data: str | None = None) -> tuple:
                """(status, error code) of a refusal, in the app's error shape; (status, None) otherwise."""
                async with client.request(method, target, headers=headers, data=data) as resp:
                    body = await resp.json()
                if resp.status < 400:
                    return resp.status, None
                assert set(body) == {"error"} and body["error"]["message"], body
                return resp.status, body["error"]["code"]

            # What a web page can send cross-site without a preflight: a text/plain POST, no token.
            page = {"Content-Type": "text/plain", "Origin": "https://evil.example"}
            assert await answer("POST", drill, page, down) == (401, "unauthorized")
            # A wrong token, and the right one without JSON, are refused too; reads need the token as well.
            wrong = {control.TOKEN_HEADER: TOKEN[:-1] + "x", "Content-Type": "application/json"}
            assert await answer("POST", drill, wrong, down) == (403, "forbidden")
            plain = {**CONTROL, "Content-Type": "text/plain"}
            assert await answer("POST", drill, plain, down) == (415, "unsupported_media_type")
            assert await answer("GET", server.make_url("/_balancer/status"), {}) == (401, "unauthorized")
            assert await answer("POST", server.make_url("/_balancer/reset"), {}, "{}") == (401, "unauthorized")
            assert balancer.regions_in_rotation() == ["europe-west1"]  # nothing changed
            # The lab's token is the balancer's alone: a request carrying it reaches the app without it.
            async with client.get(server.make_url("/x"), headers={**CONTROL, "X-Client-City": "rome"}) as resp:
                assert resp.status == 200
            assert control.TOKEN_HEADER not in seen[-1].headers
            # With the token and JSON, the drill goes through.
            json_headers = {**CONTROL, "Content-Type": "application/json"}
            assert await answer("POST", drill, json_headers, down) == (200, None)
            assert balancer.regions_in_rotation() == []
        await server.close()


def test_control_endpoints_want_the_token_and_json_and_a_page_cannot_take_a_region_down():
    asyncio.run(_control_refusals())


@pytest.mark.slow  # a process of its own
def test_balancer_process_refuses_to_start_without_a_token(tmp_path: Path):
    config = tmp_path / "balancer.json"
    config.write_text(json.dumps({"preset": "gcp-3", "apps": {"us-west1": "http://127.0.0.1:1"}}))
    env = {k: v for k, v in os.environ.items() if k != control.TOKEN_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "movr.lab.balancer", "--config", str(config), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert control.TOKEN_ENV in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --- the process --------------------------------------------------------------------------------------------


async def _process(config_path: Path) -> None:
    seen: list[web.Request] = []
    async with fake_app("us-west1", seen) as (url, _):
        config_path.write_text(
            json.dumps({"preset": "gcp-3", "scale": 0.1, "topology": "multi", "apps": {"us-west1": url}})
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "movr.lab.balancer",
            "--config",
            str(config_path),
            "--port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, control.TOKEN_ENV: TOKEN},  # the environment, never the command line
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
            assert ready["event"] == "ready"
            async with (
                aiohttp.ClientSession() as client,
                client.get(f"http://127.0.0.1:{ready['port']}/x", headers={"X-Client-City": "seattle"}) as resp,
            ):
                assert resp.status == 200
                assert resp.headers["X-Movr-Balancer-Region"] == "us-west1"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert not psutil.pid_exists(proc.pid)
    assert len(seen) == 1


@pytest.mark.slow  # a process of its own
def test_balancer_process_serves_and_stops_on_sigterm(tmp_path: Path):
    asyncio.run(_process(tmp_path / "balancer.json"))


def test_the_access_log_leaves_query_strings_out(caplog):
    """The console's URLs carry the lab's token in their query: it must never reach a log."""
    import logging

    from aiohttp.test_utils import make_mocked_request

    from movr.lab.balancer import PathOnlyAccessLogger

    logger = logging.getLogger("movr.test.access")
    with caplog.at_level(logging.INFO, logger="movr.test.access"):
        PathOnlyAccessLogger(logger, "").log(make_mocked_request("GET", "/lab/?token=SECRET"), web.Response(), 0.002)
    assert "GET /lab/ 200" in caplog.text and "SECRET" not in caplog.text
