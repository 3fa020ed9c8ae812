"""Every page through Flask's test client: what it shows, what it costs, and every way it can refuse."""

from __future__ import annotations

import re
import uuid

import pytest

from movr.domain.errors import StoreUnavailable
from movr.geo import load_preset
from movr.store.backend import Backend
from movr.web import create_app

pytestmark = pytest.mark.integration

VEHICLE_ID = re.compile(r'name="vehicle_id" value="([0-9a-f-]{36})"')
END_RIDE = re.compile(r'action="/rides/([^/"]+)/([0-9a-f-]{36})/end"')


def html(response) -> str:
    return response.get_data(as_text=True)


def statements(response) -> int:
    return int(response.headers["X-Movr-Statements"])


def add_vehicle(v, **fields) -> None:
    form = {"type": "scooter", "brand": "Vespa", "color": "red", "location": "Via del Corso", **fields}
    assert v.post("/vehicles/new", form).status_code == 303


def vehicle_ids(v, city: str = "rome") -> list[str]:
    return VEHICLE_ID.findall(html(v.get(f"/cities/{city}/vehicles")))


def open_ride(v) -> tuple[str, str]:
    match = END_RIDE.search(html(v.get("/rides")))
    assert match, "an open ride has an End ride form"
    return match.group(1), match.group(2)


# --- what every page shows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/signup", "/login", "/cities/rome/vehicles", "/cities/new%20york/vehicles", "/cities/paris/users"],
)
def test_public_pages_have_navigation_region_badge_and_cost_footer(visitor, path):
    response = visitor().get(path)
    assert response.status_code == 200
    page = html(response)
    assert 'class="navbar' in page and "Browsing from" in page
    assert 'data-testid="served-by"' in page and "us-east1" in page
    assert 'data-testid="latency-footer"' in page and "WAN round trip" in page and "SQL statement" in page
    assert f'data-testid="statements">{statements(response)}<' in page  # the footer and the header agree
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_pages_use_only_local_assets(visitor):
    v = visitor()
    page = html(v.get("/"))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no CDN, no external URL"
    for asset in re.findall(r"""(?:src|href)="(/[^"]+\.(?:css|js|svg))""", page):
        assert v.get(asset).status_code == 200, asset


def test_city_pages_cover_every_city_with_a_switcher(visitor):
    v = visitor()
    for city in load_preset("gcp-3").cities:
        page = html(v.get(f"/cities/{city}/vehicles"))
        assert "No vehicles available" in page  # the empty state
        assert page.count('class="nav-link') >= 9  # the city switcher links every city


def test_shortcuts_go_to_the_visitors_city(visitor):
    v = visitor({"X-Client-City": "Paris"})
    assert v.get("/vehicles").headers["Location"] == "/cities/paris/vehicles"
    assert v.get("/users").headers["Location"] == "/cities/paris/users"


def test_unknown_city_and_unknown_page_are_404_pages_that_leak_nothing(visitor):
    v = visitor()
    for path in ("/cities/atlantis/vehicles", "/cities/atlantis/users", "/no/such/page"):
        response = v.get(path)
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        assert 'data-testid="status">404<' in html(response) and "Traceback" not in html(response)


# --- the journey -------------------------------------------------------------------------------------


def test_journey_through_the_pages_with_one_action_per_page(visitor, counts):
    v = visitor()
    signup = v.sign_up("ada", "rome", first_name="Ada", last_name="Lovelace", email="ada@example.com")
    assert signup.status_code == 303 and statements(signup) == 1
    assert signup.headers["Location"].startswith("/login?username=ada")
    login = v.log_in("ada")
    assert login.status_code == 303 and statements(login) == 1
    assert login.headers["Location"] == "/cities/rome/vehicles"

    assert statements(v.get("/vehicles/new")) == 0  # the session alone says who you are
    add_vehicle(v)
    page = v.get("/cities/rome/vehicles")
    assert statements(page) == 1 and "Vespa" in html(page) and "Start ride" in html(page)
    [vehicle_id] = vehicle_ids(v)

    started = v.post("/rides", {"city": "rome", "vehicle_id": vehicle_id})
    assert started.status_code == 303 and statements(started) == 1
    rides = v.get("/rides")
    assert statements(rides) == 1 and "Riding now" in html(rides) and 'data-testid="ride-length"' in html(rides)
    assert "No vehicles available" in html(v.get("/cities/rome/vehicles"))

    city, ride_id = open_ride(v)
    applied = v.post(f"/rides/{city}/{ride_id}/promo-code", {"code": "welcome10"})
    assert applied.status_code == 303
    ended = v.post(f"/rides/{city}/{ride_id}/end", {"location": "Piazza Navona"})
    assert ended.status_code == 303 and statements(ended) == 1
    page = html(v.get(ended.headers["Location"]))
    assert "Ride ended after" in page and "Piazza Navona" in page and "WELCOME10" in page
    assert 'data-testid="past-ride-length"' in page

    profile = v.get("/profile")
    assert statements(profile) == 2 and "Vespa" in html(profile) and "ada" in html(profile)
    users = v.get("/cities/rome/users")
    assert "Ada Lovelace" in html(users) and "ada@example.com" not in html(users)

    removed = v.post(f"/vehicles/rome/{vehicle_id}/remove")
    assert removed.status_code == 303 and "You have not listed a vehicle yet" in html(v.get("/profile"))
    assert counts()["vehicles"] == 0

    out = v.post("/logout")
    assert out.status_code == 303 and "Log in" in html(v.get("/"))
    assert v.get("/rides").status_code == 302


