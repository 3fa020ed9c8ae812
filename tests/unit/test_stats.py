"""A request's SQL time is the time it waited on SQL: round trips that ran in parallel count once."""

from movr.store import stats


def test_overlapping_round_trips_count_once_and_separate_ones_add_up():
    parallel_then_local = stats.Stats(sql_intervals=[(0.0, 1.0), (0.5, 2.0), (3.0, 3.5), (3.1, 3.2)])
    assert parallel_then_local.sql_seconds == 2.5
    assert stats.Stats().sql_seconds == 0.0


def test_a_scope_keeps_each_recorded_round_trip():
    with stats.measure() as measured:
        stats.record("a", 1, 0.0)
        stats.record("b", 2, 0.0)
    assert measured.statements == 3 and len(measured.sql_intervals) == 2 and measured.sql_seconds == 0.0
