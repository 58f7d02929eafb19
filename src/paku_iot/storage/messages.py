"""Writing ingest batches and reading telemetry, events and rejected messages back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Table, and_, bindparam, func, or_, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from paku_iot.protocol import STATE_ACK, STATE_FW_VERSION, STATE_ONLINE, STATE_RSSI
from paku_iot.storage import schema
from paku_iot.storage.devices import read_reported_states
from paku_iot.storage.engine import translated_errors
from paku_iot.storage.records import (
    EventRecord,
    IngestBatch,
    RejectedRecord,
    RejectionCount,
    StateReport,
    TelemetryRecord,
)
from paku_iot.storage.types import same_json

TimeKey = tuple[datetime, int]
"""A position in a newest-first listing: (ts, id) of the last item seen."""

_d = schema.devices


def _insert_ignoring_duplicates(conn: AsyncConnection, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING: a redelivered message must not become a second row."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def _telemetry_rows(records: Sequence[TelemetryRecord]) -> list[dict[str, Any]]:
    # Plain dicts by hand: dataclasses.asdict would deep-copy every payload on the hot path.
    return [
        {"device_id": r.device_id, "ts": r.ts, "received_at": r.received_at, "payload": r.payload}
        for r in records
    ]


def _event_rows(records: Sequence[EventRecord]) -> list[dict[str, Any]]:
    return [
        {
            "device_id": r.device_id,
            "type": r.type,
            "ts": r.ts,
            "received_at": r.received_at,
            "payload": r.payload,
            "digest": r.digest,
        }
        for r in records
    ]


def _rejected_rows(records: Sequence[RejectedRecord]) -> list[dict[str, Any]]:
    return [
        {
            "received_at": r.received_at,
            "topic": r.topic,
            "device_id": r.device_id,
            "reason": r.reason,
            "detail": r.detail,
            "payload": r.payload,
            "payload_size": r.payload_size,
        }
        for r in records
    ]


# PostgreSQL: the whole batch as one statement over arrays (one Bind/Execute, not one per
# row), with the payloads as the JSON text the devices sent.
_PG_INSERT_TELEMETRY = text(
    "INSERT INTO telemetry (device_id, ts, received_at, payload) "
    "SELECT * FROM unnest(CAST(:device_ids AS text[]), CAST(:ts AS timestamptz[]), "
    "CAST(:received_at AS timestamptz[]), CAST(:payloads AS text[])::jsonb[]) "
    "ON CONFLICT DO NOTHING"
)


async def _insert_telemetry(
    conn: AsyncConnection, records: Sequence[TelemetryRecord]
) -> list[TelemetryRecord]:
    """Insert the samples; returns those not stored because their (device, ts) already holds
    a different sample."""
    if conn.dialect.name != "postgresql":
        result = await conn.execute(
            _insert_ignoring_duplicates(conn, schema.telemetry), _telemetry_rows(records)
        )
    else:
        result = await conn.execute(
            _PG_INSERT_TELEMETRY,
            {
                "device_ids": [r.device_id for r in records],
                "ts": [r.ts for r in records],
                "received_at": [r.received_at for r in records],
                "payloads": [
                    r.text if r.text is not None else json.dumps(r.payload) for r in records
                ],
            },
        )
    if result.rowcount == len(records):
        return []  # the usual case: every sample is new, no need to look closer
    return await _taken_by_another_sample(conn, records)


async def _taken_by_another_sample(
    conn: AsyncConnection, records: Sequence[TelemetryRecord]
) -> list[TelemetryRecord]:
    """The records whose (device, ts) holds a different payload: a sample that was dropped.
    A record whose key holds its own payload is stored (now or by an earlier delivery)."""
    t = schema.telemetry
    keys = list({(r.device_id, r.ts) for r in records})
    stored: dict[tuple[str, datetime], Any] = {}
    for start in range(0, len(keys), 500):  # bounded IN lists
        rows = await conn.execute(
            select(t.c.device_id, t.c.ts, t.c.payload).where(
                tuple_(t.c.device_id, t.c.ts).in_(keys[start : start + 500])
            )
        )
        stored.update(((device_id, ts), payload) for device_id, ts, payload in rows)
    return [
        r
        for r in records
        if (r.device_id, r.ts) in stored and not same_json(stored[(r.device_id, r.ts)], r.payload)
    ]


async def write_batch(conn: AsyncConnection, batch: IngestBatch) -> list[TelemetryRecord]:
    """Write one batch inside the caller's transaction, set-based where the data allows.
    Returns the telemetry not stored because its `ts` holds a different sample of the device
    (an exact redelivery is stored once and not returned)."""
    not_stored: list[TelemetryRecord] = []
    if batch.telemetry:
        not_stored = await _insert_telemetry(conn, batch.telemetry)
    if batch.events:
        await conn.execute(
            _insert_ignoring_duplicates(conn, schema.events), _event_rows(batch.events)
        )
    await insert_rejected(conn, batch.rejected)
    if batch.states:
        await _apply_states(conn, batch.states)
    await _touch_last_seen(conn, batch)
    return not_stored


async def insert_rejected(conn: AsyncConnection, records: Sequence[RejectedRecord]) -> None:
    """Store rejections in the caller's transaction."""
    if records:
        await conn.execute(schema.rejected_messages.insert(), _rejected_rows(records))


