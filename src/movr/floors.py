"""THE physical floor (law 3): what any correct design must pay for a request, given where things are.

    floor = the client's round trip to the region that serves it
          + the WAN round trips any correct design needs x their RTT
          + one intra-region RTT per statement that stays in its region
          + the commit's wait for a synchronous standby (a survival goal)
          all scaled with the lab's delays, + deliberate local CPU work (password hashing)

Every experiment asks this module, so that "x times the floor" means the same everywhere:

- `step_floor`: a journey step (`movr bench journey`, `movr demo`, `movr bench throughput`). The WAN round
  trips it cannot avoid depend on the topology (`journey_wan_rtts`): none in `single` (app and data together)
  and in `multi` for data homed in the client's region; one per statement to the primary region in
  `hybrid`; and for a `multi` sign-up, one round trip to the farthest other region: global uniqueness
  without a global clock must hear from every region that may hold the name, in one parallel round (what
  CockroachDB's uniqueness check pays, and the lab's claims). A survival goal adds `journey_commit_ms`.
- `request_floor`: any request the lab's balancer forwarded (the lab console), from what its response says.
- `failover_floor`: a failover drill's request, against the data's primary *now* (it may have moved) and
  the nearest synchronous standby still alive.
- `Network` with `ycsb_floor_us`: the YCSB experiments' operations, whose protocols `YCSB_FLOORS` names.

RTTs come from the preset (unscaled ms); `scale` is the lab's delay factor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from movr.geo import Preset
from movr.lab.layout import SurvivalLayout
from movr.lab.survival import commit_wait_ms

# The journey's steps whose SQL commits a change. Not the HTTP method: a log-in (POST /sessions) only reads (the
# session is a signed token), and a log-out (DELETE /sessions) writes (it lists the session as ended).
JOURNEY_WRITES = ("sign up", "add vehicle", "start ride", "end ride", "log out")


@dataclass(frozen=True)
class Floor:
    """A request's floor (ms, scaled) in its parts."""

    client_rtt_ms: float  # the client's round trip to the serving region
    sql_ms: float  # the network time SQL cannot avoid: WAN and in-region round trips, commit waits
    cpu_ms: float  # deliberate local work
    wan_round_trips: int  # how many of SQL's round trips cross regions
    local_round_trips: int = 0  # and how many stay in the serving region

    @property
    def total_ms(self) -> float:
        return self.client_rtt_ms + self.sql_ms + self.cpu_ms


def floor(
    preset: Preset,
    scale: float,
    *,
    city: str,
    served_by: str,
    wan_rtts_ms: Sequence[float] = (),
    local_round_trips: int = 0,
    commit_ms: float = 0.0,
    cpu_ms: float = 0.0,
) -> Floor:
    """Law 3 from its parts: RTTs in unscaled ms (the preset's), the floor scaled."""
    sql = sum(wan_rtts_ms) + local_round_trips * preset.intra_region_rtt_ms + commit_ms
    return Floor(
        preset.client_rtt_ms(city, served_by) * scale, sql * scale, cpu_ms, len(wan_rtts_ms), local_round_trips
    )


def _statements_floor(
    preset: Preset,
    scale: float,
    city: str,
    served_by: str,
    statements: int,
    wan_rtts_ms: Sequence[float],
    *,
    commit_ms: float,
    cpu_ms: float,
    one_local_transaction: bool = False,
) -> Floor:
    """The floor of a request's `statements` given the WAN round trips they cannot avoid: each statement
    beyond those stays in its region, one intra-region RTT (`one_local_transaction`: one for them all)."""
    return floor(
        preset,
        scale,
        city=city,
        served_by=served_by,
        wan_rtts_ms=wan_rtts_ms,
        local_round_trips=1 if one_local_transaction else max(0, statements - len(wan_rtts_ms)),
        commit_ms=commit_ms,
        cpu_ms=cpu_ms,
    )


# --------------------------------------------------------------------------------------------------------
# The journey's steps


def served_from(group: str, layout: SurvivalLayout | None, primaries: Mapping[str, str] | None) -> str:
    """The region a region's data is served from now: its primary's (after a failover it may run in another
    region; `primaries`: group -> the server that is its primary now), else the region itself."""
    if layout is not None and primaries and group in primaries:
        return layout.servers[primaries[group]].region
    return group


def journey_wan_rtts(
    preset: Preset,
    topology: str,
    step: str,
    served_by: str,
    city: str,
    statements: int,
    directory_regions: Sequence[str] | None = None,
    *,
    layout: SurvivalLayout | None = None,
    primaries: Mapping[str, str] | None = None,
) -> list[float]:
    """The RTTs (ms, unscaled) of the WAN round trips this step cannot avoid in this topology.
    `directory_regions`: where names may be claimed (data domiciling); default every region. `layout` and
    `primaries`: where each region's data is served from now (`served_from`)."""
    primary = preset.primary_region
    if topology == "single":
        return []
    if topology == "hybrid":
        return [preset.rtt_ms(served_by, primary)] * statements if served_by != primary else []
    home = preset.region_of(city)
    data_region = served_from(home, layout, primaries)
    rtts = [preset.rtt_ms(served_by, data_region)] * statements if served_by != data_region else []
    if step == "sign up":
        others = uniqueness_regions(preset, served_by, home, directory_regions)
        now = {served_from(region, layout, primaries) for region in others} - {served_by}
        if now:
            rtts.append(max(preset.rtt_ms(served_by, region) for region in now))
    return rtts


