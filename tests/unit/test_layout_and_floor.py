from __future__ import annotations

import pytest

from movr.bench.journey import StepResult, unavoidable_wan
from movr.geo import load_preset
from movr.lab.layout import plan_lab
from movr.store.regional import directory_region

GCP = load_preset("gcp-3")


def test_multi_has_a_server_per_region_and_a_link_per_app_region_and_server():
    plan = plan_lab(GCP, "multi", 1.0, "gcp-3")
    assert set(plan.servers) == set(GCP.region_names)
    app_links = [link for link in plan.links if link.name.startswith("app:")]
    assert len(app_links) == 9
    rome_to_us = plan.link("app", "europe-west1", "us-east1-a")
    assert rome_to_us.one_way_ms == 93 / 2 and rome_to_us.kind == "wan"
    local = plan.link("app", "europe-west1", "europe-west1-a")
    assert local.one_way_ms == 0.25 and local.kind == "local"
    repl = [link for link in plan.links if link.name.startswith("repl:")]
    assert {link.dst for link in repl} == {"us-east1-a"} and len(repl) == 2


@pytest.mark.parametrize(("topology", "apps", "servers"), [("single", 1, 1), ("hybrid", 3, 1), ("multi", 3, 3)])
def test_topologies(topology, apps, servers):
    plan = plan_lab(GCP, topology, 0.1, "gcp-3")
    assert len(plan.app_regions) == apps and len(plan.servers) == servers
    ports = [plan.balancer_port, plan.links_control_port, *plan.app_ports.values()]
    ports += [s.port for s in plan.servers.values()] + [link.listen_port for link in plan.links]
    assert len(ports) == len(set(ports)), "every process and link gets its own port"


def test_scale_multiplies_every_delay():
    plan = plan_lab(GCP, "multi", 0.1, "gcp-3")
    assert plan.link("app", "us-west1", "europe-west1-a").one_way_ms == pytest.approx(140 * 0.1 / 2)


def test_bad_topology_and_scale():
    with pytest.raises(ValueError, match="topology"):
        plan_lab(GCP, "star", 1.0, "gcp-3")
    with pytest.raises(ValueError, match="scale"):
        plan_lab(GCP, "multi", 0, "gcp-3")


def test_every_preset_lays_out():
    for name in ("gcp-3", "crdb-demo", "ycsb-3", "aws-eu-us"):
        preset = load_preset(name)
        plan = plan_lab(preset, "multi", 1.0, name)
        assert len(plan.servers) == len(preset.regions)


def test_unavoidable_wan_round_trips_per_topology():
    assert unavoidable_wan(GCP, "single", "start ride", "us-east1", "rome", "x", 1) == []
    assert unavoidable_wan(GCP, "hybrid", "start ride", "europe-west1", "rome", "x", 1) == [93]
    assert unavoidable_wan(GCP, "hybrid", "log out", "europe-west1", "rome", "x", 0) == []
    assert unavoidable_wan(GCP, "multi", "start ride", "europe-west1", "rome", "x", 1) == []
    local = next(f"u{n}" for n in range(999) if directory_region(GCP, f"u{n}") == "europe-west1")
    remote = next(f"u{n}" for n in range(999) if directory_region(GCP, f"u{n}") == "us-west1")
    assert unavoidable_wan(GCP, "multi", "sign up", "europe-west1", "rome", local, 2) == []
    assert unavoidable_wan(GCP, "multi", "sign up", "europe-west1", "rome", remote, 2) == [140, 140]


def test_directory_region_is_stable_and_spreads():
    names = [f"user{n}" for n in range(300)]
    homes = [directory_region(GCP, n) for n in names]
    assert homes == [directory_region(GCP, n) for n in names]
    assert {homes.count(r) for r in GCP.region_names} and min(homes.count(r) for r in GCP.region_names) > 60


def test_the_parts_of_a_steps_time_above_the_floor_add_up_to_it():
    step = StepResult(
        step="add vehicle",
        status=201,
        client_ms=26.0,
        statements=1,
        sql_ms=1.8,
        cpu_ms=0.0,
        served_by="europe-west1",
        data_regions=["europe-west1"],
        app_wan_round_trips=0,
        link_wan_round_trips=0,
        floor_ms=19.9,
        unavoidable_wan=0,
        app_ms=3.0,
        client_rtt_ms=19.4,
        sql_floor_ms=0.5,
    )
    parts = step.excess_parts()
    assert parts == pytest.approx({"sql": 1.3, "app": 1.2, "path": 3.6})
    assert sum(parts.values()) == pytest.approx(step.excess_ms)
