"""Migration 0012's `telemetry_numeric` view on both databases, and its grant to Grafana's
read-only role on PostgreSQL."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest
from sqlalchemy import text

import paku_iot.storage.migrations
from paku_iot.storage.engine import create_engine
from paku_iot.storage.messages import write_batch
from paku_iot.storage.records import IngestBatch, TelemetryRecord

VERSIONS = Path(paku_iot.storage.migrations.__file__).parent / "versions"

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_numeric_values_one_row_each(database_url: str) -> None:
    engine = create_engine(database_url)
    payload = {
        "ts": 1,
        "temp": 21.5,
        "n": 3,
        "on": True,
        "name": "x",
        "none": None,
        "list": [1, 2],
        "boiler": {"temp": 60, "state": "ok", "deep": {"x": 1}},
    }
    try:
        async with engine.begin() as conn:
            await write_batch(conn, IngestBatch(telemetry=[TelemetryRecord("d1", T0, T0, payload)]))
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT device_id, field, value FROM telemetry_numeric ORDER BY field")
            )
            assert [tuple(r) for r in rows] == [
                ("d1", "boiler.temp", 60.0),
                ("d1", "n", 3.0),
                ("d1", "temp", 21.5),
            ]
    finally:
        await engine.dispose()


def migration() -> ModuleType:
    path = VERSIONS / "0012_export_views.py"
    spec = importlib.util.spec_from_file_location("export_views", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_grafana_may_read_the_view(database_url: str) -> None:
    """The grant, run in a transaction that also makes the role and is rolled back: the role
    is cluster-wide, and other tests' databases must not come to depend on it."""
    conn = await asyncpg.connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                "'paku_grafana') THEN CREATE ROLE paku_grafana NOLOGIN; END IF; END $$"
            )
            assert not await conn.fetchval(PRIVILEGE)
            await conn.execute(migration()._GRANT)
            assert await conn.fetchval(PRIVILEGE)
        finally:
            await transaction.rollback()
        # Without the role, the grant is skipped rather than failing the migration.
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paku_grafana')"
        ):
            await conn.execute(migration()._GRANT)
    finally:
        await conn.close()


ROLE_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paku_grafana')"
PRIVILEGE = "SELECT has_table_privilege('paku_grafana', 'telemetry_numeric', 'SELECT')"
