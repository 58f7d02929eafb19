"""Telemetry and events as CSV or NDJSON, streamed: rows are encoded as the database cursor
yields them and sent in chunks of about 64 KiB, so memory does not grow with the export.

CSV (docs/exports.md): `time` (RFC 3339 UTC, as the API writes times), `device`, then for
telemetry one column per payload field, nested objects flattened with dots (`boiler.temp`),
the columns fixed before the first row (`fields=`, or every key the range holds); for events
`type` and `fields` (the payload as JSON). NDJSON: one JSON object a line, the JSON listing's
item with `deviceId` added.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from paku_iot.storage.records import EventRecord, TelemetryRecord

CHUNK_BYTES = 64 * 1024
CSV_TYPE = "text/csv; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"


class Format(StrEnum):
    json = "json"
    csv = "csv"
    ndjson = "ndjson"


def negotiate(request: Request, given: Format | None) -> Format:
    """`format=` wins; else the Accept header (`text/csv`, `application/x-ndjson`); else JSON."""
    if given is not None:
        return given
    accept = request.headers.get("accept", "").lower()
    if "text/csv" in accept:
        return Format.csv
    if "application/x-ndjson" in accept:
        return Format.ndjson
    return Format.json


def iso(value: datetime) -> str:
    """As pydantic writes the API's times: `2026-01-01T00:00:00Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def flatten(payload: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects to dotted keys, to any depth; every other value is a leaf."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def cell(value: Any) -> str:
    """A leaf as CSV text: strings as they are, null and absent empty, the rest as JSON
    (numbers as the device sent them, `true`/`false`, arrays as JSON text)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def _chunked(lines: AsyncIterator[str]) -> AsyncIterator[bytes]:
    parts: list[str] = []
    size = 0
    async for line in lines:
        parts.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(parts).encode()
            parts, size = [], 0
    if parts:
        yield "".join(parts).encode()


def _csv_line(values: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


async def telemetry_csv(
    columns: list[str], records: AsyncIterator[TelemetryRecord]
) -> AsyncIterator[str]:
    yield _csv_line(["time", "device", *columns])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    async for record in records:
        flat = flatten(record.payload)
        writer.writerow([iso(record.ts), record.device_id, *(cell(flat.get(c)) for c in columns)])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


async def events_csv(records: AsyncIterator[EventRecord]) -> AsyncIterator[str]:
    yield _csv_line(["time", "device", "type", "fields"])
    async for record in records:
        yield _csv_line([iso(record.ts), record.device_id, record.type, cell(record.payload)])


async def telemetry_ndjson(records: AsyncIterator[TelemetryRecord]) -> AsyncIterator[str]:
    async for r in records:
        yield _json_line(
            {
                "deviceId": r.device_id,
                "ts": iso(r.ts),
                "receivedAt": iso(r.received_at),
                "payload": r.payload,
            }
        )


async def events_ndjson(records: AsyncIterator[EventRecord]) -> AsyncIterator[str]:
    async for r in records:
        yield _json_line(
            {
                "deviceId": r.device_id,
                "ts": iso(r.ts),
                "type": r.type,
                "receivedAt": iso(r.received_at),
                "payload": r.payload,
            }
        )


def _json_line(item: dict[str, Any]) -> str:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def filename(kind: str, who: str, start: datetime | None, end: datetime | None) -> str:
    """`telemetry-kitchen-01-20260101T000000Z-20260102T000000Z`: safe in any shell."""
    span = [f"{t.astimezone(UTC):%Y%m%dT%H%M%SZ}" for t in (start, end) if t is not None]
    return _UNSAFE.sub("_", "-".join([kind, who, *span]))


def streamed(fmt: Format, name: str, lines: Callable[[], AsyncIterator[str]]) -> StreamingResponse:
    return StreamingResponse(
        _chunked(lines()),
        media_type=CSV_TYPE if fmt is Format.csv else NDJSON_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt.value}"'},
    )
