"""Survival goals in the lab: which standbys each region's primary gets, which of them a commit waits for, and
which standby may be promoted when a primary is lost. Pure rules over the placement spec; the PostgreSQL work
is in `movr.lab.standbys`, the failure detector in `movr.lab.controller`.

A region's data is a *group*: its primary (`<region>-a`, laid out by `movr.lab.layout`) and the standbys this
module adds, each a PostgreSQL physical standby cloned through a link from its own region (law 1):

- `zone` (CockroachDB: 3 replicas in the home region): standbys `<region>-b` and `<region>-c` in the home
  region (zones b and c, intra-region RTT). Commit waits for one of them: `ANY 1 (b, c)`.
- `region` (CockroachDB: 5 replicas, quorum 3, two voters at home): `<region>-b` in the home region and
  `<region>-in-<other>` in every other region the data may live in. Commit waits for one standby *outside the
  primary's region*: `ANY 1 (<the standbys elsewhere>)`, so a write costs at least the RTT to the nearest
  other region (article 004), and the in-region standby is asynchronous - caught up in a fraction of a
  millisecond, it is what a lost primary alone fails over to.
- Domiciling: standbys are placed only in `PlacementSpec.allowed_regions(home)` - the home's super region, or
  the home alone under PLACEMENT RESTRICTED. A super region too small for region survival carries an explicit
  zone goal (the spec settles that), so its groups are zone groups.

Which standbys are synchronous follows the *current* primary (`sync_members`): after a region is lost and its
data promoted elsewhere, commits keep waiting for a region other than the new primary's.

Failover rule (`choose_promotion`): with `ANY k (L)` every acknowledged commit is on at least k members of L.
If at most k-1 members of L are unreachable, the most advanced reachable member of L holds every acknowledged
commit; a standby is eligible when the WAL it holds (received, or replayed, whichever is further) reaches
that point. If more
are unreachable nothing can be proven, and the group waits (unavailable) rather than risk losing a commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from movr.geo import Preset
from movr.lab.layout import LabPlan, SurvivalGroup, SurvivalLayout, SurvivalServer, new_link
from movr.lab.ports import free_port
from movr.lab.state import LabState
from movr.placement.spec import PlacementSpec, Survival, load_spec

QUORUM = 1  # ANY 1: a commit waits for one synchronous standby (zone: at home; region: in another region)

# Every server of a survival lab, whatever its role now: roles change at failover and at rejoin.
SERVER_SETTINGS: Mapping[str, str] = {
    "hot_standby": "on",  # standbys answer reads: the audit and the controller look inside them
    "wal_log_hints": "on",  # pg_rewind, so a lost primary can rejoin as a standby without a full copy
    "wal_keep_size": "512MB",  # a standby that was down a while catches up from the primary's WAL
    # A standby whose primary changed reconnects (through its re-pointed link) within this interval, and
    # the new primary's commits wait for it: keep it short, the drills measure it.
    "wal_retrieve_retry_interval": "200ms",
    "hot_standby_feedback": "on",
}
POOL_TIMEOUT_S = 2.0  # app servers of a survival lab: fail fast on a lost server, reconnect at once


@dataclass(frozen=True)
class SurvivalOptions:
    """What `movr lab up --survival ...` asks for; the placement spec turns it into goals per region."""

    goal: Survival
    super_regions: bool = True
    placement_restricted: bool = False
    spec_file: Path | None = None

    def spec(self, preset_source: str) -> PlacementSpec:
        return load_spec(
            preset_source,
            self.spec_file,
            survival=self.goal,
            super_regions=None if self.super_regions else False,
            placement_restricted=True if self.placement_restricted else None,
        )


@dataclass(frozen=True)
class Probe:
    """What the controller learned from one server: is it a standby, and how much WAL has it received."""

    in_recovery: bool
    lsn: int  # received-and-flushed WAL for a standby, current WAL for a primary


@dataclass(frozen=True)
class Decision:
    promote: str | None
    reason: str
    safe_lsn: int | None = None


# --- layout ------------------------------------------------------------------------------------------------


def app_name(server: str) -> str:
    """The standby's application_name (what synchronous_standby_names lists)."""
    return server.replace("-", "_")


