"""The wire contract between a paku device and the backend (docs/protocol.md), defined once.

Topics and their parsing, the device id and name rules, the accepted `ts` (window and
units), the state fields, command answers, the command TTL bounds, how a reported firmware
version is read, and the default payload limit. The reference device (`paku_iot.device`) and
every part of the backend import these from here, so the two sides of the wire cannot drift
apart.

Pure rules only: no network, no database, and no import of paku_iot beyond (at most)
`paku_iot.exceptions`, so a device can use this module without the backend behind it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, TypeGuard

import semver

# ---- topics: paku/<deviceId>/<kind>[/<name>] ---------------------------------------------

TOPIC_ROOT: Final = "paku"


class UplinkKind(StrEnum):
    """What a device publishes (docs/protocol.md section 3)."""

    TELEMETRY = "telemetry"
    STATE = "state"
    EVENT = "event"


class DownlinkKind(StrEnum):
    """What a device subscribes to; only the backend publishes these."""

    COMMAND = "cmd"
    CONFIG = "config"


# The builders format; they do not validate. Ids and names that come from outside are
# checked where they enter (`parse_uplink_topic`, the registry, the API), and the broker's
# ACL builds its patterns with Mosquitto's `%u` in place of an id.
def telemetry_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{UplinkKind.TELEMETRY}"


def state_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{UplinkKind.STATE}"


def event_topic(device_id: str, name: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{UplinkKind.EVENT}/{name}"


def command_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{DownlinkKind.COMMAND}"


def config_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{DownlinkKind.CONFIG}"


# ---- device ids, event and command names --------------------------------------------------

# Ids become MQTT usernames and topic levels: never a wildcard (`+`, `#`), separator or `$`.
DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{3,64}$"
DEVICE_ID_RULE: Final = "3-64 of A-Z a-z 0-9 _ -"
# An event name is one topic level; a command name follows the same rule (section 8).
NAME_MAX_CHARS: Final = 64
_NAME = rf"[A-Za-z0-9_.-]{{1,{NAME_MAX_CHARS}}}"
EVENT_NAME_PATTERN: Final = f"^{_NAME}$"
COMMAND_NAME_PATTERN: Final = EVENT_NAME_PATTERN
NAME_RULE: Final = "1-64 of A-Z a-z 0-9 _ . -"

_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
_NAME_RE = re.compile(EVENT_NAME_PATTERN)


def is_valid_device_id(value: str) -> bool:
    return _DEVICE_ID_RE.fullmatch(value) is not None


def is_valid_event_name(value: str) -> bool:
    return _NAME_RE.fullmatch(value) is not None


def is_valid_command_name(value: str) -> bool:
    return _NAME_RE.fullmatch(value) is not None


# ---- parsing uplink topics ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UplinkTopic:
    device_id: str
    kind: UplinkKind
    event_name: str | None = None


class TopicError(ValueError):
    """A topic that is not one of the uplink topics; `device_id` is set when it was legible."""

    def __init__(self, message: str, device_id: str | None) -> None:
        super().__init__(message)
        self.device_id = device_id


def parse_uplink_topic(topic: str) -> UplinkTopic:
    """Which device sent what, from the topic of a message a device published. Raises
    TopicError for anything but `paku/<valid id>/telemetry`, `/state` or `/event/<name>`."""
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != TOPIC_ROOT:
        raise TopicError(f"not a {TOPIC_ROOT}/<deviceId>/<kind> topic: {topic!r}", None)
    device_id = levels[1]
    if not is_valid_device_id(device_id):
        raise TopicError(f"invalid device id in topic: {device_id!r}", None)
    kind, rest = levels[2], levels[3:]
    if kind == UplinkKind.EVENT:
        if len(rest) != 1 or not is_valid_event_name(rest[0]):
            raise TopicError(
                f"event topics are {TOPIC_ROOT}/<deviceId>/event/<name> with one name level of "
                f"{_NAME}",
                device_id,
            )
        return UplinkTopic(device_id, UplinkKind.EVENT, rest[0])
    if kind in (UplinkKind.TELEMETRY, UplinkKind.STATE) and not rest:
        return UplinkTopic(device_id, UplinkKind(kind))
    raise TopicError(f"unknown uplink topic: {topic!r}", device_id)


@dataclass(frozen=True, slots=True)
class UplinkFilter:
    topic_filter: str
    # Retained copies sent at subscribe time: wanted for state (the current truth of each
    # device), not for telemetry and events (already stored when first published).
    replay_retained: bool


def uplink_subscriptions() -> list[UplinkFilter]:
    """The filters the collector subscribes to. Not `paku/#`: that would also deliver the
    commands and configuration the backend itself publishes."""
    any_device = "+"
    return [
        UplinkFilter(telemetry_topic(any_device), replay_retained=False),
        UplinkFilter(state_topic(any_device), replay_retained=True),
        UplinkFilter(event_topic(any_device, "#"), replay_retained=False),
    ]


# ---- `ts`: the sample time a device may send (section 6) ----------------------------------

# A device clock outside these years is not set (an ESP32 before NTP counts from 1970):
# storing such a sample would file it under the wrong day, so it is rejected with a reason.
# The window is [start, end): 2000-01-01T00:00:00Z included, 2200-01-01T00:00:00Z not.
TS_WINDOW_START: Final = datetime(2000, 1, 1, tzinfo=UTC)
TS_WINDOW_END: Final = datetime(2200, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS_WINDOW_START_MS: Final = (TS_WINDOW_START - _EPOCH) // timedelta(milliseconds=1)
TS_WINDOW_END_MS: Final = (TS_WINDOW_END - _EPOCH) // timedelta(milliseconds=1)
TS_WINDOW_YEARS: Final = f"{TS_WINDOW_START.year}-{TS_WINDOW_END.year - 1}"

# Inside the window, a `ts` may also be at most this far ahead of the server's clock (when the
# message is received). Retention deletes by age, so a sample dated in 2199 would be kept
# forever and sort first in every newest-first list; a day leaves room for a clock that is
# hours off (skew, a time zone mistaken for UTC) while refusing one that is simply wrong.
# Past samples have no such bound beyond the window: a device may send what it buffered.
TS_MAX_AHEAD: Final = timedelta(days=1)
TS_MAX_AHEAD_TEXT: Final = "1 day"


# An epoch number is seconds or milliseconds, told apart by its size: inside the window,
# seconds are below 7.3 x 10^9 and milliseconds above 9.4 x 10^11, so any cut between them is
# unambiguous. 10^11 is a round one: as seconds the year 5138, as milliseconds 1973-03-03.
TS_SECONDS_BELOW: Final = 10**11
TS_UNIT_RULE: Final = "a number below 10^11 is epoch seconds, from 10^11 on epoch milliseconds"


class TimestampError(ValueError):
    pass


def parse_device_ts(value: object, now: datetime | None = None) -> datetime:
    """A `ts` as sent (epoch seconds or milliseconds, by TS_SECONDS_BELOW; or RFC 3339 with a
    zone) as a UTC datetime, inside the window and at most TS_MAX_AHEAD after `now` (the
    time the message was received; the current time when not given). Raises TimestampError,
    with a reason fit for the device's operator, for anything else."""
    return _not_ahead(_parse_ts(value), value, now)


