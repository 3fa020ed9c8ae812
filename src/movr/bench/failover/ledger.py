"""What the drill's riders know was written: what they were told (acknowledged) or found by reading. After
the heal, every write in it must be on its region's current primary, exactly once (checks.check_ledger).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

KINDS = ("users", "vehicles", "started", "ended", "adopted", "ended_unacked")


@dataclass
class Ledger:
    """Row id -> city, per kind of write; riders write it from their threads."""

    users: dict[str, str] = field(default_factory=dict)
    vehicles: dict[str, str] = field(default_factory=dict)
    started: dict[str, str] = field(default_factory=dict)  # ride id -> city, start acknowledged
    ended: dict[str, str] = field(default_factory=dict)  # ride id -> city, end acknowledged
    adopted: dict[str, str] = field(default_factory=dict)  # rides whose start's answer was lost, found by reading
    ended_unacked: dict[str, str] = field(default_factory=dict)  # an end whose answer was lost, found done
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, kind: str, ride_id: str, city: str) -> None:
        with self.lock:
            getattr(self, kind)[ride_id] = city

    def as_dict(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in KINDS}

    @property
    def acknowledged(self) -> int:
        """Writes the riders were told happened (adopted and unacknowledged ends were found, not told)."""
        return len(self.users) + len(self.vehicles) + len(self.started) + len(self.ended)
