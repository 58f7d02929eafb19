"""Retention on both databases: old data goes, new data stays; PostgreSQL drops partitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.storage import schema
from paku_iot.storage.engine import create_engine
from paku_iot.storage.messages import write_batch
from paku_iot.storage.partitions import existing_partitions, partition_name
from paku_iot.storage.records import EventRecord, IngestBatch, RejectedRecord, TelemetryRecord
from paku_iot.storage.retention import CHUNK_ROWS, RetentionPolicy, apply_retention

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def engine(database_url: str) -> AsyncEngine:
    engine = create_engine(database_url)
    yield engine  # type: ignore[misc]
    await engine.dispose()


async def insert(engine: AsyncEngine, batch: IngestBatch) -> None:
    async with engine.begin() as conn:
        await write_batch(conn, batch)


def samples(days_ago: float, count: int, device: str = "dev-1") -> list[TelemetryRecord]:
    base = NOW - timedelta(days=days_ago)
    return [
        TelemetryRecord(device, base + timedelta(milliseconds=n), NOW, {"n": n})
        for n in range(count)
    ]


async def count(engine: AsyncEngine, table: str, where: str = "true") -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"))).scalar_one()
        )


async def test_old_telemetry_events_and_rejected_go_new_stay(engine: AsyncEngine) -> None:
    policy = RetentionPolicy(telemetry_days=30, events_days=60)
    await apply_retention(engine, policy, NOW)  # partitions for today and the coming days
    await insert(
        engine, IngestBatch(telemetry=samples(100, 10) + samples(45, 10) + samples(0.1, 10))
    )
    events = [
        EventRecord("dev-1", "button", NOW - timedelta(days=d), NOW - timedelta(days=d), {}, str(d))
        for d in (90, 30, 1)
    ]
    rejected = [
        RejectedRecord(
            NOW - timedelta(days=d), "paku/x/telemetry", None, "invalid_json", "", b"", 0
        )
        for d in (90, 1)
    ]
    await insert(engine, IngestBatch(events=events, rejected=rejected))

    await apply_retention(engine, policy, NOW)
    async with engine.connect() as conn:
        kept = (await conn.execute(select(schema.telemetry.c.ts))).scalars().all()
        kept_events = (await conn.execute(select(schema.events.c.digest))).scalars().all()
        kept_rejected = (
            await conn.execute(select(func.count()).select_from(schema.rejected_messages))
        ).scalar_one()
    assert len(kept) == 10
    assert min(kept) > NOW - timedelta(days=1)
    assert sorted(kept_events) == ["1", "30"]
    assert kept_rejected == 1


async def test_zero_days_keeps_everything(engine: AsyncEngine) -> None:
    await insert(engine, IngestBatch(telemetry=samples(3000, 5)))
    await apply_retention(engine, RetentionPolicy(0, 0), NOW)
    assert await count(engine, "telemetry") == 5


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_deletes_in_bounded_chunks(engine: AsyncEngine) -> None:
    await insert(engine, IngestBatch(telemetry=samples(200, CHUNK_ROWS * 2 + 7) + samples(0, 3)))
    result = await apply_retention(engine, RetentionPolicy(30, 0), NOW)
    assert result.rows_deleted == CHUNK_ROWS * 2 + 7
    assert await count(engine, "telemetry") == 3


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_drops_whole_partitions(engine: AsyncEngine) -> None:
    policy = RetentionPolicy(telemetry_days=30, events_days=0)
    # Rows for days without a partition wait in the default partition...
    await insert(engine, IngestBatch(telemetry=samples(0, 5) + samples(-3, 4) + samples(100, 6)))
    assert await count(engine, "telemetry_default") == 15

    first = await apply_retention(engine, policy, NOW)
    assert first.partitions_created >= 8
    async with engine.connect() as conn:
        partitions = await existing_partitions(conn)
    today = NOW.date()
    for offset in range(-1, 8):
        assert today + timedelta(days=offset) in partitions
    # ...and move into their day's partition when it is made; the old ones are deleted.
    assert await count(engine, "telemetry_default") == 0
    assert await count(engine, partition_name(today)) == 5
    assert await count(engine, "telemetry") == 9

    # A partition wholly past retention is dropped, not emptied row by row.
    later = NOW + timedelta(days=32)
    second = await apply_retention(engine, policy, later)
    assert second.partitions_dropped >= 2
    async with engine.connect() as conn:
        remaining = await existing_partitions(conn)
    assert today not in remaining
    assert await count(engine, "telemetry") == 4  # the future-dated samples stay
