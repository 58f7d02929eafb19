"""PostgreSQL: daily partitions of `telemetry`, created ahead of time and dropped whole.

A row whose day has no partition yet (a device clock far off) lands in `telemetry_default`;
when that day's partition is made later, those rows move into it first, since PostgreSQL
refuses a partition whose range the default partition already holds rows for.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("paku_iot.storage")

_PARTITION_RE = re.compile(r"^telemetry_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"telemetry_p{day:%Y%m%d}"


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def existing_partitions(conn: AsyncConnection) -> dict[date, str]:
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'telemetry'::regclass"
        )
    )
    found: dict[date, str] = {}
    for (name,) in rows:
        match = _PARTITION_RE.fullmatch(name)
        if match:
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return found


async def ensure_partitions(conn: AsyncConnection, days: list[date]) -> list[str]:
    """Create the partitions for `days` that are missing; returns the names created."""
    existing = await existing_partitions(conn)
    created: list[str] = []
    for day in days:
        if day in existing:
            continue
        name = partition_name(day)
        start, end = _bounds(day)
        params = {"start": start, "end": end}
        stray = await conn.execute(
            text("SELECT 1 FROM telemetry_default WHERE ts >= :start AND ts < :end LIMIT 1"),
            params,
        )
        bounds = f"FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        if stray.first() is None:
            await conn.execute(
                text(f"CREATE TABLE {name} PARTITION OF telemetry FOR VALUES {bounds}")
            )
        else:
            await conn.execute(text(f"CREATE TABLE {name} (LIKE telemetry INCLUDING DEFAULTS)"))
            await conn.execute(
                text(
                    # `name` comes from a date, never from input.
                    f"WITH moved AS (DELETE FROM telemetry_default WHERE ts >= :start "  # noqa: S608
                    f"AND ts < :end RETURNING *) INSERT INTO {name} SELECT * FROM moved"
                ),
                params,
            )
            await conn.execute(
                text(f"ALTER TABLE telemetry ATTACH PARTITION {name} FOR VALUES {bounds}")
            )
        created.append(name)
    return created


async def drop_partitions_before(conn: AsyncConnection, cutoff: datetime) -> list[str]:
    """Drop every daily partition that ends at or before `cutoff`; returns their names."""
    dropped: list[str] = []
    for day, name in sorted((await existing_partitions(conn)).items()):
        if _bounds(day)[1] <= cutoff:
            await conn.execute(text(f"DROP TABLE {name}"))
            dropped.append(name)
    return dropped
