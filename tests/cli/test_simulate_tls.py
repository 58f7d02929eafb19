"""`paku-iot simulate` against a stack that speaks only TLS to devices and admins: MQTT over
TLS from `paku-iot dev --tls` (its development CA, as Caddy's internal CA would be in a
production-like test), and the API over HTTPS through a TLS terminator of the test's own
(Caddy's part), each verified with `--cafile`.

The fleet's counts are checked against what the backend stored: nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from paku_iot.broker.certs import CertFiles, ensure_dev_certs
from tests.support import eventually, free_port
from tests.support.cli import cli
from tests.support.faults import TcpProxy
from tests.support.processes import dev_environment, paku, read_until, stop

HOST = "localhost"  # a name the development certificate carries


class TlsTerminator(TcpProxy):
    """HTTPS in front of the dev API's HTTP port, as Caddy is in production."""

    def __init__(self, target_port: int) -> None:
        super().__init__("127.0.0.1", target_port)
        self.context: ssl.SSLContext | None = None

    async def start(self) -> None:
        self._flowing = True
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, ssl=self.context
        )


@dataclass
class TlsStack:
    env: dict[str, str]  # for the CLI: the API's own address stays the plain one
    http_url: str
    https_url: str
    mqtts_port: int
    mqtt_port: int  # the plain listener
    certs: CertFiles
    token: str

    def simulate_args(self, *args: str) -> list[str]:
        return [
            "simulate",
            "--url",
            self.https_url,
            "--mqtt-host",
            HOST,
            "--mqtt-port",
            str(self.mqtts_port),
            "--cafile",
            str(self.certs.ca_cert),
            *args,
        ]

    async def stored_telemetry(self, device_ids: list[str]) -> int:
        async with httpx.AsyncClient(
            base_url=self.http_url, headers={"Authorization": f"Bearer {self.token}"}
        ) as api:
            total = 0
            for device_id in device_ids:
                page = (
                    await api.get(f"/devices/{device_id}/telemetry", params={"limit": 1000})
                ).json()
                assert page["next"] is None
                total += len(page["items"])
            return total


@pytest.fixture
async def tls_stack(tmp_path: Path) -> AsyncIterator[TlsStack]:
    """`paku-iot dev --tls` with MQTT over TLS on a port of its own and HTTPS in front."""
    env, http_port, mqtt_port = dev_environment(tmp_path)
    https = TlsTerminator(http_port)
    mqtts_port = free_port()
    https_url = f"https://{HOST}:{https.port}"
    # OTA manifests name download URLs from the public URL, as behind Caddy.
    dev_env = env | {"PAKU_MQTT_TLS_PORT": str(mqtts_port), "PAKU_PUBLIC_URL": https_url}
    server = paku("dev", "--tls", env=dev_env, cwd=tmp_path)
    assert server.stdout is not None
    try:
        await asyncio.to_thread(read_until, server.stdout, "Press Ctrl-C")
        certs = CertFiles(tmp_path / "var" / "certs")
        https.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        https.context.load_cert_chain(certs.server_cert, certs.server_key)
        await https.start()
        try:
            token = (tmp_path / "var" / "secrets" / "admin-token").read_text().strip()
            http_url = f"http://127.0.0.1:{http_port}"
            yield TlsStack(env, http_url, https_url, mqtts_port, mqtt_port, certs, token)
        finally:
            await https.close()
    finally:
        code, stderr = stop(server)
        assert code == 0, stderr


def summary(stdout: str) -> dict[str, Any]:
    """The last line of `simulate --json`."""
    counts: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return counts


