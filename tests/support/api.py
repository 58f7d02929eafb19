"""The HTTP API of a service running in the test's own process, as an admin client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from paku_iot.server.service import Service
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN


@asynccontextmanager
async def admin_api(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)),
        base_url="http://paku.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield client
