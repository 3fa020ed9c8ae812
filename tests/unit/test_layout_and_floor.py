from __future__ import annotations

import pytest

from movr.bench.journey import StepResult
from movr.floors import Network, failover_floor, floor, journey_wan_rtts, step_floor
from movr.geo import load_preset
from movr.lab.layout import plan_lab
from movr.lab.survival import SurvivalOptions, plan_survival

GCP = load_preset("gcp-3")
AWS = load_preset("aws-eu-us")


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
    assert journey_wan_rtts(GCP, "single", "start ride", "us-east1", "rome", 1) == []
    assert journey_wan_rtts(GCP, "hybrid", "start ride", "europe-west1", "rome", 1) == [93]
    assert journey_wan_rtts(GCP, "hybrid", "log out", "europe-west1", "rome", 0) == []
    assert journey_wan_rtts(GCP, "multi", "start ride", "europe-west1", "rome", 1) == []
    # A log-in of a user who lives elsewhere: one round trip to the user's home region.
    assert journey_wan_rtts(GCP, "multi", "log in", "europe-west1", "new york", 1) == [93]
    # A sign-up hears from every other region in one parallel round: as long as the farthest (us-west1).
    assert journey_wan_rtts(GCP, "multi", "sign up", "europe-west1", "rome", 2) == [140]
    assert journey_wan_rtts(GCP, "multi", "sign up", "us-east1", "new york", 2) == [93]
    # Data domiciling narrows the regions that may hold a name, and so the round.
    assert journey_wan_rtts(GCP, "multi", "sign up", "europe-west1", "rome", 2, ["europe-west1", "us-east1"]) == [93]


# --- the floor model (law 3): values worked out by hand from the gcp-3 and aws-eu-us latency matrices ------


def test_a_floor_is_the_clients_round_trip_plus_sqls_unavoidable_network_scaled_plus_local_work():
    parts = floor(GCP, 0.5, city="rome", served_by="us-east1", wan_rtts_ms=[93, 93], local_round_trips=3, cpu_ms=7)
    client = GCP.client_rtt_ms("rome", "us-east1")
    assert parts.client_rtt_ms == pytest.approx(client * 0.5)
    assert parts.sql_ms == pytest.approx((2 * 93 + 3 * GCP.intra_region_rtt_ms) * 0.5)
    assert parts.cpu_ms == 7 and parts.wan_round_trips == 2
    assert parts.total_ms == pytest.approx(client * 0.5 + (186 + 3 * GCP.intra_region_rtt_ms) * 0.5 + 7)


@pytest.mark.parametrize(
    ("topology", "served_by", "statements", "wan"),
    [
        ("single", "us-east1", 1, []),  # app and data together: the client's round trip is all the distance
        ("hybrid", "europe-west1", 2, [93, 93]),  # every statement to the primary region
        ("multi", "europe-west1", 1, []),  # a ride is homed in the rider's region
        ("multi", "us-east1", 1, [93]),  # served far from the data's home: one WAN trip per statement
    ],
)
def test_a_journey_steps_floor_per_topology(topology, served_by, statements, wan):
    got = step_floor(
        GCP,
        0.1,
        topology,
        "start ride",
        city="rome",
        served_by=served_by,
        statements=statements,
        cpu_ms=0,
    )
    assert got is not None and got.wan_round_trips == len(wan)
    local = (statements - len(wan)) * GCP.intra_region_rtt_ms
    assert got.total_ms == pytest.approx((GCP.client_rtt_ms("rome", served_by) + sum(wan) + local) * 0.1)


@pytest.mark.parametrize(("city", "served_by", "farthest"), [("rome", "europe-west1", 140), ("boston", "us-east1", 93)])
def test_sign_up_costs_one_round_trip_to_the_farthest_other_region_plus_one_local_transaction(
    city, served_by, farthest
):
    got = step_floor(GCP, 1, "multi", "sign up", city=city, served_by=served_by, statements=4, cpu_ms=5)
    assert got is not None and got.wan_round_trips == 1
    expected = GCP.client_rtt_ms(city, served_by) + 5 + farthest + GCP.intra_region_rtt_ms
    assert got.total_ms == pytest.approx(expected)


