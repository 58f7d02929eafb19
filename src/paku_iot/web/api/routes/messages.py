from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from paku_iot.exceptions import InvalidInput
from paku_iot.security.roles import Permission
from paku_iot.storage.exports import Selection
from paku_iot.storage.records import EventRecord, TelemetryRecord
from paku_iot.web.api import exports
from paku_iot.web.api.auth import needs
from paku_iot.web.api.cursors import decode_int_cursor, decode_time_cursor, encode_cursor
from paku_iot.web.api.exports import Format
from paku_iot.web.api.responses import NO_DEVICE, ROLE_LIMITED, STREAMED
from paku_iot.web.api.schemas import (
    EventItem,
    EventPage,
    RejectedItem,
    RejectedPage,
    TelemetryItem,
    TelemetryPage,
)
from paku_iot.web.deps import ServiceDep

# Everything here is read-only history: one permission for the router, declared once.
router = APIRouter(dependencies=[needs(Permission.DEVICES_READ)], responses=ROLE_LIMITED)
Limit = Annotated[int, Query(ge=1, le=1000)]
From = Annotated[datetime | None, Query(alias="from", description="RFC 3339; inclusive.")]
To = Annotated[datetime | None, Query(description="RFC 3339; exclusive.")]
FormatParam = Annotated[
    Format | None,
    Query(
        alias="format",
        description="json (pages, the default), or csv / ndjson: the whole range, streamed, "
        "oldest first (`limit` and `cursor` do not apply). The Accept header `text/csv` or "
        "`application/x-ndjson` does the same.",
    ),
]
Fields = Annotated[
    list[str] | None,
    Query(
        description="CSV only: the payload columns, in order (repeated or comma separated; "
        "nested fields with dots). Default: every field the range holds, sorted."
    ),
]


def columns(fields: list[str] | None) -> list[str] | None:
    if not fields:
        return None
    return [name.strip() for value in fields for name in value.split(",") if name.strip()]


async def telemetry_export(
    service: ServiceDep,
    fmt: Format,
    selection: Selection,
    who: str,
    start: datetime | None,
    end: datetime | None,
    fields: list[str] | None,
) -> StreamingResponse:
    """The telemetry of a selection as CSV or NDJSON (web/api/exports.py)."""
    name = exports.filename("telemetry", who, start, end)

    def records() -> AsyncIterator[TelemetryRecord]:
        return service.history.export_telemetry(selection, start, end)

    if fmt is Format.ndjson:
        return exports.streamed(fmt, name, lambda: exports.telemetry_ndjson(records()))
    # The header comes first, so the columns are fixed before the first row: given, or a
    # first pass over the range for its distinct keys (one query in the database).
    chosen = columns(fields) or await service.history.export_keys(selection, start, end)
    return exports.streamed(
        fmt,
        name,
        lambda: exports.telemetry_csv(chosen, records()),
    )


def events_export(
    service: ServiceDep,
    fmt: Format,
    selection: Selection,
    who: str,
    start: datetime | None,
    end: datetime | None,
    event_type: str | None = None,
) -> StreamingResponse:
    name = exports.filename("events", who, start, end)

    def records() -> AsyncIterator[EventRecord]:
        return service.history.export_events(selection, start, end, event_type)

    if fmt is Format.ndjson:
        return exports.streamed(fmt, name, lambda: exports.events_ndjson(records()))
    return exports.streamed(fmt, name, lambda: exports.events_csv(records()))


def utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInput(f"{name} must carry a time zone, e.g. 2026-01-01T00:00:00Z")
    return value.astimezone(UTC)


@router.get(
    "/devices/{device_id}/telemetry",
    response_model=TelemetryPage,
    tags=["telemetry"],
    responses={**NO_DEVICE, **STREAMED},
)
async def device_telemetry(
    request: Request,
    device_id: str,
    service: ServiceDep,
    start: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: str | None = None,
    fmt: FormatParam = None,
    fields: Fields = None,
) -> TelemetryPage | StreamingResponse:
    """The device's telemetry, newest first; or the whole range as CSV or NDJSON."""
    await service.registry.get(device_id)
    chosen = exports.negotiate(request, fmt)
    if chosen is not Format.json:
        return await telemetry_export(
            service,
            chosen,
            Selection(device_id=device_id),
            device_id,
            utc(start, "from"),
            utc(to, "to"),
            fields,
        )
    records = await service.history.telemetry(
        device_id,
        limit=limit,
        start=utc(start, "from"),
        end=utc(to, "to"),
        before=decode_time_cursor(cursor) if cursor else None,
    )
    last = records[-1] if len(records) == limit else None
    return TelemetryPage(
        items=[TelemetryItem.of(r) for r in records],
        next=encode_cursor(last.ts, last.id) if last else None,
    )


@router.get(
    "/devices/{device_id}/events",
    response_model=EventPage,
    tags=["events"],
    responses={**NO_DEVICE, **STREAMED},
)
async def device_events(
    request: Request,
    device_id: str,
    service: ServiceDep,
    type: str | None = None,
    start: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: str | None = None,
    fmt: FormatParam = None,
) -> EventPage | StreamingResponse:
    """The device's events, newest first; `type` is the `<name>` of `event/<name>`. Or the
    whole range as CSV or NDJSON."""
    await service.registry.get(device_id)
    chosen = exports.negotiate(request, fmt)
    if chosen is not Format.json:
        return events_export(
            service,
            chosen,
            Selection(device_id=device_id),
            device_id,
            utc(start, "from"),
            utc(to, "to"),
            type,
        )
    records = await service.history.events(
        device_id,
        limit=limit,
        event_type=type,
        start=utc(start, "from"),
        end=utc(to, "to"),
        before=decode_time_cursor(cursor) if cursor else None,
    )
    last = records[-1] if len(records) == limit else None
    return EventPage(
        items=[EventItem.of(r) for r in records],
        next=encode_cursor(last.ts, last.id) if last else None,
    )


@router.get("/rejected", response_model=RejectedPage, tags=["ingest"])
async def rejected_messages(
    service: ServiceDep,
    device_id: Annotated[str | None, Query(alias="deviceId")] = None,
    reason: str | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> RejectedPage:
    """Messages the collector could not accept, newest first, with the reason."""
    records = await service.history.rejected(
        limit=limit,
        before_id=decode_int_cursor(cursor) if cursor else None,
        device_id=device_id,
        reason=reason,
    )
    items = [
        RejectedItem(
            id=r.id,
            received_at=r.received_at,
            topic=r.topic,
            device_id=r.device_id,
            reason=r.reason,
            detail=r.detail,
            payload=r.payload.decode("utf-8", errors="replace"),
            payload_size=r.payload_size,
        )
        for r in records
    ]
    return RejectedPage(
        items=items, next=encode_cursor(records[-1].id) if len(records) == limit else None
    )