@pytest.mark.parametrize("path", ["/rides", "/profile", "/vehicles/new"])
def test_private_pages_send_visitors_to_log_in(visitor, path):
    response = visitor().get(path)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")


def test_empty_states(visitor):
    v = visitor().join("ada", "boston")
    assert "No rides yet" in html(v.get("/rides"))
    assert "You have not listed a vehicle yet" in html(v.get("/profile"))
    assert "Nobody calls Paris home yet" in html(v.get("/cities/paris/users"))
    assert "No vehicles available in Boston" in html(v.get("/cities/boston/vehicles"))


def test_other_cities_are_read_only_with_a_hint(visitor):
    paris = visitor().join("pierre", "paris")
    add_vehicle(paris)
    rome = visitor().join("ada", "rome")
    page = html(rome.get("/cities/paris/vehicles"))
    assert "Vespa" in page and 'data-testid="read-only-hint"' in page and "Start ride" not in page


def test_signup_offers_the_visitors_city_first(visitor):
    page = html(visitor({"X-Client-City": "seattle"}).get("/signup"))
    assert '<option selected value="seattle">' in page or 'value="seattle" selected' in page


def test_login_returns_to_a_local_next_page_only(visitor):
    v = visitor()
    v.sign_up("ada")
    good = v.post("/login", {"username": "ada", "password": "correct horse battery", "next": "/profile"})
    assert good.headers["Location"] == "/profile"
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = v.post("/login", {"username": "ada", "password": "correct horse battery", "next": evil})
        assert response.headers["Location"] == "/cities/rome/vehicles"


# --- every domain error, as a page -------------------------------------------------------------------


def test_signup_refusals(visitor, counts):
    v = visitor()
    v.sign_up("ada")
    before = counts()
    taken = v.sign_up("ada", "paris")
    assert taken.status_code == 409 and "username &#39;ada&#39; is taken" in html(taken)
    short = v.sign_up("bob", password="short")
    assert short.status_code == 422 and "at least 8" in html(short).lower()
    bad_name = v.sign_up("no spaces please")
    assert bad_name.status_code == 422
    bad_city = v.sign_up("carol", "atlantis")
    assert bad_city.status_code == 422 and "Not a valid choice" in html(bad_city)
    control = v.sign_up("dave", first_name="Da\x01ve")
    assert control.status_code == 422 and "printable" in html(control)
    assert counts() == before


def test_login_refusals(visitor):
    v = visitor()
    v.sign_up("ada")
    wrong = v.log_in("ada", "wrong password!")
    assert wrong.status_code == 401 and "Wrong username or password." in html(wrong)
    nobody = v.log_in("nobody")
    assert nobody.status_code == 401 and "Wrong username or password." in html(nobody)


def test_ride_refusals(visitor, counts):
    owner = visitor().join("ada", "rome")
    add_vehicle(owner)
    [vehicle_id] = vehicle_ids(owner)
    rider = visitor().join("bob", "rome")
    parisian = visitor().join("pierre", "paris")

    wrong_city = parisian.post("/rides", {"city": "rome", "vehicle_id": vehicle_id})
    assert wrong_city.status_code == 409 and "home city" in html(wrong_city)
    unknown = rider.post("/rides", {"city": "rome", "vehicle_id": str(uuid.uuid4())})
    assert unknown.status_code == 404 and "No such vehicle." in html(unknown)
    not_a_uuid = rider.post("/rides", {"city": "rome", "vehicle_id": "42"})
    assert not_a_uuid.status_code == 422 and "not a valid UUID" in html(not_a_uuid)

    assert rider.post("/rides", {"city": "rome", "vehicle_id": vehicle_id}).status_code == 303
    taken = owner.post("/rides", {"city": "rome", "vehicle_id": vehicle_id})
    assert taken.status_code == 409 and "not available" in html(taken)
    in_use = owner.post(f"/vehicles/rome/{vehicle_id}/remove")
    assert in_use.status_code == 409 and "in a ride" in html(in_use)
    add_vehicle(owner, brand="Brompton", type="bike")
    second = next(i for i in vehicle_ids(owner) if i != vehicle_id)
    one_at_a_time = rider.post("/rides", {"city": "rome", "vehicle_id": second})
    assert one_at_a_time.status_code == 409 and "open ride" in html(one_at_a_time)
    busy = rider.post("/profile/remove", {"confirm": "bob"})
    assert busy.status_code == 409 and "open rides" in html(busy)

    city, ride_id = open_ride(rider)
    bad_code = rider.post(f"/rides/{city}/{ride_id}/promo-code", {"code": "NOPE"})
    assert bad_code.status_code == 404 and "promo code" in html(bad_code)
    assert rider.post(f"/rides/{city}/{ride_id}/end", {}).status_code == 303
    again = rider.post(f"/rides/{city}/{ride_id}/end", {})
    assert again.status_code == 409 and "already ended" in html(again)
    late = rider.post(f"/rides/{city}/{ride_id}/promo-code", {"code": "WELCOME10"})
    assert late.status_code == 409
    missing = rider.post(f"/rides/rome/{uuid.uuid4()}/end", {})
    assert missing.status_code == 404 and "No such ride." in html(missing)
    nowhere = rider.post(f"/rides/atlantis/{ride_id}/end", {})
    assert nowhere.status_code == 404
    assert counts()["open_rides"] == 0


