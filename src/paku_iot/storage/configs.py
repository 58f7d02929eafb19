"""Desired device configuration: one row a device, its version counting up."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.storage import schema
from paku_iot.storage.engine import transaction, translated_errors
from paku_iot.storage.records import DesiredConfig

_cfg = schema.device_configs


class ConfigStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(self, device_id: str, config: dict[str, Any], now: datetime) -> DesiredConfig:
        """Store a new desired config; its version is one more than the last, atomically."""
        async with transaction(self._engine) as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(_cfg).values(
                device_id=device_id, version=1, config=config, updated_at=now
            )
            upsert = insert.on_conflict_do_update(
                index_elements=[_cfg.c.device_id],
                set_={
                    "version": _cfg.c.version + 1,
                    "config": insert.excluded.config,
                    "updated_at": insert.excluded.updated_at,
                },
            ).returning(_cfg.c.version)
            version = (await conn.execute(upsert)).scalar_one()
        return DesiredConfig(device_id, int(version), config, now)

    async def get(self, device_id: str) -> DesiredConfig | None:
        async with translated_errors(), self._engine.connect() as conn:
            row = (
                (await conn.execute(select(_cfg).where(_cfg.c.device_id == device_id)))
                .mappings()
                .first()
            )
        return DesiredConfig(**row) if row else None
