"""One field of a device in time buckets, computed by each database, against values worked
out by hand; and the parameters it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from paku_iot.server.service import Service
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import IngestBatch, TelemetryRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "/devices/agg-1/telemetry/aggregate"
DAY = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"}
ALL = "avg,min,max,count,last"

# (seconds after 12:00, payload): strings, booleans and nulls are not numbers and do not count.
SAMPLES: list[tuple[int, dict[str, Any]]] = [
    (10, {"temp": 10, "boiler": {"temp": 1.5}}),
    (50, {"temp": 20, "boiler": {"temp": 2.5}}),
    (65, {"temp": "high"}),
    (90, {"temp": 30}),
    (100, {"temp": True, "boiler": {"temp": None}}),
    (300, {"temp": 5}),
    (3600, {"temp": 7, "boiler": {"temp": 9}}),
]


@pytest.fixture
async def seeded(api: httpx.AsyncClient, service: Service) -> httpx.AsyncClient:
    assert (await api.post("/devices", json={"model": "m", "id": "agg-1"})).status_code == 201
    rows = [
        TelemetryRecord("agg-1", T0 + timedelta(seconds=s), T0, {"ts": s, **p}) for s, p in SAMPLES
    ]
    rows.append(TelemetryRecord("other", T0, T0, {"temp": 1000}))  # another device's sample
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(telemetry=rows))
    return api


async def items(api: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await api.get(URL, params={**DAY, "field": "temp", "fn": ALL, **params})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["items"]
    return result


def row(t: str, avg: float, low: float, high: float, count: int, last: float) -> dict[str, Any]:
    return {"t": t, "avg": avg, "min": low, "max": high, "count": count, "last": last}


async def test_each_bucket_width(seeded: httpx.AsyncClient) -> None:
    assert await items(seeded, bucket="1m") == [
        row("2026-03-01T12:00:00Z", 15.0, 10.0, 20.0, 2, 20.0),
        row("2026-03-01T12:01:00Z", 30.0, 30.0, 30.0, 1, 30.0),
        row("2026-03-01T12:05:00Z", 5.0, 5.0, 5.0, 1, 5.0),
        row("2026-03-01T13:00:00Z", 7.0, 7.0, 7.0, 1, 7.0),
    ]
    assert await items(seeded, bucket="5m") == [
        row("2026-03-01T12:00:00Z", 20.0, 10.0, 30.0, 3, 30.0),
        row("2026-03-01T12:05:00Z", 5.0, 5.0, 5.0, 1, 5.0),
        row("2026-03-01T13:00:00Z", 7.0, 7.0, 7.0, 1, 7.0),
    ]
    assert await items(seeded, bucket="1h") == [
        row("2026-03-01T12:00:00Z", 16.25, 5.0, 30.0, 4, 5.0),
        row("2026-03-01T13:00:00Z", 7.0, 7.0, 7.0, 1, 7.0),
    ]
    assert await items(seeded, bucket="1d") == [
        row("2026-03-01T00:00:00Z", 14.4, 5.0, 30.0, 5, 7.0),
    ]


async def test_functions_nested_fields_and_ranges(seeded: httpx.AsyncClient) -> None:
    # Only the functions asked for, repeated or comma separated, in any order.
    assert await items(seeded, bucket="1h", fn="last", field="boiler.temp") == [
        {"t": "2026-03-01T12:00:00Z", "last": 2.5},
        {"t": "2026-03-01T13:00:00Z", "last": 9.0},
    ]
    response = await seeded.get(
        URL,
        params=[
            ("field", "temp"),
            ("bucket", "1h"),
            ("fn", "count"),
            ("fn", "max,count"),
            *DAY.items(),
        ],
    )
    assert response.json()["items"] == [
        {"t": "2026-03-01T12:00:00Z", "count": 4, "max": 30.0},
        {"t": "2026-03-01T13:00:00Z", "count": 1, "max": 7.0},
    ]
    # `from` inclusive, `to` exclusive; the bucket still starts on the hour.
    ranged = await items(seeded, bucket="1h", **{"from": "2026-03-01T12:01:30Z"})
    assert ranged[0] == row("2026-03-01T12:00:00Z", 17.5, 5.0, 30.0, 2, 5.0)
    assert await items(seeded, bucket="1h", to="2026-03-01T12:01:30Z") == [
        row("2026-03-01T12:00:00Z", 15.0, 10.0, 20.0, 2, 20.0)
    ]
    assert await items(seeded, bucket="1h", field="nothing") == []
    assert await items(seeded, bucket="1h", field="boiler") == []  # an object is no number


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bucket": "1x"}, "is not a width"),
        ({"bucket": "0m"}, "is not a width"),
        ({"bucket": "m"}, "is not a width"),
        ({"fn": "median"}, "is not one of avg, min, max, count, last"),
        ({"fn": ","}, "fn is required"),
        ({"field": "a..b"}, "is not a payload field"),
        ({"bucket": "1s"}, "at most 10000"),
        ({"from": "2026-03-02T00:00:00Z"}, "later than from"),
        ({"from": "2026-03-01T00:00:00"}, "time zone"),
    ],
)
async def test_bad_parameters(
    seeded: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await seeded.get(
        URL, params={**DAY, "field": "temp", "fn": "avg", "bucket": "1m", **params}
    )
    assert response.status_code == 422, response.text
    assert message in response.text


async def test_an_unknown_device(seeded: httpx.AsyncClient) -> None:
    response = await seeded.get(
        "/devices/nope/telemetry/aggregate", params={"field": "t", "bucket": "1m", "fn": "avg"}
    )
    assert response.status_code == 404
    missing = await seeded.get(URL, params={"bucket": "1m", "fn": "avg"})
    assert missing.status_code == 422  # field is required
