"""The lab console's API on one running lab (multi on gcp-3): the page, the stream, the token, faults with their
refusals and `movr lab status` agreeing, a journey, the request timeline, placement and the saved comparison.

One lab for the whole module (they are slow to stand up); the tests that break it heal it before they end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from labkit import MOVR

from movr.lab.console.journeys import RESULT_ENV
from movr.lab.control import TOKEN_HEADER

pytestmark = pytest.mark.lab

REGIONS = ("us-east1", "us-west1", "europe-west1")
API_GETS = ("topology", "requests", "journeys/saved", "placement")
API_POSTS = ("faults/predict", "faults", "journeys")


@pytest.fixture(scope="module")
def saved_result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the lab's balancer looks for the saved journey comparison (set before the lab starts it)."""
    path = tmp_path_factory.mktemp("saved") / "journey.json"
    before = os.environ.get(RESULT_ENV)
    os.environ[RESULT_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(RESULT_ENV, None)
    else:
        os.environ[RESULT_ENV] = before


@pytest.fixture(scope="module")
def lab(lab_factory, saved_result):
    return lab_factory("multi")


class Console:
    def __init__(self, state) -> None:
        self.base = f"{state.balancer_url}/lab"
        self.token = state.control_token
        self.run_dir = state.run_dir
        self.app = state.balancer_url

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.base}/api/{path}", headers={TOKEN_HEADER: self.token}, timeout=60, **kwargs)

    def post(self, path: str, body: object) -> requests.Response:
        return requests.post(f"{self.base}/api/{path}", json=body, headers={TOKEN_HEADER: self.token}, timeout=120)

    def events(self, seconds: float, enough: int | None = None) -> list[dict]:
        """The `update` events the stream delivers in `seconds` (or until `enough` of them came)."""
        found: list[dict] = []
        with requests.get(f"{self.base}/api/stream", params={"token": self.token}, stream=True, timeout=10) as reply:
            assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/event-stream")
            deadline = time.monotonic() + seconds
            event = None
            for line in reply.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "update":
                    found.append(json.loads(line.removeprefix("data: ")))
                    if enough is not None and len(found) >= enough:
                        break
                if time.monotonic() >= deadline:
                    break
        return found

    def next_update(self) -> dict:
        """The first update the stream sends: made after this call began."""
        return self.events(10, enough=1)[0]

    def status(self) -> dict:
        command = [MOVR, "lab", "status", "--json", "--run-dir", str(self.run_dir)]
        return json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout)


@pytest.fixture(scope="module")
def console(lab) -> Console:
    return Console(lab)


def region_seen_down(status: dict, region: str) -> bool:
    """What `movr lab status --json` says: the region's server stopped and the balancer took it out."""
    server = next(s for s in status["servers"] if s["region"] == region)
    table = status["balancer"]["regions"][region]
    return not server["running"] and table["forced_down"]


def test_the_page_names_every_region_and_opens_only_with_the_token(console):
    locked = requests.get(f"{console.base}/", timeout=30)
    assert locked.status_code == 200 and locked.headers["Content-Type"].startswith("text/html")
    for region in REGIONS:
        assert region in locked.text
    assert console.token not in locked.text and 'data-testid="console-locked"' in locked.text
    assert requests.get(f"{console.base}/?token=not-this-labs", timeout=30).status_code == 403

    browser = requests.Session()
    opened = browser.get(f"{console.base}/?token={console.token}", timeout=30, allow_redirects=False)
    assert opened.status_code == 303 and opened.headers["Location"] == "/lab/"
    assert "HttpOnly" in opened.headers["Set-Cookie"] and "SameSite=Strict" in opened.headers["Set-Cookie"]
    reply = browser.get(f"{console.base}/", timeout=30)
    assert f'<meta name="movr-lab-token" content="{console.token}">' in reply.text
    assert 'data-testid="console-locked"' not in reply.text
    bare = requests.get(console.base, timeout=30, allow_redirects=False)  # `/lab`, no slash
    assert bare.status_code == 302 and bare.headers["Location"] == "/lab/"
    assert requests.get(f"{console.base}/no-such-page", timeout=30).json()["error"]["code"] == "not_found"
    assert "script-src 'self'" in reply.headers["Content-Security-Policy"]
    # The app's own Bootstrap and stylesheet, served by the console as they are.
    for asset in ("vendor/bootstrap/css/bootstrap.min.css", "vendor/movr/movr.css"):
        assert requests.get(f"{console.base}/{asset}", timeout=30).status_code == 200, asset


