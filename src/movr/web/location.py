"""Where the client is, as the web layer uses it: the one parser of client location, shared with the lab's
balancer (movr.geo.client_location: headers, cookie, then the signed-in user's home city), and how a city
is written for people.
"""

from __future__ import annotations

from movr.geo.client_location import (
    CITY_COOKIE,
    CITY_HEADER,
    GEO_HEADER,
    ClientLocation,
    cookie_value,
    match_city,
    resolve,
)

__all__ = [
    "CITY_COOKIE",
    "CITY_HEADER",
    "GEO_HEADER",
    "ClientLocation",
    "cookie_value",
    "display",
    "match_city",
    "resolve",
]


def display(city: str) -> str:
    """How people write a city: "washington dc" -> "Washington DC", "new york" -> "New York"."""
    return " ".join(word.upper() if len(word) <= 2 else word.capitalize() for word in city.split())