def plan_survival(plan: LabPlan, spec: PlacementSpec) -> SurvivalLayout:
    """Add standbys, their links and the survival layout to a `multi` LabPlan (`plan.survival`).

    Links: `standby:<region>-><home>-a` from every region that hosts a member of a group to the group's
    primary (re-pointed at the new primary on failover), and `repl:<region>-><primary region>-a` from every
    region where a GLOBAL-table subscriber's data may be promoted.
    """
    if plan.topology != "multi":
        raise ValueError("survival goals need the multi topology: a primary per region to protect")
    preset = plan.preset
    servers: dict[str, SurvivalServer] = {}
    groups: dict[str, SurvivalGroup] = {}
    for home, primary in plan.servers.items():
        goal = spec.survival_of(home)
        allowed = list(spec.allowed_regions(home))
        members = [(primary.name, home, primary.port, "a")]
        if goal == "zone":
            members += [(f"{home}-{zone}", home, stable_port(), zone) for zone in ("b", "c")]
        else:
            members.append((f"{home}-b", home, stable_port(), "b"))
            members += [(f"{home}-in-{other}", other, stable_port(), None) for other in allowed if other != home]
        for name, region, port, zone in members:
            servers[name] = SurvivalServer(name, home, region, port, zone, app_name(name))
        groups[home] = SurvivalGroup(
            goal=goal,
            allowed=allowed,
            primary=primary.name,
            members=[m[0] for m in members],
            sync_rule="home" if goal == "zone" else "elsewhere",
        )

    existing = {link.name for link in plan.links}

    def add(purpose: str, src: str, server: SurvivalServer) -> None:
        link = new_link(purpose, src, server.name, server.region, server.port, preset, plan.scale)
        if link.name not in existing:
            existing.add(link.name)
            plan.links.append(link)

    for group in groups.values():
        primary = servers[group.primary]
        for region in dict.fromkeys(servers[m].region for m in group.members):
            add("standby", region, primary)
    publisher = servers[groups[preset.primary_region].primary]
    for home, group in groups.items():
        if home == preset.primary_region:
            continue
        for member in group.members:
            add("repl", servers[member].region, publisher)

    plan.survival = SurvivalLayout(
        goal=spec.survival,
        super_regions={name: list(members) for name, members in spec.super_regions.items()},
        super_region_survival=dict(spec.super_region_survival),
        placement_restricted=spec.placement_restricted,
        groups=groups,
        servers=servers,
        directory_regions=directory_regions(spec),
        server_settings=dict(SERVER_SETTINGS),
        pool_timeout_s=POOL_TIMEOUT_S,
    )
    return plan.survival


def stable_port() -> int:
    """A free port outside the ephemeral range: standbys bind theirs long after it is chosen (see movr.lab.ports)."""
    return free_port()


def directory_regions(spec: PlacementSpec) -> list[str] | None:
    """Where username-directory entries may live without leaving any user's allowed regions.

    The directory is homed by a hash of the name, whatever the user's city, so an entry may only go to a
    region allowed for *every* city: the intersection of all allowed-region sets. None when that is every
    region (no narrowing), or when it is empty - then no placement domiciles the directory, and the audit
    says so (PLACEMENT RESTRICTED, disjoint super regions).
    """
    allowed = set(spec.regions)
    for region in spec.regions:
        allowed &= set(spec.allowed_regions(region))
    if not allowed or allowed == set(spec.regions):
        return None
    return sorted(allowed)


# --- synchronous standbys ----------------------------------------------------------------------------------


def sync_members(layout: SurvivalLayout, group: str, primary: str) -> list[str]:
    """The standbys a commit of `group` waits for (one of them) while `primary` is its primary."""
    info = layout.groups[group]
    servers = layout.servers
    others = [m for m in info.members if m != primary]
    if info.sync_rule == "home":
        return [m for m in others if servers[m].region == group]
    here = servers[primary].region
    return [m for m in others if servers[m].region != here]


def sync_standby_names(layout: SurvivalLayout, group: str, primary: str) -> str:
    members = sync_members(layout, group, primary)
    names = ", ".join(f'"{layout.servers[m].app_name}"' for m in members)
    return f"ANY {QUORUM} ({names})"


def commit_wait_ms(
    layout: SurvivalLayout, preset: Preset, group: str, primary: str, lost: Iterable[str] = ()
) -> float | None:
    """The RTT (ms, unscaled) a commit of `group` waits for: to its nearest synchronous standby still up.

    None when every synchronous standby is lost: commits then wait until one is back.
    """
    lost = set(lost)
    here = layout.servers[primary].region
    rtts = [
        preset.rtt_ms(here, layout.servers[m].region) for m in sync_members(layout, group, primary) if m not in lost
    ]
    return min(rtts) if rtts else None


# --- failover ----------------------------------------------------------------------------------------------


