"""Survival goals without servers: standby placement, synchronous quorums, the failover rule, write floors."""

from __future__ import annotations

import socket
import threading

import pytest
from click.testing import CliRunner

from movr.bench.failover.analysis import expectations, per_city
from movr.bench.failover.output import checks as failover_checks
from movr.bench.failover.riders import Sample
from movr.cli import main
from movr.floors import journey_commit_ms, step_floor
from movr.geo import load_preset
from movr.lab.layout import LabPlan, SurvivalLayout, plan_lab
from movr.lab.links import LinkSpec, run_links_in_thread
from movr.lab.survival import (
    Probe,
    SurvivalOptions,
    choose_promotion,
    commit_wait_ms,
    format_lsn,
    parse_lsn,
    plan_survival,
    sync_members,
    sync_standby_names,
)
from movr.placement.spec import SpecError

AWS = load_preset("aws-eu-us")
GCP = load_preset("gcp-3")


def layout_for(options: SurvivalOptions, preset=AWS, scale: float = 1.0) -> tuple[LabPlan, SurvivalLayout]:
    plan = plan_lab(preset, "multi", scale, preset.name)
    return plan, plan_survival(plan, options.spec(preset.name))


def test_zone_survival_puts_two_standbys_in_every_home_region_and_waits_for_one():
    _, layout = layout_for(SurvivalOptions("zone"))
    for region in AWS.region_names:
        group = layout.groups[region]
        assert group.members == [f"{region}-a", f"{region}-b", f"{region}-c"]
        assert {layout.servers[m].region for m in group.members} == {region}
        assert sync_members(layout, region, f"{region}-a") == [f"{region}-b", f"{region}-c"]
        assert commit_wait_ms(layout, AWS, region, f"{region}-a") == AWS.intra_region_rtt_ms
    names = sync_standby_names(layout, "eu-west-3", "eu-west-3-a")
    assert names == 'ANY 1 ("eu_west_3_b", "eu_west_3_c")'


def test_region_survival_waits_for_another_region_and_costs_the_nearest_rtt():
    _, layout = layout_for(SurvivalOptions("region", super_regions=False))
    group = layout.groups["us-east-2"]
    assert group.members == [
        "us-east-2-a",
        "us-east-2-b",
        "us-east-2-in-eu-central-1",
        "us-east-2-in-eu-west-3",
    ]
    # The in-region standby is asynchronous: a commit must reach another region (article 004).
    assert sync_members(layout, "us-east-2", "us-east-2-a") == ["us-east-2-in-eu-central-1", "us-east-2-in-eu-west-3"]
    assert commit_wait_ms(layout, AWS, "us-east-2", "us-east-2-a") == 88
    assert commit_wait_ms(layout, AWS, "eu-central-1", "eu-central-1-a") == 9
    # Losing eu-west-3 leaves eu-central-1's commits waiting for the US: the new floor.
    lost = {"eu-central-1-in-eu-west-3"}
    assert commit_wait_ms(layout, AWS, "eu-central-1", "eu-central-1-a", lost) == 100
    assert commit_wait_ms(layout, AWS, "eu-central-1", "eu-central-1-a", lost | {"eu-central-1-in-us-east-2"}) is None


def test_after_a_region_fails_over_commits_still_wait_for_a_region_other_than_the_new_primarys():
    _, layout = layout_for(SurvivalOptions("region", super_regions=False))
    new = "eu-central-1-in-eu-west-3"
    assert sync_members(layout, "eu-central-1", new) == [
        "eu-central-1-a",
        "eu-central-1-b",
        "eu-central-1-in-us-east-2",
    ]
    lost = {"eu-central-1-a", "eu-central-1-b"}
    assert commit_wait_ms(layout, AWS, "eu-central-1", new, lost) == 88  # eu-west-3 <-> us-east-2


