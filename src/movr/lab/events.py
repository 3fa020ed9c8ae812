"""What the failover controller and the fault commands share: the survival record's events, the lock that
serializes failovers with heals, and the links following the partitions in force.

Both `movr.lab.controller` (a process of the lab) and `movr.lab.faults` (`movr lab fail | partition | heal`)
write the state file; each change is read-modify-write under the state's lock (LabState.update).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from movr.lab.links import fetch_links, post_link
from movr.lab.state import LabState, SurvivalRecord, file_lock
from movr.lab.survival import server_index

MAX_EVENTS = 200
SURVIVAL_LOCK = "survival.lock"

log = logging.getLogger("movr.lab.controller")


def survival_record(state: LabState) -> SurvivalRecord:
    """The state's survival record, made empty for a lab without a survival goal (faults are recorded too)."""
    if state.survival is None:
        state.survival = SurvivalRecord(primaries={})
    return state.survival


def record_event(run_dir: Path, kind: str, message: str, **data: Any) -> dict[str, Any]:
    """Append an event to the state file (kept to the last MAX_EVENTS) and the calling process's log."""
    event = {"time": time.time(), "kind": kind, "message": message, **data}

    def change(state: LabState) -> None:
        record = survival_record(state)
        record.events.append(event)
        del record.events[:-MAX_EVENTS]

    LabState.update(run_dir, change)
    log.info("%s: %s", kind, message)
    return event


@contextlib.contextmanager
def group_operations(run_dir: Path) -> Iterator[None]:
    """Serializes failovers (controller) with rejoins and heals (movr lab heal) across processes."""
    with file_lock(Path(run_dir) / SURVIVAL_LOCK):
        yield


def apply_link_states(state: LabState) -> list[str]:
    """Set every link down that crosses a partition (by its current far end), and up otherwise."""
    partitions = {frozenset(pair) for pair in (state.survival.partitions if state.survival is not None else [])}
    regions = {name: info.region for name, info in server_index(state).items()}
    down = []
    for link in fetch_links(state.links_control_port, token=state.control_token):
        src, dst_region = link["src"], regions.get(link["dst"])
        crossing = dst_region is not None and frozenset((src, dst_region)) in partitions
        if crossing:
            down.append(link["name"])
        if crossing != link["down"]:
            post_link(state.links_control_port, link["name"], token=state.control_token, down=crossing)
    return down
