"""Container image references: the grammar a registry and `kubectl` accept, checked before anything is written.

The grammar is distribution/reference's (the one Docker, Podman and containerd parse):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component [ "/" path-component ]*
    domain     := host [ ":" port ]            host: DNS labels joined by ".", or "[IPv6]"
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex             algorithm: [A-Za-z][A-Za-z0-9]* joined by [+._-]; hex: 32+

A name is at most 255 characters. The first component is a domain only when a "/" follows it.
"""

from __future__ import annotations

import re

MAX_NAME = 255

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_DOMAIN_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9A-Fa-f:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")


class ImageError(ValueError):
    """An image reference a registry would refuse; the message is one line that says why."""


def check_image(reference: str | None) -> str:
    """`reference` if it is a valid image reference, else ImageError naming the problem."""
    example = "e.g. us-docker.pkg.dev/PROJECT/movr/movr:0.1.0"
    if reference is None:
        raise ImageError(f"--image is required: the image every region's clusters pull, {example}")
    if not reference.strip():
        raise ImageError(f"--image is empty: name the image every region's clusters pull, {example}")
    if reference != reference.strip() or any(ch.isspace() for ch in reference):
        raise ImageError(f"--image {reference!r} has white space in it")
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        last = reference.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
        hint = " (repository names are lower case)" if last != last.lower() else ""
        raise ImageError(
            f"--image {reference!r} is not a valid image reference{hint}: "
            f"use [REGISTRY/]NAME[:TAG][@sha256:DIGEST], {example}"
        )
    if len(match["name"]) > MAX_NAME:
        raise ImageError(f"--image name is {len(match['name'])} characters; a registry takes at most {MAX_NAME}")
    return reference