def uniqueness_regions(
    preset: Preset, served_by: str, home: str, directory_regions: Sequence[str] | None = None
) -> list[str]:
    """The regions other than the serving and the home region that a sign-up must hear from."""
    return [r for r in (directory_regions or preset.region_names) if r not in (served_by, home)]


def journey_commit_ms(
    layout: SurvivalLayout | None,
    preset: Preset,
    step: str,
    served_by: str,
    city: str,
    primaries: Mapping[str, str] | None = None,
) -> float:
    """What a survival goal adds (ms, unscaled) to the floor of one journey step: its commits' wait for the
    nearest synchronous standby of each group it writes, beyond the WAN round trips already in the floor.
    `primaries`: each group's primary now (default: the layout's first).

    A one-server write waits once. A sign-up's round to the other regions commits a write in each, which
    waits for that region's quorum behind its WAN round trip: the round ends when the slowest answers.
    """
    if layout is None or step not in JOURNEY_WRITES:
        return 0.0
    now = primaries or {}

    def wait(group: str) -> float:
        return commit_wait_ms(layout, preset, group, now.get(group, layout.groups[group].primary)) or 0.0

    home = preset.region_of(city)
    others = uniqueness_regions(preset, served_by, home, layout.directory_regions) if step == "sign up" else []
    if not others:
        return wait(home)
    rtts = {r: preset.rtt_ms(served_by, served_from(r, layout, primaries)) for r in others}
    return wait(home) + max(rtts[r] + wait(r) for r in others) - max(rtts.values())


def step_floor(
    preset: Preset,
    scale: float,
    topology: str,
    step: str,
    *,
    city: str,
    served_by: str,
    statements: int,
    cpu_ms: float,
    layout: SurvivalLayout | None = None,
    primaries: Mapping[str, str] | None = None,
) -> Floor | None:
    """A journey step's floor; `layout`: the lab's survival layout (None without a survival goal), and
    `primaries` each group's primary now (after a failover its data is served from where that runs). None
    when the response did not say which region served it."""
    if served_by not in preset.regions:
        return None
    directories = layout.directory_regions if layout is not None else None
    wan = journey_wan_rtts(
        preset, topology, step, served_by, city, statements, directories, layout=layout, primaries=primaries
    )
    commit = journey_commit_ms(layout, preset, step, served_by, city, primaries)
    # A multi sign-up's statements beyond its round to the other regions are one local transaction.
    one_transaction = step == "sign up" and topology == "multi"
    return _statements_floor(
        preset,
        scale,
        city,
        served_by,
        statements,
        wan,
        commit_ms=commit,
        cpu_ms=cpu_ms,
        one_local_transaction=one_transaction,
    )


# --------------------------------------------------------------------------------------------------------
# Any request (the lab console's timeline)


def request_floor(
    preset: Preset,
    scale: float,
    topology: str,
    *,
    city: str,
    served_by: str,
    statements: int,
    write: bool,
    cpu_ms: float,
    data_regions: Sequence[str] = (),
    layout: SurvivalLayout | None = None,
    primaries: Mapping[str, str] | None = None,
) -> Floor | None:
    """The floor of any request the balancer forwarded, known only by what its response says: the journey
    step's rules (`journey_wan_rtts`) for data homed in the client's city, its primary where it is now
    (`primaries`: after a failover it may run elsewhere); a write that touched a region beyond the serving
    and the data's (a sign-up's claims) pays one parallel round, as long as its farthest region; a survival
    goal's write waits for the nearest synchronous standby. `data_regions` name data by its home region, as
    the app's `X-Movr-Data-Regions` does. None when the response did not say which region served it."""
    if served_by not in preset.regions or not preset.is_city(city):
        return None
    home = preset.region_of(city)
    wan: list[float] = []
    commit = 0.0
    if topology == "multi":
        now = primaries or {}
        data_region = served_from(home, layout, primaries)  # the app names data by its home region
        if data_region != served_by and statements:
            wan = [preset.rtt_ms(served_by, data_region)] * statements
        if write:
            others = {served_from(group, layout, primaries) for group in data_regions if group != home} - {
                served_by,
                data_region,
            }
            if others:  # one parallel round (a sign-up's claims): the farthest answers last
                wan.append(max(preset.rtt_ms(served_by, r) for r in others))
        if write and statements and layout is not None:
            commit = commit_wait_ms(layout, preset, home, now.get(home, layout.groups[home].primary)) or 0.0
    else:
        wan = journey_wan_rtts(preset, topology, "", served_by, city, statements)
    return _statements_floor(preset, scale, city, served_by, statements, wan, commit_ms=commit, cpu_ms=cpu_ms)


