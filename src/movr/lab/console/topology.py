"""`GET /lab/api/topology`: what the lab is made of, from its state file and preset (no I/O beyond that).

Shapes: docs/console-api.md. RTTs of the preset are unscaled (the preset's milliseconds); the links'
are scaled as the links carry them, and `scale` says the factor.
"""

from __future__ import annotations

from typing import Any

from movr.lab.layout import link_target
from movr.lab.state import LabState
from movr.lab.survival import current_primaries, server_index


def super_region_of(state: LabState) -> dict[str, str]:
    """Region -> the super region it belongs to (the survival layout's, else the preset's)."""
    layout = state.plan.survival
    supers = layout.super_regions if layout is not None else state.preset.super_regions
    return {region: name for name, members in supers.items() for region in members}


def describe(state: LabState) -> dict[str, Any]:
    preset = state.preset
    plan = state.plan
    layout = plan.survival
    supers = super_region_of(state)
    regions = [
        {
            "name": name,
            "lat": region.location[0],
            "lon": region.location[1],
            "primary": name == preset.primary_region,
            "cities": list(region.cities),
            "app": name in plan.app_ports,
            "super_region": supers.get(name),
            "survival_goal": layout.groups[name].goal if layout is not None and name in layout.groups else None,
        }
        for name, region in preset.regions.items()
    ]
    cities = [
        {"name": city, "region": preset.region_of(city), "lat": lat, "lon": lon}
        for city, (lat, lon) in ((c, preset.city_locations[c]) for c in preset.cities)
    ]
    names = preset.region_names
    primaries = current_primaries(state)
    servers = [
        {
            "name": name,
            "region": info.region,
            "group": info.group,
            "role": "primary" if primaries.get(info.group) == name else "standby",
            "zone": info.zone,
        }
        for name, info in server_index(state).items()
    ]
    server_regions = plan.server_regions()
    links = [
        {
            "name": spec.name,
            "purpose": link_target(spec.name)[0],
            "from": spec.src,
            "to": spec.dst,
            "to_region": server_regions.get(spec.dst),
            "kind": spec.kind,
            "rtt_ms": round(2 * spec.one_way_ms, 3),
        }
        for spec in plan.links
    ]
    survival = None
    if layout is not None:
        survival = {
            "goal": layout.goal,
            "placement_restricted": layout.placement_restricted,
            "super_regions": layout.super_regions,
            "groups": {
                group: {"goal": info.goal, "allowed": info.allowed, "members": info.members}
                for group, info in layout.groups.items()
            },
        }
    return {
        "preset": preset.name,
        "topology": state.topology,
        "scale": state.scale,
        "primary_region": preset.primary_region,
        "balancer_url": state.balancer_url,
        "regions": regions,
        "cities": cities,
        "rtt_ms": {a: {b: preset.rtt_ms(a, b) for b in names} for a in names},
        "client_rtt_ms": {city: {r: round(preset.client_rtt_ms(city, r), 3) for r in names} for city in preset.cities},
        "servers": servers,
        "app_servers": [
            {"name": f"app-{region}", "region": region, "port": port} for region, port in plan.app_ports.items()
        ],
        "links": links,
        "survival": survival,
        "super_regions": {name: list(members) for name, members in preset.super_regions.items()},
    }
