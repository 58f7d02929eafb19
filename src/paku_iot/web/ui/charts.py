"""Telemetry as chart series: one series per numeric field.

The last hour is drawn from the raw rows (at most `MAX_POINTS`: denser data is averaged into
equal time buckets here). The day and the week are drawn from averages the database computes
(`DeviceHistory.aggregate`), one bucket per `AGGREGATE_BUCKETS[window]`: 1,440 points for a
day, 2,016 for a week, whatever the devices send.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from paku_iot.storage.aggregates import Bucket
from paku_iot.storage.records import TelemetryRecord

MAX_POINTS = 10_080
# The newest rows read for one chart: a week at one sample every 12 s. Beyond it the oldest
# part of the window is left out, and the answer says so.
MAX_ROWS = 50_000
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
AGGREGATE_BUCKETS = {"24h": timedelta(minutes=1), "7d": timedelta(minutes=5)}


@dataclass(slots=True)
class ChartData:
    times: list[float] = field(default_factory=list)  # epoch seconds, ascending
    fields: dict[str, list[float | None]] = field(default_factory=dict)
    rows: int = 0
    truncated: bool = False
    bucket: float | None = None  # seconds, when the points are averages from the database

    def as_json(self) -> dict[str, object]:
        return {
            "t": self.times,
            "fields": self.fields,
            "rows": self.rows,
            "truncated": self.truncated,
            "bucket": self.bucket,
        }


def numeric_fields(payload: dict[str, object]) -> dict[str, float]:
    """Top-level numbers of a payload, and numbers one object deep as `outer.inner`."""
    found: dict[str, float] = {}
    for key, value in payload.items():
        if key == "ts":
            continue
        if isinstance(value, dict):
            for inner, nested in value.items():
                if _is_number(nested):
                    found[f"{key}.{inner}"] = float(nested)
        elif _is_number(value):
            found[key] = float(value)  # type: ignore[arg-type]
    return found


def _is_number(value: object) -> bool:
    # bool is an int in Python, but a switch state is not a quantity to plot.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def chart_data(newest_first: Sequence[TelemetryRecord], *, truncated: bool) -> ChartData:
    records = list(reversed(newest_first))
    samples = [(r.ts.timestamp(), numeric_fields(r.payload)) for r in records]
    names = sorted({name for _, values in samples for name in values})
    data = ChartData(rows=len(records), truncated=truncated)
    if not samples:
        return data
    if len(samples) <= MAX_POINTS:
        data.times = [t for t, _ in samples]
        data.fields = {name: [values.get(name) for _, values in samples] for name in names}
        return data
    return _bucketed(samples, names, data)


def _bucketed(
    samples: list[tuple[float, dict[str, float]]], names: list[str], data: ChartData
) -> ChartData:
    start, end = samples[0][0], samples[-1][0]
    width = (end - start) / MAX_POINTS or 1.0
    sums: dict[int, dict[str, list[float]]] = {}
    for t, values in samples:
        bucket = min(int((t - start) / width), MAX_POINTS - 1)
        slot = sums.setdefault(bucket, {})
        for name, value in values.items():
            slot.setdefault(name, []).append(value)
    buckets = sorted(sums)
    data.times = [start + (b + 0.5) * width for b in buckets]
    data.fields = {
        name: [
            (sum(sums[b][name]) / len(sums[b][name])) if name in sums[b] else None for b in buckets
        ]
        for name in names
    }
    return data


def aggregated_chart(series: dict[str, list[Bucket]], bucket: timedelta) -> ChartData:
    """Per-field buckets (each with `avg` and `count`) on one time axis, gaps where a field
    has no value in a bucket; `rows` is the sample count of the most sampled field."""
    times = sorted({b.start.timestamp() for buckets in series.values() for b in buckets})
    index = {t: i for i, t in enumerate(times)}
    data = ChartData(times=times, bucket=bucket.total_seconds())
    for name in sorted(series):
        values: list[float | None] = [None] * len(times)
        count = 0
        for b in series[name]:
            average = b.values.get("avg")
            values[index[b.start.timestamp()]] = None if average is None else float(average)
            count += int(b.values.get("count") or 0)
        data.fields[name] = values
        data.rows = max(data.rows, count)
    return data
