"""Reading telemetry and events out in bulk: streamed oldest first, a few thousand rows at a
time, whatever the size of the range; and the distinct flattened payload keys of a range,
which an export needs before its first row (a CSV header).

Keyset chunks, not one server-side cursor: each chunk is its own short read, so an export
that takes minutes holds no transaction open meanwhile, which on PostgreSQL would make
retention's DROP of a daily partition wait (and the collector's inserts queue behind it), and
on SQLite would keep the WAL from being checkpointed.

Which devices an export covers is `Selection`, turned into SQL in `_devices_clause` only:
a new way to pick devices (a tag) is added there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Table, and_, bindparam, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.storage import schema
from paku_iot.storage.aggregates import Bucket, aggregate
from paku_iot.storage.engine import translated_errors
from paku_iot.storage.records import EventRecord, TelemetryRecord
from paku_iot.storage.types import UtcDateTime

# Rows per keyset chunk: big enough that the round trips do not dominate, small enough that
# memory stays flat (a few MB at most).
CHUNK_ROWS = 2000


@dataclass(frozen=True, slots=True)
class Selection:
    """The devices an export reads: one device, every device of a model, or every device
    with a tag."""

    device_id: str | None = None
    model: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.device_id, self.model, self.tag)) != 1:
            raise ValueError("a selection names exactly one of device_id, model, tag")


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive


def _devices_clause(selection: Selection) -> tuple[str, list[BindParameter[Any]]]:
    """The SQL condition on `device_id` for a selection, with its parameters. Plain SQL text,
    because the key query below is a recursive CTE that Core does not express readably."""
    if selection.device_id is not None:
        return "device_id = :sel_device", [bindparam("sel_device", selection.device_id)]
    if selection.tag is not None:
        return (
            "device_id IN (SELECT device_id FROM device_tags WHERE tag = :sel_tag)",
            [bindparam("sel_tag", selection.tag)],
        )
    return (
        "device_id IN (SELECT id FROM devices WHERE model = :sel_model)",
        [bindparam("sel_model", selection.model)],
    )


def _where(selection: Selection, window: Window) -> tuple[str, list[BindParameter[Any]]]:
    sql, params = _devices_clause(selection)
    # Typed, so that SQLite compares with the naive UTC text it stores (storage/types.py).
    if window.start is not None:
        sql += " AND ts >= :win_start"
        params.append(bindparam("win_start", window.start, type_=UtcDateTime()))
    if window.end is not None:
        sql += " AND ts < :win_end"
        params.append(bindparam("win_end", window.end, type_=UtcDateTime()))
    return sql, params


# Leaf paths of every payload in range, objects walked to any depth and joined with dots;
# arrays, numbers, strings, booleans and nulls are leaves. The same query on both databases
# but for the JSON functions' names.
_KEYS_SQL = {
    "postgresql": """
WITH RECURSIVE kv(path, value) AS (
  SELECT e.key, e.value FROM telemetry t CROSS JOIN LATERAL jsonb_each(t.payload) e
   WHERE {where}
  UNION ALL
  SELECT kv.path || '.' || e.key, e.value
    FROM kv CROSS JOIN LATERAL jsonb_each(kv.value) e WHERE jsonb_typeof(kv.value) = 'object'
)
SELECT DISTINCT path FROM kv WHERE jsonb_typeof(value) <> 'object' {numeric}""",
    "sqlite": """
WITH RECURSIVE kv(path, value, type) AS (
  SELECT e.key, e.value, e.type FROM telemetry t, json_each(t.payload) e WHERE {where}
  UNION ALL
  SELECT kv.path || '.' || e.key, e.value, e.type
    FROM kv, json_each(kv.value) e WHERE kv.type = 'object'
)
SELECT DISTINCT path FROM kv WHERE type <> 'object' {numeric}""",
}
_NUMERIC = {
    "postgresql": "AND jsonb_typeof(value) = 'number'",
    "sqlite": "AND type IN ('integer', 'real')",
}


class ExportStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def telemetry_keys(
        self, selection: Selection, window: Window, *, numeric_only: bool = False
    ) -> list[str]:
        """The flattened payload keys in the range, sorted (the device's `ts` is left out: it
        is the row's time)."""
        dialect = self._engine.dialect.name
        where, params = _where(selection, window)
        sql = _KEYS_SQL[dialect].format(
            where=where, numeric=_NUMERIC[dialect] if numeric_only else ""
        )
        async with translated_errors(), self._engine.connect() as conn:
            rows = await conn.execute(text(sql).bindparams(*params))
            keys = sorted(str(path) for (path,) in rows)
        return [k for k in keys if k != "ts"]

    async def stream_telemetry(
        self, selection: Selection, window: Window
    ) -> AsyncIterator[TelemetryRecord]:
        """Oldest first (ties by device, then id), in keyset chunks of CHUNK_ROWS."""
        t = schema.telemetry
        query = select(t.c.id, t.c.device_id, t.c.ts, t.c.received_at, t.c.payload)
        async for row in self._stream(t, query, selection, window):
            yield TelemetryRecord(**row)

    async def stream_events(
        self, selection: Selection, window: Window, event_type: str | None = None
    ) -> AsyncIterator[EventRecord]:
        e = schema.events
        query = select(
            e.c.id, e.c.device_id, e.c.type, e.c.ts, e.c.received_at, e.c.payload, e.c.digest
        )
        if event_type is not None:
            query = query.where(e.c.type == event_type)
        async for row in self._stream(e, query, selection, window):
            yield EventRecord(**row)

    async def _stream(
        self, table: Table, query: Any, selection: Selection, window: Window
    ) -> AsyncIterator[dict[str, Any]]:
        where, params = _where(selection, window)
        query = (
            query.where(text(where).bindparams(*params))
            .order_by(table.c.ts, table.c.device_id, table.c.id)
            .limit(CHUNK_ROWS)
        )
        ts, device_id, row_id = table.c.ts, table.c.device_id, table.c.id
        chunk = query
        while True:
            async with translated_errors(), self._engine.connect() as conn:
                rows = (await conn.execute(chunk)).mappings().all()
            for row in rows:
                yield dict(row)
            if len(rows) < CHUNK_ROWS:
                return
            last = rows[-1]
            # After the last row: `ts >=` first, so the time index (and on PostgreSQL the
            # daily partitions) narrow each chunk's read to what is left.
            chunk = query.where(
                ts >= last["ts"],
                or_(
                    ts > last["ts"],
                    device_id > last["device_id"],
                    and_(device_id == last["device_id"], row_id > last["id"]),
                ),
            )

    async def aggregate(
        self,
        device_id: str,
        path: list[str],
        *,
        width: timedelta,
        start: datetime,
        end: datetime,
        functions: list[str],
    ) -> list[Bucket]:
        """See storage/aggregates.py."""
        return await aggregate(
            self._engine, device_id, path, width=width, start=start, end=end, functions=functions
        )
