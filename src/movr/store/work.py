"""What an action asks of a backend: statements, where their data lives, and unique claims.

Actions describe their work declaratively so that the backend, not the action, decides the wire
protocol (one statement as an implicit transaction, several in one pipeline, two-phase commit across
servers) and the route (the city's home region, a locality-optimized search, the local GLOBAL copy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

HomeKind = Literal["city", "search", "local", "global_write"]
Isolation = Literal["repeatable read", "serializable"]


@dataclass(frozen=True)
class Home:
    """Where the data an action touches lives."""

    kind: HomeKind
    city: str | None = None
    username: str | None = None  # a search for a user by name: the lab's claims name the user's home

    @classmethod
    def of_city(cls, city: str) -> Home:
        """Rows homed in the region of `city` (REGIONAL BY ROW, region computed from city)."""
        return cls("city", city)

    @classmethod
    def search(cls, username: str | None = None) -> Home:
        """The action names no home: look locally first, then in every other region at once (or, for a
        user named by `username`, where the lab's local claim of that name says the user lives)."""
        return cls("search", username=username)

    @classmethod
    def local(cls) -> Home:
        """GLOBAL reference data: the copy in the serving region is fresh."""
        return cls("local")

    @classmethod
    def global_write(cls) -> Home:
        """A write to GLOBAL reference data: it must reach every region before it commits."""
        return cls("global_write")


@dataclass(frozen=True)
class Statement:
    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UniqueClaim:
    """A value that must be unique across every region (e.g. a username)."""

    kind: str
    value: str
    city: str = ""
    owner_id: str = ""


@dataclass(frozen=True)
class Work:
    """One transaction: statements run in order, atomically, on the home of their data."""

    action: str
    statements: Sequence[Statement]
    home: Home
    readonly: bool = False
    claims: Sequence[UniqueClaim] = ()
    releases: Sequence[UniqueClaim] = ()
    # The action's own test of success, for a backend that must coordinate several servers (a claim
    # released on one server only if the row went away on another). A single server needs no such
    # test: a statement that changed nothing there is harmless.
    commit_if: Callable[[list[list[dict[str, Any]]]], bool] | None = None
    # Stronger than the default READ COMMITTED, for work whose check must see what its writes touch (see
    # remove_user). PostgreSQL servers begin the transaction with it in the same pipeline (no extra round
    # trip); CockroachDB runs everything SERIALIZABLE already.
    isolation: Isolation | None = None


Rows = list[dict[str, Any]]
