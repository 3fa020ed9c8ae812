"""What a fault will do, in a sentence or two, before it is applied: from the survival goal's promises
(movr.lab.survival.promise, the one statement of them that the failover drill judges by too) and, for a lab
without a survival goal, from where its data lives (single and hybrid: the primary region; multi: each
region's own server, with no copy elsewhere). Pure: the lab's state in, text out.
"""

from __future__ import annotations

from collections.abc import Iterable

from movr.geo import Preset
from movr.lab.console.faults import Fault, crossing_links
from movr.lab.state import LabState
from movr.lab.survival import (
    current_primaries,
    likely_successor,
    lost_servers,
    promise,
    server_index,
    sync_members,
)

MAX_CITIES = 4
_ACRONYMS = frozenset({"dc"})  # as the presets spell 'washington dc'


def city_name(city: str) -> str:
    """A city as a sentence names it: 'new york' -> 'New York', 'washington dc' -> 'Washington DC'."""
    return " ".join(w.upper() if w in _ACRONYMS else w.capitalize() for w in city.split())


def possessive(text: str) -> str:
    return text + ("'" if text.endswith("s") else "'s")


def cities_text(cities: Iterable[str]) -> str:
    """'Amsterdam, Paris and Rome' (and 'n more cities' past a few)."""
    names = [city_name(city) for city in cities]
    if len(names) > MAX_CITIES:
        names = [*names[: MAX_CITIES - 1], f"{len(names) - MAX_CITIES + 1} more cities"]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _of(preset: Preset, region: str) -> str:
    return cities_text(preset.regions[region].cities)


def _whose(preset: Preset, region: str) -> str:
    """The region's cities as the owners of something: "Amsterdam, Paris and Rome's"."""
    return possessive(_of(preset, region))


def _next_region(state: LabState, region: str) -> str | None:
    """Where the balancer sends the region's clients while it is down: the nearest other app region."""
    others = [r for r in state.plan.app_regions if r != region]
    if not others:
        return None
    city = state.preset.regions[region].cities[0]
    return state.preset.nearest_regions(city, others)[0]


# A new username is claimed in every region (movr.store.claims): while one region's data is unreachable, no
# sign-up anywhere can prove its name unique.
SIGN_UPS_EVERYWHERE = " Sign-ups everywhere fail meanwhile: a new name must be claimed in every region."


def predict(fault: Fault, state: LabState) -> str:
    if fault.action == "kill" and fault.kind == "region":
        return _kill_region(state, str(fault.target))
    if fault.action == "kill":
        return _kill_server(state, str(fault.target))
    if fault.action == "partition":
        return _links_fault(state, fault.pair, None)
    if fault.action == "delay":
        assert fault.delay_ms is not None
        return _links_fault(state, fault.pair, fault.delay_ms)
    return _heal(state, fault)


def _kill_region(state: LabState, region: str) -> str:
    preset, topology = state.preset, state.topology
    primary = preset.primary_region
    elsewhere = _next_region(state, region)
    detour = f" Their requests go to {elsewhere} meanwhile." if elsewhere and region in state.plan.app_ports else ""
    layout = state.plan.survival
    if topology in ("single", "hybrid"):
        if region == primary:
            return (
                f"Every city becomes unavailable: all the data lives in {region} ({topology} topology), so "
                "requests fail until the heal; nothing committed is lost."
            )
        if region not in state.plan.app_ports:
            return f"Nothing changes for clients: {region} runs neither an app server nor data in this topology."
        return (
            f"{_of(preset, region)} are served by the app in {elsewhere} instead, farther away; their data is "
            f"in {primary}, so nothing else changes."
        )
    if layout is None:
        return (
            f"{_of(preset, region)} become unavailable: {region}'s data has no copy elsewhere (no survival "
            f"goal), so it waits for the heal; nothing committed is lost.{SIGN_UPS_EVERYWHERE}{detour}"
        )
    primaries = current_primaries(state)
    lost = lost_servers(layout, preset, region)
    promised = promise(layout, primaries, lost, region_fault=True)
    sentences = []
    for group in promised.fail_over:
        successor = likely_successor(layout, preset, group, lost)
        where = layout.servers[successor].region if successor else "another region"
        sentences.append(
            f"{_whose(preset, group)} writes move to {where} within a few seconds "
            f"({group}: {layout.groups[group].goal} survival); nothing acknowledged is lost."
        )
    for group in promised.unavailable:
        sentences.append(
            f"{_of(preset, group)} become unavailable: {group} keeps every replica inside the region (zone "
            "survival), so its data waits for the heal; nothing acknowledged is lost."
        )
    if promised.unavailable:
        sentences.append(SIGN_UPS_EVERYWHERE.strip())
    sentences += _writes_waiting(state, lost, skip=promised.fail_over + promised.unavailable)
    if not sentences:
        return f"Nothing changes for clients' data: no primary runs in {region}.{detour}"
    return " ".join(sentences) + detour


