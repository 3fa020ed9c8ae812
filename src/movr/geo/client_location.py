"""Where a client is: the preset's city that a request's headers and cookie name, read one way everywhere.

The app server (movr.web) and the lab's balancer (movr.lab.balancer) both locate a client with `resolve`,
so a name that routes a request to a region is the name the app then serves it for. First known city wins;
a name that is no city of the preset falls through to the next source:

1. `X-Client-City: rome` - the balancer sets it; a client may send it itself (benchmarks, curl);
2. `X-Client-Geo-Location: {subdivision}, {city}` - what a cloud load balancer forwards (GKE's Gateway
   fills `{client_region_subdivision}, {client_city}`, see movr.deploy.manifests); the lab's balancer
   sends `{region},{city}`;
3. the `movr_browsing_from` cookie - the navigation's "browsing from" selector;
4. a fallback the caller knows (the app: the signed-in user's home city; the balancer: its default city).

Every name is URL-decoded (`new%20york`, `new+york`), trimmed and compared case-insensitively.
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
    source: str  # "header", "geo header", "cookie", the fallback's name, or "unknown"

    @property
    def known(self) -> bool:
        return self.city is not None


def match_city(preset: Preset, name: str | None) -> str | None:
    """The preset's spelling of `name` (URL-decoded, trimmed, case-insensitive), or None."""
    # Three bytes per character at most once percent-encoded.
    if not name or len(name) > MAX_NAME * 3:
        return None
    wanted = unquote_plus(name).strip().casefold()
    return next((city for city in preset.cities if city.casefold() == wanted), None)


def city_of_geo_header(value: str | None) -> str | None:
    """The city part of `{subdivision}, {city}` (None without a comma: that names no city)."""
    if not value or "," not in value:
        return None
    return value.partition(",")[2]


def resolve(
    preset: Preset,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    fallback: str | None = None,
    *,
    fallback_source: str = "home city",
) -> ClientLocation:
    """Where the client is, from its headers and cookies, else `fallback` (if it names a city)."""
    for source, name in (
        ("header", headers.get(CITY_HEADER)),
        ("geo header", city_of_geo_header(headers.get(GEO_HEADER))),
        ("cookie", cookies.get(CITY_COOKIE)),
        (fallback_source, fallback),
    ):
        city = match_city(preset, name)
        if city is not None:
            return ClientLocation(city, source)
    return ClientLocation(None, "unknown")


def cookie_value(city: str) -> str:
    """URL-encoded, so that a city with a space needs no cookie quoting (`resolve` decodes it)."""
    return quote(city, safe="")


def geo_header_value(region: str, city: str) -> str:
    """The `X-Client-Geo-Location` the lab's balancer forwards: `{region},{city}`."""
    return f"{region},{city}"