def test_super_region_domiciles_standbys_and_gets_a_zone_goal():
    plan, layout = layout_for(SurvivalOptions("region"))
    europe = {"eu-central-1", "eu-west-3"}
    for region in europe:
        assert layout.groups[region].goal == "zone"  # two regions cannot survive a region failure
        assert set(layout.groups[region].allowed) == europe
        assert {layout.servers[m].region for m in layout.groups[region].members} <= europe
    us = layout.groups["us-east-2"]
    assert us.goal == "region" and set(us.allowed) == set(AWS.region_names)
    # Directory entries go only where every city's rows may go: Europe.
    assert layout.directory_regions == sorted(europe)
    # No link carries a European group's replication out of Europe.
    for link in plan.links:
        if link.name.startswith("standby:") and link.dst.startswith("eu-"):
            assert link.src in europe


def test_placement_restricted_keeps_every_replica_at_home():
    _, layout = layout_for(SurvivalOptions("zone", placement_restricted=True))
    for region, group in layout.groups.items():
        assert group.allowed == [region]
    assert layout.directory_regions is None  # no region is allowed for every city: the audit will say so
    with pytest.raises(SpecError, match="PLACEMENT RESTRICTED"):
        SurvivalOptions("region", super_regions=False, placement_restricted=True).spec("aws-eu-us")


def test_region_survival_needs_three_regions_in_a_super_region_unless_it_is_settled():
    spec = SurvivalOptions("region").spec("aws-eu-us")
    assert spec.super_region_survival == {"europe": "zone"}


def test_survival_needs_the_multi_topology():
    plan = plan_lab(GCP, "hybrid", 1.0, "gcp-3")
    with pytest.raises(ValueError, match="multi"):
        plan_survival(plan, SurvivalOptions("zone").spec("gcp-3"))


def test_standby_and_replication_links_carry_the_distance():
    plan, layout = layout_for(SurvivalOptions("region", super_regions=False), scale=0.1)
    link = next(x for x in plan.links if x.name == "standby:us-east-2->eu-central-1-a")
    assert link.one_way_ms == pytest.approx(100 * 0.1 / 2) and link.kind == "wan"
    local = next(x for x in plan.links if x.name == "standby:eu-central-1->eu-central-1-a")
    assert local.kind == "local"
    # A subscriber's data may be promoted anywhere: a repl link from every region, the primary's included.
    repl = {x.src for x in plan.links if x.name.startswith("repl:")}
    assert repl == set(AWS.region_names)
    ports = [x.listen_port for x in plan.links] + [s.port for s in layout.servers.values()]
    assert len(ports) == len(set(ports))


def test_plan_round_trips_through_the_state_file():
    plan, _ = layout_for(SurvivalOptions("zone"))
    again = LabPlan.from_dict(plan.as_dict())
    assert again.as_dict() == plan.as_dict()
    assert again == plan and again.survival == plan.survival and again.preset.name == plan.preset.name


# --- the failover rule -----------------------------------------------------------------------------------


def probes(**lsns: int | None) -> dict[str, Probe | None]:
    return {
        name.replace("_", "-"): None if lsn is None else Probe(in_recovery=True, lsn=lsn) for name, lsn in lsns.items()
    }


REGION = layout_for(SurvivalOptions("region", super_regions=False))[1]
ZONE = layout_for(SurvivalOptions("zone"))[1]


def test_a_lost_primary_alone_fails_over_at_home_when_home_has_everything():
    found = probes(eu_central_1_b=900, eu_central_1_in_eu_west_3=800, eu_central_1_in_us_east_2=700)
    decision = choose_promotion(REGION, AWS, "eu-central-1", "eu-central-1-a", found)
    assert decision.promote == "eu-central-1-b" and decision.safe_lsn == 800


def test_a_lost_region_fails_over_to_the_most_advanced_synchronous_standby():
    found = probes(eu_central_1_b=None, eu_central_1_in_eu_west_3=700, eu_central_1_in_us_east_2=800)
    decision = choose_promotion(REGION, AWS, "eu-central-1", "eu-central-1-a", found)
    assert decision.promote == "eu-central-1-in-us-east-2"


