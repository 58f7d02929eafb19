"""Telemetry to chart series: numeric fields only, and never more points than uPlot needs;
the day and the week from the database's aggregates, not from raw rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from paku_iot.server.service import Service
from paku_iot.storage.aggregates import Bucket
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import IngestBatch, TelemetryRecord
from paku_iot.web.ui.charts import MAX_POINTS, aggregated_chart, chart_data, numeric_fields
from tests.support.ui import sign_in

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


def test_aggregates_share_one_time_axis() -> None:
    minute = timedelta(minutes=1)
    chart = aggregated_chart(
        {
            "temp": [
                Bucket(START, {"avg": 1.5, "count": 2}),
                Bucket(START + minute, {"avg": 3.0, "count": 1}),
            ],
            "hum": [Bucket(START + 2 * minute, {"avg": 40.0, "count": 5})],
        },
        minute,
    )
    t0 = START.timestamp()
    assert chart.times == [t0, t0 + 60, t0 + 120]
    assert chart.fields == {"hum": [None, None, 40.0], "temp": [1.5, 3.0, None]}
    assert chart.rows == 5
    assert chart.as_json()["bucket"] == 60.0


async def test_a_week_of_minutes_is_charted_from_aggregates(
    ui: httpx.AsyncClient, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A week of one-minute samples: the week in 5-minute averages (at most 2,017 points), the
    day in 1-minute ones, and not one raw row read for either."""
    await service.registry.provision(model="m", device_id="week-1")
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    samples = 7 * 24 * 60
    rows = [
        TelemetryRecord(
            "week-1",
            end - timedelta(minutes=n),
            end,
            {"ts": n, "n": n, "env": {"hum": 40 + n % 2}, "name": "x"},
        )
        for n in range(1, samples)
    ]
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(telemetry=rows))

    async def no_raw_rows(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the day and week charts read raw telemetry")

    monkeypatch.setattr(service.history, "telemetry", no_raw_rows)
    await sign_in(ui)
    url = "/ui/devices/week-1/telemetry.json"
    week = (await ui.get(url, params={"window": "7d"})).json()
    assert week["bucket"] == 300
    assert set(week["fields"]) == {"n", "env.hum"}  # numbers only, nested ones dotted
    assert 2000 <= len(week["t"]) <= 2017
    assert week["t"] == sorted(week["t"])
    assert all(t % 300 == 0 for t in week["t"])  # bucket starts, aligned in UTC
    # A full five-minute bucket holds five consecutive minutes: its mean is the middle one.
    full = [
        (t, v)
        for t, v in zip(week["t"], week["fields"]["n"], strict=True)
        if v is not None and end.timestamp() - t > 600
    ]
    t, value = full[-1]
    minutes_ago = [(end.timestamp() - (t + 60 * k)) / 60 for k in range(5)]
    assert value == pytest.approx(sum(minutes_ago) / 5)
    assert week["rows"] >= samples - 2 - 5  # the window starts a moment after the oldest

    def minutes_within_a_day_of(moment: datetime) -> int:
        return sum(1 for row in rows if row.ts >= moment - timedelta(hours=24))

    # The day's window ends when the server reads the clock: if that is more than a minute
    # after `end`, the oldest sample of the day has already left it (seen in CI under load).
    asked = datetime.now(UTC)
    day = (await ui.get(url, params={"window": "24h"})).json()
    answered = datetime.now(UTC)
    assert day["bucket"] == 60
    assert minutes_within_a_day_of(answered) <= len(day["t"]) <= minutes_within_a_day_of(asked) + 1
    assert set(day["fields"]["env.hum"]) <= {40.0, 41.0, None}
