"""Release signatures bind model, version, digest and size (docs/protocol.md, 8a): a manifest
changed after signing, another model's image and a downgrade are refused by the reference
device and reported as failed; a server holding only the public key takes releases signed
offline by `paku-iot ota sign`, and refuses any other. Real Mosquitto, both databases."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from paku_iot.device import ReferenceDevice
from paku_iot.device.ota import OtaUpdater, OtaVerificationError
from paku_iot.protocol import OTA_MANIFEST_PATH
from paku_iot.server.service import Service, running_service
from paku_iot.settings import Settings
from paku_iot.web.app import create_app
from tests.support import ADMIN_TOKEN, eventually
from tests.support.broker import Broker
from tests.support.cli import cli

BASE_URL = "http://paku.test"


class Api:
    """The running service's HTTP API (in process), as an admin and as a device."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.transport = httpx.ASGITransport(app=create_app(service))
        self.admin = httpx.AsyncClient(
            transport=self.transport,
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )

    async def publish(
        self, model: str, version: str, image: bytes, **fields: str
    ) -> httpx.Response:
        return await self.admin.post(
            "/ota/firmware",
            data={"model": model, "version": version, **fields},
            files={"file": ("firmware.bin", image)},
        )

    async def public_key(self) -> str:
        key: str = (await self.admin.get("/ota/public-key")).json()["publicKey"]
        return key

    async def device(self, device_id: str, model: str, fw_version: str) -> ReferenceDevice:
        made = await self.admin.post("/devices", json={"model": model, "id": device_id})
        assert made.status_code == 201, made.text
        broker_host, broker_port = (
            self.service.settings.mqtt_host,
            self.service.settings.mqtt_port,
        )
        device = ReferenceDevice(
            broker_host,
            broker_port,
            device_id,
            made.json()["credentials"]["password"],
            model=model,
            fw_version=fw_version,
        )
        await device.connect()
        return device

    async def ota_reports(self, device_id: str) -> list[dict[str, Any]]:
        response = await self.admin.get(f"/devices/{device_id}/events", params={"type": "ota"})
        assert response.status_code == 200, response.text
        return [item["payload"] for item in reversed(response.json()["items"])]

    async def aclose(self) -> None:
        await self.admin.aclose()


@pytest.fixture
async def paku(service: Service) -> AsyncIterator[Api]:
    api = Api(service)
    yield api
    await api.aclose()