def test_equally_advanced_standbys_prefer_the_region_nearest_home():
    found = probes(eu_central_1_b=None, eu_central_1_in_eu_west_3=800, eu_central_1_in_us_east_2=800)
    decision = choose_promotion(REGION, AWS, "eu-central-1", "eu-central-1-a", found)
    assert decision.promote == "eu-central-1-in-eu-west-3"


def test_a_lagging_in_region_standby_is_never_promoted_over_an_acknowledged_commit():
    # The async in-region standby is behind a commit that the synchronous standby acknowledged.
    found = probes(eu_central_1_b=500, eu_central_1_in_eu_west_3=800, eu_central_1_in_us_east_2=600)
    decision = choose_promotion(REGION, AWS, "eu-central-1", "eu-central-1-a", found)
    assert decision.promote == "eu-central-1-in-eu-west-3"


def test_no_failover_when_a_synchronous_standby_that_may_hold_a_commit_is_unreachable():
    found = probes(eu_central_1_b=900, eu_central_1_in_eu_west_3=None, eu_central_1_in_us_east_2=800)
    decision = choose_promotion(REGION, AWS, "eu-central-1", "eu-central-1-a", found)
    assert decision.promote is None and "eu-central-1-in-eu-west-3" in decision.reason


def test_zone_survival_cannot_fail_over_a_whole_lost_region():
    found = probes(us_east_2_b=None, us_east_2_c=None)
    decision = choose_promotion(ZONE, AWS, "us-east-2", "us-east-2-a", found)
    assert decision.promote is None


def test_zone_survival_fails_over_a_lost_server_within_the_region():
    found = probes(us_east_2_b=400, us_east_2_c=410)
    assert choose_promotion(ZONE, AWS, "us-east-2", "us-east-2-a", found).promote == "us-east-2-c"


def test_a_server_that_is_not_a_standby_is_never_a_candidate():
    found: dict[str, Probe | None] = {"us-east-2-b": Probe(False, 999), "us-east-2-c": Probe(True, 100)}
    decision = choose_promotion(ZONE, AWS, "us-east-2", "us-east-2-a", found)
    assert decision.promote is None  # b answers as a primary: c alone cannot prove it has everything


def test_lsn_text_round_trips():
    assert format_lsn(parse_lsn("1A/2B3C")) == "1A/2B3C"
    assert parse_lsn("0/10") == 16 and parse_lsn(None) == 0


# --- the write cost of survival --------------------------------------------------------------------------


def test_journey_floor_adds_the_commit_wait_of_writes_only():
    assert journey_commit_ms(None, AWS, "start ride", "us-east-2", "new york") == 0
    assert journey_commit_ms(REGION, AWS, "view rides", "us-east-2", "new york") == 0
    assert journey_commit_ms(REGION, AWS, "start ride", "us-east-2", "new york") == 88
    assert journey_commit_ms(ZONE, AWS, "end ride", "us-east-2", "new york") == 0.5
    # A sign-up: its claims in eu-central-1 (100 ms RTT, already in the floor, + 9 ms quorum) and eu-west-3
    # (88 + 9) end with the slower, 9 ms after the farthest RTT; then the home's commit waits 88 ms.
    assert journey_commit_ms(REGION, AWS, "sign up", "us-east-2", "new york") == 9 + 88


def test_after_a_failover_the_journey_floor_follows_the_data_to_its_new_primary():
    """New York's data failed over to its standby in eu-west-3, which now serves New York: a read there
    crosses no WAN link, and its floor must not charge one (the console showed requests below their floor)."""
    primaries = {"us-east-2": "us-east-2-in-eu-west-3"}
    common = {"city": "new york", "served_by": "eu-west-3", "statements": 1, "cpu_ms": 0.0, "layout": REGION}
    before = step_floor(AWS, 1.0, "multi", "view vehicles", **common)
    after = step_floor(AWS, 1.0, "multi", "view vehicles", **common, primaries=primaries)
    assert before is not None and before.wan_round_trips == 1
    assert after is not None and after.wan_round_trips == 0 and after.local_round_trips == 1
    # Served from Ohio instead, the same read crosses to eu-west-3 where the data now is.
    away = step_floor(AWS, 1.0, "multi", "view vehicles", **{**common, "served_by": "us-east-2"}, primaries=primaries)
    assert away is not None and away.sql_ms == AWS.rtt_ms("us-east-2", "eu-west-3")


