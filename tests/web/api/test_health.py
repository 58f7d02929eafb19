"""`/health` tells the truth about the database, on a real PostgreSQL that goes away."""

from __future__ import annotations

import httpx
import pytest

from paku_iot.settings import Settings
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.postgres import pg_admin


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_health_names_the_database_when_it_is_unreachable(
    api: httpx.AsyncClient, settings: Settings, broker: Broker
) -> None:
    created = await api.post("/devices", json={"model": "m", "id": "dev-h"})
    device = await broker.device("dev-h", created.json()["credentials"]["password"]).connect()
    name = settings.resolved_database_url.rsplit("/", 1)[1]
    await pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    await pg_admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )
    try:

        async def unavailable() -> None:
            response = await api.get("/health")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "unavailable"
            assert body["components"]["database"] == "unavailable"
            assert body["components"]["broker"] == "ok"
            assert "database" in body["details"]

        await eventually(unavailable)
        failing = await api.get("/devices")
        assert failing.status_code == 503
        assert failing.json()["error"]["code"] == "unavailable"

        # What a device sends meanwhile waits, unacknowledged, and is not lost.
        assert await device.publish("paku/dev-h/telemetry", '{"ts": 1780000000000}') == 0

        async def degraded() -> None:
            body = (await api.get("/health")).json()
            assert body["components"]["collector"] == "degraded"

        await eventually(degraded)
    finally:
        await pg_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")

    async def recovered() -> None:
        response = await api.get("/health")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        stored = (await api.get("/devices/dev-h/telemetry")).json()["items"]
        assert len(stored) == 1

    await eventually(recovered, timeout=20)
    await device.disconnect()
