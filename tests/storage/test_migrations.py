"""Migrations create the schema on both databases; the service refuses an old schema."""

from __future__ import annotations

import asyncio

import pytest

from paku_iot.exceptions import SettingsError
from paku_iot.storage.engine import create_engine
from paku_iot.storage.migrate import head_revision, upgrade
from paku_iot.storage.schema_version import (
    SCHEMA_HEAD,
    current_revision,
    require_current_schema,
)


def test_the_schema_head_constant_is_alembics_head() -> None:
    assert head_revision() == SCHEMA_HEAD


async def test_upgrade_is_repeatable_and_reaches_head(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        with pytest.raises(SettingsError, match="paku-iot migrate"):
            await require_current_schema(engine)
        await asyncio.to_thread(upgrade, empty_database)
        await asyncio.to_thread(upgrade, empty_database)
        assert await current_revision(engine) == head_revision()
        await require_current_schema(engine)
    finally:
        await engine.dispose()
