"""The interactive API docs (/docs, /redoc) can be turned off (PAKU_API_DOCS=false), say in
production; /openapi.json stays, for client generators."""

from __future__ import annotations

import httpx
import pytest

from paku_iot.server.service import Service
from paku_iot.web.app import create_app

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def get(service: Service, path: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
    ) as client:
        return await client.get(path)


async def test_the_docs_are_served_by_default(service: Service) -> None:
    assert (await get(service, "/docs")).status_code == 200
    assert (await get(service, "/redoc")).status_code == 200
    assert (await get(service, "/openapi.json")).status_code == 200


async def test_the_docs_can_be_turned_off(service: Service) -> None:
    service.settings = service.settings.model_copy(update={"api_docs": False})
    for path in ["/docs", "/redoc", "/docs/oauth2-redirect"]:
        response = await get(service, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    document = await get(service, "/openapi.json")
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "paku-iot"
