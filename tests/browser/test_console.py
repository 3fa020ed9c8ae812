"""The lab console in Debian's chromium, on one real lab (aws-eu-us, multi, region survival with the europe
super region): it loads and names every region; a bad fault shows the lab's refusal and changes nothing;
killing a region from the console marks it down within 2 s, a journey from one of its cities is then served
as the region's survival goal says, and healing brings it back. A screenshot of each state is saved as
run/artifacts/browser/console-*.png."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from movr.bench.journey import ratios, run_journey, summarize
from movr.geo import load_preset
from movr.lab.console.page import console_url
from movr.lab.control import TOKEN_HEADER
from movr.lab.state import LabState
from movr.lab.status import collect_status
from movr.lab.supervisor import lab_down, processes_left
from movr.store.sample import generate

pytestmark = [pytest.mark.browser, pytest.mark.lab]

PRESET = "aws-eu-us"
AWS = load_preset(PRESET)
SCALE = 0.05  # small delays, as the lab tests use: the assertions count, they do not time distance
KILLED = "us-east-2"  # region survival: its data fails over to its standby in Europe
KILLED_CITY = "new york"
SAVED_CITIES = ["rome", "new york"]
RESULT_ENV = "MOVR_LAB_JOURNEY_RESULT"  # where the console's saved-comparison chart reads from
MOVR = str(Path(sys.executable).with_name("movr"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    """The one lab of this module, stood up as a user does (`movr lab up --no-serve`) and always taken down.

    Its saved journey comparison is real: journeys run on this lab before the page opens, summarized and
    written as `movr bench journey` writes them, where the console is told to look ($MOVR_LAB_JOURNEY_RESULT).
    """
    run_dir = tmp_path_factory.mktemp("console-lab")
    saved = run_dir / "journey.json"
    command = [MOVR, "lab", "up", "--no-serve", "--preset", PRESET, "--topology", "multi", "--survival", "region"]
    command += ["--scale", str(SCALE), "--run-dir", str(run_dir)]
    try:
        up = subprocess.run(
            command, env={**os.environ, RESULT_ENV: str(saved)}, capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, f"movr lab up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}"
        state = LabState.read(run_dir)
        n = len(AWS.cities)
        state.load_sample(generate(AWS, users=n, vehicles=n, rides=n, seed=11))
        runs = [run_journey(state, AWS, city, SCALE) for city in SAVED_CITIES]
        for run in runs:
            run.topology = "multi+region"
        rows = summarize(runs)
        result = {
            "benchmark": "journey",
            "preset": AWS.name,
            "scale": SCALE,
            "repeats": 1,
            "cities": SAVED_CITIES,
            "topologies": ["multi+region"],
            "rows": rows,
            "ratios": {city: ratios(rows, city) for city in SAVED_CITIES},
        }
        saved.write_text(json.dumps(result))
        yield state
    finally:
        lab_down(run_dir)
        assert processes_left(run_dir) == [], "lab down left processes running"


@pytest.fixture
def page(browser, lab: LabState) -> Iterator[Page]:
    """A fresh page on the console; no script error and no console error (a CSP refusal is one, a missing file
    another) is allowed, except the lab's 409 refusal of a fault, which the page shows as a message."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    refusal = "the server responded with a status of 409"

    def on_console(message) -> None:
        if message.type == "error" and refusal not in message.text:
            problems.append(message.text)

    page.on("console", on_console)
    try:
        yield page
    finally:
        context.close()
    assert problems == [], problems


def api(lab: LabState, path: str, body: dict | None = None) -> requests.Response:
    headers = {TOKEN_HEADER: lab.control_token}
    url = f"{lab.balancer_url}{path}"
    if body is None:
        return requests.get(url, headers=headers, timeout=30)
    return requests.post(url, headers=headers, json=body, timeout=60)


def open_console(page: Page, lab: LabState) -> None:
    response = page.goto(console_url(lab))  # as `movr lab up` prints it: the token opens the page once
    assert response is not None and response.status == 200
    expect(page.get_by_test_id("live-state")).to_have_attribute("data-state", "live", timeout=10_000)


def card(page: Page, region: str):
    return page.get_by_test_id(f"region-{region}")


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"console-{name}.png"), full_page=True)


