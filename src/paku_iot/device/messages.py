"""What the reference device sends and receives, as plain data: topics, payload encoding, and
the parsing of downlink `cmd` and `config` messages (docs/protocol.md sections 3, 6 and 8).

Nothing here touches the network, so each rule can be read (and tested) on its own. The rules
themselves (topics, ids and names, the `ts` window, state values, the payload limit) are the
wire contract's, imported from paku_iot.protocol: the backend checks with the same ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from paku_iot.protocol import (
    ACK_EVENT,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEVICE_ID_RULE,
    FW_VERSION_MAX_CHARS,
    NAME_RULE,
    RSSI_MAX_DBM,
    RSSI_MIN_DBM,
    TS_WINDOW_END_MS,
    TS_WINDOW_START_MS,
    TS_WINDOW_YEARS,
    command_topic,
    config_topic,
    event_topic,
    is_valid_command_name,
    is_valid_config_version,
    is_valid_device_id,
    is_valid_event_name,
    is_valid_fw_version,
    is_valid_rssi,
    state_topic,
    telemetry_topic,
)


@dataclass(frozen=True, slots=True)
class DeviceTopics:
    """The five topics of one device (section 3). `<id>` is always the device's own id: the
    broker's ACL lets a device publish and subscribe on nothing else."""

    device_id: str

    def __post_init__(self) -> None:
        if not is_valid_device_id(self.device_id):
            raise ValueError(f"invalid device id {self.device_id!r}: {DEVICE_ID_RULE}")

    @property
    def telemetry(self) -> str:
        return telemetry_topic(self.device_id)

    @property
    def state(self) -> str:
        return state_topic(self.device_id)

    @property
    def cmd(self) -> str:
        return command_topic(self.device_id)

    @property
    def config(self) -> str:
        return config_topic(self.device_id)

    def event(self, name: str) -> str:
        if not is_valid_event_name(name):
            raise ValueError(f"invalid event name {name!r}: {NAME_RULE}")
        return event_topic(self.device_id, name)

    @property
    def ack(self) -> str:
        return self.event(ACK_EVENT)


def now_ms() -> int:
    """Wall-clock time as Unix epoch milliseconds. The backend also takes seconds (a number
    below 10^11), but milliseconds keep two samples of one second apart."""
    return time.time_ns() // 1_000_000


