"""The lab console's faults without a lab: reading a request into a fault (and refusing bad ones), what the
survival goal predicts for it (the promises the failover drill judges by), what it observes afterwards, and the
floor of any forwarded request."""

from __future__ import annotations

from pathlib import Path

import pytest

from movr.floors import request_floor, step_floor
from movr.geo import load_preset
from movr.lab.console.faults import Fault, Refused, check, crossing_links, parse
from movr.lab.console.observations import Observations
from movr.lab.console.predictions import cities_text, city_name, predict
from movr.lab.layout import plan_lab
from movr.lab.state import LabState, SurvivalRecord
from movr.lab.survival import SurvivalOptions, likely_successor, lost_servers, plan_survival, promise

AWS = load_preset("aws-eu-us")
GCP = load_preset("gcp-3")


def lab(tmp_path: Path, preset=GCP, topology: str = "multi", goal: str | None = None, lost=()) -> LabState:
    """A lab's state as its file says, for a lab that is not running (nothing here starts one)."""
    plan = plan_lab(preset, topology, 1.0, preset.name)  # type: ignore[arg-type]
    record = None
    if goal is not None:
        layout = plan_survival(plan, SurvivalOptions(goal, super_regions=False).spec(preset.name))  # type: ignore[arg-type]
        record = SurvivalRecord(primaries={g: info.primary for g, info in layout.groups.items()})
    if lost:
        record = record or SurvivalRecord(primaries={})
        record.lost_regions = list(lost)
    return LabState(run_dir=tmp_path, plan=plan, survival=record)


# --- reading a fault -------------------------------------------------------------------------------------------


def test_a_fault_names_a_region_a_server_a_pair_or_all(tmp_path):
    state = lab(tmp_path)
    assert parse({"action": "kill", "target": "europe-west1"}, state) == Fault("kill", "region", "europe-west1")
    assert parse({"action": "kill", "target": "us-east1-a"}, state).kind == "server"
    pair = parse({"action": "partition", "target": ["us-east1", "europe-west1"]}, state)
    assert pair == Fault("partition", "pair", ("us-east1", "europe-west1"))
    assert parse({"action": "delay", "target": ["us-east1", "us-west1"], "delay_ms": 50}, state).delay_ms == 50.0
    assert parse({"action": "heal", "target": "all"}, state).kind == "all"
    assert parse({"action": "heal", "target": ["us-east1", "us-west1"]}, state).as_dict()["target"] == [
        "us-east1",
        "us-west1",
    ]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"action": "kill", "target": "mars"}, 404),
        ({"action": "partition", "target": ["us-east1", "mars"]}, 404),
        ("kill europe-west1", 400),
        ({"action": "explode", "target": "us-east1"}, 400),
        ({"target": "us-east1"}, 400),
        ({"action": "kill"}, 400),
        ({"action": "kill", "target": ["us-east1", "us-west1"]}, 400),
        ({"action": "kill", "target": "all"}, 400),
        ({"action": "partition", "target": "us-east1"}, 400),
        ({"action": "partition", "target": ["us-east1", "us-east1"]}, 400),
        ({"action": "partition", "target": ["us-east1", "us-west1", "europe-west1"]}, 400),
        ({"action": "delay", "target": ["us-east1", "us-west1"]}, 400),
        ({"action": "delay", "target": ["us-east1", "us-west1"], "delay_ms": 0}, 400),
        ({"action": "delay", "target": ["us-east1", "us-west1"], "delay_ms": 10_000}, 400),
        ({"action": "delay", "target": ["us-east1", "us-west1"], "delay_ms": True}, 400),
        ({"action": "heal", "target": 7}, 400),
    ],
)
def test_bad_faults_are_refused_with_a_client_error(tmp_path, body, status):
    with pytest.raises(Refused) as refused:
        parse(body, lab(tmp_path))
    assert refused.value.status == status and refused.value.message


def test_a_second_kill_and_a_second_partition_conflict(tmp_path):
    state = lab(tmp_path, lost=["europe-west1"])
    with pytest.raises(Refused) as refused:
        check(Fault("kill", "region", "europe-west1"), state)
    assert refused.value.status == 409 and "already down" in refused.value.message
    check(Fault("kill", "region", "us-east1"), state)  # another region may still go
    assert state.survival is not None
    state.survival.partitions = [["europe-west1", "us-east1"]]
    with pytest.raises(Refused):
        check(Fault("partition", "pair", ("us-east1", "europe-west1")), state)


