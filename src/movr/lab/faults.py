"""Faults and their healing, for failure drills (law 6: killing a region is killing processes).

    fail_server(run_dir, name)   SIGKILL one PostgreSQL server (PostgresServer.kill: a crash)
    fail_region(run_dir, region) kill every server running in the region, its app server, and take it out of
                                 the balancer's rotation (clients go to the next-nearest region)
    partition(run_dir, a, b)     every link between regions a and b goes down (refuses and drops connections)
    heal(run_dir, target)        undo: partitions up, lost servers back - as standbys of their group's current
                                 primary (pg_rewind, else a fresh clone) or, for a group that never failed
                                 over, as its primary again - app servers restarted, balancer rotation restored

A lab without a survival goal can be failed too (its servers simply stay down until healed).
Every fault and heal is an event in the state file, shown by `movr lab status`.

Killing trusts nothing the lab did not start: an app server is signalled only through
`processes.stop_process_tree` (its recorded pid must still run what the lab started; a reused pid is skipped,
and said), a server only as a process of its own data directory (`PostgresServer.kill`).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from movr.lab import control
from movr.lab.apps import restart_app_server
from movr.lab.events import apply_link_states, group_operations, record_event, survival_record
from movr.lab.layout import link_target
from movr.lab.links import post_link
from movr.lab.pgserver import LAB_DEFAULTS
from movr.lab.processes import is_alive, stop_process_tree
from movr.lab.standbys import PRIMARY_BASE_SETTINGS, READY_TIMEOUT_S, rejoin, start
from movr.lab.state import LabState, lab_server
from movr.lab.survival import current_primaries, server_index

Say = Callable[[str], None]


class FaultError(RuntimeError):
    """A fault or heal that names nothing in this lab, or could not be carried out."""


def _regions(state: LabState) -> list[str]:
    return state.preset.region_names


def _balancer_region(state: LabState, region: str, down: bool) -> None:
    with contextlib.suppress(OSError):
        control.call(f"{state.balancer_url}/_balancer/regions/{region}", state.control_token, {"down": down})


# --- faults --------------------------------------------------------------------------------------------------


def fail_server(run_dir: Path, name: str, say: Say = lambda _: None) -> None:
    state = LabState.read(run_dir)
    servers = server_index(state)
    if name not in servers:
        raise FaultError(f"no server named {name!r} (servers: {', '.join(servers)})")
    record_event(state.run_dir, "fault", f"server {name} killed", server=name)
    lab_server(state.run_dir, servers[name]).kill()
    say(f"killed {name} ({servers[name].region})")


def fail_region(run_dir: Path, region: str, say: Say = lambda _: None) -> list[str]:
    """Kill everything running in `region`: its database servers (any group's), its app server; and tell the
    balancer, as a global load balancer's health checks would, that the region is gone."""
    state = LabState.read(run_dir)
    if region not in _regions(state):
        raise FaultError(f"no region {region!r} in preset {state.preset.name}")
    servers = [info for info in server_index(state).values() if info.region == region]
    apps = [record for record in state.processes if record.kind == "app" and record.name == f"app-{region}"]
    victims = [info.name for info in servers] + [record.name for record in apps]
    # Recorded first: the event's time is when the region went, which drills measure from.
    record_event(state.run_dir, "fault", f"region {region} killed: {', '.join(victims)}", region=region)
    # All at once, as a region goes: one after another would let the last ones serve on for a while.
    with ThreadPoolExecutor(max_workers=len(victims) or 1, thread_name_prefix="movr-kill") as pool:
        servers_done = [(info.name, pool.submit(lab_server(state.run_dir, info).kill)) for info in servers]
        # A recorded pid that no longer runs the app server is skipped, with a line on stderr.
        apps_done = [(record.name, pool.submit(stop_process_tree, record, 10.0, signal.SIGKILL)) for record in apps]
        _balancer_region(state, region, down=True)
        killed = [name for name, future in servers_done if future.result() is None]
        killed += [name for name, future in apps_done if future.result()]

    def change(current: LabState) -> None:
        lost = survival_record(current).lost_regions
        if region not in lost:
            lost.append(region)

    LabState.update(state.run_dir, change)
    say(f"region {region} lost: killed {', '.join(killed)}")
    return killed


def partition(run_dir: Path, a: str, b: str, say: Say = lambda _: None) -> list[str]:
    state = LabState.read(run_dir)
    for region in (a, b):
        if region not in _regions(state):
            raise FaultError(f"no region {region!r} in preset {state.preset.name}")
    if a == b:
        raise FaultError("a partition needs two different regions")

    def change(current: LabState) -> None:
        pairs = survival_record(current).partitions
        if sorted((a, b)) not in pairs:
            pairs.append(sorted((a, b)))

    state = LabState.update(state.run_dir, change)
    down = apply_link_states(state)
    say(f"partitioned {a} from {b}: {len(down)} link(s) down")
    record_event(state.run_dir, "fault", f"partition {a} | {b}: links down: {', '.join(down)}", regions=[a, b])
    return down


# --- healing -------------------------------------------------------------------------------------------------


def heal(run_dir: Path, target: list[str] | None = None, say: Say = lambda _: None) -> list[str]:
    """Heal everything (no target or "all"), a region, a server, or a partition (two regions)."""
    state = LabState.read(run_dir)
    target = [t for t in (target or []) if t] or ["all"]
    servers = server_index(state)
    regions = _regions(state)
    done: list[str] = []
    if target == ["all"]:
        done += _heal_partitions(state, None, say)
        for region in list(state.survival.lost_regions if state.survival is not None else []):
            done += _heal_region(state.run_dir, region, say)
        done += _heal_servers(state.run_dir, list(servers), say)
        for region in state.plan.app_regions:
            done += _heal_app(state.run_dir, region, say)
    elif len(target) == 2 and all(t in regions for t in target):
        done += _heal_partitions(state, frozenset(target), say)
    elif len(target) == 1 and target[0] in regions:
        done += _heal_region(state.run_dir, target[0], say)
    elif len(target) == 1 and target[0] in servers:
        done += _heal_servers(state.run_dir, target, say)
    else:
        raise FaultError(
            f"nothing to heal named {' '.join(target)!r}: give 'all', a region, a server, or two regions (partition)"
        )
    if done:
        record_event(state.run_dir, "heal", "healed: " + ", ".join(done))
    return done


def _heal_partitions(state: LabState, pair: frozenset[str] | None, say: Say) -> list[str]:
    before = [frozenset(p) for p in (state.survival.partitions if state.survival is not None else [])]
    if not before:
        return []

    def change(current: LabState) -> None:
        record = survival_record(current)
        record.partitions = [p for p in record.partitions if pair is not None and frozenset(p) != pair]

    state = LabState.update(state.run_dir, change)
    apply_link_states(state)
    healed = [" | ".join(sorted(p)) for p in before if pair is None or p == pair]
    for item in healed:
        say(f"partition {item} healed")
    return [f"partition {item}" for item in healed]


def _heal_region(run_dir: Path, region: str, say: Say) -> list[str]:
    state = LabState.read(run_dir)
    names = [name for name, info in server_index(state).items() if info.region == region]
    done = _heal_servers(run_dir, names, say)
    done += _heal_app(run_dir, region, say)

    def change(current: LabState) -> None:
        record = survival_record(current)
        record.lost_regions = [r for r in record.lost_regions if r != region]

    if state.survival is not None:
        LabState.update(run_dir, change)
    return done


def _heal_app(run_dir: Path, region: str, say: Say) -> list[str]:
    state = LabState.read(run_dir)
    if region not in state.plan.app_ports:
        return []
    record = next((p for p in state.processes if p.name == f"app-{region}"), None)
    done = []
    if record is None or not is_alive(record):
        restart_app_server(run_dir, region)
        say(f"app server for {region} started again")
        done.append(f"app-{region}")
    _balancer_region(state, region, down=False)
    return done


def _heal_servers(run_dir: Path, names: list[str], say: Say) -> list[str]:
    """Start lost servers: a group's primary in place; anyone else as a standby of the current primary."""
    state = LabState.read(run_dir)
    servers = server_index(state)
    layout = state.plan.survival
    primaries = current_primaries(state)
    lost = [name for name in names if not lab_server(state.run_dir, servers[name]).is_running()]
    # Primaries first: a standby can only follow a primary that runs.
    lost.sort(key=lambda name: 0 if primaries.get(servers[name].group) == name else 1)
    done = []

    def moved(name: str, port: int) -> None:
        _record_port(state.run_dir, name, port, primaries)
        say(f"{name}: its port was taken while it was down; it listens on {port} now")

    with group_operations(state.run_dir):
        for name in lost:
            info = servers[name]
            group = info.group
            server = lab_server(state.run_dir, info)
            if layout is None:
                server.start(timeout=READY_TIMEOUT_S)
                say(f"{name} started again")
                done.append(name)
                continue
            if primaries.get(group) == name:
                # Crash recovery from its own WAL, then it serves again (its quorum is in postgresql.auto.conf).
                settings = {**LAB_DEFAULTS, **PRIMARY_BASE_SETTINGS, **layout.server_settings}
                start(server, layout, name, lambda s=settings: s, moved)
                say(f"{name} started again as {group}'s primary")
                done.append(name)
                continue
            original = layout.groups[group].primary
            port = state.plan.link("standby", info.region, original).listen_port
            primary_port = servers[primaries[group]].port
            how = rejoin(state.run_dir, layout, name, port, primary_port, say, moved)
            say(f"{name} rejoined {group} as a standby of {primaries[group]} ({how})")
            done.append(f"{name} ({how})")
    return done


def _record_port(run_dir: Path, name: str, port: int, primaries: dict[str, str]) -> None:
    """A server moved to another port: record it, and re-point the links of a group whose primary it is."""
    repointed: list[str] = []

    def change(state: LabState) -> None:
        layout = state.plan.survival
        assert layout is not None
        layout.servers[name].port = port
        group = layout.servers[name].group
        original = layout.groups[group].primary
        if original == name:
            state.plan.servers[group].port = port
        if primaries.get(group) != name:
            return
        for link in state.plan.links:
            if link_target(link.name)[2] == original:
                state.plan.replace_link(link.name, target_port=port)
                repointed.append(link.name)

    state = LabState.update(run_dir, change)
    for link in repointed:
        post_link(state.links_control_port, link, token=state.control_token, target_port=port)
