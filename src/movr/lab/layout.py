"""Lay a lab out from a placement spec: which servers, app servers and links a topology needs.

Topologies (ARCHITECTURE.md): `single` — app and database in the primary region; `hybrid` — an app in
every region, the database in the primary region only; `multi` — an app and a database primary in
every region, rows homed by city.

Every connection to a database server passes a link named for its purpose, its source region and its
target server: `app:<region>-><server>` for app servers, `repl:<region>-><server>` for replication.
Keeping them apart lets tests count a journey's round trips without replication's keep-alives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from movr.geo import Preset
from movr.lab.links import LinkSpec
from movr.lab.ports import free_port

Topology = Literal["single", "hybrid", "multi"]
TOPOLOGIES: tuple[Topology, ...] = ("single", "hybrid", "multi")


@dataclass
class ServerPlan:
    name: str
    region: str
    port: int


@dataclass
class LabPlan:
    topology: Topology
    preset_source: str
    scale: float
    servers: dict[str, ServerPlan]  # by region
    app_regions: list[str]
    links: list[LinkSpec]
    app_ports: dict[str, int]
    balancer_port: int
    links_control_port: int
    extra: dict = field(default_factory=dict)

    def link(self, purpose: str, src: str, server: str) -> LinkSpec:
        return next(spec for spec in self.links if spec.name == link_name(purpose, src, server))

    def as_dict(self) -> dict:
        data = asdict(self)
        data["links"] = [spec.to_dict() for spec in self.links]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LabPlan:
        """The plan back from a state file (`as_dict`), e.g. to start an app server again after a drill."""
        return cls(
            **{
                **data,
                "servers": {region: ServerPlan(**server) for region, server in data["servers"].items()},
                "links": [LinkSpec.from_dict(link) for link in data["links"]],
                "extra": dict(data.get("extra", {})),
            }
        )


def link_name(purpose: str, src: str, server: str) -> str:
    return f"{purpose}:{src}->{server}"


def plan_lab(preset: Preset, topology: Topology, scale: float, preset_source: str) -> LabPlan:
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}: choose one of {', '.join(TOPOLOGIES)}")
    if scale <= 0:
        raise ValueError("--scale must be positive")
    primary = preset.primary_region
    server_regions = preset.region_names if topology == "multi" else [primary]
    app_regions = [primary] if topology == "single" else preset.region_names
    servers = {region: ServerPlan(f"{region}-a", region, free_port()) for region in server_regions}

    links: list[LinkSpec] = []

    def add(purpose: str, src: str, server: ServerPlan) -> None:
        links.append(
            LinkSpec(
                name=link_name(purpose, src, server.name),
                listen_port=free_port(),
                target_port=server.port,
                one_way_ms=preset.rtt_ms(src, server.region) * scale / 2,
                kind="local" if src == server.region else "wan",
                src=src,
                dst=server.name,
            )
        )

    for region in app_regions:
        for server in servers.values():
            add("app", region, server)
    if topology == "multi":
        primary_server = servers[primary]
        for region in server_regions:
            if region != primary:
                add("repl", region, primary_server)
    return LabPlan(
        topology=topology,
        preset_source=preset_source,
        scale=scale,
        servers=servers,
        app_regions=app_regions,
        links=links,
        app_ports={region: free_port() for region in app_regions},
        balancer_port=free_port(),
        links_control_port=free_port(),
    )
