"""MQTT over TLS with the project's own pieces: development certificates (made in Python and
by scripts/gen-certs.sh), a real Mosquitto configured by `prepare_broker_dir` with a TLS
listener, and a real paho MQTT v5 client that verifies the broker with the CA."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from paku_iot.broker.certs import CertFiles, ensure_dev_certs
from paku_iot.broker.files import BrokerOptions, BrokerPaths, render_config
from paku_iot.broker.passwords import hash_password, new_password
from paku_iot.broker.reload import reload_broker
from paku_iot.broker.setup import prepare_broker_dir
from paku_iot.exceptions import SettingsError
from paku_iot.settings import BACKEND_MQTT_USERNAME
from tests.conftest import Broker, mosquitto_binary
from tests.support import ConnectRefused, _close, free_port, require, wait_for_port_sync
from tests.test_processes import run_paku

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gen-certs.sh"
NOT_AUTHORIZED = 0x87
# PUBACK success: 0x00, or 0x10 "no matching subscribers" when nobody listens.
ACCEPTED = {0x00, 0x10}


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


def _close_sockets_of(exc: BaseException) -> None:
    """paho leaves the socket of a failed TLS handshake open in its frame; close it, since
    warnings (an unclosed socket's ResourceWarning among them) are errors here."""
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, ssl.SSLSocket):
                value.close()
        tb = tb.tb_next


