"""MovR Global: a low-latency multi-region vehicle-sharing app, its one-machine lab, and its benchmarks."""

__version__ = "0.1.0"
