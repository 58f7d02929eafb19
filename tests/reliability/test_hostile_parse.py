"""Property tests of every parser that sees device input: whatever bytes arrive on whatever
topic, the parser returns a record (never raises), and the record is either one the database
can store or a rejection with a reason the operator can read."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from paku_iot.collector.parse import (
    REJECTED_PAYLOAD_KEEP,
    Parsed,
    RejectReason,
    parse_message,
)
from paku_iot.collector.writer import build_batch
from paku_iot.exceptions import InvalidInput
from paku_iot.jsonlimits import MAX_JSON_DEPTH
from paku_iot.protocol import (
    STATE_ACK,
    TS_MAX_AHEAD,
    TimestampError,
    TopicError,
    UplinkKind,
    is_valid_device_id,
    parse_device_ts,
    parse_uplink_topic,
)
from paku_iot.storage.records import EventRecord, RejectedRecord, StateReport, TelemetryRecord
from paku_iot.storage.types import same_json
from paku_iot.web.api.cursors import (
    decode_id_cursor,
    decode_int_cursor,
    decode_time_cursor,
    decode_time_text_cursor,
    encode_cursor,
)
from paku_iot.web.api.inputs import has_nul
from tests.support.strategies import (
    DEVICE_IDS,
    JSON_VALUES,
    PAYLOADS,
    TS_VALUES,
    topics,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
REASONS = {str(r) for r in RejectReason}
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=30_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def depth_of(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion (a scalar is 0, `{}` is 1)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
            deepest = max(deepest, level + 1)
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
            deepest = max(deepest, level + 1)
    return deepest


def assert_storable_text(text: str) -> None:
    # Both databases store text as UTF-8; PostgreSQL refuses NUL in text and jsonb.
    assert "\x00" not in text
    text.encode("utf-8")


def assert_storable_object(payload: Any) -> None:
    assert isinstance(payload, dict)
    assert depth_of(payload) <= MAX_JSON_DEPTH
    assert_storable_text(json.dumps(payload, allow_nan=False, ensure_ascii=False))


def assert_accounted_for(topic: str, payload: bytes, record: Parsed, limit: int) -> None:
    """The record is a rejection the operator can read and store, or a message that is
    faithful to what the device sent and that the database can store."""
    if isinstance(record, RejectedRecord):
        assert record.reason in REASONS
        assert_storable_text(record.topic)
        if "\x00" not in topic and not LONE_SURROGATE.search(topic):
            assert record.topic == topic
        assert record.payload == payload[:REJECTED_PAYLOAD_KEEP]
        assert record.payload_size == len(payload)
        assert record.detail
        assert_storable_text(record.detail)
        assert record.device_id is None or is_valid_device_id(record.device_id)
        assert record.received_at == NOW
        return
    uplink = parse_uplink_topic(topic)  # an accepted message came on a well-formed topic
    assert record.device_id == uplink.device_id
    assert is_valid_device_id(record.device_id)
    assert record.received_at == NOW
    if isinstance(record, StateReport) and not payload:
        assert uplink.kind is UplinkKind.STATE  # a retained state being cleared
        assert record.payload == {}
        return
    assert len(payload) <= limit
    assert_storable_object(record.payload)
    if isinstance(record, StateReport):
        assert uplink.kind is UplinkKind.STATE
        assert_state_accounted_for(topic, payload, record, limit)
        return
    assert record.payload == json.loads(payload)  # nothing added, nothing lost
    assert EARLIEST <= record.ts <= NOW + TS_MAX_AHEAD  # received at NOW
    assert record.ts.utcoffset() is not None
    if isinstance(record, TelemetryRecord):
        assert uplink.kind is UplinkKind.TELEMETRY
    else:
        assert isinstance(record, EventRecord)
        assert uplink.kind is UplinkKind.EVENT
        assert record.type == uplink.event_name


def assert_state_accounted_for(topic: str, payload: bytes, record: StateReport, limit: int) -> None:
    """Every key of a state is applied (as sent, or a whole number read as an integer), set
    aside with a rejection that names it, or the command answer: nothing added, nothing
    lost."""
    assert record.sent == payload
    sent = json.loads(payload)
    assert record.ack == sent.pop(STATE_ACK, None)
    assert record.payload.keys() <= sent.keys()
    named = " ".join(aside.detail for aside in record.set_aside)
    for key, value in sent.items():
        if key in record.payload:
            assert same_json(record.payload[key], value)
        else:
            assert f"{key} " in named, (key, named)
    for aside in record.set_aside:
        assert aside.reason == RejectReason.INVALID_STATE
        assert_accounted_for(topic, payload, aside, limit)


def parse(topic: str, payload: bytes, limit: int, *, retained: bool = False) -> Parsed:
    return parse_message(topic, payload, NOW, retained=retained, max_payload_bytes=limit)


def _check_any_message(topic: str, payload: bytes, limit: int, retained: bool) -> None:
    assert_accounted_for(topic, payload, parse(topic, payload, limit, retained=retained), limit)


@FAST
@given(topics(), PAYLOADS, st.sampled_from([256, 1000, 65_536]), st.booleans())
@example("paku/dev-1/telemetry", ('{"a":' * 990 + "1" + "}" * 990).encode(), 65_536, False)
@example("paku/dev-1/telemetry", b'{"n": ' + b"9" * 4301 + b"}", 65_536, False)
@example("paku/\x00ab/telemetry", b"{}", 65_536, False)
@example("paku/dev-1/\x00", b"{}", 65_536, False)
@example("paku/dev-1/state", b"", 65_536, True)
@example("paku/dev-1/telemetry", b'{"ts": 1' + b"0" * 400 + b"}", 65_536, False)
def test_any_message_on_any_topic_is_accounted_for(
    topic: str, payload: bytes, limit: int, retained: bool
) -> None:
    _check_any_message(topic, payload, limit, retained)


@pytest.mark.soak
@pytest.mark.timeout(1200)
@LONG
@given(topics(), PAYLOADS, st.sampled_from([256, 1000, 65_536]), st.booleans())
def test_any_message_on_any_topic_is_accounted_for_long(
    topic: str, payload: bytes, limit: int, retained: bool
) -> None:
    _check_any_message(topic, payload, limit, retained)


@FAST
@given(DEVICE_IDS, st.sampled_from(["telemetry", "state", "event/ack", "event/x"]), PAYLOADS)
def test_any_payload_on_a_real_topic_is_accounted_for(
    device_id: str, kind: str, payload: bytes
) -> None:
    """The same with well-formed topics only, so every payload reaches the JSON checks."""
    topic = f"paku/{device_id}/{kind}"
    _check_any_message(topic, payload, 65_536, False)


@FAST
@given(st.binary(min_size=0, max_size=200), st.integers(256, 4096))
def test_oversize_is_decided_by_size_alone(filler: bytes, limit: int) -> None:
    payload = b"{" + filler + b"x" * limit
    record = parse("paku/dev-1/telemetry", payload, limit)
    assert isinstance(record, RejectedRecord)
    assert record.reason == RejectReason.OVERSIZE
    assert record.payload_size == len(payload)
    assert len(record.payload) == min(len(payload), REJECTED_PAYLOAD_KEEP)


@FAST
@given(st.one_of(st.text(max_size=200), topics()))
@example("paku/+/telemetry")
@example("paku/#")
@example("paku/dev-1/event/#")
@example("paku//telemetry")
@example("$SYS/broker/clients")
def test_topic_parser_accepts_only_exact_uplink_topics(topic: str) -> None:
    try:
        uplink = parse_uplink_topic(topic)
    except TopicError as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert str(refused)
        assert refused.device_id is None or is_valid_device_id(refused.device_id)
        return
    rebuilt = f"paku/{uplink.device_id}/{uplink.kind}"
    if uplink.kind is UplinkKind.EVENT:
        rebuilt += f"/{uplink.event_name}"
    assert rebuilt == topic
    assert not {"+", "#", "\x00"} & set(topic)


@FAST
@given(st.one_of(TS_VALUES, JSON_VALUES))
@example(10**400)
@example(-(10**20))
@example(float("nan"))
@example(float("inf"))
@example("+275760-09-13T00:00:00Z")
def test_device_timestamps_are_in_range_or_refused(value: object) -> None:
    try:
        ts = parse_device_ts(value, now=NOW)
    except TimestampError as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert str(refused)
        return
    assert EARLIEST <= ts <= NOW + TS_MAX_AHEAD < LATEST
    assert ts.utcoffset() is not None


@settings(FAST, max_examples=150)
@given(
    st.lists(st.tuples(topics(), PAYLOADS), max_size=20),
    st.lists(DEVICE_IDS, max_size=5),
)
def test_a_batch_accounts_for_every_record(
    messages: list[tuple[str, bytes]], known: list[str]
) -> None:
    """Sorting a batch (known devices are stored, others set aside) loses nothing and keeps
    what it sets aside storable."""
    records = [parse(topic, payload, 65_536) for topic, payload in messages]
    # Half the well-formed messages come from devices the registry knows.
    known_ids = set(known) | {
        r.device_id for r in records[::2] if not isinstance(r, RejectedRecord)
    }
    batch = build_batch(records, known_ids)
    cleared = sum(
        1 for r in records if isinstance(r, StateReport) and not r.payload and r.ack is None
    )
    # A state applied without a bad field is kept twice: applied, and that field rejected.
    set_aside = sum(len(s.set_aside) for s in batch.states)
    kept = len(batch.telemetry) + len(batch.events) + len(batch.states) + len(batch.rejected)
    assert kept - set_aside + cleared == len(records)
    for stored in (*batch.telemetry, *batch.events, *batch.states):
        assert stored.device_id in known_ids
    for rejected in batch.rejected:
        assert rejected.reason in REASONS
        assert_storable_text(rejected.detail)
        assert_storable_text(rejected.topic)


@FAST
@given(st.one_of(st.text(max_size=100), st.binary(max_size=60).map(lambda b: b.hex())))
@example("W10")  # []
@example("WzEsMl0")  # [1,2]
@example("WyJ4IiwxXQ")  # ["x",1]
@example("W3RydWVd")  # [true]
@example("WyJcdTAwMDAiXQ")  # ["\u0000"]
@example(base64.urlsafe_b64encode(b"[" * 100_000).decode())
def test_page_cursors_decode_or_are_refused(cursor: str) -> None:
    """Cursors come from clients: anything else than what we issued is a clear 422."""
    for decode in (
        decode_id_cursor,
        decode_int_cursor,
        decode_time_cursor,
        decode_time_text_cursor,
    ):
        try:
            decode(cursor)
        except InvalidInput as exc:
            code = exc.code
        else:
            code = "invalid_cursor"
            assert not has_nul(decode(cursor))
        assert code == "invalid_cursor"


@FAST
@given(
    st.datetimes(timezones=st.just(UTC)),
    st.integers(),
    st.text(st.characters(exclude_characters="\x00")),  # ids never hold NUL
)
def test_issued_cursors_round_trip(at: datetime, row_id: int, text_id: str) -> None:
    assert decode_time_cursor(encode_cursor(at, row_id)) == (at, row_id)
    assert decode_time_text_cursor(encode_cursor(at, text_id)) == (at, text_id)
    assert decode_int_cursor(encode_cursor(row_id)) == row_id
    assert decode_id_cursor(encode_cursor(text_id)) == text_id