async def test_simulate_provisions_and_sends_over_tls_verifying_with_cafile(
    tls_stack: TlsStack, tmp_path: Path
) -> None:
    saved = tmp_path / "fleet.csv"
    run = await cli(
        tls_stack.env,
        tmp_path,
        *tls_stack.simulate_args(
            "--devices", "3", "--rate", "15", "--duration", "3", "--ota-check", "0",
            "--save", str(saved), "--json",
        ),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"against mqtts://{HOST}:{tls_stack.mqtts_port}" in run.stdout
    counts = summary(run.stdout)
    assert counts["devices"] == counts["connected"] == 3
    assert counts["errors"] == 0
    assert counts["telemetrySent"] == counts["telemetryAcked"] >= 30  # 15/s for about 3 s

    device_ids = [line.split(",")[0] for line in saved.read_text().splitlines()[1:]]
    assert len(device_ids) == 3

    async def nothing_lost() -> None:
        assert await tls_stack.stored_telemetry(device_ids) == counts["telemetryAcked"]

    await eventually(nothing_lost)


async def test_the_fleet_takes_a_firmware_update_over_https(
    tls_stack: TlsStack, tmp_path: Path
) -> None:
    saved = tmp_path / "fleet.csv"
    first = await cli(
        tls_stack.env,
        tmp_path,
        *tls_stack.simulate_args(
            "--devices", "2", "--rate", "4", "--duration", "1", "--ota-check", "0",
            "--save", str(saved),
        ),
    )  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x7fsimulated firmware image" * 4096)
    published = await cli(
        tls_stack.env, tmp_path, "ota", "publish", str(firmware), "--model", "simulated",
        "--version", "1.1.0", "--json",
    )  # fmt: skip
    assert published.returncode == 0, published.stdout + published.stderr
    assert json.loads(published.stdout)["url"].startswith(tls_stack.https_url)

    # The public key, the manifest and the image all come over HTTPS, verified with --cafile.
    run = await cli(
        tls_stack.env,
        tmp_path,
        *tls_stack.simulate_args(
            "--credentials", str(saved), "--rate", "4", "--duration", "6", "--ota-check", "2",
        ),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.splitlines()[-1]
    assert last.startswith("done: ")
    assert "updates 2" in last, run.stdout
    assert "failed" not in last, run.stdout


async def test_tls_failures_stop_simulate_with_a_clear_error(
    tls_stack: TlsStack, tmp_path: Path
) -> None:
    stranger = ensure_dev_certs(tmp_path / "stranger")
    address = f"{HOST}:{tls_stack.mqtts_port}"

    missing = await cli(
        tls_stack.env, tmp_path, *tls_stack.simulate_args("--cafile", str(tmp_path / "no.crt"))
    )
    assert missing.returncode == 1
    assert "paku-iot: cannot read the CA file" in missing.stderr
    assert "no.crt: No such file or directory" in missing.stderr

    https_refused = await cli(
        tls_stack.env, tmp_path, *tls_stack.simulate_args("--cafile", str(stranger.ca_cert))
    )
    assert https_refused.returncode == 1
    https_address = tls_stack.https_url.removeprefix("https://")
    assert (
        f"paku-iot: cannot reach the paku-iot API at {tls_stack.https_url}: certificate verify "
        "failed: "
    ) in https_refused.stderr
    assert f"for {https_address} (the server's certificate is not issued" in https_refused.stderr

    listed = await cli(tls_stack.env, tmp_path, "devices", "list", "--json")
    assert json.loads(listed.stdout) == []  # nothing was provisioned

    # The API over plain HTTP, MQTT over TLS with the wrong trust: the first device stops all.
    for trust in (["--cafile", str(stranger.ca_cert)], ["--mqtt-tls"]):
        mqtt_refused = await cli(
            tls_stack.env,
            tmp_path,
            "simulate", "--url", tls_stack.http_url, "--mqtt-host", HOST,
            "--mqtt-port", str(tls_stack.mqtts_port), *trust,
            "--devices", "2", "--duration", "5", "--ota-check", "0",
        )  # fmt: skip
        assert mqtt_refused.returncode == 1, mqtt_refused.stdout
        assert " cannot connect: certificate verify failed: " in mqtt_refused.stderr
        assert f"for {address} (the server's certificate is not issued" in mqtt_refused.stderr
        assert "Traceback" not in mqtt_refused.stderr

    # TLS to the plain listener: no device can connect, and simulate says why.
    not_tls = await cli(
        tls_stack.env,
        tmp_path,
        "simulate", "--url", tls_stack.http_url, "--mqtt-host", HOST,
        "--mqtt-port", str(tls_stack.mqtt_port), "--cafile", str(tls_stack.certs.ca_cert),
        "--devices", "2", "--duration", "5", "--ota-check", "0",
    )  # fmt: skip
    assert not_tls.returncode == 1, not_tls.stdout
    assert "paku-iot: none of the 2 devices could connect; the first: " in not_tls.stderr
    assert "(is this a TLS port?)" in not_tls.stderr
