"""Firmware over the air, end to end: `paku-iot dev` in its own process, releases published
with the `ota` CLI, and reference devices (device/ota.py) that check the manifest, download
with an interruption and a range resume, verify, report progress on MQTT and reboot into the
new version. Nothing is mocked; the only instrument is an httpx response hook that records
which ranges the device asked for and what the server answered."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from paku_iot.device import ReferenceDevice
from paku_iot.device.ota import (
    DigestMismatch,
    ManifestEntry,
    OtaInterrupted,
    OtaUnauthorized,
    OtaUpdater,
    SignatureInvalid,
    SizeMismatch,
    partial_path,
)
from tests.support import eventually
from tests.support.cli import cli
from tests.support.processes import dev_environment, paku, read_until, stop

MODEL = "sensor"
FIRMWARE_BYTES = 2_500_000
STOP_AFTER = 1_000_000


@dataclass
class Dev:
    """A running `paku-iot dev` and what it takes to use it."""

    env: dict[str, str]
    base_url: str
    mqtt_port: int
    token: str
    cwd: Path

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}
        )

    async def cli(self, *args: str) -> Any:
        """Run `paku-iot <args> --json` as an operator would; returns the parsed JSON."""
        result = await cli(
            {**self.env, "PAKU_ADMIN_TOKEN": self.token},
            self.cwd,
            *args,
            "--url",
            self.base_url,
            "--json",
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return json.loads(result.stdout)

    async def provision(self, device_id: str) -> str:
        async with self.admin() as client:
            response = await client.post("/devices", json={"model": MODEL, "id": device_id})
        assert response.status_code == 201, response.text
        password: str = response.json()["credentials"]["password"]
        return password

    async def device(self, device_id: str, fw_version: str = "1.0.0") -> ReferenceDevice:
        password = await self.provision(device_id)
        device = ReferenceDevice(
            "127.0.0.1", self.mqtt_port, device_id, password, fw_version=fw_version, model=MODEL
        )
        await device.connect()
        return device

    async def command(self, device_id: str, name: str) -> dict[str, Any]:
        """Send command `name` and return it once the device has answered it."""
        async with self.admin() as client:
            sent = await client.post(f"/devices/{device_id}/commands", json={"name": name})
            assert sent.status_code == 202, sent.text
            command_id = sent.json()["id"]

            async def answered() -> dict[str, Any]:
                listed = (await client.get(f"/devices/{device_id}/commands")).json()["items"]
                [command] = [c for c in listed if c["id"] == command_id]
                assert command["status"] in ("acked", "failed"), command
                answer: dict[str, Any] = command
                return answer

            return await eventually(answered, timeout=20)

    async def rollout(self, release_id: str) -> dict[str, Any]:
        async with self.admin() as client:
            response = await client.get(f"/ota/releases/{release_id}")
        assert response.status_code == 200, response.text
        rollout: dict[str, Any] = response.json()["rollout"]
        return rollout

    async def wait_for_status(self, release_id: str, device_id: str, status: str) -> None:
        async def where() -> None:
            devices = (await self.rollout(release_id))["devices"]
            assert device_id in devices[status], devices

        await eventually(where)

    async def manifest(
        self, device_id: str, password: str, current: str = "1.0.0"
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            return await client.get(
                "/ota/manifest.json", params={"current": current}, auth=(device_id, password)
            )


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[Dev]:
    async with running_dev(tmp_path) as started:
        yield started


@contextlib.asynccontextmanager
async def running_dev(tmp_path: Path, **extra_env: str) -> AsyncIterator[Dev]:
    env, http_port, mqtt_port = dev_environment(tmp_path)
    env = {**env, **extra_env}
    base_url = f"http://127.0.0.1:{http_port}"
    server = paku("dev", env=env, cwd=tmp_path)
    assert server.stdout is not None
    try:
        await asyncio.to_thread(read_until, server.stdout, "Press Ctrl-C")
        token = (tmp_path / "var" / "secrets" / "admin-token").read_text().strip()

        async def healthy() -> None:
            async with httpx.AsyncClient() as client:
                try:
                    response = await client.get(f"{base_url}/health")
                except httpx.TransportError as exc:
                    raise AssertionError(str(exc)) from None
            assert response.status_code == 200, response.text

        await eventually(healthy, timeout=30)
        yield Dev(env, base_url, mqtt_port, token, tmp_path)
    finally:
        code, stderr = await asyncio.to_thread(stop, server)
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def publish(
    dev: Dev, version: str, *, size: int = FIRMWARE_BYTES
) -> tuple[dict[str, Any], bytes]:
    firmware = os.urandom(size)
    path = dev.cwd / f"firmware-{version}.bin"
    path.write_bytes(firmware)
    release = await dev.cli("ota", "publish", str(path), "--model", MODEL, "--version", version)
    return release, firmware


async def public_key(dev: Dev) -> str:
    async with httpx.AsyncClient(base_url=dev.base_url) as client:
        response = await client.get("/ota/public-key")
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["algorithm"] == "Ed25519"
    key: str = document["publicKey"]
    assert len(base64.b64decode(key)) == 32
    return key


class Exchanges:
    """An httpx response hook: (Range header, status) of every request, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, int]] = []

    async def __call__(self, response: httpx.Response) -> None:
        self.seen.append((response.request.headers.get("range"), response.status_code))

    def take(self) -> list[tuple[str | None, int]]:
        seen, self.seen = self.seen, []
        return seen


