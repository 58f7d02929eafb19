"""MQTT over TLS with the project's own pieces: development certificates (made in Python and
by scripts/gen-certs.sh), a real Mosquitto configured by `prepare_broker_dir` with a TLS
listener, and the tests' device client (paho, MQTT v5) verifying the broker with the CA."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from paku_iot.broker.certs import CertFiles, ensure_dev_certs
from paku_iot.broker.files import BrokerOptions, BrokerPaths, render_config
from paku_iot.broker.passwords import hash_password, new_password
from paku_iot.broker.reload import reload_broker
from paku_iot.broker.setup import prepare_broker_dir
from paku_iot.exceptions import SettingsError
from tests.support import free_port, require, wait_for_port_sync
from tests.support.broker import Broker, broker_options, prepared_broker
from tests.support.mqtt import ACCEPTED, ConnectRefused, DeviceClient
from tests.support.processes import run_paku

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gen-certs.sh"
NOT_AUTHORIZED = 0x87


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def alt_names(cert_file: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(value) for value in names.get_values_for_type(x509.DNSName)} | {
        str(value) for value in names.get_values_for_type(x509.IPAddress)
    }


def signed_by(cert_file: Path, ca_file: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


async def connect_eventually(device: DeviceClient, timeout: float = 10) -> DeviceClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await device.connect()
        # While Mosquitto reloads (SIGHUP), a TLS handshake can also be cut with a reset.
        except (ConnectRefused, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@dataclass
class TlsBroker:
    broker: Broker
    tls_port: int
    certs: CertFiles

    async def add_device(self, device_id: str) -> str:
        """Credentials as provisioning makes them: a `$7$` line in the password file, a
        reload, then wait until the broker takes them (over TLS)."""
        password = new_password()
        with self.broker.paths.password_file.open("a", encoding="ascii") as file:
            file.write(f"{device_id}:{hash_password(password)}\n")
        assert reload_broker(self.broker.paths.pid_file)
        probe = self.device(device_id, password, client_id=f"{device_id}-p")
        await (await connect_eventually(probe)).disconnect()
        return password

    def device(
        self, device_id: str | None, password: str | None, host: str = "127.0.0.1", **kwargs: Any
    ) -> DeviceClient:
        """A device on the TLS listener that trusts the test's CA unless `ca_file` says else."""
        kwargs.setdefault("ca_file", self.certs.ca_cert)
        return DeviceClient(host, self.tls_port, device_id, password, tls=True, **kwargs)


def tls_options(tls_port: int, certs: CertFiles) -> BrokerOptions:
    return broker_options(
        tls_port=tls_port,
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_ca_file=certs.ca_cert,
    )


def start_tls_broker(root: Path, certs: CertFiles) -> TlsBroker:
    tls_port = free_port()
    broker = prepared_broker(root, tls_options(tls_port, certs))
    broker.start()
    assert wait_for_port_sync(tls_port), f"no TLS listener; see {broker.paths.log_file}"
    return TlsBroker(broker, tls_port, certs)


def make_certs(maker: str, root: Path) -> CertFiles:
    if maker == "python":
        return ensure_dev_certs(root)
    result = run_script(str(root))
    assert result.returncode == 0, result.stderr
    return CertFiles(root)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    started = start_tls_broker(tmp_path / "broker", ensure_dev_certs(tmp_path / "certs"))
    yield started
    started.broker.stop()


# --- certificates ---------------------------------------------------------------------


def test_dev_certs_are_made_once_and_the_ca_is_kept(tmp_path: Path) -> None:
    files = ensure_dev_certs(tmp_path / "certs", ["broker.lan", "192.168.1.20"])
    for key in (files.ca_key, files.server_key):
        assert mode(key) == 0o600
    for cert in (files.ca_cert, files.server_cert):
        assert mode(cert) == 0o644
    assert signed_by(files.server_cert, files.ca_cert)
    assert alt_names(files.server_cert) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "broker.lan",
        "192.168.1.20",
    }
    ca, server = files.ca_cert.read_bytes(), files.server_cert.read_bytes()

    again = ensure_dev_certs(tmp_path / "certs", ["broker.lan"])
    assert again.ca_cert.read_bytes() == ca
    assert again.server_cert.read_bytes() == server  # still covers what is asked

    forced = ensure_dev_certs(tmp_path / "certs", ["broker.lan"], force=True)
    assert forced.ca_cert.read_bytes() == ca
    assert forced.server_cert.read_bytes() != server
    assert signed_by(forced.server_cert, forced.ca_cert)

    wider = ensure_dev_certs(tmp_path / "certs", ["mqtt.lan"])
    assert "mqtt.lan" in alt_names(wider.server_cert)
    assert wider.ca_cert.read_bytes() == ca


