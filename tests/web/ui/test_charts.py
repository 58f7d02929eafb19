"""Telemetry to chart series: numeric fields only, and never more points than uPlot needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paku_iot.storage.records import TelemetryRecord
from paku_iot.web.ui.charts import MAX_POINTS, chart_data, numeric_fields

START = datetime(2026, 1, 1, tzinfo=UTC)


def newest_first(count: int, step: timedelta) -> list[TelemetryRecord]:
    rows = [
        TelemetryRecord("d", START + n * step, START, {"temp": float(n % 10), "n": n})
        for n in range(count)
    ]
    return rows[::-1]


def test_numbers_are_plotted_and_the_rest_left_out() -> None:
    payload = {"ts": 1, "temp": 21.5, "on": True, "name": "x", "env": {"hum": 40, "tag": "a"}}
    assert numeric_fields(payload) == {"temp": 21.5, "env.hum": 40.0}
    assert numeric_fields({"bad": float("nan"), "big": 10**3}) == {"big": 1000.0}


def test_a_week_of_minutes_goes_out_as_it_is_in_time_order() -> None:
    data = chart_data(newest_first(7 * 24 * 60, timedelta(minutes=1)), truncated=False)
    assert len(data.times) == 7 * 24 * 60 == MAX_POINTS
    assert data.times == sorted(data.times)
    assert data.fields["n"][:3] == [0.0, 1.0, 2.0]


def test_denser_data_is_averaged_into_buckets() -> None:
    data = chart_data(newest_first(3 * MAX_POINTS, timedelta(seconds=20)), truncated=True)
    assert len(data.times) <= MAX_POINTS
    assert data.rows == 3 * MAX_POINTS
    assert data.truncated
    # Each bucket holds about three consecutive samples: their mean is near the middle one.
    assert abs(data.fields["n"][1] - 4.0) <= 1.5
    assert data.times == sorted(data.times)


def test_missing_fields_are_gaps() -> None:
    rows = [
        TelemetryRecord("d", START + timedelta(seconds=1), START, {"hum": 1}),
        TelemetryRecord("d", START, START, {"temp": 2}),
    ]
    data = chart_data(rows, truncated=False)
    assert data.fields == {"hum": [None, 1.0], "temp": [2.0, None]}
