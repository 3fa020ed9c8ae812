"""What a link is: its spec (ends, ports, delay, kind) and the spec file a links process is started with."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LISTEN_HOST = "127.0.0.1"  # links never listen on another address: the lab is one machine, not a network
LINK_KINDS = ("wan", "local")


@dataclass(frozen=True)
class LinkSpec:
    """One link: listen on 127.0.0.1:listen_port, forward to target, ``one_way_ms`` each direction.

    ``listen_port`` 0 asks for an ephemeral port (tests, benches); the server reports the port it bound.
    ``src``/``dst`` name the two ends (regions, or "client"/a region for a client link) and
    ``kind`` is "wan" (between regions) or "local" (within a region).
    """

    name: str
    listen_port: int
    target_port: int
    one_way_ms: float
    kind: str
    src: str
    dst: str
    target_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.kind not in LINK_KINDS:
            raise ValueError(f"link {self.name!r}: kind must be one of {LINK_KINDS}, not {self.kind!r}")
        if self.one_way_ms < 0:
            raise ValueError(f"link {self.name!r}: one_way_ms must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_specs(path: str | Path) -> list[LinkSpec]:
    """Read a spec file: a JSON list of link objects, or ``{"links": [...]}``."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data["links"]
    specs = [LinkSpec.from_dict(item) for item in data]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate link names in {path}")
    return specs


def dump_specs(specs: Iterable[LinkSpec], path: str | Path) -> None:
    Path(path).write_text(json.dumps({"links": [s.to_dict() for s in specs]}, indent=2) + "\n")
