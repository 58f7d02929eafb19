"""Turning one MQTT message into the record it becomes: accepted, or rejected with a reason.

Everything here is pure and total: any bytes on any topic give a record, never an exception,
because device input must never stop ingest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from paku_iot.jsonlimits import MAX_JSON_DEPTH, too_deep
from paku_iot.protocol import (
    RSSI_MAX_DBM,
    RSSI_MIN_DBM,
    STATE_ACK,
    STATE_CONFIG_VERSION,
    STATE_CONFIG_VERSION_RULE,
    STATE_FW_VERSION,
    STATE_FW_VERSION_RULE,
    STATE_ONLINE,
    STATE_ONLINE_RULE,
    STATE_RSSI,
    STATE_RSSI_RULE,
    TimestampError,
    TopicError,
    UplinkKind,
    is_valid_fw_version,
    parse_device_ts,
    parse_uplink_topic,
    whole_number,
)
from paku_iot.storage.records import EventRecord, RejectedRecord, StateReport, TelemetryRecord

# How much of a rejected payload is kept: enough to debug a device, never enough to fill a
# disk with junk.
REJECTED_PAYLOAD_KEEP = 4096

Parsed = TelemetryRecord | EventRecord | StateReport | RejectedRecord


class RejectReason(StrEnum):
    INVALID_TOPIC = "invalid_topic"
    OVERSIZE = "oversize"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    INVALID_TS = "invalid_ts"
    INVALID_STATE = "invalid_state"
    # A telemetry sample whose `ts` already holds a different sample of the device.
    DUPLICATE_TS = "duplicate_ts"
    # A command answer (event/ack, or the `ack` of a state) that settled nothing.
    INVALID_ACK = "invalid_ack"
    UNKNOWN_COMMAND = "unknown_command"
    ALREADY_ANSWERED = "already_answered"
    UNKNOWN_DEVICE = "unknown_device"
    UNSTORABLE = "unstorable"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# Built once: json.loads with options builds a new decoder for every call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_PLAIN_DECODER = json.JSONDecoder()
# The strict decoder calls back into Python for every float. Only a number with an exponent
# or hundreds of digits can overflow to infinity, and only the words NaN and Infinity are
# non-standard constants: text without any of them parses the same with the plain decoder.
_EXPONENT = re.compile(r"[0-9][eE]")
_LONG_DIGITS = re.compile(r"[0-9]{300}")


def _needs_strict(text: str) -> bool:
    # Substring tests first: they are plain C scans, and most payloads end there.
    return (
        "NaN" in text
        or "Infinity" in text
        or _EXPONENT.search(text) is not None
        or (len(text) >= 300 and _LONG_DIGITS.search(text) is not None)
    )


# A \uD800-\uDFFF escape: fine in a proper pair (an emoji), an unpaired one is not text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _storable_text(text: str) -> str:
    """`text` as both databases can keep it: no NUL, no unpaired surrogate. Mosquitto
    refuses such topics, but a rejection must be storable whatever the broker lets through."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def rejected(
    topic: str,
    payload: bytes,
    received_at: datetime,
    reason: RejectReason,
    detail: str,
    device_id: str | None,
) -> RejectedRecord:
    return RejectedRecord(
        received_at=received_at,
        topic=_storable_text(topic),
        device_id=device_id,
        reason=reason,
        detail=detail,
        payload=payload[:REJECTED_PAYLOAD_KEEP],
        payload_size=len(payload),
    )


def _utf8(payload: bytes) -> str | tuple[RejectReason, str]:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RejectReason.INVALID_UTF8, f"payload is not UTF-8: {exc.reason} at {exc.start}"


def _json_object(text: str) -> dict[str, Any] | tuple[RejectReason, str]:
    if "\\u0000" in text or "\x00" in text:
        # PostgreSQL's jsonb cannot hold NUL characters; refuse them on every database alike.
        return RejectReason.INVALID_JSON, "NUL characters are not accepted"
    try:
        decoder = _STRICT_DECODER if _needs_strict(text) else _PLAIN_DECODER
        value = decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        return RejectReason.INVALID_JSON, f"payload is not JSON: {str(exc)[:200]}"
    # Counting brackets is cheap and rules out deep nesting for nearly every message.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and too_deep(value):
        return RejectReason.INVALID_JSON, f"payload nests deeper than {MAX_JSON_DEPTH} levels"
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        return RejectReason.INVALID_JSON, "payload has an unpaired UTF-16 surrogate escape"
    if not isinstance(value, dict):
        return RejectReason.NOT_OBJECT, f"payload must be a JSON object, got {type(value).__name__}"
    return value


