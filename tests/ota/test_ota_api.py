"""OTA through the HTTP API: publishing, the device manifest, downloads, rollout control."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from paku_iot.ota.rollout import in_rollout
from paku_iot.protocol import ota_statement
from paku_iot.server.service import Service, running_service
from paku_iot.settings import Settings
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN, eventually
from tests.support.broker import Broker

IMAGE = os.urandom(300_000)
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()


async def publish(
    api: httpx.AsyncClient,
    version: str,
    *,
    model: str = "lamp",
    image: bytes = IMAGE,
    rollout: int | None = None,
) -> httpx.Response:
    data = {"model": model, "version": version}
    if rollout is not None:
        data["rolloutPercent"] = str(rollout)
    return await api.post("/ota/firmware", data=data, files={"file": ("firmware.bin", image)})


async def provision(api: httpx.AsyncClient, device_id: str, model: str = "lamp") -> str:
    response = await api.post("/devices", json={"model": model, "id": device_id})
    password: str = response.json()["credentials"]["password"]
    return password


def as_device(api: httpx.AsyncClient, device_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{device_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def manifest(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await api.get("/ota/manifest.json", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_publish_stores_signs_and_lists_a_release(api: httpx.AsyncClient) -> None:
    response = await publish(api, "1.2.0", rollout=25)
    assert response.status_code == 201, response.text
    release = response.json()
    assert release["sha256"] == IMAGE_SHA
    assert release["size"] == len(IMAGE)
    assert release["rolloutPercent"] == 25
    assert release["paused"] is False
    assert release["url"] == f"http://paku.test/ota/firmware/{IMAGE_SHA}.bin"

    key = (await api.get("/ota/public-key", headers={"Authorization": ""})).json()
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["publicKey"]))
    public.verify(base64.b64decode(release["signature"]), bytes.fromhex(IMAGE_SHA))
    assert release["signatureScheme"] == "paku-ota-v1"
    statement = ota_statement("lamp", "1.2.0", IMAGE_SHA, len(IMAGE))
    public.verify(base64.b64decode(release["statementSignature"]), statement)

    await publish(api, "1.10.0")
    await publish(api, "2.0.0-rc.1")
    listed = (await api.get("/ota/releases", params={"model": "lamp"})).json()["items"]
    assert [r["version"] for r in listed] == ["2.0.0-rc.1", "1.10.0", "1.2.0"]


@pytest.mark.parametrize(
    ("version", "image", "code"),
    [
        ("1.0", IMAGE, "invalid_version"),
        ("latest", IMAGE, "invalid_version"),
        ("1.0.0", b"", "firmware_empty"),
    ],
    # Named: an id made of the random image differs in each pytest-xdist worker.
    ids=["version-1.0", "version-latest", "empty-image"],
)
async def test_bad_releases_are_refused(
    api: httpx.AsyncClient, version: str, image: bytes, code: str
) -> None:
    response = await publish(api, version, image=image)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert (await api.get("/ota/releases")).json()["items"] == []


async def test_the_same_version_twice_is_a_conflict(api: httpx.AsyncClient) -> None:
    assert (await publish(api, "1.0.0")).status_code == 201
    again = await publish(api, "1.0.0", image=b"other bytes")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "release_exists"
    assert (await publish(api, "1.0.0", model="sensor")).status_code == 201


async def test_an_oversize_image_is_refused_and_nothing_kept(
    settings: Settings, broker: Broker
) -> None:
    small = settings.model_copy(update={"ota_max_firmware_bytes": 100_000})
    async with (
        running_service(small) as service,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)),
            base_url="http://paku.test",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as api,
    ):
        response = await publish(api, "1.0.0")
        assert response.status_code in (413, 422)
        assert "PAKU_OTA_MAX_FIRMWARE_BYTES" in response.json()["error"]["message"]
        assert list(small.firmware_dir.glob("*")) == []


async def test_download_serves_ranges_for_resuming(api: httpx.AsyncClient) -> None:
    await publish(api, "1.0.0")
    url = f"/ota/firmware/{IMAGE_SHA}.bin"
    head = await api.head(url)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(IMAGE))
    assert head.headers["etag"] == f'"{IMAGE_SHA}"'
    assert head.headers["accept-ranges"] == "bytes"

    first = await api.get(url, headers={"Range": "bytes=0-99999"})
    assert first.status_code == 206
    rest = await api.get(url, headers={"Range": "bytes=100000-"})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 100000-{len(IMAGE) - 1}/{len(IMAGE)}"
    assert first.content + rest.content == IMAGE

    whole = await api.get(url)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == IMAGE_SHA
    beyond = await api.get(url, headers={"Range": f"bytes={len(IMAGE) + 10}-"})
    assert beyond.status_code == 416
    missing = await api.get(f"/ota/firmware/{'0' * 64}.bin")
    assert missing.status_code == 404
    traversal = await api.get("/ota/firmware/..%2F..%2Fsecrets%2Fadmin-token.bin")
    assert traversal.status_code == 404


async def test_manifest_for_a_device_follows_model_current_and_rollout(
    api: httpx.AsyncClient,
) -> None:
    inside = next(d for d in (f"in-{n}" for n in range(100)) if in_rollout(d, 50))
    outside = next(d for d in (f"out-{n}" for n in range(100)) if not in_rollout(d, 50))
    creds = {d: await provision(api, d) for d in (inside, outside)}
    await provision(api, "sensor-1", model="sensor")
    await publish(api, "1.1.0")
    await publish(api, "1.2.0-beta.1")
    await publish(api, "1.3.0", image=b"newer image", rollout=50)
    await publish(api, "9.0.0", model="sensor", image=b"sensor image")

    inside_auth = as_device(api, inside, creds[inside])
    got = await manifest(api, inside_auth, current="1.0.0")
    assert [e["version"] for e in got] == ["1.3.0", "1.2.0-beta.1", "1.1.0"]
    assert set(got[0]) == {
        "model",
        "version",
        "url",
        "sha256",
        "size",
        "signature",
        "signatureScheme",
        "statementSignature",
    }
    assert got[0]["url"].startswith("http://paku.test/ota/firmware/")

    outside_auth = as_device(api, outside, creds[outside])
    assert [e["version"] for e in await manifest(api, outside_auth, current="1.0.0")] == [
        "1.2.0-beta.1",
        "1.1.0",
    ]
    assert await manifest(api, inside_auth, current="1.3.0") == []
    assert [e["version"] for e in await manifest(api, inside_auth, current="1.2.0-alpha")] == [
        "1.3.0",
        "1.2.0-beta.1",
    ]
    wrong_model = await api.get(
        "/ota/manifest.json", params={"model": "sensor"}, headers=inside_auth
    )
    assert wrong_model.status_code == 422
    bad_current = await api.get(
        "/ota/manifest.json", params={"current": "one"}, headers=inside_auth
    )
    assert bad_current.status_code == 422


async def test_manifest_refuses_strangers(api: httpx.AsyncClient) -> None:
    password = await provision(api, "dev-auth")
    await publish(api, "1.0.0")
    for headers in (
        {"Authorization": ""},
        as_device(api, "dev-auth", password + "x"),
        as_device(api, "nobody-1", password),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Bearer wrong"},
    ):
        response = await api.get("/ota/manifest.json", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] in ('Basic realm="paku-iot"', "Bearer")


async def test_anonymous_manifest_only_when_allowed(settings: Settings, broker: Broker) -> None:
    open_settings = settings.model_copy(update={"ota_allow_anonymous": True})
    async with (
        running_service(open_settings) as service,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)), base_url="http://paku.test"
        ) as anonymous,
    ):
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for version, rollout in (("1.0.0", 100), ("1.1.0", 10)):
            await anonymous.post(
                "/ota/firmware",
                data={"model": "lamp", "version": version, "rolloutPercent": str(rollout)},
                files={"file": ("f.bin", version.encode())},
                headers=admin,
            )
        got = (await anonymous.get("/ota/manifest.json", params={"model": "lamp"})).json()
        assert [e["version"] for e in got] == ["1.0.0"]  # staged releases need an identity


async def test_rollout_pause_and_status(
    api: httpx.AsyncClient, broker: Broker, service: Service
) -> None:
    ids = [f"lamp-{n:02d}" for n in range(20)]
    creds = {d: await provision(api, d) for d in ids}
    release = (await publish(api, "2.0.0", rollout=0)).json()
    status = (await api.get(f"/ota/releases/{release['id']}")).json()
    assert status["rollout"]["counts"]["pending"] == 0

    opened = await api.patch(f"/ota/releases/{release['id']}", json={"rolloutPercent": 100})
    assert opened.json()["rolloutPercent"] == 100
    status = (await api.get(f"/ota/releases/{release['id']}")).json()
    # None of them has ever connected: not waited for as pending, counted apart.
    assert status["rollout"]["counts"]["pending"] == 0
    assert status["rollout"]["neverSeen"] == 20

    # Two devices report, one runs the new version already.
    first = await broker.device(ids[0], creds[ids[0]]).connect()
    await first.publish(
        f"paku/{ids[0]}/event/ota", json.dumps({"version": "2.0.0", "status": "downloading"})
    )
    second = await broker.device(ids[1], creds[ids[1]]).connect()
    # Reported as firmware says it (docs/protocol.md, fwVersion): v2.0.0 is release 2.0.0.
    await second.publish(
        f"paku/{ids[1]}/event/ota",
        json.dumps({"version": "v2.0.0", "status": "failed", "error": "bad signature"}),
    )
    await second.publish(f"paku/{ids[1]}/event/ota", json.dumps({"version": 2, "status": "?"}))
    third = await broker.device(ids[2], creds[ids[2]]).connect()
    await third.publish(
        f"paku/{ids[2]}/state", json.dumps({"online": True, "fwVersion": "2.0.0"}), retain=True
    )

    async def counted() -> dict[str, Any]:
        body: dict[str, Any] = (await api.get(f"/ota/releases/{release['id']}")).json()
        counts = body["rollout"]["counts"]
        assert counts["downloading"] == 1
        assert counts["failed"] == 1
        assert counts["updated"] == 1
        assert counts["pending"] == 0
        assert body["rollout"]["neverSeen"] == 17
        return body

    body = await eventually(counted)
    assert body["rollout"]["devices"]["failed"] == [ids[1]]

    paused = await api.patch(f"/ota/releases/{release['id']}", json={"paused": True})
    assert paused.json()["paused"] is True
    # Nobody new is offered a paused release; a device already on its way still is.
    fresh = as_device(api, ids[5], creds[ids[5]])
    assert await manifest(api, fresh, current="1.0.0") == []
    started = as_device(api, ids[0], creds[ids[0]])
    assert [e["version"] for e in await manifest(api, started, current="1.0.0")] == ["2.0.0"]
    await api.patch(f"/ota/releases/{release['id']}", json={"paused": False})
    assert len(await manifest(api, fresh, current="1.0.0")) == 1

    assert (await api.patch("/ota/releases/fw-nope", json={"paused": True})).status_code == 404
    bad = await api.patch(f"/ota/releases/{release['id']}", json={"rolloutPercent": 101})
    assert bad.status_code == 422
    for client in (first, second, third):
        await client.disconnect()


async def test_urls_use_the_public_url_when_set(settings: Settings, broker: Broker) -> None:
    public = settings.model_copy(update={"public_url": "https://iot.example.com/"})
    async with (
        running_service(public) as service,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(service)),
            base_url="http://internal:8000",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as api,
    ):
        release = (await publish(api, "1.0.0")).json()
        assert release["url"] == f"https://iot.example.com/ota/firmware/{IMAGE_SHA}.bin"
        entries = (await api.get("/ota/manifest.json", params={"model": "lamp"})).json()
        assert entries[0]["url"] == release["url"]


async def test_manifest_and_status_use_what_the_device_runs(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    creds = {d: await provision(api, d) for d in ("ahead-1", "failed-1")}
    release = (await publish(api, "1.1.0")).json()
    await publish(api, "1.2.0", image=b"1.2.0 image")
    ahead = await broker.device("ahead-1", creds["ahead-1"]).connect()
    await ahead.publish("paku/ahead-1/state", '{"online": true, "fwVersion": "1.2.0"}')
    failed = await broker.device("failed-1", creds["failed-1"]).connect()
    await failed.publish(
        "paku/failed-1/event/ota", '{"version": "1.1.0", "status": "failed", "error": "flash"}'
    )

    async def counted() -> None:
        counts = (await api.get(f"/ota/releases/{release['id']}")).json()["rollout"]["counts"]
        assert counts["updated"] == 1  # ahead-1 runs a newer version: past this release
        assert counts["failed"] == 1

    await eventually(counted)
    # Without `current`, the device's reported fwVersion is the floor.
    assert await manifest(api, as_device(api, "ahead-1", creds["ahead-1"])) == []
    # A paused release is not retried by a device that failed on it.
    await api.patch(f"/ota/releases/{release['id']}", json={"paused": True})
    offered = await manifest(api, as_device(api, "failed-1", creds["failed-1"]), current="1.0.0")
    assert [e["version"] for e in offered] == ["1.2.0"]
    await ahead.disconnect()
    await failed.disconnect()
