"""Every experiment `movr bench` runs and `movr bench report` shows, in the report's order.

An experiment module exposes one `EXPERIMENT` (movr.bench.experiment.Experiment); adding it to
`EXPERIMENT_MODULES` is all it takes to get a `movr bench <name>` command and a section in the report.
"""

from __future__ import annotations

import importlib

from movr.bench.experiment import Registry

# Imported by name when the registry is first asked for: `movr --help` need not import matplotlib and
# every experiment's dependencies.
EXPERIMENT_MODULES: tuple[str, ...] = (
    "movr.bench.journey",
    "movr.bench.actions",
    "movr.bench.links",
    "movr.bench.ycsb.ycsb",
    "movr.bench.ycsb.insert",
    "movr.bench.ycsb.rehome",
    "movr.bench.throughput",
    "movr.bench.failover",
)

_registry: Registry | None = None


def registry() -> Registry:
    global _registry
    if _registry is None:
        built = Registry()
        for module in EXPERIMENT_MODULES:
            built.add(importlib.import_module(module).EXPERIMENT)
        _registry = built
    return _registry
