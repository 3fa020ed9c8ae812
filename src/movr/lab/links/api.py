"""The control API of a links process, as its clients call it: every link's spec, state and counters, and
run-time changes (delay, down, target), each with the lab's token (movr.lab.control)."""

from __future__ import annotations

from typing import Any

from movr.lab import control
from movr.lab.links.spec import LISTEN_HOST


def _control_request(control_port: int, path: str, token: str, body: Any = None, timeout: float = 5.0) -> Any:
    return control.call(f"http://{LISTEN_HOST}:{control_port}{path}", token, body, timeout)


def fetch_links(control_port: int, *, token: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """``GET /links`` of a link server process: every link's spec, state and counters."""
    return _control_request(control_port, "/links", token, timeout=timeout)


def fetch_counters(control_port: int, *, token: str, timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """The counters of every link of a link server process, by link name."""
    return {link["name"]: link["counters"] for link in fetch_links(control_port, token=token, timeout=timeout)}


def post_link(
    control_port: int,
    name: str,
    *,
    token: str,
    one_way_ms: float | None = None,
    down: bool | None = None,
    timeout: float = 5.0,
    target_port: int | None = None,
    dst: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Change a link of a link server process at run time; returns the link as the server now sees it.

    ``target_port`` (with ``dst`` and ``kind`` describing the new far end) re-points the link at another
    server, dropping the connections it carries; it is applied before a delay given in the same call.
    """
    body: dict[str, Any] = {}
    if target_port is not None:
        body["target_port"] = target_port
        if dst is not None:
            body["dst"] = dst
        if kind is not None:
            body["kind"] = kind
    if one_way_ms is not None:
        body["one_way_ms"] = one_way_ms
    if down is not None:
        body["down"] = down
    return _control_request(control_port, f"/links/{name}", token, body, timeout)


def reset_counters(control_port: int, *, token: str, timeout: float = 5.0) -> None:
    _control_request(control_port, "/reset", token, {}, timeout)