def test_console_loads_and_shows_every_region(page: Page, lab: LabState, artifacts: Path) -> None:
    html = requests.get(f"{lab.balancer_url}/lab/", timeout=10).text
    for region in AWS.region_names:
        assert f'data-region="{region}"' in html, f"{region} is not named in the page's HTML"

    open_console(page, lab)
    for region in AWS.region_names:
        expect(card(page, region).get_by_test_id("region-state")).to_have_text("UP")
        expect(page.locator(f'#map .region-node[data-region="{region}"]')).to_have_count(1)
    expect(page.get_by_test_id("lab-summary")).to_contain_text("survival goal region")
    # One dot per client city of the preset, and a line per pair of regions.
    expect(page.locator("#map circle.city")).to_have_count(len(AWS.cities))
    n = len(AWS.region_names)
    expect(page.locator("#map path.wan-line")).to_have_count(n * (n - 1) // 2)
    # The setup's journeys went through the balancer: the timeline shows them, each with its floor mark.
    expect(page.locator("#timeline-body tr[data-request]").first).to_be_visible()
    expect(page.locator("#timeline-body tr[data-request] .floor").first).to_be_visible()
    # The saved comparison: a bar and a floor mark per step and topology of each city's chart.
    expect(page.locator("#saved-chart svg rect")).to_have_count(8)
    expect(page.locator("#saved-chart svg line.floor-mark")).to_have_count(8)
    # Placement: every region's primary, and the europe super region's domicile audit passes.
    expect(page.get_by_test_id("placement-table").locator("tbody tr")).to_have_count(n)
    expect(page.get_by_test_id("domicile-verdict")).to_contain_text("Domicile audit passed")
    # Hovering a city draws its round trip to every region, the one serving it solid.
    page.locator('#map circle.city-hit[data-city="rome"]').hover()
    expect(page.locator("#map line.client-line")).to_have_count(n)
    expect(page.locator("#map line.client-line.serving")).to_have_count(1)
    nearest = AWS.nearest_regions("rome")[0]
    expect(page.get_by_test_id("city-card")).to_contain_text(re.compile(rf"{nearest}: [\d.]+ ms · serves it"))
    shot(page, artifacts, "1-loaded")


def test_a_heal_of_a_healthy_region_shows_the_refusal_and_changes_nothing(
    page: Page, lab: LabState, artifacts: Path
) -> None:
    refused = api(lab, "/lab/api/faults/predict", {"action": "heal", "target": KILLED})
    assert 400 <= refused.status_code < 500
    message = refused.json()["error"]["message"]

    open_console(page, lab)
    card(page, KILLED).get_by_test_id("heal-region").click()
    alert = page.get_by_test_id("fault-message")
    expect(alert).to_have_text(message)
    expect(alert).to_have_class(re.compile(r"alert-danger"))
    expect(page.get_by_test_id("fault-confirm")).to_be_hidden()
    shot(page, artifacts, "2-refused")
    for region in AWS.region_names:
        expect(card(page, region).get_by_test_id("region-state")).to_have_text("UP")
    assert LabState.read(lab.run_dir).survival.lost_regions == []


def test_kill_a_region_journey_from_its_city_then_heal(page: Page, lab: LabState, artifacts: Path) -> None:
    topology = api(lab, "/lab/api/topology").json()
    goal = next(r["survival_goal"] for r in topology["regions"] if r["name"] == KILLED)
    predicted = api(lab, "/lab/api/faults/predict", {"action": "kill", "target": KILLED}).json()["prediction"]

    open_console(page, lab)
    # The kill button first shows the survival goal's prediction; nothing changes until it is applied.
    card(page, KILLED).get_by_test_id("kill-region").click()
    expect(page.get_by_test_id("fault-prediction")).to_have_text(predicted)
    expect(card(page, KILLED).get_by_test_id("region-state")).to_have_text("UP")
    shot(page, artifacts, "3-prediction")

    page.get_by_test_id("fault-apply").click()
    expect(page.get_by_test_id("fault-message")).to_have_class(re.compile(r"alert-success"), timeout=30_000)
    # Marked down within 2 s of the lab's answer.
    expect(card(page, KILLED).get_by_test_id("region-state")).to_have_text("DOWN", timeout=2_000)
    expect(page.locator(f'#map .region-node[data-region="{KILLED}"] .region-down-ring')).to_have_attribute(
        "visibility", "visible"
    )
    observation = page.get_by_test_id("observation").first
    expect(observation).to_contain_text(f"Kill {KILLED}")
    if goal == "region":
        # The controller promotes a standby elsewhere; the console reports the failover it measured.
        expect(observation.get_by_test_id("failover")).to_contain_text(re.compile(r"failover [\d.]+ s"), timeout=60_000)
    shot(page, artifacts, "4-region-down")

    # A journey from one of its cities: failover to another region under region survival, else unavailable.
    page.get_by_test_id("journey-city").select_option(KILLED_CITY)
    page.get_by_test_id("journey-run").click()
    summary = page.get_by_test_id("journey-summary")
    expect(summary).to_be_visible(timeout=60_000)
    if goal == "region":
        expect(page.get_by_test_id("journey-error")).to_have_count(0)
        steps = page.get_by_test_id("journey-steps").locator("tbody tr")
        expect(steps).to_have_count(8)
        served = {text.strip() for text in steps.locator("td:nth-child(3)").all_inner_texts()}
        assert served and KILLED not in served, served
        # Its requests were rerouted, and the timeline says so.
        expect(page.locator("#timeline-body .rerouted").first).to_be_visible()
    else:
        expect(page.get_by_test_id("journey-error")).to_be_visible()
    shot(page, artifacts, "5-journey-after-kill")

    # Heal: the prediction, then the region back up in the console and in the lab's own status.
    card(page, KILLED).get_by_test_id("heal-region").click()
    expect(page.get_by_test_id("fault-confirm")).to_be_visible()
    page.get_by_test_id("fault-apply").click()
    expect(page.get_by_test_id("fault-message")).to_have_class(re.compile(r"alert-success"), timeout=90_000)
    expect(card(page, KILLED).get_by_test_id("region-state")).to_have_text("UP", timeout=15_000)
    status = collect_status(LabState.read(lab.run_dir))
    assert status["survival"]["lost_regions"] == []
    members = [m for g in status["survival"]["groups"] for m in g["members"] if m["region"] == KILLED]
    assert members and all(m["running"] for m in members), members
    shot(page, artifacts, "6-healed")
