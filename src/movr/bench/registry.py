"""Every experiment `movr bench` runs and `movr bench report` shows, in the report's order.

An experiment module exposes one `EXPERIMENT` (movr.bench.experiment.Experiment); adding it to
`EXPERIMENT_MODULES` is all it takes to get a `movr bench <name>` command and a section in the report.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from movr.bench.experiment import Experiment

# Imported by name when the registry is first asked for: `movr --help` need not import matplotlib and
# every experiment's dependencies.
EXPERIMENT_MODULES: tuple[str, ...] = (
    "movr.bench.journey",
    "movr.bench.path",
    "movr.bench.actions",
    "movr.bench.links",
    "movr.bench.ycsb.ycsb",
    "movr.bench.ycsb.insert",
    "movr.bench.ycsb.rehome",
    "movr.bench.throughput",
    "movr.bench.failover",
)


@dataclass(frozen=True)
class Registry:
    experiments: dict[str, Experiment]  # by name, in the report's order


_registry: Registry | None = None


def registry() -> Registry:
    global _registry
    if _registry is None:
        found = [importlib.import_module(module).EXPERIMENT for module in EXPERIMENT_MODULES]
        _registry = Registry({experiment.name: experiment for experiment in found})
        assert len(_registry.experiments) == len(found), "two experiments share a name"
    return _registry
