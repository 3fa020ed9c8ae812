"""Lay a lab out from a preset: which servers, app servers and links a topology needs — the typed plan.

Topologies (ARCHITECTURE.md): `single` — app and database in the primary region; `hybrid` — an app in
every region, the database in the primary region only; `multi` — an app and a database primary in
every region, rows homed by city. A *servers-only* plan (`plan_servers`) is `multi`'s servers without app
servers or balancer, with a link from every client region to every server: what the data-homing benchmarks
measure through.

Every connection to a database server passes a link named for its purpose, its source region and its
target server: `app:<region>-><server>` for app servers, `repl:<region>-><server>` for replication,
`standby:<region>-><server>` for a survival goal's standbys, `client:<region>-><server>` for benchmark
clients. Keeping them apart lets tests count a journey's round trips without replication's keep-alives.

The plan is what the state file keeps (`as_dict`/`from_dict`); the preset it was laid out from is parsed once
and travels with it (`LabPlan.preset`), named by `preset_source` for the processes the lab starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from movr.geo import Preset, load_preset
from movr.lab.links import LinkSpec
from movr.lab.ports import free_port

Topology = Literal["single", "hybrid", "multi"]
TOPOLOGIES: tuple[Topology, ...] = ("single", "hybrid", "multi")
Goal = Literal["zone", "region"]


@dataclass
class ServerPlan:
    name: str
    region: str
    port: int


@dataclass(frozen=True)
class AppSettings:
    """How each app server runs (`movr serve`): its WSGI server (granian: measurably shorter path than
    gunicorn's gthread worker, docs/lab.md), worker processes, and Python threads per worker (threads let
    requests waiting on a lost region not hold up the rest)."""

    workers: int = 2
    threads: int = 4
    server: Literal["granian", "gunicorn"] = "granian"


@dataclass
class SurvivalServer:
    """A database server of a survival lab: a group's primary or one of its standbys, wherever it runs now."""

    name: str
    group: str  # whose data: the home region of the rows it holds
    region: str  # where it runs
    port: int
    zone: str | None
    app_name: str  # its application_name, as synchronous_standby_names lists it


@dataclass
class SurvivalGroup:
    """A region's data: its original primary (`<region>-a`), its members and which of them a commit waits for."""

    goal: Goal
    allowed: list[str]
    primary: str  # as laid out; the primary *now* is in LabState.survival.primaries
    members: list[str]
    sync_rule: Literal["home", "elsewhere"]


@dataclass
class SurvivalLayout:
    """What a survival goal adds to a `multi` plan (movr.lab.survival lays it out)."""

    goal: Goal
    super_regions: dict[str, list[str]]
    super_region_survival: dict[str, str]
    placement_restricted: bool
    groups: dict[str, SurvivalGroup]
    servers: dict[str, SurvivalServer]
    directory_regions: list[str] | None
    server_settings: dict[str, str]
    pool_timeout_s: float

    def port(self, server: str) -> int:
        return self.servers[server].port

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SurvivalLayout:
        return cls(
            **{
                **data,
                "groups": {name: SurvivalGroup(**group) for name, group in data["groups"].items()},
                "servers": {name: SurvivalServer(**server) for name, server in data["servers"].items()},
            }
        )


@dataclass
class LabPlan:
    topology: Topology
    preset_source: str  # a preset name or TOML path: what the lab's processes are told to load
    scale: float
    servers: dict[str, ServerPlan]  # by region
    app_regions: list[str]
    links: list[LinkSpec]
    app_ports: dict[str, int]
    balancer_port: int | None  # None: a servers-only plan (no app servers, no balancer)
    links_control_port: int
    preset: Preset = field(repr=False, compare=False, kw_only=True)
    apps: AppSettings = field(default_factory=AppSettings, kw_only=True)
    survival: SurvivalLayout | None = field(default=None, kw_only=True)

    def link(self, purpose: str, src: str, server: str) -> LinkSpec:
        return next(spec for spec in self.links if spec.name == link_name(purpose, src, server))

    def link_by_name(self, name: str) -> LinkSpec:
        return next(spec for spec in self.links if spec.name == name)

    def replace_link(self, name: str, **changes: Any) -> None:
        """Change a link as the links process was told to (failover re-routing, a server's new port)."""
        self.links = [dataclasses.replace(spec, **changes) if spec.name == name else spec for spec in self.links]

    @property
    def serves_app(self) -> bool:
        """Does this lab run app servers and a balancer (every topology), or only servers and links?"""
        return self.balancer_port is not None

    def server_regions(self) -> dict[str, str]:
        """Every database server's name -> the region it runs in (primaries, and standbys of a survival goal)."""
        if self.survival is not None:
            return {name: server.region for name, server in self.survival.servers.items()}
        return {server.name: region for region, server in self.servers.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology,
            "preset_source": self.preset_source,
            "scale": self.scale,
            "servers": {region: dataclasses.asdict(server) for region, server in self.servers.items()},
            "app_regions": list(self.app_regions),
            "links": [spec.to_dict() for spec in self.links],
            "app_ports": dict(self.app_ports),
            "balancer_port": self.balancer_port,
            "links_control_port": self.links_control_port,
            "apps": dataclasses.asdict(self.apps),
            **({"survival": self.survival.as_dict()} if self.survival is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], preset: Preset | None = None) -> LabPlan:
        """The plan back from a state file (`as_dict`); its preset loaded once, here (or the one given)."""
        survival = data.get("survival")
        return cls(
            topology=data["topology"],
            preset_source=data["preset_source"],
            scale=float(data["scale"]),
            servers={region: ServerPlan(**server) for region, server in data["servers"].items()},
            app_regions=list(data["app_regions"]),
            links=[LinkSpec.from_dict(link) for link in data["links"]],
            app_ports=dict(data["app_ports"]),
            balancer_port=data.get("balancer_port"),
            links_control_port=int(data["links_control_port"]),
            preset=preset if preset is not None else load_preset(data["preset_source"]),
            apps=AppSettings(**data.get("apps", {})),
            survival=SurvivalLayout.from_dict(survival) if survival is not None else None,
        )