# --- the drill's arithmetic ------------------------------------------------------------------------------


def sample(t0: float, t1: float, ok: bool, write: bool = True) -> Sample:
    return Sample("stockholm", "eu-central-1", "start ride", write, t0, t1, 201 if ok else 503, ok, 10, "", 1, 0)


def test_per_city_measures_the_longest_write_gap_from_the_last_success_before_the_kill():
    class Rider:
        city, home = "stockholm", "eu-central-1"

    samples = [sample(0, 0.1, True), sample(0.5, 0.6, True), sample(1.1, 3.0, False), sample(3.0, 3.4, True)]
    samples += [sample(3.5, 3.6, True)]
    row = per_city(samples, [Rider()], t_kill=1.0, t_stop=5.0)[0]  # type: ignore[list-item]
    assert row["longest_write_gap_s"] == pytest.approx(3.4 - 0.6)
    assert row["writes_resumed_after_kill_s"] == pytest.approx(2.4)
    assert row["failed_after_kill"] == 1
    never = per_city([sample(0, 0.1, True), sample(2, 3, False)], [Rider()], 1.0, 5.0)[0]  # type: ignore[list-item]
    assert never["resumed"] is False and never["longest_write_gap_s"] == pytest.approx(4.9)
    # One last write slipped through as the region was dying: it did not resume.
    slipped = [sample(0, 0.1, True), sample(1.0, 1.1, True), sample(2, 3, False)]
    late = per_city(slipped, [Rider()], 1.0, 5.0)[0]  # type: ignore[list-item]
    assert late["resumed"] is False and late["longest_write_gap_s"] == pytest.approx(3.9)


def drill_result(kill: str, kind: str, failovers: list[str], cities: list[tuple[str, str, bool, int]]) -> dict:
    ok = {"ok": True, "lost": [], "duplicated": []}
    return {
        "kill_kind": kind,
        "failovers": [{"group": group} for group in failovers],
        "cities": [
            {"city": city, "home": home, "resumed": resumed, "failed_after_kill": errors}
            for city, home, resumed, errors in cities
        ],
        "ledger_check": ok,
        "invariants": {"ok": True, "violations": {}},
        "replicas": {"ok": True},
    }


REGION_KILL_CITIES = [("stockholm", "eu-central-1", True, 7), ("dublin", "eu-west-1", True, 0)]


def test_a_region_kill_drill_passes_only_with_a_failover_and_resumed_writes():
    _, layout = layout_for(SurvivalOptions("region", super_regions=False))
    lost = {name for name, server in layout.servers.items() if server.region == "eu-central-1"}
    before = {group: info.primary for group, info in layout.groups.items()}

    good = expectations(
        drill_result("eu-central-1", "region", ["eu-central-1"], REGION_KILL_CITIES), layout, before, lost
    )
    assert good["unmet"] == [] and good["survive"] == ["eu-central-1"]

    # The suspect run: nothing failed over and the lost region's writes never came back.
    stuck_cities = [("stockholm", "eu-central-1", False, 40), ("dublin", "eu-west-1", True, 0)]
    stuck = expectations(drill_result("eu-central-1", "region", [], stuck_cities), layout, before, lost)
    assert any("no failover" in reason for reason in stuck["unmet"])
    assert any("stockholm" in reason for reason in stuck["unmet"])

    hurt = [("stockholm", "eu-central-1", True, 7), ("dublin", "eu-west-1", True, 2)]
    bystander = expectations(drill_result("eu-central-1", "region", ["eu-central-1"], hurt), layout, before, lost)
    assert bystander["unmet"] == ["dublin (eu-west-1, not hit by the fault) saw 2 errors"]


