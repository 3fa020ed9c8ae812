"""The console's faults: a request's body read into a `Fault`, refused (4xx, nothing changed) when it names
nothing in the lab or the lab's state forbids it, else applied through the lab's own fault code
(movr.lab.faults: what `movr lab fail | partition | heal` run). A delay on the links between two regions is
the links' run-time delay (movr.lab.links.post_link), recorded as a fault event like the others.

Blocking (signals, the state file, the links' control API): the console calls these in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from movr.lab import faults as lab_faults
from movr.lab.console.health import added_rtt_ms, live_links
from movr.lab.events import record_event
from movr.lab.links import post_link
from movr.lab.processes import is_alive
from movr.lab.state import LabState, lab_server
from movr.lab.survival import server_index

ACTIONS = ("kill", "heal", "partition", "delay")
MAX_DELAY_MS = 5000.0

Action = Literal["kill", "heal", "partition", "delay"]
Kind = Literal["region", "server", "pair", "all"]


class Refused(Exception):
    """A console request refused as the client's (a fault the lab will not take, a malformed body): `status`
    and `code` of the answer, `message` for the user. Nothing was changed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> Refused:
    return Refused(400, "bad_request", message)


def _conflict(message: str) -> Refused:
    return Refused(409, "conflict", message)


@dataclass(frozen=True)
class Fault:
    action: Action
    kind: Kind
    target: str | tuple[str, str]
    delay_ms: float | None = None

    @property
    def pair(self) -> tuple[str, str]:
        assert isinstance(self.target, tuple)
        return self.target

    def as_dict(self) -> dict[str, Any]:
        target = list(self.target) if isinstance(self.target, tuple) else self.target
        body: dict[str, Any] = {"action": self.action, "kind": self.kind, "target": target}
        if self.delay_ms is not None:
            body["delay_ms"] = self.delay_ms
        return body

    def describe(self) -> str:
        target = " | ".join(self.target) if isinstance(self.target, tuple) else self.target
        extra = f" +{self.delay_ms:g} ms" if self.delay_ms is not None else ""
        return f"{self.action} {target}{extra}"


# --- reading a request ------------------------------------------------------------------------------------


