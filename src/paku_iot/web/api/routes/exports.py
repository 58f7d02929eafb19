"""Exports of a whole model, and one field of a device in time buckets (aggregates)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from paku_iot.exceptions import InvalidInput
from paku_iot.registry.history import parse_bucket, parse_functions
from paku_iot.security.roles import Permission
from paku_iot.storage.exports import Selection
from paku_iot.web.api import exports
from paku_iot.web.api.auth import needs
from paku_iot.web.api.exports import Format
from paku_iot.web.api.responses import NO_DEVICE, ROLE_LIMITED, STREAMED
from paku_iot.web.api.routes.messages import (
    Fields,
    From,
    To,
    events_export,
    telemetry_export,
    utc,
)
from paku_iot.web.api.schemas import AggregateItem, AggregatePage
from paku_iot.web.deps import ServiceDep

router = APIRouter(dependencies=[needs(Permission.DEVICES_READ)], responses=ROLE_LIMITED)
Model = Annotated[
    str | None, Query(min_length=1, max_length=64, description="Every device of this model.")
]
Tag = Annotated[
    str | None, Query(min_length=1, max_length=32, description="Every device with this tag.")
]


def _selection(model: str | None, tag: str | None) -> tuple[Selection, str]:
    """The devices of a model or of a tag (exactly one), and a name for the file."""
    if (model is None) == (tag is None):
        raise InvalidInput("give exactly one of `model` and `tag`", code="invalid_selection")
    if model is not None:
        return Selection(model=model), model
    assert tag is not None
    return Selection(tag=tag), f"tag-{tag}"


ExportFormat = Annotated[
    Format | None,
    Query(
        alias="format",
        description="csv (the default) or ndjson; or the Accept header `text/csv` / "
        "`application/x-ndjson`.",
    ),
]


def _streamed_format(request: Request, given: Format | None) -> Format:
    chosen = exports.negotiate(request, given)
    return Format.csv if chosen is Format.json else chosen  # an export has no pages


@router.get(
    "/telemetry/export",
    tags=["telemetry"],
    responses=STREAMED,
    response_class=StreamingResponse,
)
async def export_telemetry(
    request: Request,
    service: ServiceDep,
    model: Model = None,
    tag: Tag = None,
    start: From = None,
    to: To = None,
    fmt: ExportFormat = None,
    fields: Fields = None,
) -> StreamingResponse:
    """The telemetry of every device of a model, or with a tag, in the range, oldest first,
    streamed."""
    selection, name = _selection(model, tag)
    return await telemetry_export(
        service,
        _streamed_format(request, fmt),
        selection,
        name,
        utc(start, "from"),
        utc(to, "to"),
        fields,
    )


@router.get(
    "/events/export",
    tags=["events"],
    responses=STREAMED,
    response_class=StreamingResponse,
)
async def export_events(
    request: Request,
    service: ServiceDep,
    model: Model = None,
    tag: Tag = None,
    type: str | None = None,
    start: From = None,
    to: To = None,
    fmt: ExportFormat = None,
) -> StreamingResponse:
    """The events of every device of a model, or with a tag, in the range, oldest first,
    streamed."""
    selection, name = _selection(model, tag)
    return events_export(
        service,
        _streamed_format(request, fmt),
        selection,
        name,
        utc(start, "from"),
        utc(to, "to"),
        type,
    )


@router.get(
    "/devices/{device_id}/telemetry/aggregate",
    response_model=AggregatePage,
    response_model_exclude_unset=True,
    tags=["telemetry"],
    responses=NO_DEVICE,
)
async def aggregate_telemetry(
    device_id: str,
    service: ServiceDep,
    field: Annotated[str, Query(max_length=200, description="A payload field: temp, boiler.temp")],
    bucket: Annotated[str, Query(max_length=10, description="30s, 1m, 5m, 1h, 1d...")],
    fn: Annotated[
        list[str], Query(description="avg, min, max, count, last: repeated or comma separated")
    ],
    start: From = None,
    to: To = None,
) -> AggregatePage:
    """One numeric field in time buckets (aligned to the epoch, UTC), oldest first, computed
    in the database; non-numeric values are left out. `to` defaults to now, `from` to a day
    before `to`; at most 10,000 buckets."""
    width = parse_bucket(bucket)
    functions = parse_functions(fn)
    await service.registry.get(device_id)
    end = utc(to, "to") or datetime.now(UTC)
    begin = utc(start, "from") or end - timedelta(days=1)
    buckets = await service.history.aggregate(
        device_id, field=field, bucket=width, functions=functions, start=begin, end=end
    )
    return AggregatePage(
        items=[AggregateItem.model_validate({"t": b.start, **b.values}) for b in buckets]
    )
