"""The console's journeys: the tutorial's eight steps from a city, run on the running lab, and the latest
saved `movr bench journey` comparison across topologies.

The journey is the benchmark's own (movr.bench.journey.run_journey, with the one API client and the one
floor model): a second walk of the steps here would drift from it. The lab does not import the bench at
module level (the bench is built on the lab, not the other way round); `run` imports it when a user asks
for a journey, inside the worker thread that runs it, so the balancer process never loads it otherwise.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

from movr.geo.client_location import match_city
from movr.lab.state import LabState

RESULT_ENV = "MOVR_LAB_JOURNEY_RESULT"
ROW_FIELDS = (
    "topology",
    "city",
    "step",
    "served_by",
    "client_ms",
    "sql_ms",
    "floor_ms",
    "statements",
    "wan_round_trips",
    "samples",
)
TOTALS = ("client_ms", "floor_ms", "sql_ms", "statements", "wan_round_trips")


class JourneyRefused(LookupError):
    """A journey from somewhere that is not a city of the lab's preset."""


def city_of(state: LabState, text: Any) -> str:
    """The preset's name for a city the user typed (case-insensitive); JourneyRefused if there is none."""
    city = match_city(state.preset, text) if isinstance(text, str) else None
    if city is None:
        raise JourneyRefused(f"{text!r} is not a city of preset {state.preset.name}")
    return city


def run(state: LabState, city: str) -> dict[str, Any]:
    """One journey from `city` through the lab's balancer: its step table, or the steps' failure."""
    # Imported here, not at the top: see the module docstring (the lab does not depend on the bench).
    from movr.bench.client import ApiError
    from movr.bench.journey import run_journey

    result: dict[str, Any] = {
        "city": city,
        "topology": state.topology,
        "scale": state.scale,
        "username": None,
        "completed": False,
        "error": None,
        "steps": [],
    }
    try:
        journey = run_journey(state, state.preset, city, state.scale)
    except (ApiError, OSError, ValueError, KeyError, http.client.HTTPException) as err:
        result["error"] = f"the journey from {city} failed: {err}"
    else:
        result["username"] = journey.username
        result["completed"] = True
        result["steps"] = [
            {
                "step": step.step,
                "status": step.status,
                "served_by": step.served_by,
                "data_regions": step.data_regions,
                "client_ms": round(step.client_ms, 3),
                "floor_ms": round(step.floor_ms, 3),
                "sql_ms": round(step.sql_ms, 3),
                "statements": step.statements,
                "wan_round_trips": step.link_wan_round_trips,
                "app_wan_round_trips": step.app_wan_round_trips,
                "cpu_ms": round(step.cpu_ms, 3),
            }
            for step in journey.steps
        ]
    result["totals"] = {key: round(sum(step[key] for step in result["steps"]), 3) for key in TOTALS}
    return result


def saved_path(environ: dict[str, str] | None = None) -> Path:
    """Where the latest saved journey comparison is: $MOVR_LAB_JOURNEY_RESULT, else where `movr bench journey`
    writes it by default, run/bench/journey.json under the directory the lab was started from."""
    chosen = (os.environ if environ is None else environ).get(RESULT_ENV)
    return Path(chosen) if chosen else Path.cwd() / "run" / "bench" / "journey.json"


def load_saved(path: Path) -> dict[str, Any] | None:
    """The saved comparison, trimmed to what the chart needs; None when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        return None
    return {
        "path": str(path.resolve()),
        "started_at": data.get("started_at"),
        "preset": data.get("preset"),
        "scale": data.get("scale"),
        "cities": data.get("cities", []),
        "topologies": data.get("topologies", []),
        "rows": [{key: row.get(key) for key in ROW_FIELDS} for row in data["rows"] if isinstance(row, dict)],
        "ratios": data.get("ratios", {}),
    }