def parse(body: Any, state: LabState) -> Fault:
    """The fault a request's JSON body asks for; Refused (400, 404) when it is malformed or names
    nothing in this lab."""
    if not isinstance(body, Mapping):
        raise _bad('send a JSON object: {"action": "kill"|"heal"|"partition"|"delay", "target": ...}')
    action = body.get("action")
    if action not in ACTIONS:
        raise _bad(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    target = body.get("target")
    regions = state.preset.region_names
    servers = server_index(state)
    if isinstance(target, list):
        if action == "kill":
            raise _bad("kill a region or a server: give its name")
        if len(target) != 2 or not all(isinstance(t, str) for t in target):
            raise _bad("a pair of regions is a list of two names")
        unknown = [t for t in target if t not in regions]
        if unknown:
            raise Refused(404, "not_found", f"no region {unknown[0]!r} in preset {state.preset.name}")
        if target[0] == target[1]:
            raise _bad("a partition or a delay needs two different regions")
        pair = (target[0], target[1])
        if action == "delay":
            return Fault("delay", "pair", pair, _delay_ms(body.get("delay_ms")))
        return Fault(action, "pair", pair)
    if not isinstance(target, str) or not target:
        raise _bad("target must be a region, a server, 'all' (heal) or a list of two regions")
    if action in ("partition", "delay"):
        raise _bad(f"{action} takes two regions: a list such as [{regions[0]!r}, {regions[-1]!r}]")
    if target == "all":
        if action != "heal":
            raise _bad("only heal takes 'all'")
        return Fault("heal", "all", "all")
    if target in regions:
        return Fault(action, "region", target)
    if target in servers:
        return Fault(action, "server", target)
    raise Refused(
        404, "not_found", f"no region or server named {target!r} (regions: {', '.join(regions)}; servers: see status)"
    )


def _delay_ms(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"delay_ms must be a number of milliseconds (1 to {MAX_DELAY_MS:g})")
    if not 1 <= value <= MAX_DELAY_MS:
        raise _bad(f"delay_ms must be between 1 and {MAX_DELAY_MS:g}, not {value:g}")
    return float(value)


# --- what the lab's state allows ------------------------------------------------------------------------------


def crossing_links(state: LabState, pair: tuple[str, str]) -> list[str]:
    """The links between the two regions, by where their far end runs now."""
    regions = state.plan.server_regions()
    ends = set(pair)
    return [
        spec.name
        for spec in state.plan.links
        if spec.src != regions.get(spec.dst) and {spec.src, regions.get(spec.dst)} == ends
    ]


def _partitioned(state: LabState, pair: tuple[str, str]) -> bool:
    return sorted(pair) in [sorted(p) for p in (state.survival.partitions if state.survival is not None else [])]


def _delayed(state: LabState, names: list[str]) -> bool:
    live = live_links(state) or {}
    added = added_rtt_ms(state, live)
    return any(added.get(name, 0.0) > 0 for name in names)


def _down_in(state: LabState, region: str) -> list[str]:
    """What is down in a region: its servers that do not run, its app server if it does not."""
    down = [
        name
        for name, info in server_index(state).items()
        if info.region == region and not lab_server(state.run_dir, info).is_running()
    ]
    app = next((p for p in state.processes if p.kind == "app" and p.name == f"app-{region}"), None)
    if region in state.plan.app_ports and (app is None or not is_alive(app)):
        down.append(f"app-{region}")
    return down


def _lost(state: LabState) -> list[str]:
    return list(state.survival.lost_regions) if state.survival is not None else []


def check(fault: Fault, state: LabState) -> None:
    """Refused (409) when the lab's state forbids the fault: a second kill, a heal of something healthy."""
    if fault.action == "kill" and fault.kind == "region":
        if fault.target in _lost(state):
            raise _conflict(f"region {fault.target} is already down: heal it first")
    elif fault.action == "kill":
        info = server_index(state)[str(fault.target)]
        if not lab_server(state.run_dir, info).is_running():
            raise _conflict(f"server {fault.target} is already down: heal it first")
    elif fault.action == "partition":
        if _partitioned(state, fault.pair):
            raise _conflict(f"{fault.pair[0]} and {fault.pair[1]} are already partitioned")
    elif fault.action == "heal" and not _needs_healing(fault, state):
        raise _conflict(f"{fault.describe().removeprefix('heal ')} is healthy: nothing to heal")


def _needs_healing(fault: Fault, state: LabState) -> bool:
    if fault.kind == "region":
        return fault.target in _lost(state) or bool(_down_in(state, str(fault.target)))
    if fault.kind == "server":
        return not lab_server(state.run_dir, server_index(state)[str(fault.target)]).is_running()
    if fault.kind == "pair":
        return _partitioned(state, fault.pair) or _delayed(state, crossing_links(state, fault.pair))
    survival = state.survival
    return (
        bool(_lost(state) or (survival is not None and survival.partitions))
        or any(_down_in(state, region) for region in state.preset.region_names)
        or _delayed(state, [spec.name for spec in state.plan.links])
    )


# --- applying ---------------------------------------------------------------------------------------------------


def apply(fault: Fault, run_dir: Path) -> list[str]:
    """Carry the fault out; what was done, as short phrases. FaultError/OSError when the lab could not."""
    if fault.action == "kill" and fault.kind == "region":
        return lab_faults.fail_region(run_dir, str(fault.target))
    if fault.action == "kill":
        lab_faults.fail_server(run_dir, str(fault.target))
        return [str(fault.target)]
    if fault.action == "partition":
        down = lab_faults.partition(run_dir, *fault.pair)
        return [f"partition {fault.pair[0]} | {fault.pair[1]}: {len(down)} link(s) down"]
    if fault.action == "delay":
        assert fault.delay_ms is not None
        return _set_delay(run_dir, fault.pair, fault.delay_ms)
    return _heal(fault, run_dir)


def _heal(fault: Fault, run_dir: Path) -> list[str]:
    state = LabState.read(run_dir)
    done: list[str] = []
    if fault.kind == "pair":
        if _partitioned(state, fault.pair):
            done += lab_faults.heal(run_dir, list(fault.pair))
        done += _set_delay(run_dir, fault.pair, 0.0)
    elif fault.kind == "all":
        done += lab_faults.heal(run_dir, ["all"])
        done += _set_delay(run_dir, None, 0.0)
    else:
        done += lab_faults.heal(run_dir, [str(fault.target)])
    return done


def _links_of(state: LabState, pair: tuple[str, str] | None) -> Iterator[str]:
    if pair is None:
        yield from (spec.name for spec in state.plan.links)
    else:
        yield from crossing_links(state, pair)


def _set_delay(run_dir: Path, pair: tuple[str, str] | None, delay_ms: float) -> list[str]:
    """Every link between the pair (every link: None) carries `delay_ms` more round trip than its plan's (0:
    back to the plan). Only links whose delay changes are touched; what changed, as phrases."""
    state = LabState.read(run_dir)
    live = live_links(state) or {}
    specs = {spec.name: spec for spec in state.plan.links}
    changed = []
    for name in _links_of(state, pair):
        wanted = specs[name].one_way_ms + delay_ms / 2
        if name in live and abs(float(live[name]["one_way_ms"]) - wanted) > 1e-6:
            post_link(state.links_control_port, name, token=state.control_token, one_way_ms=wanted)
            changed.append(name)
    if not changed:
        return []
    where = "every link" if pair is None else f"{pair[0]} | {pair[1]}"
    what = f"delay {where}: +{delay_ms:g} ms round trip" if delay_ms else f"delay {where} removed"
    record_event(run_dir, "fault" if delay_ms else "heal", f"{what} on {len(changed)} link(s)")
    return [what]