def present(path: Path) -> bool:
    return path.exists()


def statuses(reports: list[dict[str, Any]]) -> list[str]:
    return [r["status"] for r in reports]


async def refused(
    updater: OtaUpdater, entry: ManifestEntry, dest: Path, error: type[Exception]
) -> Exception:
    """Download `entry` to `dest`, which must be refused with `error` and leave nothing."""
    before = len(updater.reports)
    with pytest.raises(error) as raised:
        await updater.download(entry, dest)
    assert not present(dest)
    assert not present(partial_path(dest)), "a refused image must not be resumed later"
    assert statuses(updater.reports[before:]) == ["downloading", "failed"]
    assert updater.reports[-1]["error"] == str(raised.value)
    return raised.value


async def test_a_device_updates_with_an_interrupted_download(dev: Dev) -> None:
    device = await dev.device("ota-1")
    _, password = device.credentials
    key = await public_key(dev)
    exchanges = Exchanges()
    http = httpx.AsyncClient(event_hooks={"response": [exchanges]})
    updater = OtaUpdater(device, key, client=http)
    workdir = dev.cwd / "ota-1"
    try:
        assert await updater.check(dev.base_url) is None  # nothing released yet

        release, firmware = await publish(dev, "1.1.0")
        assert release["sha256"] == hashlib.sha256(firmware).hexdigest()
        assert release["size"] == FIRMWARE_BYTES
        assert release["rolloutPercent"] == 100

        # The manifest, as the device sees it.
        entry = await updater.check(dev.base_url)
        assert entry == ManifestEntry(
            model=MODEL,
            version="1.1.0",
            url=release["url"],
            sha256=release["sha256"],
            size=FIRMWARE_BYTES,
            signature_scheme="paku-ota-v1",
            statement_signature=release["statementSignature"],
        )
        assert await updater.check(dev.base_url, "1.1.0") is None
        head = await http.head(entry.url)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(FIRMWARE_BYTES)
        assert head.headers["etag"] == f'"{entry.sha256}"'
        assert head.headers["accept-ranges"] == "bytes"
        up_to_date = await dev.manifest("ota-1", password, current="1.1.0")
        assert up_to_date.status_code == 200
        assert up_to_date.json() == []
        wrong = await dev.manifest("ota-1", password + "x")
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Basic")
        impostor = ReferenceDevice("127.0.0.1", dev.mqtt_port, "ota-1", password + "x", model=MODEL)
        async with OtaUpdater(impostor, key) as wrong_updater:
            with pytest.raises(OtaUnauthorized, match="401"):
                await wrong_updater.check(dev.base_url)
        await dev.wait_for_status(release["id"], "ota-1", "pending")

        # The link drops after 1 MB: the partial file stays.
        exchanges.take()
        dest = workdir / "firmware-1.1.0.bin"
        with pytest.raises(OtaInterrupted) as interrupted:
            await updater.download(entry, dest, stop_after=STOP_AFTER)
        assert interrupted.value.received == STOP_AFTER
        assert partial_path(dest).read_bytes() == firmware[:STOP_AFTER]
        assert not dest.exists()
        assert exchanges.take() == [(None, 200)]
        await dev.wait_for_status(release["id"], "ota-1", "downloading")

        # Images that do not match their manifest entry are refused, and reported.
        flipped = bytearray(base64.b64decode(entry.statement_signature or ""))
        flipped[0] ^= 1
        tampered = dataclasses.replace(
            entry, statement_signature=base64.b64encode(flipped).decode()
        )
        error = await refused(updater, tampered, workdir / "tampered.bin", SignatureInvalid)
        assert "pinned public key" in str(error)
        other_key = (
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        async with OtaUpdater(device, base64.b64encode(other_key).decode()) as wrong_key:
            await refused(wrong_key, entry, workdir / "wrong-key.bin", SignatureInvalid)
            updater.reports.extend(wrong_key.reports)
        await dev.wait_for_status(release["id"], "ota-1", "failed")
        exchanges.take()

        # A partial file that does not belong to the image: If-Range makes the server send
        # it all (200) and the digest check refuses the result.
        other = workdir / "other.bin"
        partial_path(other).parent.mkdir(parents=True, exist_ok=True)
        partial_path(other).write_bytes(firmware[:STOP_AFTER])
        wrong_digest = dataclasses.replace(entry, sha256="0" * 64)
        await refused(updater, wrong_digest, other, DigestMismatch)
        assert exchanges.take() == [(f"bytes={STOP_AFTER}-", 200)]
        # A complete partial file but a manifest size beyond it: the server cannot resume
        # (416), the device starts over, and the size check refuses what it gets.
        partial_path(other).write_bytes(firmware)
        too_long = dataclasses.replace(entry, size=FIRMWARE_BYTES + 10)
        error = await refused(updater, too_long, other, SizeMismatch)
        assert f"received {FIRMWARE_BYTES} bytes" in str(error)
        assert exchanges.take() == [(f"bytes={FIRMWARE_BYTES}-", 416), (None, 200)]

        # The real download resumes where the link dropped.
        reports_before = len(updater.reports)
        assert await updater.download(entry, dest) == dest
        assert exchanges.take() == [(f"bytes={STOP_AFTER}-", 206)]
        assert dest.read_bytes() == firmware
        assert not partial_path(dest).exists()
        await updater.install(entry, dest)
        assert statuses(updater.reports[reports_before:]) == [
            "downloading",
            "installing",
            "installed",
        ]
        await dev.wait_for_status(release["id"], "ota-1", "installed")

        # Reboot into 1.1.0: the retained state says so, and the device counts as updated.
        await updater.reboot(entry)
        assert device.connected
        assert device.fw_version == "1.1.0"
        await dev.wait_for_status(release["id"], "ota-1", "updated")
        assert await updater.check(dev.base_url) is None
    finally:
        await updater.aclose()
        await http.aclose()
        await device.disconnect()

    async with dev.admin() as client:
        response = await client.get("/devices/ota-1/events", params={"type": "ota"})
        shown = await client.get("/devices/ota-1")
    assert response.status_code == 200, response.text
    reported = [item["payload"] for item in reversed(response.json()["items"])]
    assert statuses(reported) == statuses(updater.reports)
    assert {r["version"] for r in reported} == {"1.1.0"}
    assert all(isinstance(r["error"], str) for r in reported if r["status"] == "failed")
    assert shown.json()["fwVersion"] == "1.1.0"


async def test_update_firmware_pause_and_resume(dev: Dev) -> None:
    key = await public_key(dev)
    first = await dev.device("ota-2")
    second = await dev.device("ota-3")
    devices = [first, second]
    try:
        release, firmware = await publish(dev, "1.1.0", size=300_000)

        # One call does it all: check, download, verify, report, install, reboot.
        assert await first.update_firmware(dev.base_url, key, dev.cwd / "ota-2") == "1.1.0"
        assert first.fw_version == "1.1.0"
        assert first.connected
        image = dev.cwd / "ota-2" / "firmware-1.1.0.bin"
        assert image.read_bytes() == firmware

        async def counted() -> None:
            counts = (await dev.rollout(release["id"]))["counts"]
            assert counts == {
                "pending": 1,
                "downloading": 0,
                "installing": 0,
                "installed": 0,
                "confirmed": 0,
                "failed": 0,
                "rolled_back": 0,
                "updated": 1,
            }

        await eventually(counted)

        # Paused: a device that has not started is offered nothing...
        _, password = second.credentials
        paused = await dev.cli("ota", "pause", release["id"])
        assert paused["paused"] is True
        assert (await dev.manifest("ota-3", password)).json() == []
        assert await second.update_firmware(dev.base_url, key, dev.cwd / "ota-3") is None
        assert second.fw_version == "1.0.0"
        status = await dev.cli("ota", "status", release["id"])
        assert status["rollout"]["counts"]["pending"] == 0
        # ... but one that has started may finish (ota-2 reported on this release).
        _, first_password = first.credentials
        started = await dev.manifest("ota-2", first_password, current="1.0.0")
        assert [e["version"] for e in started.json()] == ["1.1.0"]
        # Its first healthy run confirms the image; then it is up to date.
        await first.send_telemetry({"temp": 20.5})
        await first.wait_for(lambda: not first.firmware.pending_verify)
        assert await first.update_firmware(dev.base_url, key, dev.cwd / "ota-2") is None

        resumed = await dev.cli("ota", "resume", release["id"])
        assert resumed["paused"] is False
        listed = await dev.cli("ota", "list", "--model", MODEL)
        assert [(r["id"], r["paused"]) for r in listed] == [(release["id"], False)]
        assert await second.update_firmware(dev.base_url, key, dev.cwd / "ota-3") == "1.1.0"
        await eventually(lambda: _all_updated(dev, release["id"], ["ota-2", "ota-3"]))
    finally:
        for device in devices:
            await device.disconnect()


async def _all_updated(dev: Dev, release_id: str, device_ids: list[str]) -> bool:
    devices = (await dev.rollout(release_id))["devices"]
    # Running it: confirmed, or (firmware that does not confirm yet) updated.
    assert sorted(devices["updated"] + devices["confirmed"]) == device_ids, devices
    return True


async def test_a_release_signed_offline_installs_from_a_server_without_the_private_key(
    tmp_path: Path,
) -> None:
    """CI signs with `paku-iot ota sign` (no server), publishes with `ota publish
    --signature-file`; the server holds only the public key (PAKU_OTA_PUBLIC_KEY_FILE)."""
    ci = tmp_path / "ci"
    ci.mkdir()
    key = Ed25519PrivateKey.generate()
    (ci / "key.pem").write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    public_pem = tmp_path / "ota-public.pem"
    public_pem.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    firmware = os.urandom(200_000)
    (ci / "firmware.bin").write_bytes(firmware)
    signed = await cli(
        {},
        ci,
        "ota",
        "sign",
        "--key",
        "key.pem",
        "--model",
        MODEL,
        "--version",
        "1.1.0",
        "firmware.bin",
        "--out",
        "firmware.sig.json",
    )
    assert signed.returncode == 0, signed.stderr
    assert json.loads((ci / "firmware.sig.json").read_text())["version"] == "1.1.0"

    async with running_dev(tmp_path, PAKU_OTA_PUBLIC_KEY_FILE=str(public_pem)) as dev:
        assert not (tmp_path / "var" / "secrets" / "ota-signing-key.pem").exists()
        unsigned = await cli(
            {**dev.env, "PAKU_ADMIN_TOKEN": dev.token},
            dev.cwd,
            "ota",
            "publish",
            str(ci / "firmware.bin"),
            "--model",
            MODEL,
            "--version",
            "1.1.0",
            "--url",
            dev.base_url,
        )
        assert unsigned.returncode != 0
        assert "paku-iot ota sign" in unsigned.stderr
        release = await dev.cli(
            "ota",
            "publish",
            str(ci / "firmware.bin"),
            "--model",
            MODEL,
            "--version",
            "1.1.0",
            "--signature-file",
            str(ci / "firmware.sig.json"),
        )
        device = await dev.device("ota-9")
        try:
            installed = await device.update_firmware(
                dev.base_url, await public_key(dev), dev.cwd / "ota-9"
            )
            assert installed == "1.1.0"
            assert device.fw_version == "1.1.0"
            await dev.wait_for_status(release["id"], "ota-9", "updated")
        finally:
            await device.disconnect()