def _not_ahead(ts: datetime, value: object, now: datetime | None) -> datetime:
    latest = (now or datetime.now(UTC)) + TS_MAX_AHEAD
    if ts > latest:
        shown = ts.isoformat() if isinstance(value, str) else f"{value!r} ({ts.isoformat()})"
        raise TimestampError(
            f"ts {shown} is {_ahead(ts - latest + TS_MAX_AHEAD)} ahead of the server's clock; "
            f"at most {TS_MAX_AHEAD_TEXT} ahead is accepted: is the device's clock set (NTP)?"
        )
    return ts


def _ahead(delta: timedelta) -> str:
    days = delta / timedelta(days=1)
    return f"{days:.0f} days" if days >= 2 else f"{delta / timedelta(hours=1):.1f} hours"


def _parse_ts(value: object) -> datetime:
    if isinstance(value, bool):
        raise TimestampError("ts must be an epoch number or an RFC 3339 string, not a boolean")
    if isinstance(value, (int, float)):  # a tuple: faster than int | float on this hot path
        # isnan on an int converts it to a float, which overflows for a huge one.
        if isinstance(value, float) and math.isnan(value):
            raise TimestampError("ts is not a number")
        seconds = value < TS_SECONDS_BELOW
        try:
            ts = datetime.fromtimestamp(value if seconds else value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise TimestampError(f"ts {value!r} is out of range ({TS_UNIT_RULE})") from None
        if not TS_WINDOW_START <= ts < TS_WINDOW_END:
            unit = "epoch seconds" if seconds else "epoch milliseconds"
            raise TimestampError(
                f"ts {value!r} ({unit}: {ts.isoformat()}) is outside {TS_WINDOW_YEARS}: is the "
                f"device's clock set (NTP)? ({TS_UNIT_RULE})"
            )
        return ts
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            hint = " (send an epoch time as a JSON number)" if _NUMERIC.fullmatch(value) else ""
            raise TimestampError(f"ts {value[:64]!r} is not an RFC 3339 time{hint}") from None
        if ts.tzinfo is None:
            raise TimestampError("ts must carry a time zone (Z or +hh:mm)")
        ts = ts.astimezone(UTC)
        if not TS_WINDOW_START <= ts < TS_WINDOW_END:
            raise TimestampError(
                f"ts {ts.isoformat()} is outside {TS_WINDOW_YEARS}: is the device's clock set?"
            )
        return ts
    raise TimestampError("ts must be an epoch number or an RFC 3339 string")


_NUMERIC = re.compile(r"\s*-?[0-9]+(\.[0-9]*)?\s*")


# ---- state (section 4) --------------------------------------------------------------------

STATE_ONLINE: Final = "online"
STATE_RSSI: Final = "rssi"
STATE_FW_VERSION: Final = "fwVersion"
STATE_CONFIG_VERSION: Final = "configVersion"
# A command answer carried in the state, with the fields of an `event/ack` body. It settles
# the command and is not kept as part of the reported state.
STATE_ACK: Final = "ack"

RSSI_MIN_DBM: Final = -200
RSSI_MAX_DBM: Final = 50
FW_VERSION_MAX_CHARS: Final = 64
# The rules as a rejection states them (docs/protocol.md section 7).
STATE_ONLINE_RULE: Final = "must be true or false"
STATE_RSSI_RULE: Final = f"must be an integer dBm from {RSSI_MIN_DBM} to {RSSI_MAX_DBM}"
STATE_FW_VERSION_RULE: Final = f"must be a string of 1-{FW_VERSION_MAX_CHARS} characters"
STATE_CONFIG_VERSION_RULE: Final = "must be a non-negative integer"

# The value checks below say nothing about null: where a field may be null (it clears the
# value), the caller decides. They say what a device should send; the backend also takes an
# integer written as a float (`whole_number`).


def whole_number(value: object) -> int | None:
    """A JSON number with a whole value, as an int: -61 and -61.0 both give -61 (firmware
    that keeps a value in a float prints it with `.0`). None for anything else: a fraction,
    a string, a boolean (Python counts those as ints)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def is_valid_rssi(value: object) -> TypeGuard[int]:
    """An integer dBm in range. A boolean is refused although Python counts it as an int."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and RSSI_MIN_DBM <= value <= RSSI_MAX_DBM
    )


