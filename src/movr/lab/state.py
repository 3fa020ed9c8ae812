"""The lab's state file: what runs, where, with which pid — so any later command can find and stop it.

It holds the lab's secrets (the session key, the control token), so it is written 0600; the PostgreSQL
password is in a passfile beside it (`pgpass`, 0600), named by every connection string the lab hands out.
Each process is recorded with its start time and command line, so that a later command signals a pid only
while it still runs what the lab started (movr.lab.processes.stop_process_tree).

The plan (movr.lab.layout.LabPlan) is read back typed, its preset parsed once per read; a survival goal's
record of primaries, faults and failovers is a `SurvivalRecord`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movr.geo import Preset
from movr.lab.layout import LabPlan, ServerPlan, SurvivalServer
from movr.lab.pgserver import PASSFILE_NAME, PostgresServer, conninfo

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"


class LabStateError(RuntimeError):
    """No lab is running in that run directory, or its state file is unreadable."""


@dataclass
class ProcessRecord:
    name: str
    kind: str  # links | app | balancer | controller
    pid: int
    log: str
    port: int | None = None
    # What proves that `pid` is still the process the lab started: its start time (psutil's create_time,
    # seconds since the epoch) and its command line. None/empty: unknown, so it is never signalled.
    started: float | None = None
    cmdline: list[str] = field(default_factory=list)


@dataclass
class SurvivalRecord:
    """A survival goal at run time: each group's primary now, the faults in force, the controller's record.

    Events and failovers are kept as the JSON objects the controller writes (the drills read their timings).
    """

    primaries: dict[str, str]
    partitions: list[list[str]] = field(default_factory=list)
    lost_regions: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    failovers: list[dict[str, Any]] = field(default_factory=list)
    controller: dict[str, Any] | None = None  # {"pid", "started_at"} once the controller runs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SurvivalRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class LabState:
    run_dir: Path
    plan: LabPlan
    processes: list[ProcessRecord] = field(default_factory=list)
    secret_key: str = ""
    # Sent by every client of the links' and balancer's control endpoints (movr.lab.control).
    control_token: str = ""
    database: str = "movr"
    started_at: float = 0.0
    # Survival goals only (movr.lab.survival): current primaries, faults and the controller's decisions.
    # None, and then absent from the file, for a lab without a survival goal.
    survival: SurvivalRecord | None = None

    @property
    def preset(self) -> Preset:
        return self.plan.preset

    @property
    def preset_source(self) -> str:
        return self.plan.preset_source

    @property
    def topology(self) -> str:
        return self.plan.topology

    @property
    def scale(self) -> float:
        return self.plan.scale

    @property
    def balancer_url(self) -> str | None:
        """The lab's front door; None for a servers-only lab (no app servers, no balancer)."""
        port = self.plan.balancer_port
        return None if port is None else f"http://127.0.0.1:{port}"

    @property
    def links_control_port(self) -> int:
        return self.plan.links_control_port

    @property
    def passfile(self) -> Path:
        return lab_passfile(self.run_dir)

    def dsn(self, port: int, database: str | None = None, **params: object) -> str:
        """A conninfo for the server (or link) on `port`, as the lab's superuser, its password from the passfile."""
        return conninfo(port, self.passfile, database or self.database, **params)

    def server_dsn(self, region: str, via_link: str | None = None) -> str:
        """A server's conninfo: direct (administration, bulk loads) or through a named link.

        Under a survival goal `region` names the data of that region: after a failover that is the promoted
        standby, wherever it runs.
        """
        port = self.primary_port(region) if via_link is None else self.plan.link_by_name(via_link).listen_port
        return self.dsn(port)

    def primary_port(self, region: str) -> int:
        """The port of the server that is primary for `region`'s data now."""
        layout = self.plan.survival
        if layout is not None and self.survival is not None and region in self.survival.primaries:
            return layout.port(self.survival.primaries[region])
        return self.plan.servers[region].port

    def loader_backend(self):
        """A backend for bulk loads: straight to the servers (an operator's load is not a user's request)."""
        # Imported here: the store (SQLAlchemy and the app's backends) is heavy, and most lab commands
        # (status, down, the links and controller processes) never load data.
        from movr.store.backend import PostgresBackend
        from movr.store.regional import RegionalPostgresBackend

        preset = self.preset
        if self.topology == "multi":
            layout = self.plan.survival
            directory = layout.directory_regions if layout is not None else None
            return RegionalPostgresBackend.from_urls(
                {r: self.server_dsn(r) for r in self.plan.servers},
                preset,
                preset.primary_region,
                **({"directory_regions": directory} if directory else {}),
            )
        return PostgresBackend(self.server_dsn(preset.primary_region), preset)

    def load_sample(self, data: Any, progress: Callable[[int], None] | None = None) -> None:
        """Load sample data (movr.store.sample.SampleData) straight onto the servers that home each row."""
        from movr.store.sample import load_sample  # heavy, as loader_backend's imports

        loader = self.loader_backend()
        try:
            load_sample(loader, data, progress)
        finally:
            loader.close()

    def write(self) -> None:
        path = self.run_dir / STATE_FILE
        data = {
            "topology": self.topology,
            "preset_source": self.preset_source,
            "scale": self.scale,
            "plan": self.plan.as_dict(),
            "processes": [vars(p) for p in self.processes],
            "secret_key": self.secret_key,
            "control_token": self.control_token,
            "database": self.database,
            "started_at": self.started_at,
        }
        if self.survival is not None:
            data["survival"] = dataclasses.asdict(self.survival)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        # The state holds the lab's session secret: readable by its owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        tmp.replace(path)

    @classmethod
    def read(cls, run_dir: Path) -> LabState:
        path = Path(run_dir) / STATE_FILE
        if not path.exists():
            raise LabStateError(f"no lab is running in {run_dir}")
        try:
            data = json.loads(path.read_text())
            survival = data.get("survival")
            return cls(
                run_dir=Path(run_dir),
                plan=LabPlan.from_dict(data["plan"]),
                processes=[ProcessRecord(**p) for p in data.get("processes", [])],
                secret_key=data.get("secret_key", ""),
                control_token=data.get("control_token", ""),
                database=data.get("database", "movr"),
                started_at=float(data.get("started_at", 0)),
                survival=SurvivalRecord.from_dict(survival) if survival else None,
            )
        except (OSError, ValueError, KeyError, TypeError) as err:  # PresetError is a ValueError
            raise LabStateError(f"the lab state file {path} is unreadable: {err}") from None

    @staticmethod
    def remove(run_dir: Path) -> None:
        (Path(run_dir) / STATE_FILE).unlink(missing_ok=True)
        (Path(run_dir) / LOCK_FILE).unlink(missing_ok=True)

    @classmethod
    def update(cls, run_dir: Path, change: Callable[[LabState], None]) -> LabState:
        """Read, change and write the state under an exclusive lock.

        Several processes write the state of a lab with a survival goal (the controller records failovers,
        `movr lab fail/heal` record faults and restarted processes): each must start from the latest file,
        or one would silently undo the other's change.
        """
        with state_lock(run_dir):
            state = cls.read(run_dir)
            change(state)
            state.write()
            return state


def lab_passfile(run_dir: Path) -> Path:
    """The lab's PostgreSQL passfile: one password for every server of the lab."""
    return Path(run_dir).resolve() / PASSFILE_NAME


def lab_server(run_dir: Path, server: ServerPlan | SurvivalServer) -> PostgresServer:
    """The lab's PostgreSQL server `server` (a primary of the plan, or any server of a survival layout): in
    servers/<name>/ under the run directory, with the lab's passfile."""
    return PostgresServer(
        name=server.name,
        base_dir=Path(run_dir) / "servers" / server.name,
        port=int(server.port),
        passfile=lab_passfile(run_dir),
    )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held on `path` (created if missing) across processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def state_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive advisory lock on the lab's state (a separate file: lab.json itself is replaced)."""
    return file_lock(Path(run_dir) / LOCK_FILE)