def test_zone_survival_expects_a_lost_region_to_be_unavailable_and_the_rest_untouched():
    _, layout = layout_for(SurvivalOptions("zone", super_regions=False))
    lost = {name for name, server in layout.servers.items() if server.region == "eu-central-1"}
    before = {group: info.primary for group, info in layout.groups.items()}
    cities = [("stockholm", "eu-central-1", False, 30), ("dublin", "eu-west-1", True, 0)]
    verdict = expectations(drill_result("eu-central-1", "region", [], cities), layout, before, lost)
    assert verdict == {"survive": [], "unavailable_by_design": ["eu-central-1"], "unmet": []}

    result = drill_result("eu-central-1", "region", [], cities)
    result["ledger_check"] = {"ok": False, "lost": ["ride 1"], "duplicated": []}
    assert expectations(result, layout, before, lost)["unmet"] == ["acknowledged writes lost 1, duplicated 0"]


def test_a_standby_that_never_caught_up_fails_the_drill_even_with_identical_fingerprints():
    _, layout = layout_for(SurvivalOptions("zone", super_regions=False))
    lost = {name for name, server in layout.servers.items() if server.region == "eu-central-1"}
    before = {group: info.primary for group, info in layout.groups.items()}
    result = drill_result("eu-central-1", "region", [], [("dublin", "eu-west-1", True, 0)])
    result["replicas"] = {"ok": False, "lagging": "the standby on port 5 did not catch up within 60 s"}
    assert expectations(result, layout, before, lost)["unmet"] == [
        "a standby had not caught up after the heal: the standby on port 5 did not catch up within 60 s"
    ]


def test_the_drills_checks_split_its_verdict_by_promise():
    _, layout = layout_for(SurvivalOptions("region", super_regions=False))
    lost = {name for name, server in layout.servers.items() if server.region == "eu-central-1"}
    before = {group: info.primary for group, info in layout.groups.items()}
    stuck_cities = [("stockholm", "eu-central-1", False, 40), ("dublin", "eu-west-1", True, 0)]
    result = drill_result("eu-central-1", "region", [], stuck_cities)
    result["ledger_check"] |= {"acknowledged_writes": 12, "lost": ["ride 1"], "ok": False}
    result["expectations"] = expectations(result, layout, before, lost)
    checks = {check.name: check for check in failover_checks(result)}
    assert checks["no acknowledged write lost or duplicated"].holds is False
    assert checks["invariants hold"].holds and checks["replicas identical after the heal"].holds
    availability = next(check for name, check in checks.items() if name.startswith("the survival goals'"))
    assert availability.holds is False and "no failover" in availability.detail
    assert "lost 1" not in availability.detail, "each broken promise is named once, by its own check"


@pytest.mark.parametrize(
    "args",
    [["--kill-at", "20", "--duration", "10"], ["--preset", "no-such-preset"], ["--quick", "--kill-at", "12"]],
)
def test_failover_bad_options_exit_2_with_one_line_before_anything_starts(args: list[str], tmp_path) -> None:
    result = CliRunner().invoke(main, ["bench", "failover", "--run-dir", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# --- links re-pointed on failover ------------------------------------------------------------------------


def serve_once(reply: bytes) -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def run() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(16)
                conn.sendall(reply)

    threading.Thread(target=run, daemon=True).start()
    return server, server.getsockname()[1]


def ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"?")
        return conn.recv(16)


def test_a_re_pointed_link_reaches_its_new_target_at_its_new_delay():
    old, old_port = serve_once(b"old")
    new, new_port = serve_once(b"new")
    spec = LinkSpec("app:x->db-a", 0, old_port, 1.0, "wan", "x", "db-a")
    try:
        with run_links_in_thread([spec]) as links:
            port = links.port("app:x->db-a")
            assert ask(port) == b"old"
            links.set_target("app:x->db-a", new_port, dst="db-in-x", kind="local")
            links.set_delay("app:x->db-a", 0.1)
            assert ask(port) == b"new"
            (described,) = links.describe()
            assert described["target_port"] == new_port and described["dst"] == "db-in-x"
            assert described["kind"] == "local" and described["one_way_ms"] == pytest.approx(0.1)
            with pytest.raises(ValueError):
                links.set_target("app:x->db-a", 0)
    finally:
        old.close()
        new.close()