def is_valid_fw_version(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= FW_VERSION_MAX_CHARS


def is_valid_config_version(value: object) -> TypeGuard[int]:
    """A non-negative integer: 0 is "no configuration applied yet"."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ---- commands and their acknowledgement (section 8) ---------------------------------------

# An ack is an event of this name, `paku/<id>/event/ack`, or the `ack` object of a state.
ACK_EVENT: Final = "ack"
# How much of a failed command's `error` is kept.
ACK_ERROR_MAX_CHARS: Final = 2000


@dataclass(frozen=True, slots=True)
class CommandAck:
    """A device's answer to one of its commands."""

    command_id: str
    ok: bool
    result: object = None
    error: str | None = None


class AckError(ValueError):
    pass


def parse_command_ack(body: object) -> CommandAck:
    """The answer in an `event/ack` body or a state's `ack` object: `{"id": <the command's
    id>, "ok": true|false, "result"?: any, "error"?: string, "ts"?: as for events}`.
    Raises AckError, or TimestampError for a `ts` outside the contract."""
    if not isinstance(body, dict):
        raise AckError(f"ack must be an object with id and ok, not {type(body).__name__}")
    command_id = body.get("id")
    if not isinstance(command_id, str) or not command_id:
        got = "none" if command_id is None else repr(command_id)[:80]
        raise AckError(f"ack: id must be the command's id, a non-empty string; got {got}")
    ok = body.get("ok")
    if not isinstance(ok, bool):
        if isinstance(ok, str):
            raise AckError(f'ack: ok must be true or false, not the string "{ok[:20]}"')
        got = "none" if ok is None else repr(ok)[:40]
        raise AckError(f"ack: ok must be true or false; got {got}")
    if body.get("ts") is not None:
        parse_device_ts(body["ts"])
    error = body.get("error")
    return CommandAck(
        command_id,
        ok,
        body.get("result"),
        None if error is None else str(error)[:ACK_ERROR_MAX_CHARS],
    )


# How long a command may wait for its device and its answer. Not to be confused with the
# lifetime of claim codes (security/claims.py), which is no business of a device.
MIN_COMMAND_TTL_S: Final = 1
DEFAULT_COMMAND_TTL_S: Final = 3600
MAX_COMMAND_TTL_S: Final = 30 * 24 * 3600

# ---- firmware updates (section 8a) --------------------------------------------------------

# Where a device asks for its update (HTTP, with its MQTT credentials as Basic auth).
OTA_MANIFEST_PATH: Final = "/ota/manifest.json"
# Progress reports are events of this name, `paku/<id>/event/ota`, with a `version` of at
# most OTA_VERSION_MAX_CHARS and one of these statuses. `installed`: written, booted in
# pending-verify; `confirmed`: its first healthy run came within the confirmation window;
# `rolled_back`: the device left `version` (it failed to confirm, crashed, or was told to boot
# its previous image) and runs the image named by OTA_RUNNING_VERSION again.
OTA_EVENT: Final = "ota"
OTA_REPORT_STATUSES: Final = (
    "downloading",
    "installing",
    "installed",
    "confirmed",
    "failed",
    "rolled_back",
)
OTA_VERSION_MAX_CHARS: Final = 64
# A `rolled_back` report's field naming the version the device returned to (`version` is the
# one it left).
OTA_RUNNING_VERSION: Final = "runningVersion"
# How long a new image may take to have its first healthy run (connected, a telemetry message
# acknowledged) before the device rolls back. Firmware may choose another; this is the advice.
OTA_CONFIRM_WINDOW_S: Final = 60
# The command that sends a device back to its previous image, without a download (its params
# are `{}`). Answered `ok` before the device restarts; failed when there is no previous image.
OTA_BOOT_PREVIOUS_COMMAND: Final = "ota.boot_previous"

# What a release signature covers: a statement of the release, not the bare image digest,
# so that a manifest cannot pass one signed image off as another version, another model's
# image, or an image of another size. The scheme tag comes first (domain separation: these
# bytes can never be read as a statement of another scheme, or as a bare 32-byte digest).
OTA_SIGNATURE_SCHEME: Final = "paku-ota-v1"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _netstring(text: str) -> bytes:
    data = text.encode("utf-8")
    return str(len(data)).encode("ascii") + b":" + data + b","


def ota_statement(model: str, version: str, sha256_hex: str, size: int) -> bytes:
    """The bytes a release's Ed25519 `statementSignature` signs (docs/protocol.md, 8a).

    Netstrings (`<byte length>:<UTF-8 bytes>,`) of the scheme tag, model, version, SHA-256
    (64 lowercase hex digits) and size (decimal): the length prefixes make the encoding
    unambiguous whatever the fields contain, and are easy to build in C. Raises ValueError
    for fields that would give a non-canonical statement (uppercase hex, a size of 0)."""
    if not model or not version:
        raise ValueError("the statement needs a model and a version")
    if not _SHA256_HEX.fullmatch(sha256_hex):
        raise ValueError("the statement's sha256 must be 64 lowercase hex digits")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError("the statement's size must be a positive integer")
    fields = (OTA_SIGNATURE_SCHEME, model, version, sha256_hex, str(size))
    return b"".join(_netstring(field) for field in fields)


# How a running firmware version is read, wherever a device reports one (its state's
# fwVersion, `current` on the manifest): releases are published as plain semantic versions,
# but firmware reports what its build system made of the git tag.
FW_VERSION_FORMS: Final = (
    "a semantic version (1.4.2, 2.0.0-rc.1), also written v1.4.2, or as git describe gives "
    "it (1.4.2-3-gabc1234, v1.4.2-3-gabc1234-dirty)"
)
# git describe: <tag>-<commits since the tag>-g<abbreviated hash>; --dirty adds -dirty.
_GIT_DESCRIBE = re.compile(r"(?P<tag>.+?)-(?P<commits>[0-9]+)-g(?P<hash>[0-9a-fA-F]{4,40})")
_DIRTY = "-dirty"


class FirmwareVersionError(ValueError):
    pass


def parse_fw_version(reported: str) -> semver.Version:
    """The version a device reports running, as the semantic version it is built from.

    A leading `v` is dropped. What git describe adds after the tag (`-3-gabc1234`, `-dirty`)
    becomes build metadata (`+3.gabc1234.dirty`), which semver leaves out of the order: such
    a build counts as its tag, so it is offered only releases newer than the tag, never the
    tag itself. Raises FirmwareVersionError for anything else."""
    text = reported[1:] if reported[:1] in ("v", "V") else reported
    build: list[str] = []
    if text.endswith(_DIRTY):
        text = text.removesuffix(_DIRTY)
        build.append("dirty")
    described = _GIT_DESCRIBE.fullmatch(text)
    if described:
        text = described["tag"]
        build = [described["commits"], "g" + described["hash"], *build]
    try:
        version = semver.Version.parse(text)
    except ValueError:
        raise FirmwareVersionError(
            f"{reported[:OTA_VERSION_MAX_CHARS]!r} is not {FW_VERSION_FORMS}"
        ) from None
    if build:
        version = version.replace(build=".".join([*filter(None, [version.build]), *build]))
    return version


def release_reported(reported: str) -> str:
    """The release an `event/ota` report is about, for matching it to a published release:
    read by parse_fw_version's rule without its build metadata (`v1.4.2` and
    `1.4.2-3-gabc1234` are about release 1.4.2); a version no rule reads is kept as sent."""
    try:
        return str(parse_fw_version(reported).replace(build=None))
    except FirmwareVersionError:
        return reported


# ---- payloads (section 6) -----------------------------------------------------------------

# The default of PAKU_MAX_PAYLOAD_BYTES. A device cannot learn the configured limit, so the
# reference device stays under this one; a larger message is stored as rejected (`oversize`).
DEFAULT_MAX_PAYLOAD_BYTES: Final = 65_536