# A fleet sends on a few topics per device, over and over: remember what they parse to (a
# frozen value). A bad topic raises and is not remembered, so junk cannot fill the cache.
_uplink_topic = functools.lru_cache(maxsize=8192)(parse_uplink_topic)


def parse_message(
    topic: str, payload: bytes, received_at: datetime, *, retained: bool, max_payload_bytes: int
) -> Parsed:
    try:
        uplink = _uplink_topic(topic)
    except TopicError as exc:
        return rejected(
            topic, payload, received_at, RejectReason.INVALID_TOPIC, str(exc), exc.device_id
        )
    device_id = uplink.device_id

    def reject(reason: RejectReason, detail: str) -> RejectedRecord:
        return rejected(topic, payload, received_at, reason, detail, device_id)

    if uplink.kind is UplinkKind.STATE and not payload:
        # An empty retained message clears the broker's copy (on device deletion, say): it
        # says nothing about the device, so it changes nothing.
        return StateReport(device_id, received_at, {}, live=False)
    if len(payload) > max_payload_bytes:
        return reject(
            RejectReason.OVERSIZE, f"{len(payload)} bytes is over the {max_payload_bytes} limit"
        )
    text = _utf8(payload)
    if isinstance(text, tuple):
        return reject(*text)
    body = _json_object(text)
    if isinstance(body, tuple):
        return reject(*body)

    if uplink.kind is UplinkKind.STATE:
        # A command answer rides along; it is checked where commands are (collector/acks.py).
        ack = body.pop(STATE_ACK, None)
        problems = _set_aside_bad_fields(body)
        if not problems:
            return StateReport(
                device_id, received_at, body, live=not retained, ack=ack, sent=payload
            )
        if not body and ack is None:
            return reject(RejectReason.INVALID_STATE, "; ".join(problems) + "; nothing was applied")
        # One bad field must not cost the good ones (`online: true` above all, which sends
        # the device its queued commands): apply the rest, and show what was left out.
        detail = "; ".join(problems) + "; the other fields were applied"
        set_aside = (reject(RejectReason.INVALID_STATE, detail),)
        return StateReport(
            device_id,
            received_at,
            body,
            live=not retained,
            set_aside=set_aside,
            ack=ack,
            sent=payload,
        )

    ts = received_at
    if body.get("ts") is not None:
        try:
            ts = parse_device_ts(body["ts"], received_at)
        except TimestampError as exc:
            return reject(RejectReason.INVALID_TS, str(exc))
    if uplink.kind is UplinkKind.TELEMETRY:
        return TelemetryRecord(device_id, ts, received_at, body, text=text)
    assert uplink.event_name is not None
    digest = hashlib.blake2b(payload, digest_size=8).hexdigest()
    return EventRecord(device_id, uplink.event_name, ts, received_at, body, digest)


def _shown(value: Any) -> str:
    """A value as the device wrote it (JSON), short enough for a rejection's detail."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _set_aside_bad_fields(body: dict[str, Any]) -> list[str]:
    """Take the known state fields that break their rule out of `body`, and normalise the
    rest (an rssi of -61.0 becomes -61). Returns what was wrong, field by field."""
    problems: list[str] = []

    def set_aside(name: str, rule: str) -> None:
        problems.append(f"{name} {_shown(body.pop(name))}: {rule}")

    # null is allowed for the values (it clears them), not for `online`.
    if STATE_ONLINE in body and not isinstance(body[STATE_ONLINE], bool):
        set_aside(STATE_ONLINE, STATE_ONLINE_RULE)
    if body.get(STATE_RSSI) is not None:
        rssi = whole_number(body[STATE_RSSI])
        if rssi is None or not RSSI_MIN_DBM <= rssi <= RSSI_MAX_DBM:
            set_aside(STATE_RSSI, STATE_RSSI_RULE)
        else:
            body[STATE_RSSI] = rssi
    if body.get(STATE_CONFIG_VERSION) is not None:
        config_version = whole_number(body[STATE_CONFIG_VERSION])
        if config_version is None or config_version < 0:
            set_aside(STATE_CONFIG_VERSION, STATE_CONFIG_VERSION_RULE)
        else:
            body[STATE_CONFIG_VERSION] = config_version
    fw = body.get(STATE_FW_VERSION)
    if fw is not None and not is_valid_fw_version(fw):
        set_aside(STATE_FW_VERSION, STATE_FW_VERSION_RULE)
    return problems
