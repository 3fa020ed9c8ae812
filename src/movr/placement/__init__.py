"""The placement spec and its renderers: one description of where data lives, for CockroachDB and the lab."""

from movr.placement.spec import (
    Locality,
    PlacementSpec,
    RegionSource,
    SpecError,
    Survival,
    TablePlacement,
    load_spec,
    validate,
)

__all__ = [
    "Locality",
    "PlacementSpec",
    "RegionSource",
    "SpecError",
    "Survival",
    "TablePlacement",
    "load_spec",
    "validate",
]
