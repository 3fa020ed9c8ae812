"""The lab console's request recorder and traffic rates, without a lab: what the balancer records on its forward
path, what the console makes of it, and the rates it shows."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp_apps import BalancerServer, serving

from movr import telemetry_headers as names
from movr.lab import control
from movr.lab.balancer import BALANCER_KEY, build_app
from movr.lab.console.recorder import Forwarded, RequestRecorder, figures_of, view
from movr.lab.console.traffic import LinkRates, requests_per_s

TOKEN = control.new_token()
APP_HEADERS = {
    names.REGION: "europe-west1",
    names.STATEMENTS: "3",
    names.SQL_MS: "2.5",
    names.APP_MS: "7.25",
    names.CPU_MS: "0",
    names.WAN_ROUND_TRIPS: "1",
    names.DATA_REGIONS: "europe-west1,us-east1",
}


def entry(recorder: RequestRecorder, region: str | None = "europe-west1", status: int = 200, method: str = "GET"):
    recorder.record(method, "/api/v1/rides", "rome", region, status, 12.0, 1.5, APP_HEADERS)
    return recorder.last(1)[0]


def test_the_recorder_numbers_keeps_a_bounded_window_and_reads_since_a_number():
    recorder = RequestRecorder(capacity=3)
    assert recorder.latest_seq == 0 and recorder.last(50) == []
    for _ in range(5):
        entry(recorder)
    assert [e.seq for e in recorder.last(50)] == [3, 4, 5]  # the oldest fell out
    assert [e.seq for e in recorder.since(3)] == [4, 5]
    assert [e.seq for e in recorder.since(0, limit=2)] == [4, 5]
    assert recorder.latest_seq == 5
    newest = recorder.last(1)[0]
    assert [e.seq for e in recorder.within(10, now=newest.time)] == [3, 4, 5]
    assert recorder.within(10, now=newest.time + 60) == []


def test_the_figures_come_from_the_app_headers_and_absent_or_garbled_ones_read_as_zero():
    recorder = RequestRecorder()
    figures = figures_of(entry(recorder))
    assert figures == {
        "served_by": "europe-west1",
        "statements": 3,
        "sql_ms": 2.5,
        "app_ms": 7.25,
        "cpu_ms": 0.0,
        "wan_round_trips": 1,
        "data_regions": ["europe-west1", "us-east1"],
    }
    recorder.record("GET", "/x", "rome", None, 503, 1.0, 0.0, None)  # the balancer's own answer
    assert figures_of(recorder.last(1)[0])["statements"] == 0
    recorder.record("GET", "/x", "rome", "us-east1", 200, 1.0, 0.0, {names.STATEMENTS: "many"})
    assert figures_of(recorder.last(1)[0])["statements"] == 0


def test_a_view_says_where_it_went_and_whether_that_is_where_the_city_usually_goes():
    recorder = RequestRecorder()
    usual = view(entry(recorder), "europe-west1", "europe-west1", 3.0)
    assert usual["region"] == "europe-west1" and not usual["rerouted"] and usual["floor_ms"] == 3.0
    moved = view(entry(recorder, region="us-east1", method="POST"), "europe-west1", "europe-west1", None)
    assert moved["rerouted"] and moved["write"] and moved["floor_ms"] is None
    nowhere = view(entry(recorder, region=None, status=503), "europe-west1", "europe-west1", None)
    assert not nowhere["rerouted"] and nowhere["region"] is None
    assert Forwarded(1, 0, "GET", "/", "rome", None, 502, 0, 0, ()).failed


def test_requests_per_second_per_region_over_the_window():
    recorder = RequestRecorder()
    for region in ["europe-west1"] * 5 + ["us-east1"] * 2 + [None]:
        entry(recorder, region=region)
    rates = requests_per_s(recorder.last(50), ["us-east1", "us-west1", "europe-west1"], window_s=2.0)
    assert rates == {"us-east1": 1.0, "us-west1": 0.0, "europe-west1": 2.5}


def test_link_rates_from_cumulative_counters_leave_out_idle_links_and_survive_a_reset():
    rates = LinkRates(window_s=5.0)
    assert rates.rates() == {}
    rates.add(0.0, {"a": 10, "b": 4, "c": 100})
    rates.add(2.0, {"a": 30, "b": 4, "c": 6})  # c's counters were reset: it counts from zero
    assert rates.rates() == {"a": 10.0, "c": 3.0}
    assert rates.rates(["a"]) == {"a": 10.0}
    for t in (4.0, 6.0, 8.0, 10.0):
        rates.add(t, {"a": 30 + int(t) * 10, "b": 4, "c": 6})
    assert rates.rates()["a"] == 10.0 and len(rates._samples) <= 4  # old samples leave the window


async def _balancer_records() -> list[Forwarded]:
    async def app(request: web.Request) -> web.Response:
        if request.path == "/healthz":
            return web.Response(text="ok")
        return web.json_response({"ok": True}, headers=APP_HEADERS)

    async with serving(app) as (url, _):
        config = {"preset": "gcp-3", "scale": 0.01, "topology": "multi", "apps": {"europe-west1": url}}
        server = BalancerServer(build_app(config, TOKEN))
        await server.start_server()
        balancer = server.app[BALANCER_KEY]
        balancer.recorder = RequestRecorder()
        try:
            async with aiohttp.ClientSession() as client:
                async with client.post(server.make_url("/api/v1/rides"), headers={"X-Client-City": "rome"}) as reply:
                    assert reply.status == 200
                balancer.apps["europe-west1"].forced_down = True
                async with client.get(server.make_url("/api/v1/rides"), headers={"X-Client-City": "rome"}) as reply:
                    assert reply.status == 503
                async with client.get(server.make_url("/_balancer/status"), headers={control.TOKEN_HEADER: TOKEN}):
                    pass
        finally:
            await server.close()
        return balancer.recorder.last(50)


def test_the_balancer_records_each_forwarded_request_and_nothing_else():
    served, refused = asyncio.run(_balancer_records())  # the control call is not traffic
    assert (served.method, served.path, served.city, served.region, served.status) == (
        "POST",
        "/api/v1/rides",
        "rome",
        "europe-west1",
        200,
    )
    assert figures_of(served)["statements"] == 3 and served.write
    assert served.latency_ms >= served.client_rtt_ms > 0
    assert (refused.region, refused.status, refused.client_rtt_ms) == (None, 503, 0.0)