def choose_promotion(
    layout: SurvivalLayout, preset: Preset, group: str, primary: str, probes: Mapping[str, Probe | None]
) -> Decision:
    """Which standby of `group` to promote now that `primary` is lost, or None and why not (see module doc).

    `probes` maps members to what they answered (None: unreachable). Among eligible standbys the home region
    wins, then the region nearest home (reads and writes stay as local as they can), then the name.
    """
    sync = sync_members(layout, group, primary)
    reachable = {
        name: probe
        for name, probe in probes.items()
        if probe is not None and probe.in_recovery and name != primary and name in layout.groups[group].members
    }
    missing = [m for m in sync if m not in reachable]
    if len(missing) > QUORUM - 1:
        return Decision(
            None,
            f"cannot prove which standby holds every acknowledged commit: synchronous standby(s) "
            f"{', '.join(missing)} unreachable (commits waited for {QUORUM} of {', '.join(sync) or 'none'})",
        )
    safe = max((reachable[m].lsn for m in sync), default=0)
    eligible = [name for name, probe in reachable.items() if probe.lsn >= safe]
    if not eligible:  # cannot happen: the most advanced synchronous member is eligible by definition
        return Decision(None, "no standby has every acknowledged commit", safe)
    chosen = min(eligible, key=lambda name: promotion_preference(layout, preset, group, name))
    lsn = reachable[chosen].lsn
    return Decision(
        chosen,
        f"{chosen} ({layout.servers[chosen].region}) has every acknowledged commit: received {format_lsn(lsn)}, "
        f"synchronous standbys reached {format_lsn(safe)}",
        safe,
    )


def promotion_preference(layout: SurvivalLayout, preset: Preset, group: str, name: str) -> tuple[int, float, str]:
    """Among standbys that hold every acknowledged commit: the home region first, then the nearest to home."""
    region = layout.servers[name].region
    return (0 if region == group else 1, preset.rtt_ms(group, region), name)


def parse_lsn(text: str | None) -> int:
    if not text:
        return 0
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# --- what a goal promises ----------------------------------------------------------------------------------
# One statement of the promises, for the failover drill's verdict (movr.bench.failover) and the console's
# predictions (movr.lab.console): what the goals say must happen when servers are lost.


@dataclass(frozen=True)
class Promise:
    """What the survival goals promise when some servers are lost.

    `fail_over`: groups whose primary is lost and whose goal survives that: a standby takes over, writes
    resume, nothing acknowledged is lost. `unavailable`: groups whose goal does not survive the fault (zone
    survival, its region lost): they wait for the heal, by design - the article's trade.
    """

    fail_over: list[str]
    unavailable: list[str]


def lost_servers(layout: SurvivalLayout, preset: Preset, kill: str) -> set[str]:
    """The servers a kill takes: every server running in a killed region, or the one server named."""
    if kill in preset.regions:
        return {name for name, server in layout.servers.items() if server.region == kill}
    return {kill}


def promise(layout: SurvivalLayout, primaries: Mapping[str, str], lost: set[str], region_fault: bool) -> Promise:
    """What the goals promise when `lost` (a region's servers, or one server) go; `primaries`: each group's now."""
    fail_over: list[str] = []
    unavailable: list[str] = []
    for group, info in layout.groups.items():
        if primaries.get(group, info.primary) not in lost:
            continue
        if region_fault and info.goal != "region":
            unavailable.append(group)
        else:
            fail_over.append(group)
    return Promise(fail_over, unavailable)


def likely_successor(layout: SurvivalLayout, preset: Preset, group: str, lost: set[str]) -> str | None:
    """The standby the controller is expected to promote for `group` when `lost` go: its preference among the
    members left (which one it really promotes also depends on the WAL each holds: `choose_promotion`)."""
    left = [m for m in layout.groups[group].members if m not in lost]
    return min(left, key=lambda name: promotion_preference(layout, preset, group, name)) if left else None


def server_index(state: LabState) -> dict[str, SurvivalServer]:
    """Every database server of a lab, with its region (where it runs), group (whose data) and port."""
    layout = state.plan.survival
    if layout is not None:
        return layout.servers
    return {
        server.name: SurvivalServer(server.name, region, region, server.port, None, app_name(server.name))
        for region, server in state.plan.servers.items()
    }


def current_primaries(state: LabState) -> dict[str, str]:
    """Group (data region) -> the server that is its primary now."""
    base = {region: server.name for region, server in state.plan.servers.items()}
    return {**base, **(state.survival.primaries if state.survival is not None else {})}