async def _apply_states(conn: AsyncConnection, states: Sequence[StateReport]) -> None:
    merged = await read_reported_states(conn, {s.device_id for s in states})
    changes: dict[str, dict[str, Any]] = {}
    for report in states:  # in arrival order, so the newest report wins each key
        state = dict(merged.get(report.device_id) or {})
        state.update(report.payload)
        # Stored by versions that kept a state's command answer as a field.
        state.pop(STATE_ACK, None)
        merged[report.device_id] = state
        change = changes.setdefault(report.device_id, {})
        change["reported_state"] = state
        if isinstance(report.payload.get(STATE_ONLINE), bool):
            change["online"] = report.payload[STATE_ONLINE]
        if STATE_RSSI in report.payload:
            change["rssi"] = report.payload[STATE_RSSI]
        if STATE_FW_VERSION in report.payload:
            change["fw_version"] = report.payload[STATE_FW_VERSION]
    for device_id, values in changes.items():
        await conn.execute(update(_d).where(_d.c.id == device_id).values(**values))


async def _touch_last_seen(conn: AsyncConnection, batch: IngestBatch) -> None:
    latest: dict[str, datetime] = {}
    live: list[TelemetryRecord | EventRecord | StateReport] = [*batch.telemetry, *batch.events]
    # A Last Will (`online: false`) is published by the broker after the device went silent:
    # it is news about the device, not a sign of it.
    live.extend(s for s in batch.states if s.live and s.payload.get(STATE_ONLINE) is not False)
    for record in live:
        seen = latest.get(record.device_id)
        if seen is None or record.received_at > seen:
            latest[record.device_id] = record.received_at
    if not latest:
        return
    # One statement executed for many parameter sets (a single round of executemany), not a
    # statement per device.
    await conn.execute(
        update(_d)
        .where(_d.c.id == bindparam("device_id"))
        .where(or_(_d.c.last_seen_at.is_(None), _d.c.last_seen_at < bindparam("seen_at")))
        .values(last_seen_at=bindparam("seen_at")),
        [{"device_id": d, "seen_at": t} for d, t in sorted(latest.items())],
    )


def _time_window(
    table: Table, start: datetime | None, end: datetime | None, before: TimeKey | None
) -> list[Any]:
    conditions: list[Any] = []
    if start is not None:
        conditions.append(table.c.ts >= start)
    if end is not None:
        conditions.append(table.c.ts < end)
    if before is not None:
        ts, row_id = before
        conditions.append(or_(table.c.ts < ts, and_(table.c.ts == ts, table.c.id < row_id)))
    return conditions


class MessageStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def telemetry(
        self,
        device_id: str,
        *,
        limit: int,
        start: datetime | None = None,
        end: datetime | None = None,
        before: TimeKey | None = None,
    ) -> list[TelemetryRecord]:
        """Newest first; `start` inclusive, `end` exclusive."""
        t = schema.telemetry
        query = (
            select(t.c.id, t.c.device_id, t.c.ts, t.c.received_at, t.c.payload)
            .where(t.c.device_id == device_id, *_time_window(t, start, end, before))
            .order_by(t.c.ts.desc(), t.c.id.desc())
            .limit(limit)
        )
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [TelemetryRecord(**row) for row in rows]

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
        e = schema.events
        query = (
            select(
                e.c.id, e.c.device_id, e.c.type, e.c.ts, e.c.received_at, e.c.payload, e.c.digest
            )
            .where(e.c.device_id == device_id, *_time_window(e, start, end, before))
            .order_by(e.c.ts.desc(), e.c.id.desc())
            .limit(limit)
        )
        if event_type is not None:
            query = query.where(e.c.type == event_type)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [EventRecord(**row) for row in rows]

    async def rejected(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        device_id: str | None = None,
        reason: str | None = None,
    ) -> list[RejectedRecord]:
        r = schema.rejected_messages
        query = select(r).order_by(r.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(r.c.id < before_id)
        if device_id is not None:
            query = query.where(r.c.device_id == device_id)
        if reason is not None:
            query = query.where(r.c.reason == reason)
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [RejectedRecord(**row) for row in rows]

    async def rejection_counts(self, *, since: datetime) -> list[RejectionCount]:
        """Rejections received since `since`, by reason, the most frequent first."""
        r = schema.rejected_messages
        messages = func.count().label("messages")
        query = (
            select(
                r.c.reason,
                messages,
                func.count(r.c.device_id.distinct()).label("devices"),
                func.max(r.c.received_at).label("latest_at"),
            )
            .where(r.c.received_at >= since)
            .group_by(r.c.reason)
            .order_by(messages.desc(), r.c.reason)
        )
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [RejectionCount(**row) for row in rows]
