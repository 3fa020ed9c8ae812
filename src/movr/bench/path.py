"""`movr bench path`: what each hop of a request's path costs, measured in one run on one `multi` lab.

A request from a client to MovR passes the balancer, an app server, the app's in-region link and PostgreSQL.
Each hop's cost is the request with the hop minus a reference request that skips it, both measured in the
same run, interleaved, so that a machine whose speed drifts affects both alike:

- process hop: first, the machine's own cost of one hop to another process, with no code of ours: a round
  trip to a minimal echo server (movr.bench.echo) on the loopback; the other rows read against it;
- postgresql: `SELECT 1` straight to the region's server (the reference: nothing);
- link: the same `SELECT 1` through the app's in-region link (it carries the modelled in-region RTT);
- app server: `GET /healthz` (no SQL; the reference: nothing) and a read action (the city's vehicles; the
  reference: the link's `SELECT 1`) straight to the region's app server;
- balancer: the same two requests through the balancer, less the client RTT it carried on the access link
  (its `X-Movr-Client-Rtt-Ms` header, per request; the reference: the same request straight to the app).

Each request is timed twice per round: after the machine idled for the journey's gap (waking idle processes
is a known cost on small machines, movr.bench.journey.machine_idle_cost) and right after, back to back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from movr import floors
from movr.bench.client import API, Client, caller_headers, view_vehicles
from movr.bench.echo import EchoServer
from movr.bench.experiment import (
    Experiment,
    ExperimentError,
    Figure,
    Result,
    console,
    lab_options,
    postgresql_version,
    preset_option,
)
from movr.bench.histograms import new_histogram
from movr.bench.journey import IDLE_GAP_S
from movr.bench.markup import esc, num, table
from movr.bench.plots import pyplot, save_figure
from movr.lab.balancer import RTT_HEADER

REQUESTS = ("bare hop", "postgresql", "link", "app healthz", "app read", "balancer healthz", "balancer read")
# (hop, request kind, the request with the hop, the reference without it: None = nothing)
HOPS = (
    ("process hop", "echo", "bare hop", None),
    ("postgresql", "SELECT 1", "postgresql", None),
    ("link", "SELECT 1", "link", "postgresql"),
    ("app server", "healthz", "app healthz", None),
    ("app server", "read", "app read", "link"),
    ("balancer", "healthz", "balancer healthz", "app healthz"),
    ("balancer", "read", "balancer read", "app read"),
)
# The figure's bars: per request, the hops it passes and the row of HOPS that costs each.
STACKS = {
    "read": {"postgresql": "SELECT 1", "link": "SELECT 1", "app server": "read", "balancer": "read"},
    "healthz": {"app server": "healthz", "balancer": "healthz"},
}
MODES = ("busy", "idle")  # back to back; after IDLE_GAP_S idle
QUICK_SAMPLES, WARM_UP = 10, 20


def _sql(dsn: str) -> tuple[Callable[[], float], Callable[[], None]]:
    import psycopg  # heavy, and only a run needs it: `movr` builds every bench command at start-up

    conn = psycopg.connect(dsn, autocommit=True)

    def select() -> float:
        conn.execute("SELECT 1").fetchall()
        return 0.0

    return select, conn.close


def _echo(env: dict[str, str]) -> tuple[Callable[[], float], Callable[[], None]]:
    server = EchoServer(env).start()

    def hop() -> float:
        server.round_trip()
        return 0.0

    return hop, server.stop


def _get(base_url: str, target: str, city: str) -> tuple[Callable[[], float], Callable[[], None]]:
    """GET `target` as a client in `city`, on one kept-alive connection; each answer's carried client RTT."""
    client = Client(base_url, reconnect=True)

    def get() -> float:
        reply = client.exchange("GET", target, None, caller_headers(city))
        if reply.failed:
            raise ExperimentError(f"GET {base_url}{target} -> {reply.status}")
        return float(reply.headers.get(RTT_HEADER) or 0)

    return get, client.close


def _percentiles(histogram: Any) -> dict[str, float]:
    return {p: histogram.get_value_at_percentile(q) / 1000 for p, q in (("p50_ms", 50.0), ("p90_ms", 90.0))}