def encode_payload(
    document: dict[str, Any], *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> bytes:
    """Serialize an uplink payload, refusing what the backend would reject (section 6).

    Raises ValueError for NaN/Infinity (`allow_nan=False`), NUL characters, unpaired
    surrogates (UTF-8 encoding fails on them), and payloads over `max_bytes`. Refusing here
    gives the caller an error; the backend would only record the message as rejected, and the
    device would never hear about it.
    """
    try:
        text = json.dumps(document, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not valid JSON for paku: {exc}") from exc
    if _has_nul(document):
        raise ValueError("payload contains a NUL character")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("payload contains an unpaired surrogate") from exc
    if len(data) > max_bytes:
        raise ValueError(f"payload of {len(data)} bytes is over the limit of {max_bytes}")
    return data


def _has_nul(value: Any) -> bool:
    # Checked on the strings, not on the JSON text: json.dumps writes NUL as the escape
    # `\u0000` (which the backend rejects just the same), and a raw-text search for that
    # escape would also match a harmless literal backslash followed by "u0000".
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def check_ts_ms(ts: int) -> None:
    """The backend's `ts` window (section 6): an unset ESP32 clock counts from 1970."""
    if not TS_WINDOW_START_MS <= ts < TS_WINDOW_END_MS:
        raise ValueError(
            f"ts {ts} is outside {TS_WINDOW_YEARS} (epoch milliseconds; is the clock set?)"
        )


def check_state_fields(rssi: int | None, fw_version: str | None) -> None:
    """The backend rejects a whole state message for one bad field (`invalid_state`)."""
    if rssi is not None and (isinstance(rssi, bool) or not isinstance(rssi, int)):
        raise ValueError(f"rssi must be an integer, not {rssi!r}")
    if rssi is not None and not is_valid_rssi(rssi):
        raise ValueError(f"rssi {rssi} is outside {RSSI_MIN_DBM}..{RSSI_MAX_DBM} dBm")
    if fw_version is not None and not is_valid_fw_version(fw_version):
        raise ValueError(f"fwVersion must be 1-{FW_VERSION_MAX_CHARS} characters")


class InvalidCommand(ValueError):
    """A `cmd` payload the device cannot execute. `command_id` is set when the payload had a
    usable id, so the device can still answer it (with `ok: false`)."""

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed `cmd` message: `{"id", "name", "params", "expiresAt", "expiresAtMs",
    "ttlSeconds"}` (the device goes by `expiresAtMs`; see `_expiry`)."""

    id: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at <= (now or datetime.now(UTC))


def _loads_object(payload: bytes) -> dict[str, Any]:
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"not a JSON object: {type(document).__name__}")
    return document


def parse_command(payload: bytes) -> Command:
    """Parse a `cmd` payload.

    Lenient where nothing is lost: `params` may be absent or null (no parameters) and the
    expiry absent or null (never expires). Strict where guessing could do harm: an
    `expiresAt` without a time zone is refused rather than read in some local time, and an
    `expiresAtMs` that is not a whole number is refused rather than rounded.
    """
    try:
        document = _loads_object(payload)
    except ValueError as exc:
        raise InvalidCommand(str(exc)) from exc
    command_id = document.get("id")
    if not isinstance(command_id, str) or not command_id:
        raise InvalidCommand("no command id (a non-empty string)")
    name = document.get("name")
    if not isinstance(name, str) or not is_valid_command_name(name):
        raise InvalidCommand(f"invalid command: name {name!r} is not {NAME_RULE}", command_id)
    params = document.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidCommand("invalid command: params is not an object", command_id)
    return Command(command_id, name, params, _expiry(document, command_id))


def _expiry(document: dict[str, Any], command_id: str) -> datetime | None:
    """`expiresAtMs` (epoch milliseconds, what firmware without a date parser reads) when
    present, else `expiresAt` (RFC 3339); None when neither is given."""
    expires_ms = document.get("expiresAtMs")
    if expires_ms is not None:
        if not isinstance(expires_ms, int) or isinstance(expires_ms, bool):
            raise InvalidCommand(
                f"invalid command: expiresAtMs {expires_ms!r} is not epoch milliseconds",
                command_id,
            )
        try:
            return datetime.fromtimestamp(expires_ms / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidCommand(
                f"invalid command: expiresAtMs {expires_ms!r} is out of range", command_id
            ) from None
    expires_raw = document.get("expiresAt")
    if expires_raw is None:
        return None
    if not isinstance(expires_raw, str):
        raise InvalidCommand("invalid command: expiresAt is not a string", command_id)
    try:
        expires_at = datetime.fromisoformat(expires_raw)
    except ValueError:
        raise InvalidCommand(
            f"invalid command: expiresAt {expires_raw!r} is not RFC 3339", command_id
        ) from None
    if expires_at.tzinfo is None:
        raise InvalidCommand(
            f"invalid command: expiresAt {expires_raw!r} has no time zone", command_id
        )
    return expires_at


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """A parsed `config` message: `{"version": n, "config": {...}}`. Versions count up from
    1 with each change; 0 stands for "no configuration applied yet"."""

    version: int
    config: dict[str, Any]


def parse_config(payload: bytes) -> ConfigUpdate | None:
    """Parse a `config` payload; None for an empty payload (the retained config was cleared,
    which leaves the device with what it has). Raises ValueError for anything else invalid."""
    if not payload:
        return None
    document = _loads_object(payload)
    version = document.get("version")
    if not is_valid_config_version(version):
        # Reported back as `configVersion`, which the backend accepts only as a non-negative
        # integer: applying anything else would get every later state message rejected.
        raise ValueError(f"version is not a non-negative integer: {version!r}")
    config = document.get("config")
    if not isinstance(config, dict):
        raise ValueError("config is not an object")
    return ConfigUpdate(version, config)
