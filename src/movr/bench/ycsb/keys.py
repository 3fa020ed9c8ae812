"""Which rows exist where, what they are called, and how a client picks the next one.

A *computed* key carries its home region (``us-east1-000123``): a client reads the home off the key. A
*hashed* key (``user8723...``, YCSB's form) says nothing about where its row lives. Clients pick keys
from weighted `Bucket`s, each with YCSB's scrambled zipfian or a uniform choice within it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

DISTRIBUTIONS = ("zipfian", "uniform")
ZIPFIAN_CONSTANT = 0.99  # YCSB's


def hashed_key(text: str) -> str:
    """A YCSB-style key derived from `text`: nothing in it says where the row lives."""
    return f"user{int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), 'big')}"


def computed_key(home: str, number: int, digits: int = 6) -> str:
    return f"{home}-{number:0{digits}d}"


def region_of_computed_key(key: str) -> str:
    return key.rsplit("-", 1)[0]


@dataclass(frozen=True)
class KeyLayout:
    """Which keys each region homes at load time, and how they are named."""

    regions: tuple[str, ...]
    per_region: int
    computed: bool

    def key(self, home: str, index: int) -> str:
        return computed_key(home, index) if self.computed else hashed_key(f"{home}/{index}")

    def keys(self, home: str) -> list[str]:
        return [self.key(home, i) for i in range(self.per_region)]

    def part(self, home: str, accessor: str) -> list[str]:
        """The rows of `home` that only `accessor`'s client touches (remote accesses never contend)."""
        slot, parts = self.regions.index(accessor), len(self.regions)
        return [self.key(home, i) for i in range(slot, self.per_region, parts)]


def hot_keys(count: int) -> list[str]:
    """The shared hot range of `rehome`: hashed keys, homed in one region at load."""
    return [hashed_key(f"hot/{i}") for i in range(count)]


class Zipfian:
    """YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic databases"),
    scrambled by a fixed permutation so the popular items are spread over the key set, not its start."""

    def __init__(self, items: int, rng: random.Random, theta: float = ZIPFIAN_CONSTANT) -> None:
        self.items = items
        self.rng = rng
        self.theta = theta
        self.zetan = sum(1.0 / (i**theta) for i in range(1, items + 1))
        self.alpha = 1.0 / (1.0 - theta)
        zeta2 = 1.0 + 0.5**theta
        self.half_pow_theta = 0.5**theta
        self.eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan) if items > 2 else 0.0
        self.permutation = list(range(items))
        random.Random(items).shuffle(self.permutation)

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0 or self.items == 1:
            rank = 0
        elif uz < 1.0 + self.half_pow_theta:
            rank = 1
        else:
            rank = min(self.items - 1, int(self.items * (self.eta * u - self.eta + 1) ** self.alpha))
        return self.permutation[rank]


class Uniform:
    def __init__(self, items: int, rng: random.Random) -> None:
        self.items = items
        self.rng = rng

    def next(self) -> int:
        return self.rng.randrange(self.items)


@dataclass
class Bucket:
    """A set of keys a client picks from with some probability, and the labels its operations carry."""

    weight: float
    keys: list[str]
    labels: tuple[str, ...]
    chooser: Zipfian | Uniform

    def pick(self) -> str:
        return self.keys[self.chooser.next()]
