"""CSV and NDJSON exports of telemetry and events, per device and per model, on both
databases: the header, flattening, times, ranges, the Accept header, the file name."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from paku_iot.server.service import Service
from paku_iot.storage import exports as exports_store
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import EventRecord, IngestBatch, TelemetryRecord

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def seed(api: httpx.AsyncClient, service: Service) -> None:
    for device, model in (("boiler-1", "boiler"), ("boiler-2", "boiler"), ("fan-1", "fan")):
        response = await api.post("/devices", json={"model": model, "id": device})
        assert response.status_code == 201, response.text
    rows = [
        TelemetryRecord("boiler-1", T0, T0, {"ts": 1, "temp": 21.5, "ok": True}),
        TelemetryRecord(
            "boiler-1",
            T0 + timedelta(minutes=1),
            T0,
            {"boiler": {"temp": 60, "pump": {"on": False}}, "note": 'say "hi", ok'},
        ),
        TelemetryRecord("boiler-1", T0 + timedelta(minutes=2, microseconds=500), T0, {"l": [1]}),
        TelemetryRecord("boiler-2", T0 + timedelta(seconds=30), T0, {"temp": 19}),
        TelemetryRecord("fan-1", T0, T0, {"rpm": 900}),
    ]
    events = [
        EventRecord("boiler-1", "fault", T0, T0, {"code": 3}, "a" * 16),
        EventRecord("boiler-1", "boot", T0 + timedelta(minutes=5), T0, {}, "b" * 16),
        EventRecord("boiler-2", "fault", T0 + timedelta(minutes=1), T0, {"code": 4}, "c" * 16),
    ]
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(telemetry=rows, events=events))


def table(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_a_device_as_csv(api: httpx.AsyncClient, service: Service) -> None:
    await seed(api, service)
    response = await api.get("/devices/boiler-1/telemetry", params={"format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="telemetry-boiler-1.csv"'
    )
    assert response.text.endswith("\r\n")
    assert table(response.text) == [
        ["time", "device", "boiler.pump.on", "boiler.temp", "l", "note", "ok", "temp"],
        ["2026-03-01T12:00:00Z", "boiler-1", "", "", "", "", "true", "21.5"],
        ["2026-03-01T12:01:00Z", "boiler-1", "false", "60", "", 'say "hi", ok', "", ""],
        ["2026-03-01T12:02:00.000500Z", "boiler-1", "", "", "[1]", "", "", ""],
    ]


async def test_the_range_the_columns_and_the_accept_header(
    api: httpx.AsyncClient, service: Service
) -> None:
    await seed(api, service)
    params = {"from": "2026-03-01T12:01:00Z", "to": "2026-03-01T12:02:00Z"}
    response = await api.get(
        "/devices/boiler-1/telemetry", params=params, headers={"Accept": "text/csv"}
    )
    assert table(response.text) == [
        ["time", "device", "boiler.pump.on", "boiler.temp", "note"],  # only the range's keys
        ["2026-03-01T12:01:00Z", "boiler-1", "false", "60", 'say "hi", ok'],
    ]
    assert response.headers["content-disposition"] == (
        'attachment; filename="telemetry-boiler-1-20260301T120100Z-20260301T120200Z.csv"'
    )
    chosen = await api.get(
        "/devices/boiler-1/telemetry",
        params={"format": "csv", "fields": ["temp,boiler.temp", "missing"], "to": params["to"]},
    )
    assert table(chosen.text) == [
        ["time", "device", "temp", "boiler.temp", "missing"],
        ["2026-03-01T12:00:00Z", "boiler-1", "21.5", "", ""],
        ["2026-03-01T12:01:00Z", "boiler-1", "", "60", ""],
    ]
    empty = await api.get(
        "/devices/boiler-1/telemetry", params={"format": "csv", "from": "2027-01-01T00:00:00Z"}
    )
    assert empty.text == "time,device\r\n"
    # JSON pages stay the default, whatever else Accept lists.
    page = await api.get("/devices/boiler-1/telemetry", headers={"Accept": "application/json"})
    assert page.headers["content-type"] == "application/json"
    assert len(page.json()["items"]) == 3


async def test_a_device_as_ndjson(api: httpx.AsyncClient, service: Service) -> None:
    await seed(api, service)
    response = await api.get(
        "/devices/boiler-1/telemetry", headers={"Accept": "application/x-ndjson"}
    )
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["ts"] for line in lines] == [
        "2026-03-01T12:00:00Z",
        "2026-03-01T12:01:00Z",
        "2026-03-01T12:02:00.000500Z",
    ]
    assert lines[1] == {
        "deviceId": "boiler-1",
        "ts": "2026-03-01T12:01:00Z",
        "receivedAt": "2026-03-01T12:00:00Z",
        "payload": {"boiler": {"temp": 60, "pump": {"on": False}}, "note": 'say "hi", ok'},
    }


async def test_events(api: httpx.AsyncClient, service: Service) -> None:
    await seed(api, service)
    response = await api.get("/devices/boiler-1/events", params={"format": "csv"})
    assert response.headers["content-disposition"] == 'attachment; filename="events-boiler-1.csv"'
    assert table(response.text) == [
        ["time", "device", "type", "fields"],
        ["2026-03-01T12:00:00Z", "boiler-1", "fault", '{"code":3}'],
        ["2026-03-01T12:05:00Z", "boiler-1", "boot", "{}"],
    ]
    faults = await api.get("/devices/boiler-1/events", params={"format": "ndjson", "type": "fault"})
    [line] = [json.loads(line) for line in faults.text.splitlines()]
    assert line["type"] == "fault"
    assert line["payload"] == {"code": 3}


async def test_a_whole_model(api: httpx.AsyncClient, service: Service) -> None:
    await seed(api, service)
    response = await api.get("/telemetry/export", params={"model": "boiler"})
    assert response.headers["content-disposition"] == 'attachment; filename="telemetry-boiler.csv"'
    rows = table(response.text)
    assert rows[0] == ["time", "device", "boiler.pump.on", "boiler.temp", "l", "note", "ok", "temp"]
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("2026-03-01T12:00:00Z", "boiler-1"),
        ("2026-03-01T12:00:30Z", "boiler-2"),
        ("2026-03-01T12:01:00Z", "boiler-1"),
        ("2026-03-01T12:02:00.000500Z", "boiler-1"),
    ]
    ndjson = await api.get("/telemetry/export", params={"model": "fan", "format": "ndjson"})
    assert [json.loads(x)["payload"] for x in ndjson.text.splitlines()] == [{"rpm": 900}]
    events = await api.get(
        "/events/export", params={"model": "boiler", "to": "2026-03-01T12:04:00Z"}
    )
    assert [r[1:3] for r in table(events.text)] == [
        ["device", "type"],
        ["boiler-1", "fault"],
        ["boiler-2", "fault"],
    ]
    assert (await api.get("/telemetry/export", params={"model": "none"})).text == (
        "time,device\r\n"
    )


async def test_every_device_with_a_tag(api: httpx.AsyncClient, service: Service) -> None:
    await seed(api, service)
    tagged = await api.post("/devices/tags", json={"ids": ["boiler-2", "fan-1"], "add": ["roof"]})
    assert tagged.status_code == 200, tagged.text
    response = await api.get("/telemetry/export", params={"tag": "roof", "format": "ndjson"})
    assert response.status_code == 200, response.text
    assert sorted(json.loads(x)["deviceId"] for x in response.text.splitlines()) == [
        "boiler-2",
        "fan-1",
    ]
    events = await api.get("/events/export", params={"tag": "roof"})
    assert [r[1] for r in table(events.text)[1:]] == ["boiler-2"]
    assert "tag-roof" in events.headers["content-disposition"]


async def test_bad_requests(api: httpx.AsyncClient, service: Service) -> None:
    await seed(api, service)
    assert (await api.get("/devices/nope/telemetry", params={"format": "csv"})).status_code == 404
    bad_format = await api.get("/devices/boiler-1/telemetry", params={"format": "xml"})
    assert bad_format.status_code == 422
    naive = await api.get(
        "/devices/boiler-1/telemetry", params={"format": "csv", "from": "2026-03-01T12:00:00"}
    )
    assert naive.status_code == 422
    assert "time zone" in naive.text
    nothing = await api.get("/telemetry/export")  # a model or a tag is required
    assert nothing.status_code == 422
    assert "exactly one of `model` and `tag`" in nothing.text
    both = await api.get("/events/export", params={"model": "boiler", "tag": "x"})
    assert both.status_code == 422


async def test_chunks_join_without_gaps_or_repeats(
    api: httpx.AsyncClient, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows with the same time on several devices, and several events of one device at one
    time, across chunk boundaries: the keyset (ts, device, id) neither skips nor repeats."""
    await seed(api, service)
    ties = [
        EventRecord(device, kind, T0, T0, {"n": n}, f"{n:016d}")
        for n, (device, kind) in enumerate(
            [("boiler-2", "a"), ("boiler-1", "b"), ("boiler-2", "c"), ("boiler-1", "d")]
        )
    ]
    samples = [TelemetryRecord("boiler-2", T0, T0, {"temp": 18})]
    async with service.engine.begin() as conn:
        await write_batch(conn, IngestBatch(telemetry=samples, events=ties))
    whole_events = (await api.get("/events/export", params={"model": "boiler"})).text
    whole_telemetry = (await api.get("/telemetry/export", params={"model": "boiler"})).text
    assert len(table(whole_events)) == 1 + 3 + 4
    for size in (1, 2, 3):
        monkeypatch.setattr(exports_store, "CHUNK_ROWS", size)
        assert (await api.get("/events/export", params={"model": "boiler"})).text == whole_events
        chunked = await api.get("/telemetry/export", params={"model": "boiler"})
        assert chunked.text == whole_telemetry
    assert [r[1] for r in table(whole_telemetry)[1:3]] == ["boiler-1", "boiler-2"]
