"""Retention: telemetry and events older than their settings are removed, in bounded steps.

PostgreSQL drops telemetry a day-partition at a time (no mass DELETE, no bloat); rows in the
default partition, events and rejected messages are deleted in chunks, each its own short
transaction, so ingest is never blocked for long. SQLite deletes in the same chunks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.storage import schema
from paku_iot.storage.partitions import drop_partitions_before, ensure_partitions

log = logging.getLogger("paku_iot.storage")

CHUNK_ROWS = 5000
PARTITION_DAYS_AHEAD = 7
# One maintenance run at a time across processes sharing a PostgreSQL database.
_ADVISORY_LOCK_KEY = 0x7061_6B75  # "paku"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    telemetry_days: int  # 0 keeps telemetry forever
    events_days: int  # 0 keeps events (and rejected messages) forever


@dataclass(slots=True)
class RetentionResult:
    partitions_created: int = 0
    partitions_dropped: int = 0
    rows_deleted: int = 0


async def _delete_in_chunks(engine: AsyncEngine, table: Table, cutoff: datetime) -> int:
    time_column = table.c.ts if "ts" in table.c else table.c.received_at
    total = 0
    while True:
        victims = select(table.c.id).where(time_column < cutoff).limit(CHUNK_ROWS)
        async with engine.begin() as conn:
            result = await conn.execute(
                delete(table).where(table.c.id.in_(victims.scalar_subquery()))
            )
        total += result.rowcount
        if result.rowcount < CHUNK_ROWS:
            return total


async def _postgres_telemetry(
    engine: AsyncEngine, now: datetime, cutoff: datetime | None
) -> RetentionResult:
    result = RetentionResult()
    async with engine.begin() as conn:
        locked = (
            await conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            )
        ).scalar_one()
        if not locked:
            return result
        today = now.date()
        days = [today + timedelta(days=n) for n in range(-1, PARTITION_DAYS_AHEAD + 1)]
        result.partitions_created = len(await ensure_partitions(conn, days))
        if cutoff is not None:
            result.partitions_dropped = len(await drop_partitions_before(conn, cutoff))
    if cutoff is not None:
        # Rows whose day has no partition (far-off device clocks) wait in telemetry_default.
        while True:
            async with engine.begin() as conn:
                deleted = await conn.execute(
                    text(
                        "DELETE FROM telemetry_default WHERE ctid IN (SELECT ctid FROM "
                        "telemetry_default WHERE ts < :cutoff LIMIT :n)"
                    ),
                    {"cutoff": cutoff, "n": CHUNK_ROWS},
                )
            result.rows_deleted += deleted.rowcount
            if deleted.rowcount < CHUNK_ROWS:
                break
    return result


async def apply_retention(
    engine: AsyncEngine, policy: RetentionPolicy, now: datetime
) -> RetentionResult:
    """One maintenance pass: make upcoming partitions, remove what is past retention."""
    telemetry_cutoff = (
        now - timedelta(days=policy.telemetry_days) if policy.telemetry_days else None
    )
    events_cutoff = now - timedelta(days=policy.events_days) if policy.events_days else None
    if engine.dialect.name == "postgresql":
        result = await _postgres_telemetry(engine, now, telemetry_cutoff)
    else:
        result = RetentionResult()
        if telemetry_cutoff is not None:
            result.rows_deleted += await _delete_in_chunks(
                engine, schema.telemetry, telemetry_cutoff
            )
    if events_cutoff is not None:
        for table in (schema.events, schema.rejected_messages):
            result.rows_deleted += await _delete_in_chunks(engine, table, events_cutoff)
    if result.partitions_dropped or result.rows_deleted:
        log.info(
            "retention: dropped %d partitions, deleted %d rows",
            result.partitions_dropped,
            result.rows_deleted,
        )
    return result


async def maintain_forever(engine: AsyncEngine, policy: RetentionPolicy, interval_s: float) -> None:
    """Run `apply_retention` now and then every `interval_s`, whatever goes wrong in one pass."""
    while True:
        try:
            await apply_retention(engine, policy, datetime.now(UTC))
        except Exception:
            log.exception("retention pass failed; trying again in %ds", interval_s)
        await asyncio.sleep(interval_s)