def test_vehicle_refusals(visitor, counts):
    owner = visitor().join("ada", "rome")
    add_vehicle(owner)
    [vehicle_id] = vehicle_ids(owner)
    other = visitor().join("bob", "rome")
    before = counts()
    not_yours = other.post(f"/vehicles/rome/{vehicle_id}/remove")
    assert not_yours.status_code == 403 and "not your vehicle" in html(not_yours)
    unknown = other.post(f"/vehicles/rome/{uuid.uuid4()}/remove")
    assert unknown.status_code == 404
    bad_type = owner.post("/vehicles/new", {"type": "spaceship"})
    assert bad_type.status_code == 422
    too_long = owner.post("/vehicles/new", {"type": "bike", "brand": "x" * 65})
    assert too_long.status_code == 422
    assert counts() == before


def test_removed_account_session_finds_no_user(visitor, counts):
    first = visitor().join("ada", "rome")
    second = visitor()
    assert second.log_in("ada").status_code == 303
    wrong = first.post("/profile/remove", {"confirm": "not-ada"})
    assert wrong.status_code == 422 and counts()["users"] == 1
    gone = first.post("/profile/remove", {"confirm": "ada"})
    assert gone.status_code == 303 and counts()["users"] == 0
    assert first.get("/profile").status_code == 302  # logged out
    stale = second.post("/vehicles/new", {"type": "bike"})  # every session of a removed account has ended
    assert stale.status_code == 303 and stale.headers["Location"].startswith("/login")
    assert counts()["vehicles"] == 0 and second.get("/profile").status_code == 302


class BrokenBackend(Backend):
    """A backend whose database is unreachable, or whose code fails in an unexpected way."""

    def __init__(self, error: Exception) -> None:
        super().__init__(load_preset("gcp-3"), "us-east1")
        self.error = error

    def run(self, work):
        raise self.error

    def ping(self) -> bool:
        return False

    def load(self, table, rows, progress=None):
        raise NotImplementedError

    def truncate(self):
        raise NotImplementedError


def test_unreachable_database_is_a_503_page():
    app = create_app({"SECRET_KEY": "k"}, backend=BrokenBackend(StoreUnavailable("db at 10.0.0.7:5432 refused")))
    response = app.test_client().get("/cities/rome/vehicles")
    assert response.status_code == 503
    assert "not reachable right now" in html(response) and "10.0.0.7" not in html(response)


def test_unexpected_errors_are_500_pages_and_json_that_leak_nothing(caplog):
    app = create_app({"SECRET_KEY": "k"}, backend=BrokenBackend(RuntimeError("password=hunter2 at line 42")))
    client = app.test_client()
    page = client.get("/cities/rome/users")
    assert page.status_code == 500 and "Something went wrong" in html(page)
    assert "hunter2" not in html(page) and "RuntimeError" not in html(page)
    api = client.get("/api/v1/cities/rome/users")
    assert api.status_code == 500
    assert api.get_json() == {"error": {"code": "internal_error", "message": api.get_json()["error"]["message"]}}
    assert "hunter2" not in api.get_data(as_text=True)
    assert "hunter2" in caplog.text  # ...but the log has it


def _all_domain_errors() -> list[type]:
    from movr.domain import errors

    found, todo = [], [errors.MovrError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return sorted(found, key=lambda kind: kind.__name__)


@pytest.mark.parametrize("kind", _all_domain_errors(), ids=lambda kind: kind.__name__)
def test_every_domain_error_has_its_status_and_a_friendly_message(kind):
    app = create_app({"SECRET_KEY": "k"}, backend=BrokenBackend(RuntimeError("not used")))

    def fail():
        raise kind("internal detail 10.1.2.3" if kind.status >= 500 else None)

    app.add_url_rule("/api/v1/_fail", "api_fail", fail)
    app.add_url_rule("/_fail", "page_fail", fail)
    client = app.test_client()
    api = client.get("/api/v1/_fail")
    assert api.status_code == kind.status and api.get_json()["error"]["code"] == kind.code
    message = api.get_json()["error"]["message"]
    assert message[0].isupper() and message.endswith(".") and "10.1.2.3" not in message
    page = client.get("/_fail")
    if kind.code == "session_ended":  # a page asks to log in again
        assert page.status_code == 303 and page.headers["Location"] == "/login?next=/_fail"
        return
    assert page.status_code == kind.status and page.mimetype == "text/html"
    assert message.replace("'", "&#39;") in html(page) and "10.1.2.3" not in html(page)