def _writes_waiting(state: LabState, lost: set[str], skip: list[str]) -> list[str]:
    """Groups untouched by the fault whose every synchronous standby is lost: their commits wait."""
    layout = state.plan.survival
    assert layout is not None
    primaries = current_primaries(state)
    waiting = []
    for group in layout.groups:
        if group in skip:
            continue
        sync = sync_members(layout, group, primaries[group])
        if sync and all(member in lost for member in sync):
            waiting.append(
                f"{_whose(state.preset, group)} writes wait until the heal: every synchronous standby of {group} "
                "is lost."
            )
    return waiting


def _kill_server(state: LabState, name: str) -> str:
    preset = state.preset
    info = server_index(state)[name]
    group = info.group
    layout = state.plan.survival
    primaries = current_primaries(state)
    if layout is None:
        if state.topology in ("single", "hybrid"):
            return (
                f"Every city becomes unavailable: {name} holds all the data and has no standby; requests fail "
                "until the heal, nothing committed is lost."
            )
        return (
            f"{_of(preset, group)} become unavailable: {name} holds {group}'s data and has no standby (no survival "
            "goal); it waits for the heal, nothing committed is lost."
        )
    if primaries.get(group) == name:
        successor = likely_successor(layout, preset, group, {name})
        where = f"{successor} ({layout.servers[successor].region})" if successor else "a standby"
        return (
            f"{name} is {group}'s primary: {where} takes over within a few seconds; {_whose(preset, group)} "
            "writes pause meanwhile and nothing acknowledged is lost."
        )
    sync = sync_members(layout, group, primaries[group])
    if name not in sync:
        return f"Nothing changes for clients: {name} is an asynchronous standby of {group}; commits never wait for it."
    left = [m for m in sync if m != name]
    if not left:
        return f"{_whose(preset, group)} writes wait until {name} is back: it is {group}'s last synchronous standby."
    return (
        f"Nothing changes for clients: {name} is a synchronous standby of {group}, and its commits wait for "
        f"{', '.join(left)} instead (perhaps farther away)."
    )


def _groups_waiting_across(state: LabState, pair: tuple[str, str]) -> list[str]:
    """The groups whose primary is in one region of the pair and whose synchronous standbys are all in the
    other: their commits wait on what crosses between the two (none without a survival goal)."""
    layout = state.plan.survival
    if layout is None:
        return []
    a, b = pair
    primaries = current_primaries(state)
    waiting = []
    for group in layout.groups:
        here = layout.servers[primaries[group]].region
        if here not in pair:
            continue
        other = b if here == a else a
        sync = sync_members(layout, group, primaries[group])
        if sync and all(layout.servers[m].region == other for m in sync):
            waiting.append(group)
    return waiting


def _links_fault(state: LabState, pair: tuple[str, str], delay_ms: float | None) -> str:
    """A partition (no delay_ms) or an added delay on the links between two regions."""
    a, b = pair
    links = len(crossing_links(state, pair))
    if not links:
        return f"Nothing changes: no link joins {a} and {b} in this lab."
    waiting = _groups_waiting_across(state, pair)
    if delay_ms is None:
        sentence = (
            f"The {links} link(s) between {a} and {b} go down until healed: requests that need data on the other "
            "side fail, each region keeps serving the data it holds, and nothing fails over (both sides still run)."
        )
        if state.topology == "multi":
            sentence += f" Sign-ups in {a} and {b} fail meanwhile: a new name must be claimed in every region."
        if waiting:
            cities = cities_text(c for g in waiting for c in state.preset.regions[g].cities)
            sentence += f" {possessive(cities)} writes wait: their synchronous standbys are across the cut."
        return sentence
    sentence = (
        f"Every round trip between {a} and {b} takes {delay_ms:g} ms longer ({links} link(s)): a request that "
        "crosses pays it once per WAN round trip; requests that stay in their region do not notice."
    )
    if waiting:
        sentence += f" Writes of {', '.join(waiting)} commit {delay_ms:g} ms slower: they wait for a standby across."
    return sentence


def _heal(state: LabState, fault: Fault) -> str:
    preset = state.preset
    if fault.kind == "pair":
        a, b = fault.pair
        return f"The links between {a} and {b} come back up at their usual delay: requests across work again."
    layout = state.plan.survival
    stays = ""
    if layout is not None:
        primaries = current_primaries(state)
        moved = [g for g, p in primaries.items() if p != layout.groups[g].primary]
        if moved:
            stays = (
                f" No fail-back: {', '.join(moved)} keep(s) the primary they failed over to; the lost servers "
                "rejoin as standbys (pg_rewind, else a fresh clone)."
            )
    if fault.kind == "server":
        return f"{fault.target} starts again and rejoins its group within seconds.{stays}"
    if fault.kind == "region":
        region = str(fault.target)
        back = f" and the balancer routes {_of(preset, region)} home again" if region in state.plan.app_ports else ""
        return f"{region} comes back: its servers start again, its app server restarts{back}.{stays}"
    return f"Everything comes back: lost servers and app servers start again, partitions and delays are lifted.{stays}"