def test_the_topology_describes_the_preset(console):
    topology = console.get("topology").json()
    assert [r["name"] for r in topology["regions"]] == list(REGIONS)
    assert {c["region"] for c in topology["cities"]} == set(REGIONS)
    assert topology["rtt_ms"]["us-east1"]["europe-west1"] == topology["rtt_ms"]["europe-west1"]["us-east1"] > 0
    assert {s["name"] for s in topology["servers"]} == {f"{r}-a" for r in REGIONS}
    assert {a["region"] for a in topology["app_servers"]} == set(REGIONS)
    assert all(link["rtt_ms"] >= 0 and link["from"] in REGIONS for link in topology["links"])


def test_the_stream_delivers_an_update_at_least_once_a_second(console):
    events = console.events(3.2)
    assert len(events) >= 3, f"{len(events)} update(s) in 3.2 s"
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs))
    health = events[-1]["health"]
    assert set(health["regions"]) == set(REGIONS) and all(r["up"] for r in health["regions"].values())
    assert set(events[-1]["traffic"]["requests_per_s"]) == set(REGIONS)


def test_the_api_wants_the_token_and_json(console):
    for path in API_GETS:
        assert requests.get(f"{console.base}/api/{path}", timeout=30).status_code == 401, path
        wrong = requests.get(f"{console.base}/api/{path}", headers={TOKEN_HEADER: "x" * 40}, timeout=30)
        assert wrong.status_code == 403, path
    for path in API_POSTS:
        bare = requests.post(f"{console.base}/api/{path}", json={"action": "kill", "target": "us-east1"}, timeout=30)
        assert bare.status_code == 401, path
        text = requests.post(
            f"{console.base}/api/{path}",
            data=json.dumps({"action": "kill", "target": "us-east1"}),
            headers={TOKEN_HEADER: console.token, "Content-Type": "text/plain"},
            timeout=30,
        )
        assert text.status_code == 415 and text.json()["error"]["code"] == "unsupported_media_type", path
    stream = requests.get(f"{console.base}/api/stream", timeout=30)
    assert stream.status_code == 401 and stream.json()["error"]["code"] == "unauthorized"
    too_large = console.post("faults/predict", {"action": "kill", "target": "us-east1", "pad": "x" * 20_000})
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "too_large"
    assert console.next_update()["health"]["regions"]["us-east1"]["up"], "a refused kill changed the lab"


def test_forwarded_requests_appear_with_their_figures_and_floor(console):
    reply = requests.get(f"{console.app}/api/v1/cities/rome/vehicles", headers={"X-Client-City": "rome"}, timeout=30)
    assert reply.status_code == 200
    recorded = console.get("requests").json()["requests"]
    assert len(recorded) <= 50
    mine = [r for r in recorded if r["path"] == "/api/v1/cities/rome/vehicles" and r["city"] == "rome"][-1]
    assert mine["region"] == reply.headers["X-Movr-Region"] == "europe-west1"
    assert mine["statements"] == int(reply.headers["X-Movr-Statements"]) >= 1
    assert mine["data_regions"] == reply.headers["X-Movr-Data-Regions"].split(",")
    assert mine["wan_round_trips"] == int(reply.headers["X-Movr-Wan-Round-Trips"]) == 0
    assert mine["status"] == 200 and not mine["rerouted"] and not mine["write"]
    assert 0 < mine["floor_ms"] <= mine["latency_ms"]
    assert not any(r["path"].startswith("/lab") for r in recorded), "the console's own calls are not traffic"


def test_a_journey_from_a_city_returns_its_step_table(console):
    reply = console.post("journeys", {"city": "New York"})
    assert reply.status_code == 200, reply.text
    journey = reply.json()
    assert journey["completed"] and journey["error"] is None and journey["city"] == "new york"
    steps = journey["steps"]
    assert [s["step"] for s in steps][:2] == ["sign up", "log in"] and len(steps) == 8
    for step in steps:
        assert step["served_by"] == "us-east1" and step["status"] < 400
        assert step["floor_ms"] > 0 and step["statements"] >= 0 and step["wan_round_trips"] >= 0
    assert journey["totals"]["statements"] == sum(s["statements"] for s in steps)
    unknown = console.post("journeys", {"city": "atlantis"})
    assert unknown.status_code == 404 and "atlantis" in unknown.json()["error"]["message"]


def test_bad_faults_are_refused_and_change_nothing(console):
    before = console.status()
    refusals = [
        ({"action": "kill", "target": "mars"}, 404),
        ({"action": "explode", "target": "us-east1"}, 400),
        ({"action": "partition", "target": ["us-east1", "us-east1"]}, 400),
        ({"action": "delay", "target": ["us-east1", "europe-west1"], "delay_ms": -5}, 400),
        ({"action": "heal", "target": "us-west1"}, 409),
        ({"action": "heal", "target": ["us-east1", "europe-west1"]}, 409),
        ("kill us-east1", 400),
    ]
    for body, status in refusals:
        for path in ("faults/predict", "faults"):
            reply = console.post(path, body)
            assert reply.status_code == status, (path, body, reply.text)
            assert set(reply.json()["error"]) == {"code", "message"}
    after = console.status()
    assert rotation(after) == rotation(before) and running(after) == running(before)
    assert after.get("survival", {}).get("lost_regions", []) == before.get("survival", {}).get("lost_regions", [])


