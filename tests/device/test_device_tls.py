"""The reference device over MQTT over TLS, verifying the broker, against a real Mosquitto with
a TLS listener and the service storing what arrives.

The broker's certificate comes from a development CA made by `broker/certs.py` (as
`paku-iot dev --tls` makes it), but names `localhost` only: connecting by `127.0.0.1` is then
connecting by a name the certificate does not carry. The service's own link stays on the
plain loopback listener of the same broker, as in `paku-iot dev --tls`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from paku_iot.broker.certs import CertFiles, _issue_server_cert, _load_ca, ensure_dev_certs
from paku_iot.device import DeviceConnectError, DeviceTlsError, ReferenceDevice, client_context
from paku_iot.exceptions import InvalidInput
from tests.support import eventually, free_port, wait_for_port_sync
from tests.support.broker import Broker, broker_options, prepared_broker
from tests.support.processes import read_until, stop

SERVER_NAME = "localhost"  # the only name on the broker's certificate


@dataclass
class TlsBroker(Broker):
    """The project's broker with a TLS listener next to the plain one."""

    tls_port: int = 0
    ca_file: Path = Path()

    def start(self) -> None:
        super().start()
        assert wait_for_port_sync(self.tls_port), f"no TLS listener; see {self.paths.log_file}"


def localhost_only_certs(root: Path) -> CertFiles:
    """A development CA and a server certificate it signs for `localhost` alone."""
    files = ensure_dev_certs(root)
    ca = _load_ca(files)
    assert ca is not None
    _issue_server_cert(files, *ca, [SERVER_NAME])
    return files


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: TLS is the broker's business; the database is not under test here."""
    from paku_iot.storage.migrate import upgrade  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'paku.db'}"
    upgrade(url)
    return url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """Replaces conftest's `broker` (so `service` and `api` run on this one)."""
    certs = localhost_only_certs(tmp_path / "certs")
    tls_port = free_port()
    plain = prepared_broker(
        tmp_path / "broker",
        broker_options(
            tls_port=tls_port,
            tls_cert_file=certs.server_cert,
            tls_key_file=certs.server_key,
            tls_ca_file=certs.ca_cert,
        ),
    )
    started = TlsBroker(
        plain.host,
        plain.port,
        plain.backend_port,
        plain.paths,
        plain.backend_password,
        tls_port=tls_port,
        ca_file=certs.ca_cert,
    )
    started.start()
    yield started
    started.stop()


@pytest.fixture
async def provisioned(api: httpx.AsyncClient, broker: TlsBroker) -> tuple[str, str]:
    """A device provisioned through the API, whose password the broker accepts over TLS."""
    response = await api.post("/devices", json={"model": "tls", "id": "tls-dev-01"})
    assert response.status_code == 201, response.text
    password: str = response.json()["credentials"]["password"]

    async def accepted() -> None:
        probe = ReferenceDevice(
            SERVER_NAME, broker.tls_port, "tls-dev-01", password, tls=client_context(broker.ca_file)
        )
        try:
            await probe.connect()
        except DeviceConnectError as exc:
            raise AssertionError(f"not accepted yet: {exc}") from exc
        await probe.disconnect()

    await eventually(accepted)
    return "tls-dev-01", password


async def test_a_device_trusting_the_ca_sends_telemetry_over_tls_that_is_stored(
    api: httpx.AsyncClient, broker: TlsBroker, provisioned: tuple[str, str]
) -> None:
    device_id, password = provisioned
    device = ReferenceDevice(
        SERVER_NAME,
        broker.tls_port,
        device_id,
        password,
        tls=client_context(broker.ca_file),
        reconnect_delay_s=0.1,
        max_reconnect_delay_s=0.4,
    )
    try:
        await device.connect()
        sent = [await device.send_telemetry({"n": n}) for n in range(3)]
        assert (device.telemetry_published, device.telemetry_acknowledged) == (3, 3)

        # A lost link is retried over TLS as well (the plain port is another one).
        await asyncio.to_thread(broker.stop)
        await device.wait_for(lambda: not device.connected)
        await asyncio.to_thread(broker.start)
        await device.wait_for(lambda: device.connected, timeout=20)
        sent.append(await device.send_telemetry({"n": 3}))
        assert (device.telemetry_published, device.telemetry_acknowledged) == (4, 4)
    finally:
        await device.disconnect()

    async def stored() -> None:
        response = await api.get(f"/devices/{device_id}/telemetry")
        items = response.json()["items"]
        assert sorted(i["payload"]["n"] for i in items) == [0, 1, 2, 3], items

    await eventually(stored, timeout=30)  # the collector reconnects after the restart too
    device_view = (await api.get(f"/devices/{device_id}")).json()
    assert device_view["online"] is False  # the graceful offline state, over TLS too
    assert [d["ts"] for d in sent] == sorted(d["ts"] for d in sent)


