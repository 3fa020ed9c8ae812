"""No input makes a page answer 5xx: random forms, paths, location headers and cookies (the API has
schemathesis, `test_api_fuzz.py`)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from movr.geo import load_preset

pytestmark = pytest.mark.integration

CITIES = load_preset("gcp-3").cities
TEXT = st.text(max_size=70)  # any Unicode that a form can carry
CITY = st.one_of(st.sampled_from(CITIES), TEXT)
ID = st.one_of(st.uuids().map(str), TEXT)
HEADER = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=70)
NEXT = st.one_of(TEXT, st.text(st.sampled_from("/\\\r\n\x00 a:%"), max_size=12).map(lambda s: "/" + s))

FORMS = {
    "/signup": {"username": TEXT, "password": TEXT, "city": CITY, "first_name": TEXT, "email": TEXT},
    "/login": {"username": TEXT, "password": TEXT, "next": NEXT},
    "/vehicles/new": {"type": st.one_of(st.sampled_from(["bike", "scooter"]), TEXT), "brand": TEXT, "location": TEXT},
    "/rides": {"city": CITY, "vehicle_id": ID},
    "/browsing-from": {"city": CITY, "next": NEXT},
    "/profile/remove": {"confirm": TEXT},
}
TEMPLATES = (
    "/rides/{city}/{id}/end",
    "/rides/{city}/{id}/promo-code",
    "/vehicles/{city}/{id}/remove",
)


@st.composite
def page_requests(draw):
    headers = {name: draw(HEADER) for name in ("X-Client-City", "X-Client-Geo-Location") if draw(st.booleans())}
    kind = draw(st.sampled_from(["form", "path", "get"]))
    if kind == "form":
        path = draw(st.sampled_from(sorted(FORMS)))
        form = {name: draw(strategy) for name, strategy in FORMS[path].items() if draw(st.booleans())}
        return "POST", path, form, headers
    city, ident = quote(draw(CITY), safe=""), quote(draw(ID), safe="")
    if kind == "path":
        form = {"location": draw(TEXT), "code": draw(TEXT)}
        return "POST", draw(st.sampled_from(TEMPLATES)).format(city=city, id=ident), form, headers
    return "GET", draw(st.sampled_from(["/cities/{}/vehicles", "/cities/{}/users"])).format(city), None, headers


def test_no_page_input_is_a_server_error(visitor):
    v = visitor().join("fuzzy", "rome")
    token = v.csrf()

    @given(request=page_requests(), cookie=HEADER)
    @settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def run(request, cookie) -> None:
        method, path, form, headers = request
        v.http.set_cookie("movr_browsing_from", cookie)
        data = None if form is None else {**form, "csrf_token": token}
        response = v.http.open(path, method=method, data=data, headers=headers)
        assert response.status_code < 500, (method, path, form, headers, response.status_code)

    run()
