"""A Mosquitto of the test's own, on a free port with the project's generated config; never
the system one."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paku_iot.broker.files import BrokerOptions, BrokerPaths
from paku_iot.broker.process import find_mosquitto
from paku_iot.broker.setup import prepare_broker_dir
from paku_iot.exceptions import SettingsError
from paku_iot.settings import BACKEND_MQTT_USERNAME, Settings
from tests.support import free_port, require, wait_for_port_sync
from tests.support.mqtt import DeviceClient


@dataclass
class Broker:
    host: str
    port: int  # the devices' plain listener
    backend_port: int  # the backend's own listener
    paths: BrokerPaths
    backend_password: str
    process: subprocess.Popen[bytes] | None = None

    def device(self, username: str, password: str, **kwargs: object) -> DeviceClient:
        return DeviceClient(self.host, self.port, username, password, **kwargs)  # type: ignore[arg-type]

    def backend(self) -> DeviceClient:
        return DeviceClient(
            self.host,
            self.backend_port,
            BACKEND_MQTT_USERNAME,
            self.backend_password,
            client_id=f"test-backend-{secrets.token_hex(4)}",
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [find_mosquitto(None), "-c", str(self.paths.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for_port_sync(self.port), f"mosquitto did not start; see {self.paths.log_file}"


def mosquitto_binary() -> str:
    try:
        return find_mosquitto(None)
    except SettingsError as exc:
        require(False, exc.message)
        raise


def broker_options(**tls: Any) -> BrokerOptions:
    """The tests' broker: loopback, free ports, the project's limits; `tls` adds the TLS
    listener's BrokerOptions fields."""
    return BrokerOptions(
        listen_host="127.0.0.1",
        listen_port=free_port(),
        backend_port=free_port(),
        backend_username=BACKEND_MQTT_USERNAME,
        max_payload_bytes=65_536,
        max_queued_messages=Settings.model_fields["broker_max_queued_messages"].default,
        max_queued_bytes=Settings.model_fields["broker_max_queued_bytes"].default,
        **tls,
    )


def prepared_broker(root: Path, options: BrokerOptions) -> Broker:
    """A broker directory written by `prepare_broker_dir`, not started yet."""
    mosquitto_binary()
    paths = prepare_broker_dir(root, options)
    return Broker(
        options.listen_host,
        options.listen_port,
        options.backend_port,
        paths,
        paths.backend_password.read_text().strip(),
    )


def start_broker(root: Path) -> Broker:
    broker = prepared_broker(root, broker_options())
    broker.start()
    return broker