# --------------------------------------------------------------------------------------------------------
# A failover drill's requests


def failover_floor(
    preset: Preset,
    scale: float,
    *,
    city: str,
    home: str,
    served_by: str,
    statements: int,
    write: bool,
    cpu_ms: float,
    layout: SurvivalLayout,
    primaries: Mapping[str, str],
    lost: Iterable[str] = (),
) -> Floor | None:
    """The floor of a drill's request for data homed in `home`: one round trip per statement (at least one)
    to the server that is the data's primary now, if that runs in another region than the one that served
    the request, and for a write the commit's wait for the nearest synchronous standby still alive. None
    when the response did not say which region served it, or when no synchronous standby is left (commits
    then wait until one is back)."""
    if not served_by:
        return None
    primary = primaries[home]
    data_region = layout.servers[primary].region
    wan = [preset.rtt_ms(served_by, data_region)] * max(1, statements) if data_region != served_by else []
    wait = commit_wait_ms(layout, preset, home, primary, lost) if write else 0.0
    if wait is None:
        return None
    return floor(preset, scale, city=city, served_by=served_by, wan_rtts_ms=wan, commit_ms=wait, cpu_ms=cpu_ms)


# --------------------------------------------------------------------------------------------------------
# The YCSB experiments' operations (in µs: their histograms' unit)

YCSB_FLOORS = {
    "local": "intra-region RTT: one round trip to the client's own region's server (every variant, row homed locally)",
    "computed remote": "RTT(client region, row's home): the key names its home, so one round trip straight there",
    "default remote": (
        "intra-region RTT + RTT(client region, row's home): the local attempt misses, then every other region is "
        "searched at once and the first hit answers, so the row's home (not the farthest region) sets the time; "
        "a search that waited for every region would have the floor intra + max RTT to the other regions"
    ),
    "rehoming remote update": (
        "intra-region RTT + 3 x RTT(client region, row's home): local miss, parallel search, PREPARE TRANSACTION "
        "at the old home and here at once, COMMIT PREPARED at both at once"
    ),
    "rehoming remote read": "as default remote: the row's home at the time of the read",
    "insert default": (
        "max RTT(client region, other regions) + intra-region RTT: one parallel round trip claiming the key in "
        "every other region, then the local insert"
    ),
    "insert computed": "intra-region RTT: the key names its home (the client's region) and is unique there",
}


@dataclass(frozen=True)
class Network:
    """Round-trip times of a lab, in the scaled units every link and every floor uses."""

    preset: Preset
    scale: float

    @property
    def regions(self) -> list[str]:
        return self.preset.region_names

    def rtt_ms(self, a: str, b: str) -> float:
        """Scaled RTT between two regions; the scaled intra-region RTT when they are the same."""
        return self.preset.rtt_ms(a, b) * self.scale

    def rtt_us(self, a: str, b: str) -> int:
        return round(self.rtt_ms(a, b) * 1000)

    @property
    def intra_us(self) -> int:
        return round(self.preset.intra_region_rtt_ms * self.scale * 1000)

    def farthest_other_us(self, region: str) -> int:
        return max((self.rtt_us(region, other) for other in self.regions if other != region), default=0)

    def describe(self) -> dict[str, Any]:
        names = self.regions
        return {
            "intra_region_rtt_ms": self.preset.intra_region_rtt_ms,
            "rtt_ms": {f"{a}|{b}": self.preset.rtt_ms(a, b) for i, a in enumerate(names) for b in names[i + 1 :]},
            "scale": self.scale,
            "scaled_rtt_ms": {f"{a}|{b}": self.rtt_ms(a, b) for a in names for b in names},
        }

    def ycsb_floor_us(self, protocol: str, region: str, home: str) -> int:
        """The floor of one YCSB operation by a client in `region` on a row homed in `home`; `protocol` is
        how the variant reaches the row (see YCSB_FLOORS): "computed" (straight to the home the key names),
        "search" (locality-optimized: here first, then every other region at once), "rehome" (a remote
        update that moves the row here), "claim everywhere" (an insert claiming its key in every region),
        "local insert"."""
        intra = self.intra_us
        if protocol == "computed":
            return self.rtt_us(region, home)
        if protocol == "search":
            return intra if home == region else intra + self.rtt_us(region, home)
        if protocol == "rehome":
            return intra if home == region else intra + 3 * self.rtt_us(region, home)
        if protocol == "claim everywhere":
            return self.farthest_other_us(region) + intra
        if protocol == "local insert":
            return intra
        raise ValueError(f"unknown protocol {protocol!r}")
