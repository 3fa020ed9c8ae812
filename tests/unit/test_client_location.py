"""One parser of client location (movr.geo.client_location), and the app and the balancer agree on it."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from movr.geo import Preset
from movr.geo.client_location import (
    CITY_COOKIE,
    CITY_HEADER,
    GEO_HEADER,
    ClientLocation,
    city_of_geo_header,
    cookie_value,
    geo_header_value,
    match_city,
    resolve,
)
from movr.lab.balancer import resolve_city

# (headers, cookies) -> the city they name, before any fallback.
CASES: list[tuple[dict[str, str], dict[str, str], str | None]] = [
    ({CITY_HEADER: "rome"}, {}, "rome"),
    ({CITY_HEADER: " PARIS "}, {}, "paris"),
    ({CITY_HEADER: "new%20york"}, {}, "new york"),  # the balancer used to read this as no city
    ({CITY_HEADER: "los+angeles"}, {}, "los angeles"),
    ({CITY_HEADER: "Washington%20DC"}, {}, "washington dc"),
    ({GEO_HEADER: "IT62, Rome"}, {}, "rome"),  # GKE's "{client_region_subdivision}, {client_city}"
    ({GEO_HEADER: "USNY, New%20York"}, {}, "new york"),
    ({GEO_HEADER: geo_header_value("europe-west1", "paris")}, {}, "paris"),  # what the balancer forwards
    ({GEO_HEADER: "rome"}, {}, None),  # no comma: no city part
    ({}, {CITY_COOKIE: "new%20york"}, "new york"),
    ({}, {CITY_COOKIE: "los+angeles"}, "los angeles"),
    ({CITY_HEADER: "atlantis", GEO_HEADER: "XX, Paris"}, {CITY_COOKIE: "rome"}, "paris"),  # unknown falls through
    ({CITY_HEADER: "atlantis", GEO_HEADER: "XX, nowhere"}, {CITY_COOKIE: "rome"}, "rome"),
    ({CITY_HEADER: "Rome", GEO_HEADER: "FR, Paris"}, {CITY_COOKIE: "boston"}, "rome"),  # header first
    ({GEO_HEADER: "FR, Paris"}, {CITY_COOKIE: "boston"}, "paris"),  # then the geo header, then the cookie
    ({CITY_HEADER: "r" * 5000}, {}, None),  # too long to be a city, not worth comparing
    ({CITY_HEADER: ""}, {CITY_COOKIE: ""}, None),
    ({}, {}, None),
]


@pytest.mark.parametrize(("headers", "cookies", "city"), CASES)
def test_headers_and_cookie_name_a_city_of_the_preset_or_none(preset: Preset, headers, cookies, city):
    assert resolve(preset, headers, cookies).city == city


@pytest.mark.parametrize(("headers", "cookies", "city"), CASES)
def test_the_balancer_routes_by_the_city_the_app_serves(preset: Preset, headers, cookies, city):
    """The balancer picks a region for the same city the app then believes the client is in."""
    assert resolve_city(preset, CIMultiDict(headers), cookies, "boston") == (city or "boston")


def test_each_source_is_named_and_the_fallback_comes_last(preset: Preset):
    assert resolve(preset, {CITY_HEADER: "rome"}, {}, "boston") == ClientLocation("rome", "header")
    assert resolve(preset, {GEO_HEADER: "IT, rome"}, {}, "boston") == ClientLocation("rome", "geo header")
    assert resolve(preset, {}, {CITY_COOKIE: "rome"}, "boston") == ClientLocation("rome", "cookie")
    assert resolve(preset, {}, {}, "boston") == ClientLocation("boston", "home city")
    assert resolve(preset, {}, {}, "Boston", fallback_source="default") == ClientLocation("boston", "default")
    unknown = resolve(preset, {CITY_HEADER: "gotham"}, {}, "atlantis")
    assert unknown == ClientLocation(None, "unknown") and not unknown.known


def test_every_city_survives_the_cookie(preset: Preset):
    for city in preset.cities:
        value = cookie_value(city)
        assert " " not in value and ";" not in value
        assert resolve(preset, {}, {CITY_COOKIE: value}).city == city


def test_city_names_match_in_any_case_and_spacing(preset: Preset):
    assert match_city(preset, "  WASHINGTON dc ") == "washington dc"
    assert match_city(preset, "washington") is None
    assert match_city(preset, None) is None
    assert city_of_geo_header("US, a, b") == " a, b"  # only the subdivision is cut off
    assert city_of_geo_header(None) is None
