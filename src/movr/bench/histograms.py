"""Latency histograms: how every benchmark records, ships and summarises what its clients measured.

HdrHistograms in µs, 3 significant digits, 1 µs to an hour. Clients send theirs encoded (HdrHistogram's
compressed base64, readable by every implementation); the result JSON keeps the encoded histogram beside
its percentiles, so a reader can recompute any figure. A client's *payload* (movr.bench.fleet.Recorder)
holds a histogram of latency and one of floor per key ("read", "read|remote", ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

HIST_LOWEST_US = 1
HIST_HIGHEST_US = 3_600_000_000  # an hour: far above any round trip we could see
HIST_DIGITS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def encode_histogram(histogram: HdrHistogram) -> str:
    return histogram.encode().decode("ascii")


def decode_histogram(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded.encode("ascii"))


def merge_histograms(encoded: Sequence[str]) -> HdrHistogram:
    merged = new_histogram()
    for text in encoded:
        merged.add(decode_histogram(text))
    return merged


def summarize(histogram: HdrHistogram) -> dict[str, Any]:
    """Count and percentiles in milliseconds; None for every figure of an empty histogram.

    (No mean: hdrh computes it by walking every bucket in Python, ~50 ms a histogram.)
    """
    count = histogram.get_total_count()
    if count == 0:
        return {"count": 0, **{key: None for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "min_ms")}}
    percentiles = histogram.get_percentile_to_value_dict([50.0, 95.0, 99.0])
    return {
        "count": count,
        "p50_ms": percentiles[50.0] / 1000.0,
        "p95_ms": percentiles[95.0] / 1000.0,
        "p99_ms": percentiles[99.0] / 1000.0,
        "max_ms": histogram.get_max_value() / 1000.0,
        "min_ms": histogram.get_min_value() / 1000.0,
    }


def floor_figures(histogram: HdrHistogram) -> dict[str, Any]:
    summary = summarize(histogram)
    return {key: summary[key] for key in ("p50_ms", "p95_ms", "p99_ms")}


def figures(payload: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Latency percentiles of one key of a client's payload, its floor percentiles, and the raw histogram."""
    return merged_figures([payload], key)


def merged_figures(payloads: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """As `figures`, over several clients' payloads (histograms added together)."""
    latency = merge_histograms([p["histograms"][key] for p in payloads if key in p["histograms"]])
    floors = merge_histograms([p["floors"][key] for p in payloads if key in p["floors"]])
    result = summarize(latency)
    result["floor"] = floor_figures(floors)
    result["histogram"] = encode_histogram(latency)
    return result