def test_the_links_between_two_regions_are_those_whose_ends_are_there(tmp_path):
    links = crossing_links(lab(tmp_path), ("us-east1", "europe-west1"))
    assert sorted(links) == [
        "app:europe-west1->us-east1-a",
        "app:us-east1->europe-west1-a",
        "repl:europe-west1->us-east1-a",
    ]
    assert crossing_links(lab(tmp_path, topology="single"), ("us-west1", "europe-west1")) == []


# --- predictions ---------------------------------------------------------------------------------------------


def test_region_survival_predicts_a_failover_to_the_nearest_region_and_zone_survival_an_outage(tmp_path):
    region = predict(Fault("kill", "region", "eu-central-1"), lab(tmp_path, AWS, goal="region"))
    assert "Stockholm" in region and "move to eu-west-3 within a few seconds" in region
    assert "nothing acknowledged is lost" in region
    zone = predict(Fault("kill", "region", "eu-west-3"), lab(tmp_path, AWS, goal="zone"))
    assert "Dublin" in zone and "become unavailable" in zone and "zone survival" in zone


def test_a_lost_primary_server_fails_over_in_its_region_and_a_standby_changes_nothing(tmp_path):
    state = lab(tmp_path, AWS, goal="zone")
    primary = predict(Fault("kill", "server", "us-east-2-a"), state)
    assert "us-east-2-b (us-east-2) takes over" in primary
    assert "Nothing changes for clients" in predict(Fault("kill", "server", "us-east-2-c"), state)


def test_without_a_survival_goal_the_data_waits_for_the_heal(tmp_path):
    multi = predict(Fault("kill", "region", "europe-west1"), lab(tmp_path))
    assert multi.startswith("Amsterdam, Paris and Rome become unavailable") and "go to us-east1" in multi
    hybrid = lab(tmp_path, topology="hybrid")
    assert predict(Fault("kill", "region", "us-east1"), hybrid).startswith("Every city becomes unavailable")
    assert "served by the app in us-east1" in predict(Fault("kill", "region", "europe-west1"), hybrid)
    assert "Nothing changes" in predict(Fault("kill", "region", "europe-west1"), lab(tmp_path, topology="single"))


def test_partitions_delays_and_heals_are_predicted_too(tmp_path):
    state = lab(tmp_path)
    assert "3 link(s) between us-east1 and europe-west1 go down" in predict(
        Fault("partition", "pair", ("us-east1", "europe-west1")), state
    )
    assert "takes 80 ms longer" in predict(Fault("delay", "pair", ("us-east1", "europe-west1"), 80.0), state)
    assert "come back up" in predict(Fault("heal", "pair", ("us-east1", "europe-west1")), state)
    assert "routes Amsterdam, Paris and Rome home" in predict(Fault("heal", "region", "europe-west1"), state)


def test_the_promise_is_the_one_the_failover_drill_judges_by(tmp_path):
    state = lab(tmp_path, AWS, goal="region")
    layout = state.plan.survival
    assert layout is not None
    lost = lost_servers(layout, AWS, "eu-central-1")
    promised = promise(layout, state.survival.primaries, lost, region_fault=True)  # type: ignore[union-attr]
    assert promised.fail_over == ["eu-central-1"] and promised.unavailable == []
    assert likely_successor(layout, AWS, "eu-central-1", lost) == "eu-central-1-in-eu-west-3"
    # A server fault under zone survival fails over; a region fault is unavailable by design.
    zone = lab(tmp_path, AWS, goal="zone").plan.survival
    assert zone is not None
    before = {g: info.primary for g, info in zone.groups.items()}
    assert promise(zone, before, {"eu-west-3-a"}, region_fault=False).fail_over == ["eu-west-3"]
    assert promise(zone, before, lost_servers(zone, AWS, "eu-west-3"), region_fault=True).unavailable == ["eu-west-3"]


def test_cities_are_named_as_a_sentence_names_them():
    assert city_name("washington dc") == "Washington DC" and city_name("st louis") == "St Louis"
    assert cities_text(["rome"]) == "Rome"
    assert cities_text(["a", "b", "c", "d", "e", "f"]) == "A, B, C and 3 more cities"


# --- observations ----------------------------------------------------------------------------------------------


def request(i: int, at: float, *, home="europe-west1", status=200, write=True, rerouted=False) -> dict:
    return {"id": i, "time": at, "home_region": home, "status": status, "write": write, "rerouted": rerouted}


