"""A Python client generated from the served `/openapi.json` by openapi-python-client, used as
an app developer would: provision a device and list devices as the admin (Bearer), then read
the OTA manifest and download the image as the device (HTTP Basic, its own credentials).

The generator runs offline (`--meta none`: a bare package, nothing to fetch), in a child
process, into the test's own directory."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ADMIN_TOKEN
from tests.support.served import Served

# The schema does not depend on the database: one kind is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "paku_iot_client"
IMAGE = b"\xe9" + bytes(range(256)) * 8  # an ESP32 image starts with 0xE9


@pytest.fixture
def generated(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The client package, generated from what the server serves, importable as PACKAGE."""
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(f"{served.base_url}/openapi.json").raise_for_status().content)
    # The generator formats its output with ruff, which it looks for on PATH.
    path = f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    started = time.monotonic()
    result = subprocess.run(
        [GENERATOR, "generate", "--path", spec, "--meta", "none", "--output-path", PACKAGE],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A part of the document the generator could not read is skipped with a warning.
    assert "Warning" not in output, output
    assert took < 30, f"generating the client took {took:.1f} s"
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / PACKAGE
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


@pytest.fixture
def closing() -> Iterator[ExitStack]:
    """Closes the clients a test opens (each holds an httpx connection pool), pass or fail."""
    with ExitStack() as stack:
        yield stack


def generated_module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_a_generated_client_provisions_lists_and_updates_as_a_device_would(
    served: Served, generated: Path, closing: ExitStack
) -> None:
    client = generated_module("client")
    models = generated_module("models")
    devices = generated_module("api.devices")
    ota = generated_module("api.ota")
    for operation in ("provision_device", "list_devices", "get_device", "update_device"):
        importlib.import_module(f"{devices.__name__}.{operation}")
    for operation in ("publish_firmware", "manifest", "download_firmware"):
        importlib.import_module(f"{ota.__name__}.{operation}")
    file_type = generated_module("types").File

    admin = closing.enter_context(
        client.AuthenticatedClient(base_url=served.base_url, token=ADMIN_TOKEN)
    )
    created = devices.provision_device.sync(
        client=admin, body=models.DeviceCreate(model="lamp", id="gen-1")
    )
    assert isinstance(created, models.ProvisionedDevice), created
    assert created.credentials.username == "gen-1"

    page = devices.list_devices.sync(client=admin, model="lamp")
    assert isinstance(page, models.DevicePage), page
    assert [d.id for d in page.items] == ["gen-1"]
    assert page.next_ is None

    updated = devices.update_device.sync(
        "gen-1", client=admin, body=models.DeviceUpdate(notes="by the door")
    )
    assert isinstance(updated, models.DeviceDetail), updated
    assert (updated.notes, updated.reported) == ("by the door", None)

    release = ota.publish_firmware.sync(
        client=admin,
        body=models.BodyPublishFirmware(
            model="lamp",
            version="1.1.0",
            file=file_type(payload=io.BytesIO(IMAGE), file_name="firmware.bin"),
        ),
    )
    assert isinstance(release, models.Release), release
    assert release.size == len(IMAGE)

    # The device: HTTP Basic with the credentials it got when it was provisioned.
    credentials = (created.credentials.username, created.credentials.password)
    device = closing.enter_context(
        client.Client(base_url=served.base_url, httpx_args={"auth": credentials})
    )
    entries = ota.manifest.sync(client=device, current="1.0.0")
    assert [(e.model, e.version, e.sha256) for e in entries] == [("lamp", "1.1.0", release.sha256)]
    anyone = closing.enter_context(client.Client(base_url=served.base_url))
    image = ota.download_firmware.sync(release.sha256, client=anyone)
    assert image.payload.read() == IMAGE

    # A refusal arrives as the documented error, not as an unexpected status.
    impostor = closing.enter_context(
        client.Client(base_url=served.base_url, httpx_args={"auth": ("gen-1", "wrong")})
    )
    refused = ota.manifest.sync_detailed(client=impostor)
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.ErrorResponse)
    assert refused.parsed.error.code == "invalid_credentials"
    missing = devices.get_device.sync_detailed("ghost-1", client=admin)
    assert missing.status_code == 404
    assert missing.parsed.error.code == "device_not_found"