@dataclass
class TlsDevice:
    """A real MQTT v5 client (paho) over TLS; `ca=None` trusts the system's CAs only."""

    port: int
    username: str | None
    password: str | None
    ca: Path | None
    host: str = "127.0.0.1"
    client_id: str | None = None
    _acks: dict[int, int] = field(default_factory=dict)
    _ack_event: threading.Condition = field(default_factory=threading.Condition)
    _client: paho.Client | None = None

    def connect(self) -> TlsDevice:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id or self.username or "anonymous-tls",
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        client.tls_set(ca_certs=str(self.ca) if self.ca else None)
        connected = threading.Event()
        outcome: dict[str, Any] = {}

        def on_connect(_c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
            outcome["reason"] = reason
            connected.set()

        def on_publish(_c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
            with self._ack_event:
                self._acks[mid] = reason.value
                self._ack_event.notify_all()

        client.on_connect = on_connect
        client.on_publish = on_publish
        try:
            client.connect(self.host, self.port, keepalive=5)
        except BaseException as exc:
            _close_sockets_of(exc)
            _close(client)
            raise
        client.loop_start()
        if not connected.wait(10):
            client.disconnect()
            _close(client)
            raise ConnectRefused("no CONNACK")
        if outcome["reason"].is_failure:
            _close(client)
            raise ConnectRefused(str(outcome["reason"]))
        self._client = client
        return self

    def publish(self, topic: str, payload: str) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 = accepted)."""
        assert self._client is not None
        info = self._client.publish(topic, payload.encode(), qos=1)
        with self._ack_event:
            assert self._ack_event.wait_for(lambda: info.mid in self._acks, timeout=10)
        return self._acks.pop(info.mid)

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            _close(self._client)
            self._client = None


def connect_eventually(device: TlsDevice, timeout: float = 10) -> TlsDevice:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return device.connect()
        # While Mosquitto reloads (SIGHUP), a TLS handshake can also be cut with a reset.
        except (ConnectRefused, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class TlsBroker:
    broker: Broker
    tls_port: int
    certs: CertFiles

    def add_device(self, device_id: str) -> str:
        """Credentials as provisioning makes them: a `$7$` line in the password file, a
        reload, then wait until the broker takes them (over TLS)."""
        password = new_password()
        with self.broker.paths.password_file.open("a", encoding="ascii") as file:
            file.write(f"{device_id}:{hash_password(password)}\n")
        assert reload_broker(self.broker.paths.pid_file)
        probe = TlsDevice(
            self.tls_port, device_id, password, self.certs.ca_cert, client_id=f"{device_id}-p"
        )
        connect_eventually(probe).disconnect()
        return password

    def device(self, device_id: str, password: str | None, **kwargs: Any) -> TlsDevice:
        kwargs.setdefault("ca", self.certs.ca_cert)
        return TlsDevice(self.tls_port, device_id, password, **kwargs)


def tls_options(port: int, tls_port: int, certs: CertFiles) -> BrokerOptions:
    return BrokerOptions(
        listen_host="127.0.0.1",
        listen_port=port,
        backend_username=BACKEND_MQTT_USERNAME,
        max_payload_bytes=65_536,
        max_queued_messages=100_000,
        tls_port=tls_port,
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_ca_file=certs.ca_cert,
    )


def start_tls_broker(root: Path, certs: CertFiles) -> TlsBroker:
    mosquitto_binary()
    port, tls_port = free_port(), free_port()
    paths = prepare_broker_dir(root, tls_options(port, tls_port, certs))
    broker = Broker("127.0.0.1", port, paths, paths.backend_password.read_text().strip())
    broker.start()
    assert wait_for_port_sync(tls_port), f"no TLS listener; see {paths.log_file}"
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


def test_the_tls_listener_is_rendered_after_the_global_settings(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path / "certs")
    paths = BrokerPaths(tmp_path / "broker")
    config = render_config(paths, tls_options(1884, 8884, certs)).splitlines()
    plain = config.index("listener 1884 127.0.0.1")
    tls = config.index("listener 8884 127.0.0.1")
    # Authentication is global (not per listener), so both listeners share passwd and ACL.
    assert config.index("per_listener_settings false") < plain
    assert plain < config.index(f"password_file {paths.password_file}") < tls
    assert plain < config.index(f"acl_file {paths.acl}") < tls
    assert config[tls + 1 :] == [
        f"certfile {paths.tls_cert}",
        f"keyfile {paths.tls_key}",
        f"cafile {paths.tls_ca}",
        "tls_version tlsv1.2",
    ]
    without = replace(tls_options(1884, 8884, certs), tls_cert_file=None, tls_key_file=None)
    assert "certfile" not in render_config(paths, without)


def test_tls_settings_are_checked_and_copies_follow_them(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path / "certs")
    other = ensure_dev_certs(tmp_path / "other")
    root = tmp_path / "broker"
    base = tls_options(1884, 8884, certs)

    def options(**changes: Any) -> BrokerOptions:
        return replace(base, **changes)

    with pytest.raises(SettingsError, match="PAKU_MQTT_TLS_KEY_FILE"):
        prepare_broker_dir(root, options(tls_key_file=None))
    with pytest.raises(SettingsError, match="PAKU_MQTT_TLS_PORT"):
        prepare_broker_dir(root, options(tls_port=1884))
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
        password = await asyncio.to_thread(tls.add_device, "tls-01")
        # The backend stays on the plain loopback listener: both listeners are one broker.
        backend = await tls.broker.backend().connect()
        try:
            assert await backend.subscribe("paku/tls-01/telemetry") == 1
            for host in ("127.0.0.1", "localhost"):
                device = await asyncio.to_thread(tls.device("tls-01", password, host=host).connect)
                try:
                    payload = f'{{"via": "{host}"}}'
                    assert (
                        await asyncio.to_thread(device.publish, "paku/tls-01/telemetry", payload)
                        == 0
                    )
                finally:
                    await asyncio.to_thread(device.disconnect)
                received = await asyncio.to_thread(backend.messages.get, timeout=10)
                assert received.payload == payload.encode()
        finally:
            await backend.disconnect()
    finally:
        tls.broker.stop()


def test_without_the_ca_the_broker_certificate_is_refused(tls_broker: TlsBroker) -> None:
    password = tls_broker.add_device("tls-02")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        tls_broker.device("tls-02", password, ca=None).connect()
    # The CA of another development setup does not do either.
    stranger = ensure_dev_certs(tls_broker.broker.paths.root.parent / "stranger")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_broker.device("tls-02", password, ca=stranger.ca_cert).connect()


def test_the_password_file_and_acl_apply_over_tls(tls_broker: TlsBroker) -> None:
    password = tls_broker.add_device("tls-03")
    tls_broker.add_device("tls-04")
    with pytest.raises(ConnectRefused):
        tls_broker.device("tls-03", "wrong-password").connect()
    with pytest.raises(ConnectRefused):
        tls_broker.device(None, None, client_id="anonymous").connect()

    device = tls_broker.device("tls-03", password).connect()
    try:
        assert device.publish("paku/tls-03/telemetry", '{"t": 1}') in ACCEPTED
        assert device.publish("paku/tls-04/telemetry", '{"t": 1}') == NOT_AUTHORIZED
        assert device.publish("paku/tls-03/cmd", "{}") == NOT_AUTHORIZED
        assert device.publish("elsewhere", "{}") == NOT_AUTHORIZED
    finally:
        device.disconnect()
