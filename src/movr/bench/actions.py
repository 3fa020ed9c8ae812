"""`movr bench actions`: each action's statement count (law 2) and latency on one local server, no distance.

One embedded PostgreSQL (or `--database-url`) with the sample data; the journey's actions for fresh users,
many times. Every action is one statement, one round trip (README, "The actions and what they cost"): the
check says whether that still holds.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
import psycopg
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from movr.bench.experiment import Check, Experiment, ExperimentError, Result, console
from movr.bench.markup import esc, num, table
from movr.domain.passwords import hash_password
from movr.geo import load_preset
from movr.store import actions, stats
from movr.store.backend import Backend

PASSWORD = "demo-password-1"
PRESET = "gcp-3"
HASHING = "authenticate"  # verifies a real argon2 hash: CPU work, not SQL


def measure_actions(store: Backend, iterations: int, progress: Progress) -> list[dict[str, Any]]:
    """Per action: the most statements it sent, its median and p95 latency, and every sample."""
    samples: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, set[int]] = defaultdict(set)
    city = store.preset.regions[store.region].cities[0]
    # Hashing is deliberately slow; sign-ups here reuse one hash so the figures show the database.
    password_hash = hash_password(PASSWORD)

    def timed(name: str, fn: Callable[[], object]) -> object:
        with stats.measure() as measured:
            started = time.perf_counter()
            result = fn()
            samples[name].append((time.perf_counter() - started) * 1000)
        counts[name].add(measured.statements)
        return result

    task = progress.add_task("actions", total=iterations)
    run_id = uuid.uuid4().hex[:6]
    for number in range(iterations):
        _one_journey(store, city, f"bench{run_id}{number}", password_hash, timed)
        progress.advance(task)
    # Authentication verifies a real argon2 hash: measured separately, fewer times.
    user = actions.register(store, city=city, username=f"auth{run_id}", password=PASSWORD)
    for _ in range(max(3, iterations // 10)):
        timed(HASHING, lambda: actions.authenticate(store, username=user.username, password=PASSWORD))
    actions.remove_user(store, city=city, user_id=user.id, username=user.username)
    return [
        {
            "action": name,
            "statements": max(counts[name]),
            "median_ms": statistics.median(values),
            "p95_ms": sorted(values)[min(len(values) - 1, int(0.95 * len(values)))],
            "samples_ms": values,
        }
        for name, values in samples.items()
    ]


def _one_journey(store: Backend, city: str, username: str, password_hash: str, timed: Callable) -> None:
    user = timed(
        "register",
        lambda: actions.register(store, city=city, username=username, password="", password_hash=password_hash),
    )
    timed("get_user", lambda: actions.get_user(store, city=city, user_id=user.id))
    vehicle = timed("add_vehicle", lambda: actions.add_vehicle(store, city=city, owner_id=user.id, type="bike"))
    timed("list_vehicles", lambda: actions.list_vehicles(store, city=city, limit=25))
    timed("list_users", lambda: actions.list_users(store, city=city, limit=25))
    ride = timed(
        "start_ride",
        lambda: actions.start_ride(store, city=city, rider_id=user.id, rider_city=city, vehicle_id=vehicle.id),
    )
    timed("list_promo_codes", lambda: actions.list_promo_codes(store))
    timed(
        "apply_promo_code",
        lambda: actions.apply_promo_code(store, city=city, ride_id=ride.id, rider_id=user.id, code="WELCOME10"),
    )
    timed("end_ride", lambda: actions.end_ride(store, city=city, ride_id=ride.id, rider_id=user.id))
    timed("list_rides", lambda: actions.list_rides(store, city=city, rider_id=user.id))
    timed("remove_vehicle", lambda: actions.remove_vehicle(store, city=city, vehicle_id=vehicle.id, owner_id=user.id))
    timed("remove_user", lambda: actions.remove_user(store, city=city, user_id=user.id, username=user.username))


def run(run_dir: Path, *, iterations: int, database_url: str | None) -> dict[str, Any]:
    """Start one embedded PostgreSQL (unless given a URL), load it, and measure every action."""
    # The store, the sample data and the embedded server are heavy; `movr` builds every bench command at
    # start-up.
    from movr.lab.pgserver import running_server
    from movr.store.factory import make_backend
    from movr.store.sample import generate, load_sample
    from movr.store.schema import create_schema

    preset = load_preset(PRESET)
    embedded = database_url is None
    with ExitStack() as stack:
        if database_url is None:
            with console.status("starting an embedded PostgreSQL 18 server"):
                server = stack.enter_context(running_server(run_dir / "actions", "local"))
                server.create_database("movr")
            database_url = server.dsn("movr")
            console.print(f"PostgreSQL 18 on 127.0.0.1:{server.port} (data in {server.base_dir})")
        backend = make_backend(preset, database_url=database_url)  # a URL it cannot use: ConfigError, exit 2
        stack.callback(backend.close)
        try:
            create_schema(database_url)
        except (psycopg.Error, SQLAlchemyError) as error:
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise ExperimentError(f"cannot create MovR's tables at {database_url}: {reason}") from None
        data = generate(preset, users=90, vehicles=180, rides=360, seed=42)
        with Progress(console=console) as progress:
            task = progress.add_task("loading sample data", total=data.total)
            load_sample(backend, data, lambda n: progress.advance(task, n))
            measured = measure_actions(backend, iterations, progress)
    if embedded:
        console.print("server stopped; nothing left running.")
    return {
        "preset": preset.name,
        "scale": None,  # one server, no links: no delay to scale
        "iterations": iterations,
        "server": "embedded" if embedded else "given by --database-url",
        "actions": measured,
    }


def print_tables(result: Result) -> None:
    figures = Table(title=f"MovR actions on one local server ({result['iterations']} runs each)")
    figures.add_column("action")
    figures.add_column("statements", justify="right")
    figures.add_column("median ms", justify="right")
    figures.add_column("p95 ms", justify="right")
    for row in result["actions"]:
        figures.add_row(row["action"], str(row["statements"]), f"{row['median_ms']:.2f}", f"{row['p95_ms']:.2f}")
    console.print(figures)
    console.print(f"{HASHING} includes verifying an argon2id hash (19 MiB, 2 passes): CPU work, not SQL.")


def report(result: Result) -> list[str]:
    rows = [
        [esc(row["action"]), num(row["statements"]), num(row["median_ms"], 2), num(row["p95_ms"], 2)]
        for row in result.get("actions", [])
    ]
    return [
        f"<p>{esc(result.get('iterations'))} runs of each action on one local server, no links; "
        f"{esc(HASHING)} includes verifying an argon2id hash (CPU work, not SQL).</p>",
        table(("action", "statements", "median ms", "p95 ms"), rows),
    ]


def headline(result: Result) -> list[str]:
    rows = [row for row in result.get("actions", []) if row["action"] != HASHING]
    if not rows:
        return []
    medians = [row["median_ms"] for row in rows]
    return [
        f"{len(rows)} actions, at most {max(row['statements'] for row in rows)} statement(s) each; median "
        f"{min(medians):.2f}–{max(medians):.2f} ms on one local server"
    ]


def checks(result: Result) -> list[Check]:
    many = [f"{row['action']} ({row['statements']})" for row in result["actions"] if row["statements"] != 1]
    return [
        Check(
            "every action is one statement: one round trip to its home (law 2)",
            not many,
            "more: " + ", ".join(many) if many else f"{len(result['actions'])} actions",
        )
    ]


EXPERIMENT = Experiment(
    name="actions",
    summary="Each action's statement count and latency on one local PostgreSQL server.",
    run=run,
    options=(
        click.option("--iterations", default=50, show_default=True, type=click.IntRange(1, 100_000)),
        click.option("--database-url", envvar="MOVR_DATABASE_URL", help="Use this PostgreSQL (default: start one)."),
    ),
    tables=print_tables,
    report=report,
    checks=checks,
    headline=headline,
    run_dir_help="Where the embedded server's data (actions/) and the result go.",
)
