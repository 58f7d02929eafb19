"""The OTA manifest without device credentials (PAKU_OTA_ALLOW_ANONYMOUS=true), as a device
that follows the requirements' flow literally asks for it: `?model=<m>&current=<v>`."""

from __future__ import annotations

import httpx

from paku_iot.server.service import running_service
from paku_iot.settings import Settings
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def publish(client: httpx.AsyncClient, model: str, version: str, rollout: int = 100) -> str:
    response = await client.post(
        "/ota/firmware",
        data={"model": model, "version": version, "rolloutPercent": str(rollout)},
        files={"file": ("f.bin", f"{model}-{version}".encode())},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    release_id: str = response.json()["id"]
    return release_id


async def versions(client: httpx.AsyncClient, **params: str) -> list[tuple[str, str]]:
    response = await client.get("/ota/manifest.json", params=params)
    assert response.status_code == 200, response.text
    return [(e["model"], e["version"]) for e in response.json()]


async def test_an_anonymous_caller_names_its_model_and_sees_only_full_releases(
    settings: Settings,
) -> None:
    open_settings = settings.model_copy(update={"ota_allow_anonymous": True})
    async with (
        running_service(open_settings) as service,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
        ) as anonymous,
    ):
        await publish(anonymous, "lamp", "1.0.0")
        await publish(anonymous, "lamp", "1.1.0")
        await publish(anonymous, "lamp", "1.2.0", rollout=50)  # staged: needs an identity
        paused = await publish(anonymous, "lamp", "1.3.0")
        await anonymous.patch(f"/ota/releases/{paused}", json={"paused": True}, headers=ADMIN)
        await publish(anonymous, "plug", "9.0.0")

        # Without a model the answer would mix models: refused, saying what to send.
        unnamed = await anonymous.get("/ota/manifest.json", params={"current": "1.0.0"})
        assert unnamed.status_code == 422
        error = unnamed.json()["error"]
        assert error["code"] == "model_required"
        assert "model is required without device credentials" in error["message"]
        assert (await anonymous.get("/ota/manifest.json", params={"model": ""})).status_code == 422

        assert await versions(anonymous, model="lamp") == [("lamp", "1.1.0"), ("lamp", "1.0.0")]
        assert await versions(anonymous, model="lamp", current="1.0.0") == [("lamp", "1.1.0")]
        assert await versions(anonymous, model="lamp", current="1.1.0") == []
        assert await versions(anonymous, model="plug", current="1.0.0") == [("plug", "9.0.0")]
        assert await versions(anonymous, model="fridge") == []

        # The admin may still list every model at once.
        listed = await anonymous.get("/ota/manifest.json", headers=ADMIN)
        assert {e["model"] for e in listed.json()} == {"lamp", "plug"}


async def test_without_the_setting_the_literal_flow_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/ota/manifest.json",
        params={"model": "lamp", "current": "1.0.0"},
        headers={"Authorization": ""},
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="paku-iot"'
    assert "device credentials required" in response.json()["error"]["message"]
