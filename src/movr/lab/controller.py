"""The lab's failure detector and failover controller: `python -m movr.lab.controller --run-dir DIR`.

`movr lab up --survival ...` starts it as a process of the lab. Every `INTERVAL_S` it asks each group's
primary `SELECT 1`; after `MISSES_TO_FAIL` misses in a row the primary is lost, and the controller:

1. fences it: if its postmaster still runs (hung, not dead), it is killed, so two primaries never coexist;
2. probes the group's standbys and applies `movr.lab.survival.choose_promotion` - the most advanced eligible
   standby, never one that could miss an acknowledged commit; if none can be proven, it waits and says why
   (a zone-survival group whose whole region is lost waits until the region is healed);
3. sets the new primary's synchronous quorum (before promoting, so its first commit already waits for it),
   then promotes it (`pg_promote`);
4. re-points every link laid out for the group's original primary - app servers' `app:` links, standbys'
   `standby:` links, GLOBAL-table `repl:` links - at the promoted server, with the delay of the new distance
   (law 1), so app servers, the username directory and the GLOBAL writer reach it without a restart, and the
   remaining standbys follow it onto its new timeline;
5. repairs GLOBAL-table replication: a promoted publisher gets the subscribers' slots, a promoted subscriber
   connects from its own region;
6. records the failover (with its timings) in the state file and logs/controller.log.

Why it probes servers directly, not through links: it stands for the cluster's own failure detector, which has
its own view of who is alive. Probing through a region's links would turn a network partition into a
"failure" and promote a second primary while the first still serves its region (split brain). A partition
between regions is therefore never a failover; only a lost server is.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from movr.lab.events import apply_link_states, group_operations, record_event
from movr.lab.layout import link_name, link_target, subscription_name
from movr.lab.links import post_link
from movr.lab.standbys import StandbyError, probe_port, promote, set_quorum
from movr.lab.state import LabState, lab_server
from movr.lab.survival import choose_promotion, format_lsn

INTERVAL_S = 0.2
MISSES_TO_FAIL = 3
PROBE_TIMEOUT_S = 1.0

log = logging.getLogger("movr.lab.controller")


class Controller:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).resolve()
        state = LabState.read(self.run_dir)
        layout = state.plan.survival
        if layout is None or state.survival is None:
            raise SystemExit(f"the lab in {self.run_dir} has no survival goal: nothing to control")
        self.layout = layout
        self.preset = state.preset
        self.scale = state.scale
        self.control_port = state.links_control_port
        self.control_token = state.control_token
        self.passfile = state.passfile
        self.dsn = state.dsn
        self.primaries: dict[str, str] = dict(state.survival.primaries)
        self.misses = dict.fromkeys(self.primaries, 0)
        self.first_miss: dict[str, float] = {}
        self.waiting: dict[str, str] = {}
        self._conns: dict[str, psycopg.Connection] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="movr-probe")

    # --- probing ---

    def _port(self, name: str) -> int:
        return self.layout.port(name)

    def _ping(self, name: str) -> bool:
        conn = self._conns.get(name)
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(self.dsn(self._port(name), "postgres", connect_timeout=1), autocommit=True)
                self._conns[name] = conn
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self._drop(name)
            return False

    def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def ping_all(self, names: list[str]) -> dict[str, bool]:
        futures = {name: self._pool.submit(self._ping, name) for name in names}
        answers = {}
        for name, future in futures.items():
            try:
                answers[name] = future.result(timeout=PROBE_TIMEOUT_S)
            except FutureTimeout:
                answers[name] = False  # a hung server; its connection is dropped when the query returns
        return answers

    def probe_members(self, group: str, lost: str) -> dict[str, Any]:
        members = [m for m in self.layout.groups[group].members if m != lost]
        futures = {m: self._pool.submit(probe_port, self._port(m), self.passfile, PROBE_TIMEOUT_S) for m in members}
        probes = {}
        for name, future in futures.items():
            try:
                probes[name] = future.result(timeout=PROBE_TIMEOUT_S * 3)
            except FutureTimeout:
                probes[name] = None
        return probes

    # --- the loop ---

    def tick(self) -> None:
        answers = self.ping_all(list(self.primaries.values()))
        for group, primary in list(self.primaries.items()):
            if answers.get(primary):
                if self.misses[group] >= MISSES_TO_FAIL:
                    record_event(self.run_dir, "recovered", f"{group}: primary {primary} answers again", group=group)
                self.misses[group] = 0
                self.first_miss.pop(group, None)
                self.waiting.pop(group, None)
                continue
            self.misses[group] += 1
            self.first_miss.setdefault(group, time.time())
            if self.misses[group] == MISSES_TO_FAIL:
                record_event(
                    self.run_dir,
                    "primary_lost",
                    f"{group}: primary {primary} missed {MISSES_TO_FAIL} probes",
                    group=group,
                    server=primary,
                )
            if self.misses[group] >= MISSES_TO_FAIL:
                self.fail_over(group, primary)

    def fail_over(self, group: str, lost: str) -> None:
        detected = time.time()
        with group_operations(self.run_dir):
            # `lab heal` may have moved a server to another port (its own was taken while it was down).
            self.layout = LabState.read(self.run_dir).plan.survival or self.layout
            # A heal may have held the lock meanwhile and brought the primary back: never fence a live one.
            if self.ping_all([lost]).get(lost):
                return
            old = lab_server(self.run_dir, self.layout.servers[lost])
            if old.is_running():
                old.kill()
                record_event(self.run_dir, "fenced", f"{group}: killed unresponsive primary {lost}", group=group)
            probes = self.probe_members(group, lost)
            decision = choose_promotion(self.layout, self.preset, group, lost, probes)
            if decision.promote is None:
                if self.waiting.get(group) != decision.reason:
                    self.waiting[group] = decision.reason
                    record_event(self.run_dir, "waiting", f"{group}: no failover: {decision.reason}", group=group)
                return
            new = decision.promote
            decided = time.time()
            try:
                names = set_quorum(self._port(new), self.passfile, self.layout, group, new)
                promote(self._port(new), self.passfile)
            except (psycopg.Error, StandbyError) as err:
                record_event(self.run_dir, "failover_failed", f"{group}: promoting {new} failed: {err}", group=group)
                return
            promoted = time.time()
            self.reroute(group, new)
            self.repair_global_replication(group, new)
            routed = time.time()
            self.primaries[group] = new
            self.misses[group] = 0
            self.waiting.pop(group, None)
            failover = {
                "group": group,
                "old": lost,
                "new": new,
                "new_region": self.layout.servers[new].region,
                "first_miss_at": self.first_miss.pop(group, detected),
                "detected_at": detected,
                "decided_at": decided,
                "promoted_at": promoted,
                "routed_at": routed,
                "safe_lsn": format_lsn(decision.safe_lsn or 0),
                "reason": decision.reason,
                "synchronous_standby_names": names,
            }

            def change(state: LabState) -> None:
                assert state.survival is not None
                state.survival.primaries[group] = new
                state.survival.failovers.append(failover)

            LabState.update(self.run_dir, change)
            record_event(
                self.run_dir,
                "failover",
                f"{group}: promoted {new} ({failover['new_region']}) in place of {lost} "
                f"{routed - failover['first_miss_at']:.2f} s after the first missed probe; {decision.reason}; "
                f"commits now wait for {names}",
                group=group,
                old=lost,
                new=new,
            )

    def reroute(self, group: str, new: str) -> None:
        """Point every link laid out for the group's original primary at `new`, at the new distance."""
        original = self.layout.groups[group].primary
        region = self.layout.servers[new].region
        port = self._port(new)
        changed: dict[str, dict[str, Any]] = {}
        state = LabState.read(self.run_dir)
        for link in state.plan.links:
            _, src, server = link_target(link.name)
            if server != original:
                continue
            update = {
                "target_port": port,
                "dst": new,
                "kind": "local" if src == region else "wan",
                "one_way_ms": self.preset.rtt_ms(src, region) * self.scale / 2,
            }
            post_link(self.control_port, link.name, token=self.control_token, **update)
            changed[link.name] = update

        def change(current: LabState) -> None:
            for name, update in changed.items():
                current.plan.replace_link(name, **update)

        LabState.update(self.run_dir, change)
        apply_link_states(LabState.read(self.run_dir))  # a re-pointed link may now cross a partition

    def repair_global_replication(self, group: str, new: str) -> None:
        """GLOBAL tables after a failover: slots on a promoted publisher, a subscriber's link from its region."""
        primary_region = self.preset.primary_region
        dsn = self.dsn(self._port(new), connect_timeout=2)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                if group == primary_region:
                    for region in self.layout.groups:
                        if region == primary_region:
                            continue
                        slot = subscription_name(region)
                        conn.execute(
                            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput') "
                            "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                            (slot, slot),
                        )
                    return
                region = self.layout.servers[new].region
                publisher = self.layout.groups[primary_region].primary
                state = LabState.read(self.run_dir)
                name = link_name("repl", region, publisher)
                link = next((x for x in state.plan.links if x.name == name), None)
                if link is None:
                    return
                source = state.dsn(link.listen_port)
                conn.execute(
                    sql.SQL("ALTER SUBSCRIPTION {} CONNECTION {}").format(
                        sql.Identifier(subscription_name(group)), sql.Literal(source)
                    )
                )
        except psycopg.Error as err:
            record_event(
                self.run_dir,
                "global_replication",
                f"{group}: could not repair GLOBAL-table replication on {new}: {err}",
                group=group,
            )

    def run(self, stop: threading.Event) -> None:
        def change(state: LabState) -> None:
            assert state.survival is not None
            state.survival.controller = {"pid": os.getpid(), "started_at": time.time()}

        LabState.update(self.run_dir, change)
        groups = ", ".join(f"{g} ({self.layout.groups[g].goal}: {p})" for g, p in self.primaries.items())
        log.info("watching every %.0f ms, %d misses to fail: %s", INTERVAL_S * 1000, MISSES_TO_FAIL, groups)
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # keep watching: one bad tick must not leave the lab without a controller
                log.exception("tick failed")
            stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - started)))  # a polling period
        for name in list(self._conns):
            self._drop(name)
        self._pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m movr.lab.controller", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Controller(args.run_dir).run(stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
