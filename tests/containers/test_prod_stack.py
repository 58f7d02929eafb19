"""compose/prod.yaml on a real Docker engine, installed as docs/operations.md tells an
operator to, from nothing:

- the data root made with the guide's own commands (step 3, read from the guide, with the
  test's directory for /srv/paku) and the env file written by its step 4 heredoc (secrets
  from `openssl rand -hex`), handed to docker-compose with --env-file instead of being
  written into this checkout's compose/.env;
- `up -d --build` (step 5): broker-init and migrate exit 0, everything else healthy;
- HTTPS through Caddy on 443, plain HTTP on 80 redirected, /metrics not served outside;
- a device provisioned over HTTPS publishes with `mosquitto_pub` over TLS on 8883,
  verifying the chain and the name (`--cafile`, in a container that resolves the domain to
  this machine), and its telemetry is read back; with only the public CAs it is refused;
- a firmware release published over HTTPS and downloaded as a device does;
- a renewed certificate: Caddy issues a new one at the same path, and Mosquitto serves it
  to new connections without a restart (its watcher reloads it);
- the backup job (`run --rm backup`) and its archive restored into a second, fresh install
  with secrets of its own (step 9's restore): the device, its password, its data, the
  firmware and the OTA signing key are all there; a copy of the archive with one file more
  than its manifest lists is refused first, and restores nothing.

Caddy cannot reach Let's Encrypt from a test, so the test's override file gives Caddy the
same Caddyfile with its internal CA in place of the `acme_ca` line, and Mosquitto that CA's
certificate path, as an operator's override for certificates of their own would (step 8).
prod.yaml publishes 80, 443 and 8883 on every interface: they must be free here."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import eventually
from tests.support.compose import REPO
from tests.support.stacks import ComposeProject, docker, wait_until_ready

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

OPERATIONS = REPO / "docs" / "operations.md"
CADDYFILE = REPO / "compose" / "caddy" / "Caddyfile"
DOCS_ROOT = "/srv/paku"
DOCS_DOMAIN = "iot.example.com"
DOMAIN = "paku.test"
PUBLISHED = (80, 443, 8883)
ACME_LINE = re.compile(r"^\s*acme_ca\s+\S+\s*$", re.MULTILINE)
# Where Caddy keeps what its internal CA issues (the "local" issuer), and the CA's root.
LOCAL_CERTS = f"caddy/certificates/local/{DOMAIN}"
LOCAL_ROOT = "caddy/pki/authorities/local/root.crt"


def guide_block(heading: str) -> str:
    """The first ```sh block under a heading of docs/operations.md."""
    text = OPERATIONS.read_text()
    start = text.index(f"\n{heading}\n")
    block = re.search(r"```sh\n(.*?)```", text[start:], flags=re.DOTALL)
    assert block, f"no sh block under {heading!r} in {OPERATIONS}"
    return block.group(1)


def as_root_here(command: str, root: Path, env_file: Path) -> str:
    """A guide command for this machine: the test's data root and env file, the test domain,
    and no sudo (the test runs as root)."""
    command = re.sub(r"\bsudo\s+", "", command)
    command = command.replace("compose/.env", str(env_file))
    return command.replace(DOCS_ROOT, str(root)).replace(DOCS_DOMAIN, DOMAIN)


def install(root: Path, env_file: Path) -> None:
    """Steps 3 and 4 of the guide: the data root and the env file."""
    step3 = [
        line
        for line in guide_block("### 3. The code and the data root").splitlines()
        if line.startswith("sudo install ")
    ]
    assert len(step3) >= 3, step3
    step4 = guide_block("### 4. `compose/.env` with generated secrets")
    for script in [*step3, step4]:
        result = subprocess.run(
            ["bash", "-euc", as_root_here(script, root, env_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
    assert values["PAKU_DATA_ROOT"] == str(root)
    assert values["PAKU_DOMAIN"] == DOMAIN
    for secret in ("POSTGRES_PASSWORD", "PAKU_ADMIN_TOKEN", "PAKU_METRICS_TOKEN"):
        assert re.fullmatch(r"[0-9a-f]{64}", values[secret]), secret


def env_value(env_file: Path, name: str) -> str:
    for line in env_file.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} is not in {env_file}")


def internal_ca_override(directory: Path) -> Path:
    """The test's override file: Caddy with its internal CA instead of Let's Encrypt (the
    Caddyfile otherwise unchanged), Mosquitto given that CA's certificate path."""
    caddyfile = CADDYFILE.read_text()
    assert len(ACME_LINE.findall(caddyfile)) == 1, caddyfile
    test_caddyfile = directory / "Caddyfile"
    test_caddyfile.write_text(
        ACME_LINE.sub("\tlocal_certs\n\tskip_install_trust", caddyfile), encoding="utf-8"
    )
    override = directory / "prod.internal-ca.yaml"
    cert_dir = f"/paku/certificates/local/{DOMAIN}"
    override.write_text(
        json.dumps(
            {
                "services": {
                    "caddy": {"volumes": [f"{test_caddyfile}:/etc/caddy/Caddyfile:ro"]},
                    "mosquitto": {
                        "environment": {
                            "MOSQUITTO_TLS_CERT": f"{cert_dir}/{DOMAIN}.crt",
                            "MOSQUITTO_TLS_KEY": f"{cert_dir}/{DOMAIN}.key",
                        }
                    },
                }
            },
            indent=2,
        )
    )
    return override


class ProdStack(ComposeProject):
    """compose/prod.yaml with a data root and env file of its own, and the test's override."""

    def __init__(self, root: Path, overrides: tuple[Path, ...] = ()) -> None:
        self.root = root
        self.env_file = root.parent / f"{root.name}.env"
        root.parent.mkdir(parents=True, exist_ok=True)
        install(root, self.env_file)
        override = internal_ca_override(root.parent)
        # compose/.env's values only: the shell's own would take precedence over the file.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAKU_", "POSTGRES_"))}
        super().__init__("prod", env, overrides=(override, *overrides), env_file=self.env_file)
        self.admin_token = env_value(self.env_file, "PAKU_ADMIN_TOKEN")

    @property
    def ca_file(self) -> Path:
        return self.root / "caddy" / "data" / LOCAL_ROOT

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def api(self, token: str | None = None) -> httpx.AsyncClient:
        """An HTTPS client for https://paku.test through Caddy on this machine's 443: the
        name in SNI and Host, the chain checked against Caddy's root."""
        headers = {"Host": DOMAIN}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(
            base_url="https://127.0.0.1",
            headers=headers,
            transport=DomainTransport(verify=self.tls_context()),
            timeout=30,
        )

    def mqtt_serial(self) -> int:
        """The serial number of the certificate the broker presents on 8883 for the domain,
        its chain verified against Caddy's root."""
        context = self.tls_context()
        with (
            socket.create_connection(("127.0.0.1", 8883), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der
        return serial_of(der)


class DomainTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": DOMAIN}
        return await super().handle_async_request(request)


def serial_of(der: bytes) -> int:
    result = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
        input=der,
        capture_output=True,
        check=True,
    )
    return int(result.stdout.decode().strip().split("=", 1)[1], 16)


def mosquitto_pub(
    stack: ProdStack, device_id: str, password: str, payload: str, *, public_cas: bool = False
) -> subprocess.CompletedProcess[str]:
    """A device on another machine: mosquitto_pub (from the broker's image) connecting to
    paku.test:8883 (resolved to this machine), verifying the chain against Caddy's root, or
    with `public_cas` against the public CAs only, and publishing one QoS 1 message."""
    trust = ["--capath", "/etc/ssl/certs"] if public_cas else ["--cafile", "/ca/root.crt"]
    return docker(
        *("run", "--rm", "--network", "host", "--add-host", f"{DOMAIN}:127.0.0.1"),
        *("-v", f"{stack.ca_file}:/ca/root.crt:ro", "--entrypoint", "mosquitto_pub"),
        "eclipse-mosquitto:2",
        *("-h", DOMAIN, "-p", "8883", *trust, "-u", device_id, "-P", password),
        *("-q", "1", "-t", f"paku/{device_id}/telemetry", "-m", payload, "-i", device_id),
        timeout=60,
    )


async def published_over_tls(stack: ProdStack, device_id: str, password: str, value: int) -> int:
    """Publish until the broker takes it (the first time, its watcher has to reload the
    password file first); returns the sample's ts."""
    ts = int(time.time() * 1000)
    payload = json.dumps({"ts": ts, "v": value})

    async def accepted() -> None:
        result = await asyncio.to_thread(mosquitto_pub, stack, device_id, password, payload)
        assert result.returncode == 0, result.stderr

    await eventually(accepted, timeout=30)
    return ts


async def stored_values(api: httpx.AsyncClient, device_id: str) -> list[Any]:
    response = await api.get(f"/devices/{device_id}/telemetry")
    assert response.status_code == 200, response.text
    return sorted(item["payload"]["v"] for item in response.json()["items"])


async def up(stack: ProdStack, timings: dict[str, float], label: str) -> None:
    started = time.monotonic()
    result = stack.compose("up", "-d", "--build", timeout=1800)
    assert result.returncode == 0, f"up failed:\n{result.stdout}\n{result.stderr}"
    await wait_until_ready(stack)
    timings[f"{label}: up, healthy"] = time.monotonic() - started

    async def tls_served() -> int:
        # Caddy has its certificate, the broker's watcher has restarted it with the listener.
        assert stack.ca_file.exists(), "Caddy has no internal CA yet"
        return stack.mqtt_serial()

    started = time.monotonic()
    await eventually(tls_served, timeout=120)
    await wait_until_ready(stack)
    timings[f"{label}: TLS on 8883"] = time.monotonic() - started


def down(stack: ProdStack) -> None:
    result = stack.compose("down", "-v", "--remove-orphans")
    assert result.returncode == 0, result.stderr


async def https_and_device(stack: ProdStack, device_id: str) -> tuple[str, dict[str, Any]]:
    """HTTPS through Caddy, a device provisioned and publishing over TLS, a firmware release.
    Returns the device's password and the release."""
    async with httpx.AsyncClient(base_url="http://127.0.0.1", headers={"Host": DOMAIN}) as plain:
        redirected = await plain.get("/health")
        assert redirected.status_code in (301, 308), redirected.text
        assert redirected.headers["location"] == f"https://{DOMAIN}/health"
    async with stack.api() as anonymous:
        health = await anonymous.get("/health")
        assert health.status_code == 200, health.text
        assert (await anonymous.get("/metrics")).status_code == 404
    async with stack.api(stack.admin_token) as api:
        created = await api.post("/devices", json={"model": "paku-sensor", "id": device_id})
        assert created.status_code == 201, created.text
        password = created.json()["credentials"]["password"]

        await published_over_tls(stack, device_id, password, 1)
        refused = mosquitto_pub(stack, device_id, password, '{"v": 99}', public_cas=True)
        assert refused.returncode != 0
        assert "A TLS error occurred" in refused.stderr, refused  # mosquitto_pub's words

        async def stored() -> None:
            assert await stored_values(api, device_id) == [1]

        await eventually(stored, timeout=15)

        firmware = os.urandom(200_000)
        published = await api.post(
            "/ota/firmware",
            data={"model": "paku-sensor", "version": "1.1.0"},
            files={"file": ("firmware.bin", firmware, "application/octet-stream")},
        )
        assert published.status_code == 201, published.text
        release: dict[str, Any] = published.json()
        assert release["url"].startswith(f"https://{DOMAIN}/ota/firmware/")
    await downloaded(stack, device_id, password, release, firmware)
    return password, release


async def downloaded(
    stack: ProdStack, device_id: str, password: str, release: dict[str, Any], firmware: bytes
) -> None:
    """What a device does: the manifest with its own credentials, then the image from the
    URL it names, through Caddy (the path of that URL, on the same HTTPS endpoint)."""
    async with stack.api() as device:
        manifest = await device.get(
            "/ota/manifest.json", params={"current": "1.0.0"}, auth=(device_id, password)
        )
        assert manifest.status_code == 200, manifest.text
        (entry,) = manifest.json()
        assert (entry["version"], entry["sha256"]) == ("1.1.0", release["sha256"])
        image = await device.get(
            httpx.URL(entry["url"]).raw_path.decode(), auth=(device_id, password)
        )
        assert image.status_code == 200
        assert hashlib.sha256(image.content).hexdigest() == release["sha256"]
        assert image.content == firmware


async def renewed_certificate(stack: ProdStack) -> None:
    """Caddy renews: here its certificate for the domain is removed and Caddy restarted, so
    it issues a new one at the same path. The broker serves the new one to new connections
    without being restarted."""
    mosquitto = stack.container("mosquitto")
    started_at = docker("inspect", "--format", "{{.State.StartedAt}}", mosquitto).stdout
    before = stack.mqtt_serial()
    shutil.rmtree(stack.root / "caddy" / "data" / LOCAL_CERTS)
    assert stack.compose("restart", "caddy").returncode == 0

    async def new_serial() -> None:
        assert stack.mqtt_serial() != before, "still the old certificate"

    await eventually(new_serial, timeout=60)
    assert docker("inspect", "--format", "{{.State.StartedAt}}", mosquitto).stdout == started_at
    logs = stack.compose("logs", "--no-color", "mosquitto").stdout
    assert "TLS certificate changed: reloaded mosquitto" in logs, logs[-3000:]


def backup(stack: ProdStack) -> Path:
    result = stack.compose("run", "--rm", "-T", "backup", timeout=600)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    (archive,) = (stack.root / "backups").glob("paku-backup-*.tar.gz")
    return archive


async def restored(stack: ProdStack, archive: Path) -> None:
    """Step 9's restore in a fresh install: the archive copied into its backups directory,
    caddy, paku-iot and mosquitto stopped, restore.sh run by the backup service, `up -d`."""
    copy = stack.root / "backups" / archive.name
    shutil.copy2(archive, copy)
    os.chown(copy, 1883, 1883)
    stopped = stack.compose("stop", "caddy", "paku-iot", "mosquitto")
    assert stopped.returncode == 0, stopped.stderr
    tampered = with_an_unlisted_file(archive, stack.root / "backups" / "tampered")
    refused = stack.compose(
        *("run", "--rm", "-T", "backup"),
        *("bash", "/paku/scripts/restore.sh", "--yes"),
        f"/paku/backups/tampered/{tampered.name}",
        timeout=600,
    )
    assert refused.returncode == 1, f"{refused.stdout}\n{refused.stderr}"
    assert "does not list" in refused.stderr, refused.stderr
    assert "restored" not in refused.stdout, refused.stdout
    restore = stack.compose(
        *("run", "--rm", "-T", "backup"),
        *("bash", "/paku/scripts/restore.sh", "--yes", f"/paku/backups/{archive.name}"),
        timeout=600,
    )
    assert restore.returncode == 0, f"{restore.stdout}\n{restore.stderr}"
    started = stack.compose("up", "-d", timeout=600)
    assert started.returncode == 0, started.stderr
    await wait_until_ready(stack)


def with_an_unlisted_file(archive: Path, directory: Path) -> Path:
    """A copy of the archive with one more file (a broker config include), which its
    manifest does not list; readable by the backup container's user."""
    unpacked = directory / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    [root] = unpacked.iterdir()
    (root / "broker" / "extra.conf").write_text("listener 1884\nallow_anonymous true\n")
    tampered = directory / archive.name
    with tarfile.open(tampered, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    shutil.rmtree(unpacked)
    for path in (directory, tampered):
        os.chown(path, 1883, 1883)
    return tampered


def ports_free() -> None:
    for port in PUBLISHED:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                pytest.fail(f"compose/prod.yaml publishes port {port}, which is taken: {exc}")


async def test_the_prod_stack_installs_runs_and_restores_as_documented(
    engine: list[str], tmp_path: Path
) -> None:
    assert os.geteuid() == 0, "the guide's commands run as root (sudo)"
    ports_free()
    first = ProdStack(tmp_path / "first" / "srv-paku")
    second: ProdStack | None = None
    timings: dict[str, float] = {}
    current = first
    try:
        await up(first, timings, "first")
        started = time.monotonic()
        password, release = await https_and_device(first, "kitchen-01")
        timings["https, device over TLS, firmware"] = time.monotonic() - started

        started = time.monotonic()
        await renewed_certificate(first)
        await published_over_tls(first, "kitchen-01", password, 2)
        timings["certificate renewed"] = time.monotonic() - started

        async with first.api(first.admin_token) as api:

            async def both_stored() -> None:
                assert await stored_values(api, "kitchen-01") == [1, 2]

            await eventually(both_stored, timeout=15)
            public_key = (await api.get("/ota/public-key")).json()["publicKey"]
            firmware = (await api.get(httpx.URL(release["url"]).raw_path.decode())).content

        started = time.monotonic()
        archive = backup(first)
        timings["backup"] = time.monotonic() - started
        down(first)

        second = ProdStack(tmp_path / "second" / "srv-paku")
        current = second
        assert second.admin_token != first.admin_token
        await up(second, timings, "second")
        started = time.monotonic()
        await restored(second, archive)
        timings["restore"] = time.monotonic() - started

        async with second.api(second.admin_token) as api:
            assert await stored_values(api, "kitchen-01") == [1, 2]
            assert (await api.get("/ota/public-key")).json()["publicKey"] == public_key
        # The device's old password works on the restored broker, and so does its update.
        await published_over_tls(second, "kitchen-01", password, 3)
        await downloaded(second, "kitchen-01", password, release, firmware)
        async with second.api(second.admin_token) as api:

            async def all_stored() -> None:
                assert await stored_values(api, "kitchen-01") == [1, 2, 3]

            await eventually(all_stored, timeout=15)
    except BaseException:
        current.print_logs("300")
        raise
    finally:
        for stack in (first, second):
            if stack is not None:
                stack.compose("down", "-v", "--remove-orphans")
        print("timings:", {step: round(seconds, 1) for step, seconds in timings.items()})
    for stack in (first, second):
        assert stack is not None
        assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
