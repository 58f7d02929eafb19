"""Migration 0014: releases published before plans keep working by hand; one paused by hand
is `paused`; the timeline table goes with its release; and it downgrades."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from paku_iot.storage.engine import create_engine
from paku_iot.storage.migrate import alembic_config, upgrade
from paku_iot.storage.releases import ReleaseStore


async def test_releases_from_before_plans_become_rolling_or_paused(empty_database: str) -> None:
    await asyncio.to_thread(upgrade, empty_database, "0013")
    engine = create_engine(empty_database)
    try:
        async with engine.begin() as conn:
            for rid, version, paused in (("fw-1", "1.0.0", False), ("fw-2", "1.1.0", True)):
                await conn.execute(
                    text(
                        "INSERT INTO firmware_releases (id, model, version, sha256, size, "
                        "rollout_percent, paused, created_at) VALUES "
                        "(:id, 'lamp', :version, :sha, 10, 30, :paused, :now)"
                    ),
                    {
                        "id": rid,
                        "version": version,
                        "sha": "0" * 64,
                        "paused": paused,
                        "now": datetime.now(UTC),
                    },
                )
        await asyncio.to_thread(upgrade, empty_database)

        store = ReleaseStore(engine)
        first, second = await store.get("fw-1"), await store.get("fw-2")
        assert first is not None
        assert second is not None
        assert (first.state, first.plan, first.rollout_percent) == ("rolling", None, 30)
        assert (first.min_confirmed, first.min_confirmed_percent) == (1, 50)
        assert (first.abort_failure_percent, first.abort_min_devices) == (10, 3)
        assert (second.state, second.paused) == ("paused", True)
        assert await store.events("fw-1") == []
    finally:
        await engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(empty_database), "0013")
    await asyncio.to_thread(upgrade, empty_database)  # and up again