async def test_another_ca_or_the_system_store_does_not_verify_the_broker(
    broker: TlsBroker, provisioned: tuple[str, str], tmp_path: Path
) -> None:
    device_id, password = provisioned
    address = f"{SERVER_NAME}:{broker.tls_port}"
    stranger = ensure_dev_certs(tmp_path / "stranger")
    for context in (client_context(stranger.ca_cert), client_context()):
        device = ReferenceDevice(SERVER_NAME, broker.tls_port, device_id, password, tls=context)
        with pytest.raises(DeviceTlsError) as refused:
            await device.connect()
        message = str(refused.value)
        assert message.startswith(f"{device_id} cannot connect: certificate verify failed: ")
        assert f"for {address} (the server's certificate is not issued by a CA" in message
        assert refused.value.reason_code is None
        assert not device.connected
        await device.disconnect()


async def test_a_name_the_certificate_does_not_carry_is_refused(
    broker: TlsBroker, provisioned: tuple[str, str]
) -> None:
    device_id, password = provisioned
    device = ReferenceDevice(
        "127.0.0.1", broker.tls_port, device_id, password, tls=client_context(broker.ca_file)
    )
    with pytest.raises(DeviceTlsError) as refused:
        await device.connect()
    assert (
        "certificate verify failed: IP address mismatch, certificate is not valid for "
        f"'127.0.0.1' for 127.0.0.1:{broker.tls_port} (the certificate does not name the host "
        "connected to; connect by a name it carries)"
    ) in str(refused.value)
    await device.disconnect()


async def test_tls_to_the_plain_port_and_plain_to_the_tls_port_fail_clearly(
    broker: TlsBroker, provisioned: tuple[str, str]
) -> None:
    device_id, password = provisioned
    tls_to_plain = ReferenceDevice(
        SERVER_NAME, broker.port, device_id, password, tls=client_context(broker.ca_file)
    )
    with pytest.raises(DeviceConnectError, match=r"is this a TLS port\?"):
        await tls_to_plain.connect()
    await tls_to_plain.disconnect()

    plain_to_tls = ReferenceDevice(SERVER_NAME, broker.tls_port, device_id, password)
    with pytest.raises(DeviceConnectError) as refused:
        await plain_to_tls.connect(timeout=1)
    assert not isinstance(refused.value, DeviceTlsError)
    await plain_to_tls.disconnect()


def test_a_context_that_does_not_verify_is_refused() -> None:
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    with pytest.raises(ValueError, match="must verify the server"):
        ReferenceDevice("localhost", 8883, "tls-dev-02", "password", tls=unverified)
    unverified.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="must verify the server"):
        ReferenceDevice("localhost", 8883, "tls-dev-02", "password", tls=unverified)


def test_a_ca_file_that_cannot_be_used_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"cannot read the CA file .*missing\.crt: No such file"):
        client_context(tmp_path / "missing.crt")
    certs = ensure_dev_certs(tmp_path / "certs")
    with pytest.raises(InvalidInput, match=r"CA file .*server\.key holds no PEM certificate"):
        client_context(certs.server_key)
    context = client_context(certs.ca_cert)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def device_process(*args: str, password: str) -> subprocess.Popen[str]:
    """`python -m paku_iot.device`, its password from the environment, its log on stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "paku_iot.device", *args],
        env={**os.environ, "PAKU_DEVICE_PASSWORD": password},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr


async def test_the_runnable_device_speaks_tls_with_cafile(
    api: httpx.AsyncClient, broker: TlsBroker, provisioned: tuple[str, str], tmp_path: Path
) -> None:
    device_id, password = provisioned
    at_tls_port = ("--host", SERVER_NAME, "--port", str(broker.tls_port), "--id", device_id)
    stranger = ensure_dev_certs(tmp_path / "stranger")
    refused = device_process(*at_tls_port, "--cafile", str(stranger.ca_cert), password=password)
    code, stderr = await asyncio.to_thread(finished, refused)
    assert code == 1, stderr
    assert (
        f"python -m paku_iot.device: {device_id} cannot connect: certificate verify failed: "
    ) in stderr
    assert "Traceback" not in stderr

    missing = device_process(
        *at_tls_port, "--cafile", str(tmp_path / "missing.crt"), password=password
    )
    code, stderr = await asyncio.to_thread(finished, missing)
    assert code == 2, stderr
    assert "cannot read the CA file" in stderr

    running = device_process(
        *at_tls_port, "--cafile", str(broker.ca_file), "--interval", "0.2", password=password
    )
    try:
        assert running.stderr is not None
        await asyncio.to_thread(read_until, running.stderr, f"online at {SERVER_NAME}:")

        async def stored() -> None:
            response = await api.get(f"/devices/{device_id}/telemetry")
            assert len(response.json()["items"]) >= 2

        await eventually(stored, timeout=20)
    finally:
        code, stderr = stop(running)
    assert code == 0, stderr
