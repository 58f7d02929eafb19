"""Settings: environment variables (`PAKU_*`) over `.env` over `config.yml` over defaults.

This is the only module that reads the environment. Everything else receives a `Settings`
object (or plain values taken from it) from the composition root.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from paku_iot.exceptions import SettingsError
from paku_iot.protocol import DEFAULT_MAX_PAYLOAD_BYTES

CONFIG_FILE_ENV = "PAKU_CONFIG_FILE"
DEFAULT_CONFIG_FILES = (Path("config/config.yml"), Path("config.yml"))
BACKEND_MQTT_USERNAME = "paku.backend"  # a dot can never appear in a device id
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The smallest spool: four segments of 64 KiB (collector/spooled.py sizes segments at a
# quarter of a small spool; the spool itself needs at least two). Tests fill one this small.
SPOOL_MIN_BYTES = 256 * 1024


def _config_file() -> Path | None:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"{CONFIG_FILE_ENV}={explicit}: no such file")
        return path
    for candidate in DEFAULT_CONFIG_FILES:
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class DeviceMqttEndpoint:
    """Where devices connect, as a claim answer or the dashboard tells them."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _origin(value: str) -> str:
    """An origin as browsers send it: scheme://host[:port], nothing after. A path or a
    trailing slash would never match the Origin header, so it is refused rather than ignored."""
    parsed = urlparse(value)
    if (
        parsed.scheme.lower() not in ("http", "https")
        or not parsed.hostname
        or parsed.path
        or parsed.query
        or parsed.fragment
    ):
        raise ValueError(
            f"{value!r} is not an origin: give scheme://host[:port], such as "
            "https://ops.example.com"
        )
    return value