def test_a_survival_goal_makes_a_sign_ups_round_as_slow_as_its_slowest_commit():
    plan = plan_lab(AWS, "multi", 1.0, AWS.name)
    layout = plan_survival(plan, SurvivalOptions("region", super_regions=False).spec(AWS.name))
    args = {"city": "new york", "served_by": "us-east-2", "statements": 4, "cpu_ms": 0}
    plain = step_floor(AWS, 1, "multi", "sign up", **args)
    survived = step_floor(AWS, 1, "multi", "sign up", layout=layout, **args)
    assert plain is not None and survived is not None
    # At least the home's own commit wait (Frankfurt, 88 ms), and never less than a start ride's.
    assert survived.total_ms - plain.total_ms >= 88


def test_a_step_without_a_serving_region_has_no_floor():
    assert step_floor(GCP, 1, "multi", "log in", city="rome", served_by="", statements=1, cpu_ms=0) is None


def test_a_survival_goal_adds_the_commit_wait_to_writes():
    plan = plan_lab(AWS, "multi", 1.0, AWS.name)
    layout = plan_survival(plan, SurvivalOptions("region", super_regions=False).spec(AWS.name))
    args = {"city": "new york", "served_by": "us-east-2", "statements": 1, "cpu_ms": 0}
    plain = step_floor(AWS, 1, "multi", "start ride", **args)
    write = step_floor(AWS, 1, "multi", "start ride", layout=layout, **args)
    read = step_floor(AWS, 1, "multi", "view rides", layout=layout, **args)
    assert plain is not None and write is not None and read is not None
    assert write.total_ms - plain.total_ms == pytest.approx(88)  # the nearest synchronous standby: Frankfurt
    assert read.total_ms == pytest.approx(plain.total_ms)


def test_a_failover_requests_floor_follows_the_datas_primary_now():
    plan = plan_lab(AWS, "multi", 1.0, AWS.name)
    layout = plan_survival(plan, SurvivalOptions("region", super_regions=False).spec(AWS.name))
    args = {"city": "stockholm", "home": "eu-central-1", "served_by": "eu-central-1", "cpu_ms": 0, "layout": layout}
    client = AWS.client_rtt_ms("stockholm", "eu-central-1")
    at_home = {"eu-central-1": "eu-central-1-a"}
    moved = {"eu-central-1": "eu-central-1-in-eu-west-3"}  # promoted in Paris after Frankfurt was lost
    read = failover_floor(AWS, 1, statements=1, write=False, primaries=at_home, **args)
    assert read is not None and read.total_ms == pytest.approx(client)  # no intra-region trip in this model
    far = failover_floor(AWS, 1, statements=0, write=False, primaries=moved, **args)
    assert far is not None and far.wan_round_trips == 1  # at least one trip to the data
    assert far.total_ms == pytest.approx(client + AWS.rtt_ms("eu-central-1", "eu-west-3"))
    write = failover_floor(AWS, 1, statements=1, write=True, primaries=at_home, **args)
    assert write is not None and write.total_ms == pytest.approx(client + 9)  # Frankfurt's nearest: Paris
    alone = {"eu-central-1-in-eu-west-3", "eu-central-1-in-us-east-2"}
    assert failover_floor(AWS, 1, statements=1, write=True, primaries=at_home, lost=alone, **args) is None


def test_ycsb_floors_by_protocol():
    network = Network(GCP, 0.5)
    intra, far = network.intra_us, network.rtt_us("us-east1", "us-west1")
    assert intra == round(GCP.intra_region_rtt_ms * 500) and far == round(GCP.rtt_ms("us-east1", "us-west1") * 500)
    assert network.ycsb_floor_us("computed", "us-east1", "us-west1") == far
    assert network.ycsb_floor_us("search", "us-east1", "us-east1") == intra
    assert network.ycsb_floor_us("search", "us-east1", "us-west1") == intra + far
    assert network.ycsb_floor_us("rehome", "us-east1", "us-west1") == intra + 3 * far
    assert network.ycsb_floor_us("rehome", "us-east1", "us-east1") == intra
    farthest = max(network.rtt_us("us-east1", r) for r in GCP.region_names if r != "us-east1")
    assert network.ycsb_floor_us("claim everywhere", "us-east1", "us-east1") == farthest + intra
    assert network.ycsb_floor_us("local insert", "us-east1", "us-east1") == intra
    with pytest.raises(ValueError, match="protocol"):
        network.ycsb_floor_us("teleport", "us-east1", "us-east1")


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