def link_name(purpose: str, src: str, server: str) -> str:
    return f"{purpose}:{src}->{server}"


def subscription_name(region: str) -> str:
    """The GLOBAL-table subscription (and replication slot) of `region`'s server."""
    return "movr_global_" + region.replace("-", "_")


def link_target(name: str) -> tuple[str, str, str]:
    """(purpose, source region, server the link was laid out for) of a link name `purpose:src->server`."""
    purpose, _, rest = name.partition(":")
    src, _, server = rest.partition("->")
    return purpose, src, server


def new_link(
    purpose: str, src: str, server: str, server_region: str, port: int, preset: Preset, scale: float
) -> LinkSpec:
    """A link from region `src` to a server in `server_region`, carrying half their scaled RTT each way."""
    return LinkSpec(
        name=link_name(purpose, src, server),
        listen_port=free_port(),
        target_port=port,
        one_way_ms=preset.rtt_ms(src, server_region) * scale / 2,
        kind="local" if src == server_region else "wan",
        src=src,
        dst=server,
    )


def _check(topology: str, scale: float) -> None:
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}: choose one of {', '.join(TOPOLOGIES)}")
    if scale <= 0:
        raise ValueError("--scale must be positive")


def _primaries(regions: list[str]) -> dict[str, ServerPlan]:
    return {region: ServerPlan(f"{region}-a", region, free_port()) for region in regions}


def plan_lab(
    preset: Preset, topology: Topology, scale: float, preset_source: str, apps: AppSettings | None = None
) -> LabPlan:
    _check(topology, scale)
    primary = preset.primary_region
    server_regions = preset.region_names if topology == "multi" else [primary]
    app_regions = [primary] if topology == "single" else preset.region_names
    servers = _primaries(server_regions)
    links = [
        new_link("app", region, server.name, server.region, server.port, preset, scale)
        for region in app_regions
        for server in servers.values()
    ]
    if topology == "multi":
        primary_server = servers[primary]
        links += [
            new_link("repl", region, primary_server.name, primary, primary_server.port, preset, scale)
            for region in server_regions
            if region != primary
        ]
    plan = _plan(preset, topology, scale, preset_source, servers, app_regions, links)
    plan.apps = apps or AppSettings()
    return plan


def plan_servers(preset: Preset, scale: float, preset_source: str) -> LabPlan:
    """A primary per region and a `client:` link from every region to every server; no apps, no balancer."""
    _check("multi", scale)
    servers = _primaries(preset.region_names)
    links = [
        new_link("client", region, server.name, server.region, server.port, preset, scale)
        for region in preset.region_names
        for server in servers.values()
    ]
    return _plan(preset, "multi", scale, preset_source, servers, [], links)


def _plan(
    preset: Preset,
    topology: Topology,
    scale: float,
    preset_source: str,
    servers: dict[str, ServerPlan],
    app_regions: list[str],
    links: list[LinkSpec],
) -> LabPlan:
    """A plan with a port for every process it names: an app server per app region, and a balancer only
    when there are app servers to balance."""
    app_ports = {region: free_port() for region in app_regions}
    balancer_port = free_port() if app_regions else None
    return LabPlan(
        topology,
        preset_source,
        scale,
        servers,
        app_regions,
        links,
        app_ports,
        balancer_port,
        free_port(),
        preset=preset,
    )
