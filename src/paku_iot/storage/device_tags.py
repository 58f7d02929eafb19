"""Queries on device tags (`device_tags`), used by the device store inside its connections.

The rule for what a tag may be is the registry's (registry/tags.py); these functions store
what they are given. Reading tags for a page of devices is one query for the page, not one
per device.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from paku_iot.storage import schema

_t = schema.device_tags


async def tags_of(conn: AsyncConnection, device_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each device's tags, sorted; a device without tags is absent."""
    ids = list(device_ids)
    if not ids:
        return {}
    found: dict[str, list[str]] = {}
    # Chunked: SQLite caps bound parameters (32766 in recent versions, 999 in old ones).
    for start in range(0, len(ids), 900):
        query = select(_t.c.device_id, _t.c.tag).where(_t.c.device_id.in_(ids[start : start + 900]))
        for device_id, tag in await conn.execute(query):
            found.setdefault(device_id, []).append(tag)
    return {device_id: tuple(sorted(tags)) for device_id, tags in found.items()}


async def add_tags(conn: AsyncConnection, device_ids: list[str], tags: Iterable[str]) -> None:
    """Give every device every tag; a tag a device already has stays as it is."""
    wanted = list(tags)
    await add_pairs(conn, [(d, t) for d in device_ids for t in wanted])


async def add_pairs(conn: AsyncConnection, pairs: list[tuple[str, str]]) -> None:
    """Insert (device id, tag) pairs; a pair that exists stays as it is."""
    rows = [{"device_id": d, "tag": t} for d, t in pairs]
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # Chunks keep each statement under both databases' bound-parameter limits.
    for start in range(0, len(rows), 400):
        insert = dialect.insert(_t).values(rows[start : start + 400])
        await conn.execute(insert.on_conflict_do_nothing(index_elements=[_t.c.device_id, _t.c.tag]))


async def remove_tags(conn: AsyncConnection, device_ids: list[str], tags: Iterable[str]) -> None:
    wanted = list(tags)
    if not wanted or not device_ids:
        return
    for start in range(0, len(device_ids), 900):
        chunk = device_ids[start : start + 900]
        await conn.execute(delete(_t).where(_t.c.device_id.in_(chunk), _t.c.tag.in_(wanted)))


async def replace_tags(conn: AsyncConnection, device_id: str, tags: Iterable[str]) -> None:
    await conn.execute(delete(_t).where(_t.c.device_id == device_id))
    await add_tags(conn, [device_id], tags)


async def most_tags(conn: AsyncConnection, device_ids: list[str]) -> tuple[str, int] | None:
    """The device among these with the most tags, and how many (a limit check after a bulk
    change, in its transaction)."""
    if not device_ids:
        return None
    best: tuple[str, int] | None = None
    for start in range(0, len(device_ids), 900):
        query = (
            select(_t.c.device_id, func.count().label("n"))
            .where(_t.c.device_id.in_(device_ids[start : start + 900]))
            .group_by(_t.c.device_id)
            .order_by(func.count().desc())
            .limit(1)
        )
        row = (await conn.execute(query)).first()
        if row is not None and (best is None or row[1] > best[1]):
            best = (row[0], int(row[1]))
    return best


async def all_tags(conn: AsyncConnection) -> list[str]:
    """Every tag at least one device has, in order (the (tag, device_id) index)."""
    return [row[0] for row in await conn.execute(select(_t.c.tag).distinct().order_by(_t.c.tag))]