def measure(probes: Mapping[str, Callable[[], float]], samples: int) -> dict[str, Any]:
    """Per request and mode: median and p90 (ms); the balancer's client RTT subtracted from its requests."""
    histograms = {(name, mode): new_histogram() for name in probes for mode in MODES}
    rtts: list[float] = []
    for _ in range(WARM_UP):  # pools, caches and prepared statements warm; not recorded
        for probe in probes.values():
            probe()
    for _ in range(samples):
        for name, probe in probes.items():  # interleaved: each request beside the others in every round
            time.sleep(IDLE_GAP_S)  # the idle gap being measured, not a distance
            for mode in MODES[::-1]:
                started = time.perf_counter()
                rtt_ms = probe()
                elapsed_ms = (time.perf_counter() - started) * 1000 - rtt_ms
                histograms[name, mode].record_value(max(1, round(elapsed_ms * 1000)))
                rtts += [rtt_ms] if rtt_ms else []
    requests = {name: {mode: _percentiles(histograms[name, mode]) for mode in MODES} for name in probes}
    return {"requests": requests, "client_rtt_ms": max(rtts, default=0.0)}


def hop_costs(requests: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each hop's cost: (with hop) − (without hop), per mode and percentile."""
    rows = []
    for hop, kind, with_hop, reference in HOPS:
        row: dict[str, Any] = {"hop": hop, "request": kind, "with": with_hop, "without": reference}
        for mode in MODES:
            for p in ("p50_ms", "p90_ms"):
                base = requests[reference][mode][p] if reference else 0.0
                row[f"{mode}_{p}"] = round(requests[with_hop][mode][p] - base, 3)
        rows.append(row)
    return rows


def run(run_dir: Path, *, preset: str, scale: float, region: str | None, samples: int, quick: bool) -> dict:
    """One multi lab (always taken down), a small sample, then every request interleaved `samples` times."""
    # The supervisor and the sample data pull in the whole lab and store; `movr` builds every bench
    # command at start-up.
    from movr.lab.processes import RUN_DIR_MARKER
    from movr.lab.supervisor import lab_down, lab_up
    from movr.store.sample import generate

    chosen = preset_option(preset)
    region = region or chosen.primary_region
    if region not in chosen.regions:
        raise ExperimentError(f"--region: {region} is not a region of preset {chosen.name}")
    city = chosen.regions[region].cities[0]
    read = API + view_vehicles(city).path
    samples = QUICK_SAMPLES if quick else samples
    load_1m = os.getloadavg()[0]
    lab_dir = run_dir / "path"
    closers: list[Callable[[], None]] = []
    try:
        with console.status(f"standing a multi lab up ({chosen.name}, delays x{scale:g})"):
            state = lab_up(lab_dir, preset, "multi", scale)
            n = len(chosen.cities)
            state.load_sample(generate(chosen, users=n * 3, vehicles=n * 3, rides=n * 3, seed=7))
        app_url = f"http://127.0.0.1:{state.plan.app_ports[region]}"
        link = state.plan.link("app", region, state.plan.servers[region].name).name
        makers: dict[str, Callable[[], tuple[Callable[[], float], Callable[[], None]]]] = {
            "bare hop": lambda: _echo({RUN_DIR_MARKER: str(lab_dir.resolve())}),  # `processes_left` finds it
            "postgresql": lambda: _sql(state.server_dsn(region)),
            "link": lambda: _sql(state.server_dsn(region, via_link=link)),
            "app healthz": lambda: _get(app_url, "/healthz", city),
            "app read": lambda: _get(app_url, read, city),
            "balancer healthz": lambda: _get(state.balancer_url or "", "/healthz", city),
            "balancer read": lambda: _get(state.balancer_url or "", read, city),
        }
        probes = {}
        for name, make in makers.items():  # each closed in the end, even when a later one cannot be made
            probes[name], close = make()
            closers.append(close)
        with console.status(f"timing each hop from {city} ({samples} rounds)"):
            measured = measure(probes, samples)
        postgresql = postgresql_version(state.server_dsn(region))
    finally:
        for close in closers:
            close()
        lab_down(lab_dir)
    floor = floors.floor(chosen, scale, city=city, served_by=region, local_round_trips=1)
    return {
        "preset": chosen.name,
        "scale": scale,
        "region": region,
        "city": city,
        "samples": samples,
        "gap_ms": IDLE_GAP_S * 1000,
        "link_rtt_ms": floor.sql_ms,  # the in-region RTT the link carries (the floor model's)
        "client_rtt_ms": measured["client_rtt_ms"],  # subtracted: what the balancer said it carried
        "model_client_rtt_ms": floor.client_rtt_ms,
        "requests": measured["requests"],
        "hops": hop_costs(measured["requests"]),
        "versions": {"postgresql": postgresql},
        "machine": {"load_1m_at_start": load_1m},
    }


def print_tables(result: Result) -> None:
    title = f"each hop's cost, ms — {result['city']} ({result['region']}), {result['preset']} x{result['scale']:g}"
    out = Table(title=title)
    for column in ("hop", "request", "minus", "busy p50", "busy p90", "idle p50", "idle p90"):
        out.add_column(column, justify="left" if column in ("hop", "request", "minus") else "right")
    for row in result["hops"]:
        cells = [f"{row[f'{m}_{p}']:.3f}" for m in MODES for p in ("p50_ms", "p90_ms")]
        out.add_row(row["hop"], row["request"], row["without"] or "—", *cells)
    console.print(out)
    console.print(
        f"{result['samples']} rounds, interleaved; busy: back to back, idle: after {result['gap_ms']:g} ms idle; "
        "the process hop: a round trip to a minimal echo process, the machine's own cost of one hop; "
        f"the balancer's rows less the client RTT it carried ({RTT_HEADER}: {result['client_rtt_ms']:.3f} ms); "
        f"the link carries the in-region RTT ({result['link_rtt_ms']:.3f} ms)."
    )


def report(result: Result) -> list[str]:
    rows = [
        [esc(row["hop"]), esc(row["request"]), esc(row["without"] or "—")]
        + [num(row[f"{m}_{p}"], 2) for m in MODES for p in ("p50_ms", "p90_ms")]
        for row in result.get("hops", [])
    ]
    return [
        f"<p>From {esc(result.get('city'))} ({esc(result.get('region'))}), {esc(result.get('samples'))} rounds: "
        f"each hop's cost is the request with it minus the one without, back to back and after "
        f"{result.get('gap_ms', 0):g} ms idle. The process hop is a round trip to a minimal echo process: this "
        "machine's own cost of one hop, with no code of ours. The balancer's rows are less the client RTT it carried "
        f"({esc(RTT_HEADER)}); the link's include the modelled in-region RTT "
        f"({num(result.get('link_rtt_ms'), 2)} ms).</p>",
        table(("hop", "request", "minus", "busy p50", "busy p90", "idle p50", "idle p90"), rows, numeric_from=3),
    ]


def headline(result: Result) -> list[str]:
    hops = {(row["hop"], row["request"]): row for row in result.get("hops", [])}
    if not hops:
        return []
    parts = [("postgresql", "SELECT 1"), ("link", "SELECT 1"), ("app server", "read"), ("balancer", "read")]
    text = {m: " + ".join(f"{hop} {hops[hop, kind][f'{m}_p50_ms']:.2f}" for hop, kind in parts) for m in MODES}
    lines = [
        f"a read from {result['city']}, median ms per hop: back to back {text['busy']}; "
        f"after {result['gap_ms']:g} ms idle {text['idle']}"
    ]
    bare = hops.get(("process hop", "echo"))
    if bare:
        lines.append(
            f"this machine's own cost of one process hop (a loopback echo), median ms: {bare['busy_p50_ms']:.2f} "
            f"back to back, {bare['idle_p50_ms']:.2f} after {result['gap_ms']:g} ms idle"
        )
    return lines


def _draw(result: Result, path: Path) -> None:
    plt = pyplot()
    hops = {(row["hop"], row["request"]): row for row in result["hops"]}
    bars = [(kind, mode) for kind in STACKS for mode in MODES]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottoms = [0.0] * len(bars)
    for hop in ("postgresql", "link", "app server", "balancer"):
        # A hop's cost for the bar's request; 0 where the request does not pass it (healthz: no SQL).
        heights = [
            max(0.0, hops[hop, STACKS[kind][hop]][f"{mode}_p50_ms"]) if hop in STACKS[kind] else 0.0
            for kind, mode in bars
        ]
        ax.bar(range(len(bars)), heights, bottom=bottoms, label=hop)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    labels = {"busy": "back to back", "idle": f"after {result['gap_ms']:g} ms idle"}
    ax.set_xticks(range(len(bars)), [f"{kind}\n{labels[mode]}" for kind, mode in bars])
    ax.set_ylabel("median ms (balancer: less the client RTT)")
    ax.set_title(f"Each hop's cost from {result['city']} — {result['preset']} x{result['scale']:g}, multi")
    ax.legend()
    save_figure(fig, path)


def figures(result: Result) -> list[Figure]:
    return [Figure("each hop's cost", _draw)] if result.get("hops") else []


EXPERIMENT = Experiment(
    name="path",
    summary="Each hop of a request's path (balancer, app server, link, PostgreSQL) measured on one multi lab.",
    run=run,
    options=(
        *lab_options(),
        click.option("--region", default=None, help="The region whose path is measured [the primary region]."),
        click.option("--samples", default=200, show_default=True, type=click.IntRange(1, 100_000)),
        click.option("--quick", is_flag=True, help=f"{QUICK_SAMPLES} rounds: a smoke test, not a measurement."),
    ),
    tables=print_tables,
    report=report,
    figures=figures,
    headline=headline,
    run_dir_help="Where the lab (path/), its logs and the result go.",
)
