"""Where the client is: the city a request comes from, as a geo load balancer or the user tells us.

Order (first known city wins, unknown names fall through): the `X-Client-City` header, the city part of a
GCP-style `X-Client-Geo-Location: region,city` header, the `movr_browsing_from` cookie (the navigation's
"browsing from" selector; the lab balancer reads the same cookie), then the signed-in user's home city.
Names match the preset's cities case-insensitively — the same rules as `movr.lab.balancer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

from movr.geo import Preset

CITY_HEADER = "X-Client-City"
GEO_HEADER = "X-Client-Geo-Location"
CITY_COOKIE = "movr_browsing_from"
MAX_NAME = 128  # no city name is longer; anything longer is not worth comparing


@dataclass(frozen=True)
class ClientLocation:
    city: str | None
    source: str  # "header", "geo header", "cookie", "home city" or "unknown"

    @property
    def known(self) -> bool:
        return self.city is not None


def match_city(preset: Preset, name: str | None) -> str | None:
    """The preset's spelling of `name` (trimmed, URL-decoded, case-insensitive), or None."""
    if not name or len(name) > MAX_NAME * 3:
        return None
    wanted = unquote_plus(name).strip().casefold()
    return next((city for city in preset.cities if city.casefold() == wanted), None)


def resolve(
    preset: Preset, headers: Mapping[str, str], cookies: Mapping[str, str], home_city: str | None
) -> ClientLocation:
    geo = headers.get(GEO_HEADER)
    for source, name in (
        ("header", headers.get(CITY_HEADER)),
        ("geo header", geo.partition(",")[2] if geo else None),
        ("cookie", cookies.get(CITY_COOKIE)),
        ("home city", home_city),
    ):
        city = match_city(preset, name)
        if city is not None:
            return ClientLocation(city, source)
    return ClientLocation(None, "unknown")


def cookie_value(city: str) -> str:
    """URL-encoded, so that a city with a space needs no cookie quoting (the balancer URL-decodes it)."""
    return quote(city, safe="")


def display(city: str) -> str:
    """How people write a city: "washington dc" -> "Washington DC", "new york" -> "New York"."""
    return " ".join(word.upper() if len(word) <= 2 else word.capitalize() for word in city.split())
