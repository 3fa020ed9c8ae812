"""Survival goals in a whole lab: a region-kill drill that loses nothing, domiciling proven by the audit,
and a partition that is not a failure. Assertions count rows, ledgers and links; the one timing figure (when
writes resumed) is only bounded generously - `movr bench failover` measures it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from labkit import LAB_SCALE, assert_links_shown_whole, lab_status

from movr.bench.client import STEPS, Client, Journey
from movr.bench.failover.drill import DrillConfig, run_drill
from movr.cli import main
from movr.geo import load_preset
from movr.lab.faults import heal, partition
from movr.lab.links import fetch_links
from movr.lab.state import LabState
from movr.lab.supervisor import processes_left

pytestmark = pytest.mark.lab

AWS = load_preset("aws-eu-us")


def test_region_kill_drill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    run_dir = tmp_path / "drill"
    config = DrillConfig(
        preset_source="aws-eu-us",
        survival="region",
        super_regions=False,
        kill="eu-central-1",
        duration=12.0,
        kill_at=4.0,
        scale=LAB_SCALE,
        cities_per_region=1,
        run_dir=run_dir,
    )
    result = run_drill(config)
    assert processes_left(run_dir) == [], "the drill left processes running"

    assert result["ledger_check"]["ok"], result["ledger_check"]
    assert result["ledger_check"]["lost"] == [] and result["ledger_check"]["duplicated"] == []
    assert result["ledger"]["started"] > 10 and result["ledger"]["ended"] > 10
    assert result["invariants"]["ok"], result["invariants"]
    assert result["replicas"]["ok"], result["replicas"]

    (failover,) = result["failovers"]
    assert failover["group"] == "eu-central-1" and failover["old"] == "eu-central-1-a"
    assert failover["new_region"] != "eu-central-1"

    cities = {row["city"]: row for row in result["cities"]}
    lost_city = cities["stockholm"]
    assert lost_city["resumed"], "writes for the lost region's cities never resumed"
    assert lost_city["after"]["errors"] == 0 and lost_city["after"]["served_by"] != ["eu-central-1"]
    assert lost_city["writes_resumed_after_kill_s"] < 30  # generous: the drill reports the real figure
    for city in ("dublin", "new york"):
        assert cities[city]["failed_after_kill"] == 0, cities[city]
    assert result["expectations"] == {"survive": ["eu-central-1"], "unavailable_by_design": [], "unmet": []}
    assert result["passed"]


@pytest.fixture(scope="module")
def domiciled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    """Region survival on aws-eu-us with the `europe` super region: Europe survives zone failures only."""
    from movr.lab.supervisor import SurvivalOptions, lab_down, lab_up
    from movr.store.sample import generate

    run_dir = tmp_path_factory.mktemp("lab-domiciled")
    try:
        state = lab_up(run_dir, "aws-eu-us", "multi", LAB_SCALE, survival=SurvivalOptions("region"))
        n = len(AWS.cities)
        state.load_sample(generate(AWS, users=n, vehicles=n, rides=n, seed=5))
        yield state
    finally:
        lab_down(run_dir)
        assert processes_left(run_dir) == [], "lab down left processes running"


def audit_exit_code(state: LabState) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["lab", "audit-domicile", "--json", "--run-dir", str(state.run_dir)])
    return result.exit_code, json.loads(result.output)


def test_status_shows_each_region_with_its_goal_and_standbys(domiciled: LabState) -> None:
    from movr.lab.status import collect_status

    survival = collect_status(LabState.read(domiciled.run_dir))["survival"]
    groups = {group["group"]: group for group in survival["groups"]}
    assert groups["eu-central-1"]["goal"] == "zone" and groups["us-east-2"]["goal"] == "region"
    for group in groups.values():
        standbys = [m for m in group["members"] if m["role"] == "standby"]
        assert all(m["running"] and m["state"] == "streaming" for m in standbys), standbys
        assert {m["sync_state"] for m in standbys} <= {"quorum", "async"}
    us = {m["name"]: m for m in groups["us-east-2"]["members"]}
    assert us["us-east-2-b"]["sync_state"] == "async" and us["us-east-2-in-eu-west-3"]["sync_state"] == "quorum"


def test_audit_passes_with_the_europe_super_region_and_fails_on_a_european_row_in_the_us(
    domiciled: LabState,
) -> None:
    code, report = audit_exit_code(domiciled)
    assert code == 0 and report["ok"], report["violations"]
    scanned = report["scanned"]
    assert len(scanned) == 10  # 3 primaries, 2 + 2 European standbys at home, 3 US standbys
    assert scanned["eu-west-3-b"]["users"] > 0 and scanned["us-east-2-in-eu-west-3"]["users"] > 0

    # Force a Rome (eu-west-3) row onto the US primary: replication copies it to the US standbys too.
    dsn = domiciled.server_dsn("us-east-2")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (city, id, username, password_hash, first_name, last_name, email) "
            "VALUES ('rome', gen_random_uuid(), 'misplaced-roman', 'x', '', '', '')"
        )
    try:
        code, report = audit_exit_code(domiciled)
        assert code == 1 and not report["ok"]
        where = {(v["server"], v["city"], v["table"]) for v in report["violations"]}
        assert ("us-east-2-a", "rome", "users") in where
        assert {v["server_region"] for v in report["violations"]} == {"us-east-2"}
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM users WHERE username = 'misplaced-roman'")
    assert audit_exit_code(domiciled)[0] == 0


def test_a_partition_cuts_links_but_is_no_failover_and_writes_still_reach_a_quorum(domiciled: LabState) -> None:
    run_dir = domiciled.run_dir
    journey = Journey("boston", "boston-before-the-cut")
    signed_up = Client(domiciled.balancer_url or "").send(journey.request("sign up"), journey.headers())
    journey.keep("sign up", signed_up.raise_for_status(journey.request("sign up")))
    down = partition(run_dir, "eu-west-3", "us-east-2")
    try:
        assert "standby:eu-west-3->us-east-2-a" in down and "app:us-east-2->eu-west-3-a" in down
        links = {
            link["name"]: link for link in fetch_links(domiciled.links_control_port, token=domiciled.control_token)
        }
        assert links["standby:eu-west-3->us-east-2-a"]["down"] and not links["app:us-east-2->us-east-2-a"]["down"]
        text, status = lab_status(run_dir, columns=80)
        assert_links_shown_whole(text, status)
        assert text.count("DOWN") == len(down) == sum(link["down"] for link in status["links"])
        # A new name must be claimed in every region (movr.store.claims): across the cut it cannot be, so
        # sign-up answers 503 and writes nothing; no other step needs eu-west-3.
        state = LabState.read(run_dir)
        client = Client(state.balancer_url or "", reconnect=True)
        refused = Journey("boston", "partitioned-boston")
        reply = client.send(refused.request("sign up"), refused.headers())
        assert reply.status == 503 and json.loads(reply.body)["error"]["code"] == "store_unavailable"
        # The rest of Boston's journey, for a user who signed up before the cut: its commits wait for its
        # standby in eu-central-1 now, and every step completes.
        for step in STEPS[1:]:
            request = journey.request(step)
            reply = client.send(request, journey.headers())
            journey.keep(step, reply.raise_for_status(request))
            assert reply.status < 300, (step, reply.status, reply.body[:200])
        assert LabState.read(run_dir).survival.failovers == []
    finally:
        heal(run_dir, ["eu-west-3", "us-east-2"])
    links = {link["name"]: link for link in fetch_links(domiciled.links_control_port, token=domiciled.control_token)}
    assert not any(link["down"] for link in links.values())


def test_a_standby_catches_up_while_its_primary_has_flushed_only_part_of_its_newest_record(tmp_path: Path) -> None:
    """A standby has caught up once it has replayed what its primary holds, even when the primary's newest
    record spans WAL pages and its transaction is still open: the WAL writer flushes the whole pages, and
    nothing flushes the tail (after a crash, hint bits' full-page images are such records). Measured against the
    primary's write position instead, a healed standby waited for WAL an idle primary did not send, timed
    out, and was rewound off the primary's history: `heal all` took 75 s."""
    import time

    from movr.lab.layout import plan_lab
    from movr.lab.standbys import PRIMARY_BASE_SETTINGS, clone, wait_caught_up
    from movr.lab.state import lab_passfile, lab_server
    from movr.lab.survival import SurvivalOptions, parse_lsn, plan_survival

    layout = plan_survival(plan_lab(AWS, "multi", LAB_SCALE, AWS.name), SurvivalOptions("zone").spec(AWS.name))
    primary = lab_server(tmp_path, layout.servers["eu-central-1-a"])
    standby = lab_server(tmp_path, layout.servers["eu-central-1-b"])
    try:
        primary.init({**PRIMARY_BASE_SETTINGS, **layout.server_settings})
        primary.start()
        clone(tmp_path, layout, "eu-central-1-b", primary.port)
        with psycopg.connect(primary.dsn()) as writer, psycopg.connect(primary.dsn(), autocommit=True) as conn:

            def flushed() -> int:
                row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
                return parse_lsn(row[0] if row else None)

            before = flushed()
            # Over three WAL pages, not flushed, in a transaction that stays open while the standby catches up.
            row = writer.execute(
                "SELECT pg_logical_emit_message(false, 'movr-test', repeat('x', 20000), false)::text"
            ).fetchone()
            end = parse_lsn(row[0] if row else None)
            while flushed() == before:
                time.sleep(0.05)  # polling for the WAL writer, which writes the record's whole pages
            assert before < flushed() < end, "the primary's flushed WAL should end inside the record"

            wait_caught_up(standby.port, primary.port, lab_passfile(tmp_path), timeout=5.0)
            with psycopg.connect(standby.dsn(), autocommit=True) as replica:
                row = replica.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
            assert parse_lsn(row[0] if row else None) >= end
    finally:
        standby.stop()
        primary.stop()
