"""The broker container's scripts, run as plain processes: compose/mosquitto/entrypoint.sh
with `sh` and with busybox (the broker image's shell), its watcher reloading a real
Mosquitto when the password file or the TLS certificate changes, and
compose/mosquitto/healthcheck.sh."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from paku_iot.broker.passwords import hash_password
from tests.support import eventually, free_port, require, wait_for_port_sync
from tests.support.compose import BROKER_HEALTHCHECK
from tests.support.containers import EntrypointBroker, group_members, start_entrypoint
from tests.support.mqtt import ConnectRefused, DeviceClient


def busybox_path(tmp_path: Path) -> str:
    """A PATH of busybox applets only, as in the Alpine-based eclipse-mosquitto image."""
    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox is not installed (Debian: apt-get install busybox)")
    assert busybox is not None
    applets = tmp_path / "busybox-bin"
    applets.mkdir()
    names = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for name in names.stdout.split():
        (applets / name).symlink_to(busybox)
    return str(applets)


def run_broker_healthcheck(shell: list[str], broker_dir: Path) -> int:
    """compose/mosquitto/healthcheck.sh, as the mosquitto service's healthcheck runs it."""
    return subprocess.run(
        [*shell, str(BROKER_HEALTHCHECK)],
        env={**os.environ, "PAKU_BROKER_DIR": str(broker_dir)},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


def wait_until_group_gone(pgid: int, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return group_members(pgid)


def wait_for_the_watcher(broker: EntrypointBroker, timeout: float = 15) -> None:
    """Until the watcher is in its loop, which is when a `sleep` of its own runs in the
    broker's process group (with sh and with busybox). It starts in the background as
    mosquitto starts and compares the files with what it saw then: a change made before it
    looked is no change to it, and a loaded machine can delay its first look past the moment
    mosquitto listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in group_members(broker.process.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    return
            except OSError:
                continue  # gone meanwhile
        time.sleep(0.05)
    raise AssertionError(f"the watcher never started watching:\n{broker.output()}")


SHELLS: dict[str, Callable[[Path], tuple[list[str], str | None]]] = {
    "sh": lambda _tmp: (["sh"], None),
    "busybox": lambda tmp: ([str(Path(busybox_path(tmp)) / "sh")], str(tmp / "busybox-bin")),
}


@pytest.mark.parametrize("shell", sorted(SHELLS))
async def test_the_watcher_reloads_mosquitto_when_the_password_file_changes(
    shell: str, tmp_path: Path, entrypoint_brokers: list[EntrypointBroker]
) -> None:
    command, path = SHELLS[shell](tmp_path)
    broker = start_entrypoint(tmp_path, shell=command, path=path)
    entrypoint_brokers.append(broker)

    with pytest.raises(ConnectRefused):
        await DeviceClient("127.0.0.1", broker.port, "hand-1", "typed-by-hand").connect()

    # A device added to the password file by hand (not by paku-iot, which would signal the
    # broker itself on this machine): only the watcher can make the broker see it.
    await asyncio.to_thread(wait_for_the_watcher, broker)
    with (broker.broker_dir / "passwd").open("a") as passwd:
        passwd.write(f"hand-1:{hash_password('typed-by-hand')}\n")

    async def connects() -> None:
        try:
            device = await DeviceClient(
                "127.0.0.1", broker.port, "hand-1", "typed-by-hand"
            ).connect()
        except ConnectRefused as exc:
            raise AssertionError(str(exc)) from None
        await device.disconnect()

    await eventually(connects, timeout=15)
    assert "password or ACL file changed: reloaded mosquitto" in broker.output()
    assert broker.process.poll() is None, "a reload must not stop the broker"

    assert await asyncio.to_thread(run_broker_healthcheck, command, broker.broker_dir) == 0

    # The broker exits (the container stops): the watcher goes with it by itself.
    watcher = [pid for pid in group_members(broker.process.pid) if pid != broker.process.pid]
    assert watcher, "no watcher running next to mosquitto"
    broker.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(broker.process.wait, 10) == 0
    left = await asyncio.to_thread(wait_until_group_gone, broker.process.pid)
    assert not left, "the watcher outlived the broker"
    assert await asyncio.to_thread(run_broker_healthcheck, command, broker.broker_dir) != 0


def self_signed(directory: Path, serial: int) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    for path, data in (
        (
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        (cert_path, certificate.public_bytes(serialization.Encoding.PEM)),
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(path)  # as a renewal replaces them
    return cert_path, key_path, certificate.public_bytes(serialization.Encoding.DER)


def served_certificate(port: int, ca_file: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_the_tls_listener_comes_from_the_snippet_and_renewals_reload(
    tmp_path: Path, entrypoint_brokers: list[EntrypointBroker]
) -> None:
    cert, key, first = self_signed(tmp_path / "certs", serial=1)
    tls_port = free_port()
    broker = start_entrypoint(
        tmp_path,
        shell=["sh"],
        extra_env={
            "MOSQUITTO_TLS_CERT": str(cert),
            "MOSQUITTO_TLS_KEY": str(key),
            "MOSQUITTO_TLS_PORT": str(tls_port),
        },
    )
    entrypoint_brokers.append(broker)
    assert wait_for_port_sync(tls_port), broker.output()
    assert served_certificate(tls_port, cert) == first

    ca_copy = tmp_path / "first-ca.pem"
    shutil.copy(cert, ca_copy)
    await asyncio.to_thread(wait_for_the_watcher, broker)
    _, _, second = self_signed(tmp_path / "certs", serial=2)

    async def renewed() -> None:
        try:
            assert served_certificate(tls_port, cert) == second
        except (OSError, ssl.SSLError) as exc:
            raise AssertionError(str(exc)) from None

    await eventually(renewed, timeout=15)
    assert "TLS certificate changed: reloaded mosquitto" in broker.output()
    effective = (tmp_path / "run" / "mosquitto.conf").read_text()
    assert f"listener {tls_port}\n" in effective
    assert "@TLS_" not in effective


def test_certificates_that_appear_later_restart_the_broker_with_tls(
    tmp_path: Path, entrypoint_brokers: list[EntrypointBroker]
) -> None:
    certs = tmp_path / "certs"
    broker = start_entrypoint(
        tmp_path,
        shell=["sh"],
        extra_env={
            "MOSQUITTO_TLS_CERT": str(certs / "fullchain.pem"),
            "MOSQUITTO_TLS_KEY": str(certs / "privkey.pem"),
            "MOSQUITTO_TLS_PORT": str(free_port()),
        },
    )
    entrypoint_brokers.append(broker)
    assert "starting without the TLS listener" in broker.output()
    wait_for_the_watcher(broker)
    self_signed(certs, serial=1)
    # The broker stops so that the restart policy starts it again, now with the listener.
    assert broker.process.wait(15) == 0, broker.output()
    assert "stopping mosquitto so that it starts again" in broker.output()


async def test_a_new_generated_config_restarts_the_broker(
    tmp_path: Path, entrypoint_brokers: list[EntrypointBroker]
) -> None:
    """An upgrade's broker-init writes a config with other listeners: a reload would not open
    them, so the broker stops, and the restart policy starts it with the new config."""
    broker = start_entrypoint(tmp_path, shell=["sh"])
    entrypoint_brokers.append(broker)
    await asyncio.to_thread(wait_for_the_watcher, broker)
    # Unchanged content (broker-init runs at every `up`): no restart.
    config = broker.broker_dir / "mosquitto.conf"
    config.write_text(config.read_text())
    await asyncio.sleep(2.5)
    assert broker.process.poll() is None, broker.output()
    config.write_text(config.read_text() + "\n# a changed config\n")
    assert await asyncio.to_thread(broker.process.wait, 15) == 0, broker.output()
    assert "the generated config changed" in broker.output()
