from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from paku_iot.exceptions import InvalidInput
from paku_iot.security.roles import Permission
from paku_iot.web.api.auth import needs
from paku_iot.web.api.cursors import decode_int_cursor, decode_time_cursor, encode_cursor
from paku_iot.web.api.responses import NO_DEVICE, ROLE_LIMITED
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


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInput(f"{name} must carry a time zone, e.g. 2026-01-01T00:00:00Z")
    return value.astimezone(UTC)


@router.get(
    "/devices/{device_id}/telemetry",
    response_model=TelemetryPage,
    tags=["telemetry"],
    responses=NO_DEVICE,
)
async def device_telemetry(
    device_id: str,
    service: ServiceDep,
    start: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> TelemetryPage:
    """The device's telemetry, newest first."""
    await service.registry.get(device_id)
    records = await service.history.telemetry(
        device_id,
        limit=limit,
        start=_utc(start, "from"),
        end=_utc(to, "to"),
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
    responses=NO_DEVICE,
)
async def device_events(
    device_id: str,
    service: ServiceDep,
    type: str | None = None,
    start: From = None,
    to: To = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> EventPage:
    """The device's events, newest first; `type` is the `<name>` of `event/<name>`."""
    await service.registry.get(device_id)
    records = await service.history.events(
        device_id,
        limit=limit,
        event_type=type,
        start=_utc(start, "from"),
        end=_utc(to, "to"),
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