def rotation(status: dict) -> dict:
    return {region: (t["healthy"], t["forced_down"]) for region, t in status["balancer"]["regions"].items()}


def running(status: dict) -> dict:
    return {s["name"]: s["running"] for s in status["servers"]}


def test_a_region_killed_from_the_api_is_down_and_a_heal_brings_it_back(console):
    predicted = console.post("faults/predict", {"action": "kill", "target": "europe-west1"})
    assert predicted.status_code == 200 and "Rome" in predicted.json()["prediction"]
    assert not region_seen_down(console.status(), "europe-west1"), "predicting changed the lab"

    killed = console.post("faults", {"action": "kill", "target": "europe-west1"})
    assert killed.status_code == 200, killed.text
    assert killed.json()["prediction"] == predicted.json()["prediction"]
    assert "europe-west1-a" in killed.json()["applied"]["done"]
    assert region_seen_down(console.status(), "europe-west1")
    again = console.post("faults", {"action": "kill", "target": "europe-west1"})
    assert again.status_code == 409 and "already down" in again.json()["error"]["message"]

    # As predicted: Rome's data has no copy elsewhere, so its requests fail, served by another region.
    failed = requests.get(f"{console.app}/api/v1/cities/rome/vehicles", headers={"X-Client-City": "rome"}, timeout=60)
    assert failed.status_code >= 500
    update = console.next_update()
    assert not update["health"]["regions"]["europe-west1"]["up"]
    assert not update["health"]["servers"]["europe-west1-a"]["up"]
    observed = next(o for o in update["observations"] if o["id"] == killed.json()["applied"]["id"])
    assert observed["errors"] >= 1 and observed["rerouted"] >= 1 and observed["failover_s"] is None

    healed = console.post("faults", {"action": "heal", "target": "europe-west1"})
    assert healed.status_code == 200, healed.text
    status = console.status()
    server = next(s for s in status["servers"] if s["region"] == "europe-west1")
    assert server["running"] and not status["balancer"]["regions"]["europe-west1"]["forced_down"]
    assert console.next_update()["health"]["regions"]["europe-west1"]["up"]
    twice = console.post("faults", {"action": "heal", "target": "europe-west1"})
    assert twice.status_code == 409 and "healthy" in twice.json()["error"]["message"]


def test_a_delay_between_two_regions_shows_on_its_links_until_healed(console):
    pair = ["us-east1", "europe-west1"]
    delayed = console.post("faults", {"action": "delay", "target": pair, "delay_ms": 40})
    assert delayed.status_code == 200, delayed.text
    across = {
        link["name"]
        for link in console.get("topology").json()["links"]
        if {link["from"], link["to_region"]} == set(pair)
    }
    links = console.next_update()["health"]["links"]
    assert across and all(links[name]["added_ms"] == pytest.approx(40) for name in across), links
    assert all(link["added_ms"] == 0 for name, link in links.items() if name not in across)
    healed = console.post("faults", {"action": "heal", "target": pair})
    assert healed.status_code == 200, healed.text
    assert all(link["added_ms"] == 0 for link in console.next_update()["health"]["links"].values())


def test_placement_counts_rows_on_every_region_server(console):
    placement = console.get("placement").json()
    assert placement["tables"][:3] == ["users", "vehicles", "rides"]
    assert [s["region"] for s in placement["servers"]] == list(REGIONS)
    assert all(s["running"] and s["rows"]["users"] > 0 for s in placement["servers"])
    assert placement["domicile"] is None  # no super regions without a survival goal
    # `movr lab placement` reads the same rows.
    command = [MOVR, "lab", "placement", "--run-dir", str(console.run_dir)]
    env = {**os.environ, "COLUMNS": "200"}
    table = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60, env=env).stdout
    for server in placement["servers"]:
        line = next(line for line in table.splitlines() if f"{server['server']} ({server['group']})" in line)
        assert [int(n) for n in line.split("│")[2:-1]] == [server["rows"][t] for t in placement["tables"]], line


def test_the_saved_comparison_is_read_where_it_says(console, saved_result):
    missing = console.get("journeys/saved")
    assert missing.status_code == 404 and str(saved_result) in missing.json()["error"]["message"]
    row = {"topology": "single", "city": "rome", "step": "log in", "served_by": "us-east1", "client_ms": 300.0}
    saved_result.write_text(json.dumps({"preset": "gcp-3", "scale": 1.0, "cities": ["rome"], "rows": [row]}))
    found = console.get("journeys/saved").json()
    assert found["path"] == str(saved_result) and found["rows"][0]["client_ms"] == 300.0
