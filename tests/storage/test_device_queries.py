"""The device queries the dashboard's fleet page uses, on both databases: search by id prefix,
filters, keyset pages both ways, counts and the model list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.storage import schema
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.engine import create_engine
from paku_iot.storage.records import NewDevice

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[DeviceStore]:
    engine: AsyncEngine = create_engine(database_url)
    devices = DeviceStore(engine)
    ids = [f"room-{n:02d}" for n in range(10)] + ["roomAx", "room_b1", "hall-1", "Hall-2"]
    await devices.insert_many(
        [
            NewDevice(d, "sensor" if d.startswith("room") else "switch", None, {}, NOW, "h")
            for d in ids
        ]
    )
    async with engine.begin() as conn:
        online = ["room-01", "room-02", "hall-1"]
        await conn.execute(
            update(schema.devices).where(schema.devices.c.id.in_(online)).values(online=True)
        )
    yield devices
    await engine.dispose()


async def test_search_by_prefix_is_case_insensitive_and_literal(store: DeviceStore) -> None:
    found = await store.page(limit=100, id_prefix="hall")
    # As a set: where "Hall-2" sorts against "hall-1" is the database collation's business.
    assert {d.id for d in found} == {"Hall-2", "hall-1"}
    # `_` is a literal character in a prefix, not a wildcard matching "roomA".
    assert [d.id for d in await store.page(limit=100, id_prefix="room_")] == ["room_b1"]
    assert await store.count_matching(id_prefix="ROOM-0") == 10


async def test_filters_combine_and_counts_match_them(store: DeviceStore) -> None:
    online_sensors = await store.page(limit=100, model="sensor", online=True)
    assert [d.id for d in online_sensors] == ["room-01", "room-02"]
    assert await store.count_matching(model="sensor", online=True) == 2
    assert await store.count_matching(online=False) == 11
    assert await store.count_matching() == 14
    assert await store.models() == ["sensor", "switch"]


async def test_keyset_pages_forwards_and_back(store: DeviceStore) -> None:
    first = await store.page(limit=4, id_prefix="room-")
    assert [d.id for d in first] == ["room-00", "room-01", "room-02", "room-03"]
    second = await store.page(limit=4, id_prefix="room-", after_id=first[-1].id)
    assert [d.id for d in second] == ["room-04", "room-05", "room-06", "room-07"]
    back = await store.page(limit=4, id_prefix="room-", before_id=second[0].id)
    assert back == first
