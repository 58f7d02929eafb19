"""What devices have sent: telemetry and events per device, and the messages the collector
set aside. Routes read it here, not from storage, so that rules about who may read what
(scoped tokens, tags) have one place to live."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from paku_iot.exceptions import InvalidInput
from paku_iot.storage.aggregates import FUNCTIONS, Bucket
from paku_iot.storage.exports import ExportStore, Selection, Window
from paku_iot.storage.messages import MessageStore, TimeKey
from paku_iot.storage.records import (
    EventRecord,
    RejectedRecord,
    RejectionCount,
    TelemetryRecord,
)

# One chart or one API answer: a week of one-minute buckets fits, a year of them does not.
MAX_BUCKETS = 10_000
_BUCKET_RE = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_bucket(value: str) -> timedelta:
    """`30s`, `1m`, `5m`, `1h`, `1d`: a positive whole number and a unit."""
    match = _BUCKET_RE.fullmatch(value.strip())
    if match is None:
        raise InvalidInput(
            f"bucket {value!r} is not a width like 30s, 1m, 5m, 1h or 1d "
            "(a whole number and one of s, m, h, d)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_functions(values: list[str]) -> list[str]:
    """Repeated and comma separated `fn` values, in the order given, each once."""
    names: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if name not in FUNCTIONS:
                raise InvalidInput(f"fn {name!r} is not one of {', '.join(FUNCTIONS)}")
            if name not in names:
                names.append(name)
    if not names:
        raise InvalidInput(f"fn is required: one or more of {', '.join(FUNCTIONS)}")
    return names


def field_path(field: str) -> list[str]:
    """`boiler.temp` -> ["boiler", "temp"]: nested fields as the CSV export names them."""
    parts = field.split(".")
    if not field or any(not part for part in parts):
        raise InvalidInput(f"field {field!r} is not a payload field like temp or boiler.temp")
    return parts


class DeviceHistory:
    def __init__(self, store: MessageStore, exports: ExportStore) -> None:
        self._store = store
        self._exports = exports

    async def telemetry(
        self,
        device_id: str,
        *,
        limit: int,
        start: datetime | None = None,
        end: datetime | None = None,
        before: TimeKey | None = None,
    ) -> list[TelemetryRecord]:
        """Newest first; `start` inclusive, `end` exclusive, `before` the paging cursor."""
        return await self._store.telemetry(
            device_id, limit=limit, start=start, end=end, before=before
        )

    async def events(
        self,
        device_id: str,
        *,
        limit: int,
        event_type: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        before: TimeKey | None = None,
    ) -> list[EventRecord]:
        """Newest first; `event_type` is the `<name>` of `event/<name>`."""
        return await self._store.events(
            device_id, limit=limit, event_type=event_type, start=start, end=end, before=before
        )

    async def rejected(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        device_id: str | None = None,
        reason: str | None = None,
    ) -> list[RejectedRecord]:
        """Messages the collector could not accept, newest first, with the reason."""
        return await self._store.rejected(
            limit=limit, before_id=before_id, device_id=device_id, reason=reason
        )

    async def rejection_counts(self, *, since: datetime) -> list[RejectionCount]:
        """Rejections since `since` by reason, the most frequent first."""
        return await self._store.rejection_counts(since=since)

    # ---- exports and aggregates ------------------------------------------------------------
    # Every bulk read goes through a Selection (storage/exports.py): who may read which
    # devices is decided before it is built, and a tag becomes one more kind of selection.

    async def export_keys(
        self, selection: Selection, start: datetime | None, end: datetime | None
    ) -> list[str]:
        """The flattened payload keys of the range: the CSV columns after time and device."""
        return await self._exports.telemetry_keys(selection, Window(start, end))

    def export_telemetry(
        self, selection: Selection, start: datetime | None, end: datetime | None
    ) -> AsyncIterator[TelemetryRecord]:
        """Oldest first, streamed: constant memory whatever the range holds."""
        return self._exports.stream_telemetry(selection, Window(start, end))

    def export_events(
        self,
        selection: Selection,
        start: datetime | None,
        end: datetime | None,
        event_type: str | None = None,
    ) -> AsyncIterator[EventRecord]:
        return self._exports.stream_events(selection, Window(start, end), event_type)

    async def numeric_fields(self, device_id: str, start: datetime, end: datetime) -> list[str]:
        """The payload fields holding a number somewhere in the range (what a chart draws)."""
        return await self._exports.telemetry_keys(
            Selection(device_id=device_id), Window(start, end), numeric_only=True
        )

    async def aggregate(
        self,
        device_id: str,
        *,
        field: str,
        bucket: timedelta,
        functions: list[str],
        start: datetime,
        end: datetime,
    ) -> list[Bucket]:
        """One field in time buckets, oldest first; refused beyond MAX_BUCKETS buckets."""
        if end <= start:
            raise InvalidInput("to must be later than from")
        # +1: buckets are aligned to the epoch, so the range may start inside one.
        buckets = (end - start) // bucket + 1
        if buckets > MAX_BUCKETS:
            raise InvalidInput(
                f"{buckets} buckets of {bucket} in that range: at most {MAX_BUCKETS}; "
                "choose a wider bucket or a shorter range"
            )
        return await self._exports.aggregate(
            device_id,
            field_path(field),
            width=bucket,
            start=start,
            end=end,
            functions=functions,
        )
