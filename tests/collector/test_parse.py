"""Parsing device input: every payload on every topic becomes a record, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paku_iot.collector.parse import RejectReason, parse_message
from paku_iot.storage.records import EventRecord, RejectedRecord, StateReport, TelemetryRecord

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def parse(topic: str, payload: bytes, *, retained: bool = False, limit: int = 65536) -> object:
    return parse_message(topic, payload, NOW, retained=retained, max_payload_bytes=limit)


def test_telemetry_with_epoch_ms() -> None:
    record = parse("paku/dev-1/telemetry", b'{"ts": 1780000000123, "t": 1.5}')
    assert record == TelemetryRecord(
        "dev-1",
        datetime(2026, 5, 28, 20, 26, 40, 123000, tzinfo=UTC),
        NOW,
        {"ts": 1780000000123, "t": 1.5},
    )


def test_telemetry_without_ts_uses_receive_time() -> None:
    record = parse("paku/dev-1/telemetry", b'{"t": 1}')
    assert isinstance(record, TelemetryRecord)
    assert record.ts == NOW


def test_null_ts_means_receive_time_and_surrogate_pairs_are_text() -> None:
    record = parse("paku/dev-1/telemetry", b'{"ts": null, "s": "\\ud83d\\ude00"}')
    assert isinstance(record, TelemetryRecord)
    assert record.ts == NOW
    assert record.payload["s"] == "\U0001f600"


def test_same_event_bytes_have_the_same_digest() -> None:
    first = parse("paku/dev-1/event/ack", b'{"ts": 1780000000000, "id": "a"}')
    again = parse("paku/dev-1/event/ack", b'{"ts": 1780000000000, "id": "a"}')
    other = parse("paku/dev-1/event/ack", b'{"ts": 1780000000000, "id": "b"}')
    assert isinstance(first, EventRecord)
    assert isinstance(again, EventRecord)
    assert isinstance(other, EventRecord)
    assert first.digest == again.digest != other.digest


def test_event_takes_its_name_from_the_topic() -> None:
    record = parse("paku/dev-1/event/button", b'{"ts": "2026-01-01T00:00:00Z"}')
    assert isinstance(record, EventRecord)
    assert record.type == "button"
    assert record.ts == datetime(2026, 1, 1, tzinfo=UTC)


def test_state_is_live_unless_retained() -> None:
    live = parse("paku/dev-1/state", b'{"online": true, "rssi": -70, "fwVersion": "1.0"}')
    replay = parse("paku/dev-1/state", b'{"online": false}', retained=True)
    assert live == StateReport(
        "dev-1", NOW, {"online": True, "rssi": -70, "fwVersion": "1.0"}, True
    )
    assert isinstance(replay, StateReport)
    assert replay.live is False


def test_a_bad_state_field_is_set_aside_and_the_rest_kept() -> None:
    payload = b'{"online": true, "rssi": -61.5, "configVersion": 2.0, "x": 1}'
    record = parse("paku/dev-1/state", payload)
    assert isinstance(record, StateReport)
    assert record.payload == {"online": True, "configVersion": 2, "x": 1}
    [aside] = record.set_aside
    assert aside.reason == RejectReason.INVALID_STATE
    assert aside.detail == (
        "rssi -61.5: must be an integer dBm from -200 to 50; the other fields were applied"
    )
    assert aside.payload == payload


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("paku/dev-1/telemetry", b"hello", RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b"", RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b'{"a": NaN}', RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b'{"a": Infinity}', RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b'{"a": "\\u0000"}', RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b"[" * 50_000, RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b'{"n": ' + b"9" * 5000 + b"}", RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b"\xc3\x28", RejectReason.INVALID_UTF8),
        ("paku/dev-1/telemetry", b"[1]", RejectReason.NOT_OBJECT),
        ("paku/dev-1/telemetry", b'"text"', RejectReason.NOT_OBJECT),
        ("paku/dev-1/telemetry", b"null", RejectReason.NOT_OBJECT),
        ("paku/dev-1/telemetry", b'{"ts": true}', RejectReason.INVALID_TS),
        ("paku/dev-1/telemetry", b'{"ts": 12}', RejectReason.INVALID_TS),
        ("paku/dev-1/telemetry", b'{"ts": 1e300}', RejectReason.INVALID_TS),
        ("paku/dev-1/telemetry", b'{"ts": "2026-01-01T00:00:00"}', RejectReason.INVALID_TS),
        ("paku/dev-1/telemetry", b'{"ts": "soon"}', RejectReason.INVALID_TS),
        ("paku/dev-1/telemetry", b'{"a": 1e400}', RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b'{"a": -1e400}', RejectReason.INVALID_JSON),
        ("paku/dev-1/telemetry", b'{"s": "\\ud800"}', RejectReason.INVALID_JSON),
        ("paku/dev-1/event/x", b'{"s": "a\\udc00b"}', RejectReason.INVALID_JSON),
        ("paku/dev-1/state", b'{"online": 1}', RejectReason.INVALID_STATE),
        ("paku/dev-1/state", b'{"rssi": "strong"}', RejectReason.INVALID_STATE),
        ("paku/dev-1/state", b'{"rssi": true}', RejectReason.INVALID_STATE),
        ("paku/dev-1/state", b'{"fwVersion": 3}', RejectReason.INVALID_STATE),
        ("paku/dev-1/event", b"{}", RejectReason.INVALID_TOPIC),
        ("paku/dev-1/event/a/b", b"{}", RejectReason.INVALID_TOPIC),
        ("paku/dev-1/event/", b"{}", RejectReason.INVALID_TOPIC),
        ("paku/dev-1/telemetry/x", b"{}", RejectReason.INVALID_TOPIC),
        ("paku/dev-1/cmd", b"{}", RejectReason.INVALID_TOPIC),
        ("paku//telemetry", b"{}", RejectReason.INVALID_TOPIC),
        ("paku/a+b/telemetry", b"{}", RejectReason.INVALID_TOPIC),
        ("other/dev-1/telemetry", b"{}", RejectReason.INVALID_TOPIC),
        ("paku", b"{}", RejectReason.INVALID_TOPIC),
    ],
)
def test_bad_input_is_rejected_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    record = parse(topic, payload)
    assert isinstance(record, RejectedRecord)
    assert record.reason == reason
    assert record.topic == topic
    assert record.detail
    assert record.payload_size == len(payload)
    assert len(record.payload) <= 4096


def test_oversize_is_rejected_before_parsing_and_kept_truncated() -> None:
    payload = b'{"x": "' + b"a" * 2000 + b'"}'
    record = parse("paku/dev-1/telemetry", payload, limit=1000)
    assert isinstance(record, RejectedRecord)
    assert record.reason == RejectReason.OVERSIZE
    assert record.device_id == "dev-1"
    assert record.payload_size == len(payload)


def test_rejected_topic_keeps_a_legible_device_id() -> None:
    record = parse("paku/dev-1/event/a/b", b"{}")
    assert isinstance(record, RejectedRecord)
    assert record.device_id == "dev-1"
    unreadable = parse("paku/a#b/telemetry", b"{}")
    assert isinstance(unreadable, RejectedRecord)
    assert unreadable.device_id is None