class CompromisedApi(httpx.AsyncBaseTransport):
    """An API that lies in its manifest (a compromised server) but serves real images."""

    def __init__(self, inner: httpx.AsyncBaseTransport, manifest: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.manifest = manifest
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == OTA_MANIFEST_PATH:
            return httpx.Response(200, json=self.manifest, request=request)
        return await self.inner.handle_async_request(request)


async def refused_update(
    paku: Api, device: ReferenceDevice, workdir: Path, transport: httpx.AsyncBaseTransport
) -> tuple[str, OtaUpdater]:
    """Run a whole update, which must be refused: nothing installed, `failed` reported with
    the reason (and kept by the backend). Returns the reason."""
    running = device.fw_version
    async with httpx.AsyncClient(transport=transport) as http:
        updater = OtaUpdater(device, await paku.public_key(), client=http)
        with pytest.raises(OtaVerificationError) as raised:
            await updater.update(BASE_URL, workdir)
    assert device.fw_version == running
    kept = await asyncio.to_thread(lambda: list(workdir.glob("*.bin")))
    assert kept == [], "nothing may be kept to boot from"
    assert updater.reports[-1]["status"] == "failed"
    assert "installing" not in [r["status"] for r in updater.reports]
    reason: str = updater.reports[-1]["error"]
    assert reason == str(raised.value)

    async def stored() -> None:
        reports = await paku.ota_reports(device.device_id)
        assert reports, "the failure report never reached the backend"
        assert reports[-1]["status"] == "failed"
        assert reports[-1]["error"] == reason

    await eventually(stored)
    return reason, updater


async def test_a_version_changed_in_the_database_after_signing_is_refused(
    paku: Api, tmp_path: Path
) -> None:
    # A genuine, signed 1.1.0 ...
    assert (await paku.publish("lamp", "1.1.0", os.urandom(50_000))).status_code == 201
    # ... relabelled 9.0.0 by whoever can write the database.
    async with paku.service.engine.begin() as connection:
        await connection.execute(sa.text("UPDATE firmware_releases SET version = '9.0.0'"))
    device = await paku.device("lamp-1", "lamp", "1.0.0")
    try:
        reason, _ = await refused_update(paku, device, tmp_path / "lamp-1", paku.transport)
    finally:
        await device.disconnect()
    assert "9.0.0" in reason
    assert "signature" in reason


async def test_another_models_image_is_refused(paku: Api, tmp_path: Path) -> None:
    fan = await paku.publish("fan", "2.0.0", os.urandom(50_000))
    assert fan.status_code == 201, fan.text
    device = await paku.device("lamp-2", "lamp", "1.0.0")
    try:
        # A manifest that offers the fan's genuine, correctly signed entry to a lamp.
        entry = fan.json()
        hostile = CompromisedApi(paku.transport, [{**entry}])
        reason, _ = await refused_update(paku, device, tmp_path / "lamp-2", hostile)
        assert "'fan'" in reason
        assert "'lamp'" in reason
        assert not any(p.startswith("/ota/firmware/") for p in hostile.paths)

        # The same image relabelled as a lamp's in the database: the signature says fan.
        async with paku.service.engine.begin() as connection:
            await connection.execute(sa.text("UPDATE firmware_releases SET model = 'lamp'"))
        reason, _ = await refused_update(paku, device, tmp_path / "lamp-2", paku.transport)
        assert "signature" in reason
    finally:
        await device.disconnect()


async def test_a_downgrade_is_refused(paku: Api, tmp_path: Path) -> None:
    old = await paku.publish("lamp", "1.0.0", os.urandom(50_000))
    assert old.status_code == 201, old.text
    device = await paku.device("lamp-3", "lamp", "1.5.0")
    try:
        hostile = CompromisedApi(paku.transport, [old.json()])
        reason, _ = await refused_update(paku, device, tmp_path / "lamp-3", hostile)
    finally:
        await device.disconnect()
    assert "1.0.0" in reason
    assert "not newer than 1.5.0" in reason
    assert not any(p.startswith("/ota/firmware/") for p in hostile.paths)


# ---- signing off the server -------------------------------------------------------------


def write_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def write_public_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


async def ota_sign(cwd: Path, key: Path, model: str, version: str, image: Path) -> Any:
    """`paku-iot ota sign` as CI runs it: no server, no database, no admin token."""
    result = await cli(
        {"PAKU_DATA_DIR": str(cwd / "ci-data")},
        cwd,
        "ota",
        "sign",
        "--key",
        str(key),
        "--model",
        model,
        "--version",
        version,
        str(image),
    )
    assert result.returncode == 0, result.stderr
    assert not (cwd / "ci-data").exists(), "signing must not create a data dir"
    return json.loads(result.stdout)


async def test_offline_signature_on_a_public_key_only_server(
    settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    ci = tmp_path / "ci"
    ci.mkdir()
    key = write_key(ci / "ota-signing-key.pem")
    public_pem = tmp_path / "ota-public-key.pem"
    write_public_key(public_pem, key)
    image_path = ci / "firmware.bin"
    image = os.urandom(80_000)
    image_path.write_bytes(image)

    signed = await ota_sign(ci, ci / "ota-signing-key.pem", "lamp", "1.1.0", image_path)
    assert signed["scheme"] == "paku-ota-v1"
    assert (signed["model"], signed["version"], signed["size"]) == ("lamp", "1.1.0", 80_000)
    wrong_version = await ota_sign(ci, ci / "ota-signing-key.pem", "lamp", "1.2.0", image_path)

    verify_only = settings.model_copy(update={"ota_public_key_file": public_pem})
    async with running_service(verify_only) as service:
        paku = Api(service)
        try:
            unsigned = await paku.publish("lamp", "1.1.0", image)
            assert unsigned.status_code == 422, unsigned.text
            assert unsigned.json()["error"]["code"] == "signature_required"
            assert "paku-iot ota sign" in unsigned.json()["error"]["message"]

            # A signature for 1.2.0 does not make this upload 1.1.0 (nor the reverse).
            mismatched = await paku.publish(
                "lamp", "1.1.0", image, statementSignature=wrong_version["statementSignature"]
            )
            assert mismatched.status_code == 422, mismatched.text
            assert mismatched.json()["error"]["code"] == "invalid_signature"
            assert (await paku.admin.get("/ota/releases")).json()["items"] == []
            assert list(verify_only.firmware_dir.glob("*.bin")) == []

            published = await paku.publish(
                "lamp",
                "1.1.0",
                image,
                statementSignature=signed["statementSignature"],
                signature=signed["signature"],
            )
            assert published.status_code == 201, published.text
            release = published.json()
            assert release["statementSignature"] == signed["statementSignature"]
            assert release["signatureScheme"] == "paku-ota-v1"

            served_key = (await paku.admin.get("/ota/public-key")).json()
            assert served_key["pem"] == public_pem.read_text()
            # The server never made (or needed) a private key of its own.
            assert not verify_only.signing_key_path.exists()

            device = await paku.device("lamp-9", "lamp", "1.0.0")
            try:
                async with httpx.AsyncClient(transport=paku.transport) as http:
                    updater = OtaUpdater(device, served_key["publicKey"], client=http)
                    installed = await updater.update(BASE_URL, tmp_path / "lamp-9")
                assert installed == "1.1.0"
                assert device.fw_version == "1.1.0"
                assert (tmp_path / "lamp-9" / "firmware-1.1.0.bin").read_bytes() == image
            finally:
                await device.disconnect()
        finally:
            await paku.aclose()


async def test_a_signature_by_another_key_is_refused_at_upload(paku: Api, tmp_path: Path) -> None:
    """With the private key on the server, an upload may still bring its own signature: it
    must be one the server's key verifies."""
    key_path = tmp_path / "other-key.pem"
    write_key(key_path)
    image_path = tmp_path / "firmware.bin"
    image_path.write_bytes(os.urandom(10_000))
    signed = await ota_sign(tmp_path, key_path, "lamp", "1.0.0", image_path)
    response = await paku.publish(
        "lamp",
        "1.0.0",
        image_path.read_bytes(),
        statementSignature=signed["statementSignature"],
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_signature"
    own = base64.b64decode(await paku.public_key())
    assert len(own) == 32