def test_failover_is_the_first_served_write_of_the_hit_region_after_the_fault():
    observations = Observations()
    observation = observations.start(
        {"action": "kill", "kind": "region", "target": "x"}, 100.0, "p", ["europe-west1"], 1
    )
    traffic = [
        request(1, 99.0),  # counted before the fault began: skipped
        request(2, 100.5, status=503, rerouted=True),
        request(3, 101.0, home="us-east1"),  # another region's write says nothing about this one
        request(4, 102.0, write=False, rerouted=True),
        request(5, 103.5, rerouted=True),
        request(6, 104.0, status=500),
    ]
    failovers = [{"group": "europe-west1", "new": "b", "detected_at": 101.0, "routed_at": 103.0}]
    [shown] = observations.update(traffic, failovers, now=104.5)
    assert shown["failover_s"] == 3.5 and shown["failover_from"] == "requests"
    assert shown["controller_failovers"] == [{"group": "europe-west1", "promoted": "b", "after_s": 3.0}]
    assert (shown["requests"], shown["errors"], shown["rerouted"], shown["settled"]) == (5, 2, 3, True)
    assert observations.oldest_seen(104.5) is None and observation.id == 1


def test_without_requests_the_controller_times_the_failover_and_an_outage_settles_late():
    observations = Observations()
    observations.start({"action": "kill", "kind": "region", "target": "x"}, 100.0, "p", ["europe-west1"], 0)
    failovers = [{"group": "europe-west1", "new": "b", "detected_at": 101.0, "routed_at": 102.5}]
    [shown] = observations.update([], failovers, now=103.0)
    assert (shown["failover_s"], shown["failover_from"], shown["settled"]) == (2.5, "controller", False)
    assert observations.oldest_seen(103.0) == 0
    [late] = observations.update([], [], now=200.0)
    assert late["settled"]


# --- the floor of any request ---------------------------------------------------------------------------------


def test_a_requests_floor_is_the_journey_steps_floor_for_the_same_request():
    for topology in ("single", "hybrid", "multi"):
        for city, served_by in (("rome", "europe-west1"), ("new york", "us-east1")):
            ours = request_floor(
                GCP, 0.5, topology, city=city, served_by=served_by, statements=2, write=True, cpu_ms=1.0
            )
            theirs = step_floor(
                GCP,
                0.5,
                topology,
                "start ride",
                city=city,
                served_by=served_by,
                statements=2,
                cpu_ms=1.0,
            )
            assert ours is not None and theirs is not None
            assert ours.total_ms == pytest.approx(theirs.total_ms), (topology, city)


def test_a_request_served_far_from_its_data_pays_the_round_trips_to_it():
    home = request_floor(GCP, 1.0, "multi", city="rome", served_by="europe-west1", statements=2, write=False, cpu_ms=0)
    away = request_floor(GCP, 1.0, "multi", city="rome", served_by="us-east1", statements=2, write=False, cpu_ms=0)
    assert home is not None and away is not None
    assert away.wan_round_trips == 2 and home.wan_round_trips == 0
    assert away.sql_ms == pytest.approx(2 * GCP.rtt_ms("us-east1", "europe-west1"))
    # A write that also touched other regions (a sign-up's claims) pays one parallel round, to the farthest.
    signup = request_floor(
        GCP,
        1.0,
        "multi",
        city="rome",
        served_by="europe-west1",
        statements=3,
        write=True,
        cpu_ms=0,
        data_regions=["europe-west1", "us-west1", "us-east1"],
    )
    assert signup is not None and signup.wan_round_trips == 1
    assert signup.sql_ms == pytest.approx(GCP.rtt_ms("europe-west1", "us-west1") + 2 * GCP.intra_region_rtt_ms)
    assert request_floor(GCP, 1.0, "multi", city="rome", served_by="", statements=1, write=False, cpu_ms=0) is None


def test_after_a_failover_a_requests_floor_follows_the_data_to_where_it_runs_now(tmp_path):
    state = lab(tmp_path, AWS, goal="region")
    layout = state.plan.survival
    assert layout is not None
    moved = {**state.survival.primaries, "us-east-2": "us-east-2-in-eu-west-3"}  # type: ignore[union-attr]
    floor = request_floor(
        AWS,
        1.0,
        "multi",
        city="boston",
        served_by="eu-west-3",
        statements=1,
        write=True,
        cpu_ms=0,
        data_regions=["us-east-2"],  # the app names data by its home region, wherever it runs
        layout=layout,
        primaries=moved,
    )
    assert floor is not None and floor.wan_round_trips == 0
    # Commits now wait for the nearest synchronous standby of the new primary: eu-central-1's.
    assert floor.sql_ms == pytest.approx(AWS.intra_region_rtt_ms + AWS.rtt_ms("eu-west-3", "eu-central-1"))