def test_gen_certs_script_makes_the_same_files_idempotently(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    first = run_script(str(out), "broker.lan", "10.1.2.3")
    assert first.returncode == 0, first.stderr
    files = CertFiles(out)
    assert mode(files.ca_key) == 0o600
    assert mode(files.server_key) == 0o600
    assert signed_by(files.server_cert, files.ca_cert)
    assert alt_names(files.server_cert) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "broker.lan",
        "10.1.2.3",
    }
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            str(files.ca_cert),
            str(files.server_cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    ca, server = files.ca_cert.read_bytes(), files.server_cert.read_bytes()

    again = run_script(str(out), "broker.lan", "other.lan")
    assert again.returncode == 0, again.stderr
    assert files.ca_cert.read_bytes() == ca
    assert files.server_cert.read_bytes() == server
    assert "does not name other.lan" in again.stderr

    forced = run_script("--force", str(out), "other.lan")
    assert forced.returncode == 0, forced.stderr
    assert files.ca_cert.read_bytes() == ca
    assert files.server_cert.read_bytes() != server
    assert "other.lan" in alt_names(files.server_cert)
    assert mode(files.server_key) == 0o600

    # The Python side reuses what the script made, and the other way round.
    reused = ensure_dev_certs(out, ["other.lan"])
    assert reused.ca_cert.read_bytes() == ca
    assert reused.server_cert.read_bytes() == files.server_cert.read_bytes()

    bad = run_script(str(out), "no,commas")
    assert bad.returncode == 1
    assert "not a host name or IP address" in bad.stderr


def test_gen_certs_script_defaults_to_var_certs_and_is_shellcheck_clean(tmp_path: Path) -> None:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    result = subprocess.run(
        ["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "certs" / "server.crt").is_file()
    assert os.access(SCRIPT, os.X_OK)
    require(
        shutil.which("shellcheck") is not None,
        "shellcheck is not installed (make test installs it)",
    )
    checked = subprocess.run(
        ["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout


# --- broker config ----------------------------------------------------------------------


def test_each_listener_has_its_own_accounts_and_devices_cannot_pick_a_client_id(
    tmp_path: Path,
) -> None:
    certs = ensure_dev_certs(tmp_path / "certs")
    paths = BrokerPaths(tmp_path / "broker")
    options = replace(tls_options(8884, certs), listen_port=1884, backend_port=1885)
    config = render_config(paths, options).splitlines()
    backend = config.index("listener 1885 127.0.0.1")
    plain = config.index("listener 1884 127.0.0.1")
    tls = config.index("listener 8884 127.0.0.1")
    assert config.index("per_listener_settings true") < backend < plain < tls

    def block(start: int, end: int | None = None) -> list[str]:
        return config[start + 1 : end]

    assert block(backend, plain)[:3] == [
        "allow_anonymous false",
        f"password_file {paths.backend_password_file}",
        f"acl_file {paths.backend_acl}",
    ]
    assert "use_username_as_clientid true" not in block(backend, plain)
    device_auth = [
        "allow_anonymous false",
        f"password_file {paths.password_file}",
        f"acl_file {paths.acl}",
        "use_username_as_clientid true",
    ]
    assert block(plain, tls)[:4] == device_auth
    assert block(tls) == [
        *device_auth,
        f"certfile {paths.tls_cert}",
        f"keyfile {paths.tls_key}",
        f"cafile {paths.tls_ca}",
        "tls_version tlsv1.2",
    ]
    without = replace(options, tls_cert_file=None, tls_key_file=None)
    assert "certfile" not in render_config(paths, without)


def test_tls_settings_are_checked_and_copies_follow_them(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path / "certs")
    other = ensure_dev_certs(tmp_path / "other")
    root = tmp_path / "broker"
    base = replace(tls_options(8884, certs), listen_port=1884, backend_port=1885)

    def options(**changes: Any) -> BrokerOptions:
        return replace(base, **changes)

    with pytest.raises(SettingsError, match="PAKU_MQTT_TLS_KEY_FILE"):
        prepare_broker_dir(root, options(tls_key_file=None))
    with pytest.raises(SettingsError, match="PAKU_MQTT_TLS_PORT"):
        prepare_broker_dir(root, options(tls_port=1884))
    with pytest.raises(SettingsError, match="PAKU_MQTT_TLS_PORT"):
        prepare_broker_dir(root, options(tls_port=1885))
    with pytest.raises(SettingsError, match="PAKU_MQTT_BACKEND_PORT"):
        prepare_broker_dir(root, options(backend_port=1884))
    with pytest.raises(SettingsError, match="is not the key of the certificate"):
        prepare_broker_dir(root, options(tls_key_file=other.server_key))
    with pytest.raises(SettingsError, match=r"PAKU_MQTT_TLS_CERT_FILE=.*cannot read"):
        prepare_broker_dir(root, options(tls_cert_file=tmp_path / "missing.crt"))
    with pytest.raises(SettingsError, match="not a PEM certificate"):
        prepare_broker_dir(root, options(tls_cert_file=certs.server_key))

    paths = prepare_broker_dir(root, base)
    for copy in (paths.tls_cert, paths.tls_key, paths.tls_ca):
        assert mode(copy) == 0o600
    assert paths.tls_key.read_bytes() == certs.server_key.read_bytes()

    prepare_broker_dir(root, options(tls_cert_file=None, tls_key_file=None, tls_ca_file=None))
    assert not paths.tls_dir.exists(), "no stale copy of the key stays behind"
    assert "certfile" not in paths.config.read_text()


def test_broker_config_writes_the_tls_listener_from_the_settings(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path / "certs")
    tls_port = free_port()
    result = run_paku(
        "broker-config",
        "--out",
        str(tmp_path / "broker"),
        env={
            "PAKU_MQTT_PORT": str(free_port()),
            "PAKU_MQTT_TLS_PORT": str(tls_port),
            "PAKU_MQTT_TLS_CERT_FILE": str(certs.server_cert),
            "PAKU_MQTT_TLS_KEY_FILE": str(certs.server_key),
            "PAKU_MQTT_TLS_CA_FILE": str(certs.ca_cert),
        },
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"TLS listener on port {tls_port}" in result.stdout
    paths = BrokerPaths(tmp_path / "broker")
    assert f"listener {tls_port} 127.0.0.1" in paths.config.read_text()
    assert mode(paths.tls_key) == 0o600


# --- a real broker ----------------------------------------------------------------------


@pytest.mark.parametrize("maker", ["python", "script"])
async def test_a_device_publishes_over_tls_verifying_the_broker_with_the_ca(
    tmp_path: Path, maker: str
) -> None:
    certs = make_certs(maker, tmp_path / "certs")
    tls = start_tls_broker(tmp_path / "broker", certs)
    try:
        password = await tls.add_device("tls-01")
        # The backend stays on the plain loopback listener: both listeners are one broker.
        backend = await tls.broker.backend().connect()
        try:
            assert await backend.subscribe("paku/tls-01/telemetry") == 1
            for host in ("127.0.0.1", "localhost"):
                device = await tls.device("tls-01", password, host=host).connect()
                try:
                    payload = f'{{"via": "{host}"}}'
                    assert await device.publish("paku/tls-01/telemetry", payload) == 0
                finally:
                    await device.disconnect()
                received = await asyncio.to_thread(backend.messages.get, timeout=10)
                assert received.payload == payload.encode()
        finally:
            await backend.disconnect()
    finally:
        tls.broker.stop()


async def test_without_the_ca_the_broker_certificate_is_refused(tls_broker: TlsBroker) -> None:
    password = await tls_broker.add_device("tls-02")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await tls_broker.device("tls-02", password, ca_file=None).connect()
    # The CA of another development setup does not do either.
    stranger = ensure_dev_certs(tls_broker.broker.paths.root.parent / "stranger")
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls_broker.device("tls-02", password, ca_file=stranger.ca_cert).connect()


async def test_the_password_file_and_acl_apply_over_tls(tls_broker: TlsBroker) -> None:
    password = await tls_broker.add_device("tls-03")
    await tls_broker.add_device("tls-04")
    with pytest.raises(ConnectRefused):
        await tls_broker.device("tls-03", "wrong-password").connect()
    with pytest.raises(ConnectRefused):
        await tls_broker.device(None, None, client_id="anonymous").connect()

    device = await tls_broker.device("tls-03", password).connect()
    try:
        assert await device.publish("paku/tls-03/telemetry", '{"t": 1}') in ACCEPTED
        assert await device.publish("paku/tls-04/telemetry", '{"t": 1}') == NOT_AUTHORIZED
        assert await device.publish("paku/tls-03/cmd", "{}") == NOT_AUTHORIZED
        assert await device.publish("elsewhere", "{}") == NOT_AUTHORIZED
    finally:
        await device.disconnect()
