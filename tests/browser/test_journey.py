"""The tutorial's journey in a real browser against a real server: sign up, log in, add a vehicle, start a
ride, end it, see it in my rides, log out — asserting what each page shows, with a screenshot of each."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "journey-password-1"


class Journey:
    def __init__(self, page: Page, base: str, artifacts: Path) -> None:
        self.page, self.base, self.artifacts = page, base, artifacts
        self.shots: list[Path] = []

    def shot(self, name: str) -> None:
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)

    def expect_chrome(self, statements: int | None = None) -> None:
        """Every page: navigation, the region badge, and the latency footer."""
        page = self.page
        expect(page.locator("nav.navbar")).to_be_visible()
        expect(page.get_by_test_id("served-by")).to_contain_text("us-east1")
        footer = page.get_by_test_id("latency-footer")
        expect(footer).to_contain_text("served by")
        expect(footer).to_contain_text("WAN round trip")
        if statements is not None:
            expect(page.get_by_test_id("statements")).to_have_text(str(statements))


def test_sign_up_to_log_out_in_chromium(browser, live_server, artifacts):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    journey = Journey(page, live_server, artifacts)
    username = f"ada{secrets.token_hex(3)}"
    try:
        # Home, then say where we browse from: the selector sets the balancer's cookie.
        response = page.goto(live_server + "/")
        assert response is not None and response.headers["x-movr-region"] == "us-east1"
        assert re.match(r'app;dur=[\d.]+, sql;dur=[\d.]+;desc="0 statements"', response.headers["server-timing"])
        journey.expect_chrome(statements=0)
        with page.expect_navigation():
            page.select_option("#browsing-city", "new york")
        expect(page.locator(".alert")).to_contain_text("You are now browsing from New York")
        expect(page.get_by_test_id("latency-footer")).to_contain_text("New York")
        journey.shot("home")

        # Sign up (home city New York, offered first because we browse from there).
        page.get_by_role("link", name="Sign up").first.click()
        expect(page.locator("#city")).to_have_value("new york")
        page.fill("#username", username)
        page.fill("#password", PASSWORD)
        page.fill("#first_name", "Ada")
        page.fill("#last_name", "Lovelace")
        page.fill("#email", "ada@example.com")
        journey.shot("sign-up")
        page.click("#submit")
        expect(page).to_have_url(re.compile(r"/login\?username="))
        expect(page.locator(".alert-success")).to_contain_text(f"Welcome to MovR, {username}!")

        # Log in (the username is filled in for us).
        expect(page.locator("#username")).to_have_value(username)
        page.fill("#password", PASSWORD)
        journey.shot("log-in")
        page.click("#submit")
        expect(page).to_have_url(re.compile(r"/cities/new%20york/vehicles$"))
        expect(page.locator(".alert-success")).to_contain_text(f"Welcome back, {username}")
        expect(page.get_by_test_id("user-menu")).to_contain_text(username)
        expect(page.locator(".empty-state")).to_contain_text("No vehicles available in New York")
        journey.expect_chrome(statements=1)

        # Add a vehicle (in the home city only: the page says where).
        page.get_by_role("link", name="Add vehicle").first.click()
        expect(page.locator("main")).to_contain_text("New York")
        page.select_option("#type", "scooter")
        page.fill("#brand", "Vespa")
        page.fill("#color", "mint green")
        page.fill("#location", "5th Avenue & 42nd St")
        journey.shot("add-vehicle")
        page.click("#submit")
        expect(page.locator(".alert-success")).to_contain_text("Your scooter is listed in New York")
        card = page.get_by_test_id("vehicle")
        expect(card).to_have_count(1)
        expect(card).to_contain_text("Vespa")
        expect(card).to_contain_text("5th Avenue & 42nd St")
        expect(card).to_contain_text(f"owned by {username}")
        journey.expect_chrome(statements=1)
        journey.shot("vehicles")

        # Start a ride.
        page.get_by_test_id("start-ride").click()
        expect(page).to_have_url(re.compile(r"/rides$"))
        expect(page.locator(".alert-success")).to_contain_text("Your ride has started at 5th Avenue & 42nd St")
        ride = page.get_by_test_id("open-ride")
        expect(ride).to_contain_text("Riding now")
        expect(ride).to_contain_text("Vespa")
        expect(page.get_by_test_id("ride-length")).to_have_text(re.compile(r"^\d+m \d\ds$"))
        journey.shot("ride-started")

        # End it somewhere else.
        page.fill("#location", "Central Park")
        page.get_by_role("button", name="End ride").click()
        expect(page.locator(".alert-success")).to_contain_text("Ride ended after")
        expect(page.get_by_test_id("open-ride")).to_have_count(0)
        journey.expect_chrome(statements=1)
        journey.shot("ride-ended")

        # My rides: the ride, where it went, and how long it took.
        page.get_by_role("link", name="My rides").first.click()
        row = page.get_by_test_id("past-ride")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("5th Avenue & 42nd St")
        expect(row).to_contain_text("Central Park")
        expect(page.get_by_test_id("past-ride-length")).to_have_text(re.compile(r"^\d+m \d\ds$"))
        journey.expect_chrome(statements=1)
        journey.shot("my-rides")

        # Log out from the user menu.
        page.get_by_test_id("user-menu").click()
        page.get_by_test_id("logout").click()
        expect(page.locator(".alert")).to_contain_text("You are logged out")
        expect(page.get_by_role("link", name="Log in")).to_be_visible()
        expect(page.get_by_test_id("user-menu")).to_have_count(0)
        journey.expect_chrome(statements=0)
        journey.shot("logged-out")

        # Logged out means logged out: my rides asks us to log in again.
        page.goto(live_server + "/rides")
        expect(page).to_have_url(re.compile(r"/login\?next="))
    finally:
        context.close()

    assert not errors, f"JavaScript errors: {errors}"
    assert [p.name for p in journey.shots] == [
        "01-home.png",
        "02-sign-up.png",
        "03-log-in.png",
        "04-add-vehicle.png",
        "05-vehicles.png",
        "06-ride-started.png",
        "07-ride-ended.png",
        "08-my-rides.png",
        "09-logged-out.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in journey.shots)