class Settings(BaseSettings):
    """Every setting paku-iot has. The field name in upper case with a `PAKU_` prefix is the
    environment variable; the field name itself is the key in `config.yml`."""

    model_config = SettingsConfigDict(
        env_prefix="PAKU_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # `PAKU_X=` in .env means "not set", as in .env.example
        validate_default=True,
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("var")
    database_url: str | None = None

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None
    # The largest request body any route reads, but the firmware upload (whose limit is
    # ota_max_firmware_bytes): refused with 413 before it is read when Content-Length says
    # so, and as soon as it goes over otherwise.
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The interactive API docs (/docs, /redoc). /openapi.json is served either way: client
    # generators need it, and it says nothing an unauthenticated caller could not try.
    api_docs: bool = True

    # Where the backend reaches the broker (mqtt_host), the devices' plain listener
    # (mqtt_port) and the backend's own listener (mqtt_backend_port: the backend's account
    # works there only, and compose never publishes it).
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=0, le=65535)
    mqtt_backend_port: int = Field(default=11883, ge=0, le=65535)
    mqtt_username: str = BACKEND_MQTT_USERNAME
    mqtt_password: str | None = None
    # MQTT over TLS: when a certificate and key are set, the generated broker config gets a
    # TLS listener on mqtt_tls_port; mqtt_tls_ca_file is the CA devices (and we) verify with.
    mqtt_tls_port: int = Field(default=8883, ge=0, le=65535)
    mqtt_tls_cert_file: Path | None = None
    mqtt_tls_key_file: Path | None = None
    mqtt_tls_ca_file: Path | None = None
    # Production refuses a plain (non-TLS) MQTT listener on anything but loopback unless this
    # says the network in front is trusted (a private network, a TLS-terminating proxy).
    mqtt_allow_plain: bool = False
    # The public broker address devices are told to use (claim answers, the dashboard's
    # credentials pages), which is not where the backend connects (mqtt_host: in compose, a
    # container name). Unset: see `device_mqtt_endpoint`.
    device_mqtt_host: str | None = None
    device_mqtt_port: int | None = Field(default=None, ge=1, le=65535)
    device_mqtt_tls: bool | None = None
    broker_dir: Path | None = None
    mosquitto_bin: str | None = None
    # What the broker queues per persistent session (the collector's, above all) before it
    # drops messages it has acknowledged: a burst the collector cannot read as fast as the
    # broker takes it waits there. Measured ~420 bytes of broker memory per small queued
    # message (docs/performance.md, "The broker's queue"): 500,000 is ~200 MiB at most;
    # the byte limit (payload bytes, 0 = none) bounds the same queue for large payloads.
    broker_max_queued_messages: int = Field(default=500_000, ge=1000)
    broker_max_queued_bytes: int = Field(default=128 * 1024**2, ge=0)

    # Reverse proxies whose X-Forwarded-For is believed (addresses or CIDR networks, comma
    # separated in the environment). Behind one (Caddy in compose/prod.yaml) every request
    # comes from the proxy: the claim rate limit and the audit log need the client it names.
    # Empty: the header is ignored, whoever sends it, since a client can write anything there.
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    # Origins of browser apps allowed to call the API (CORS), comma separated in the
    # environment, e.g. https://ops.example.com. Empty: no cross-origin browser calls. The
    # dashboard is same-origin and never gets CORS headers.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    admin_token: str | None = None
    # Bearer token for GET /metrics. Unset: open in development, the admin token in production.
    metrics_token: str | None = None

    instance_id: str | None = None
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=256)
    ingest_batch_size: int = Field(default=1000, ge=1)
    ingest_linger_ms: int = Field(default=10, ge=0)
    ingest_queue_size: int = Field(default=4000, ge=2)
    # One collector (the default) subscribes plainly: Mosquitto keeps a plain subscription of
    # a persistent session across its own restart. Collector replicas must share the load
    # (`$share/paku-collector/...`), but Mosquitto 2.0.11 forgets shared subscriptions when it
    # restarts, so until they resubscribe (about a second) devices' messages find no
    # subscriber. See docs/scaling.md.
    collector_shared_subscription: bool = False
    # The collector's write-ahead spool (docs/reliability.md): messages are acknowledged to
    # devices once durable there, and drained to the database afterwards. One directory per
    # collector (default <data_dir>/spool/<instance_id or hostname>); its size bound, past
    # which the collector stops reading from the broker. At least SPOOL_MIN_BYTES: the spool
    # needs two segments, and its segments are a quarter of a small spool.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=2 * 1024**3, ge=SPOOL_MIN_BYTES)

    # OTA: where firmware images are kept (default <data_dir>/firmware), the largest image
    # accepted, the Ed25519 signing key (PEM; generated into <data_dir>/secrets when unset),
    # and whether devices may fetch the manifest without their credentials. With
    # ota_public_key_file (PEM) the server holds no private key at all: releases must come
    # signed by `paku-iot ota sign` (docs/operations.md), so a stolen server cannot sign.
    ota_dir: Path | None = None
    ota_max_firmware_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    ota_signing_key_file: Path | None = None
    ota_public_key_file: Path | None = None
    ota_allow_anonymous: bool = False
    # How often the collector's autopilot evaluates releases with a plan (docs/ota.md); 0
    # turns it off in this process.
    ota_autopilot_interval_s: float = Field(default=5.0, ge=0)

    # Retention, in days (0 keeps forever). Events also bound the rejected-message log.
    telemetry_retention_days: int = Field(default=90, ge=0)
    events_retention_days: int = Field(default=180, ge=0)
    maintenance_interval_s: int = Field(default=3600, ge=10)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("device_mqtt_host")
    @classmethod
    def _bare_host(cls, value: str | None) -> str | None:
        # Firmware puts this into its MQTT client as the host: a URL or "host:port" here
        # would reach every device as an address it cannot resolve.
        if value is None:
            return None
        if not value.strip():
            raise ValueError("a host name or IP address is required")
        if "://" in value or "/" in value or any(ch.isspace() for ch in value):
            raise ValueError(
                f"{value!r} is not a host name or IP address: give the host alone, without "
                "scheme or path (the port is PAKU_DEVICE_MQTT_PORT, TLS PAKU_DEVICE_MQTT_TLS)"
            )
        if ":" in value and not _is_ipv6(value):
            raise ValueError(
                f"{value!r} is not a host name or IP address: give the port on its own, in "
                "PAKU_DEVICE_MQTT_PORT"
            )
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in re.split(r"[\s,]+", value) if part]
        if not isinstance(value, (list, tuple)):
            return value
        return tuple(_trusted_network(entry) for entry in value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in re.split(r"[\s,]+", value) if part]
        if not isinstance(value, (list, tuple)):
            return value
        return tuple(_origin(str(entry)) for entry in value)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Links to firmware and the dashboard's cookie policy are built from it: anything but
        # an http(s) URL with a host would hand devices and browsers addresses that fail.
        if not value:
            return value
        parsed = urlparse(value)
        if parsed.scheme.lower() not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"{value!r} is not an http(s) URL: give the address clients use, such as "
                "https://paku.example.com"
            )
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'paku.db').resolve()}"

    @property
    def resolved_spool_dir(self) -> Path:
        """This collector's spool: replicas each need their own (the directory is locked)."""
        return self.spool_dir or self.data_dir / "spool" / self.broker_session_name

    @property
    def firmware_dir(self) -> Path:
        return self.ota_dir or self.data_dir / "firmware"

    @property
    def secrets_dir(self) -> Path:
        """Where secrets generated at first run are kept (0600 files)."""
        return self.data_dir / "secrets"

    @property
    def admin_token_file(self) -> Path:
        """The bootstrap admin token's file, used when PAKU_ADMIN_TOKEN is unset."""
        return self.secrets_dir / "admin-token"

    @property
    def signing_key_path(self) -> Path:
        return self.ota_signing_key_file or self.secrets_dir / "ota-signing-key.pem"

    @property
    def broker_session_name(self) -> str:
        """Names this process's broker sessions; must differ between replicas."""
        return self.instance_id or socket.gethostname()

    @property
    def device_mqtt_endpoint(self) -> DeviceMqttEndpoint:
        """Where devices connect. Each part is its PAKU_DEVICE_MQTT_* setting when set, else:
        TLS in production (where only the TLS listener is published) or when the broker has
        a certificate; the TLS port with TLS, the plain one without; the host of
        PAKU_PUBLIC_URL, else the MQTT host (loopback for a wildcard address). Production
        refuses to start with TLS off (`server.hardening.check_device_endpoint`)."""
        tls = self.device_mqtt_tls
        if tls is None:
            tls = self.env == "production" or self.mqtt_tls_cert_file is not None
        public_host = urlparse(self.public_url).hostname if self.public_url else None
        return DeviceMqttEndpoint(
            host=self.device_mqtt_host or public_host or _reachable(self.mqtt_host),
            port=self.device_mqtt_port or (self.mqtt_tls_port if tls else self.mqtt_port),
            tls=tls,
        )

    @property
    def http_base_url(self) -> str:
        if self.public_url:
            return self.public_url
        return f"http://{_reachable(self.http_host)}:{self.http_port}"


def _is_ipv6(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 6
    except ValueError:
        return False


def _trusted_network(entry: Any) -> IPNetwork:
    if isinstance(entry, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        network = entry
    else:
        try:
            network = ipaddress.ip_network(str(entry).strip())
        except ValueError as exc:
            raise ValueError(
                f"{entry!r} is not an IP address or a CIDR network such as 172.16.0.0/12 ({exc})"
            ) from None
    if network.prefixlen == 0:
        # Trusting every address means believing every client's X-Forwarded-For: anyone could
        # then pick the address the rate limit and the audit log see.
        raise ValueError(f"{entry!r} trusts every address; name the proxy's own address/network")
    return network


def _reachable(listen_host: str) -> str:
    """A listening address as a client can name it: a wildcard means this machine."""
    return "127.0.0.1" if listen_host in ("0.0.0.0", "::", "") else listen_host


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation failures into a readable `SettingsError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"PAKU_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
