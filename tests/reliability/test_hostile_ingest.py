"""Hostile payloads through the real path: a device publishes them to Mosquitto, the
collector takes them in, and each one is either stored or listed in GET /rejected with its
reason. Afterwards the collector is healthy and still ingests."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from hypothesis.errors import NonInteractiveExampleWarning

from paku_iot.collector.parse import parse_message
from paku_iot.protocol import ACK_EVENT, AckError, TimestampError, parse_command_ack
from paku_iot.server.service import Service
from paku_iot.storage.records import EventRecord, RejectedRecord, StateReport, TelemetryRecord
from paku_iot.storage.types import same_json
from tests.support import eventually
from tests.support.broker import Broker
from tests.support.strategies import PAYLOADS

DEVICE = "hostile-1"
MAX_PAYLOAD = 65_536  # the service's default PAKU_MAX_PAYLOAD_BYTES
BASE_TS = 1_780_000_000_000


def nested(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


# (topic kind, payload, what a user must see: a rejection reason, "stored", or both)
CURATED: list[tuple[str, bytes, str]] = [
    ("telemetry", b"\xff\xfe\x00garbage", "invalid_utf8"),
    ("telemetry", b"\xed\xa0\x80", "invalid_utf8"),  # a surrogate encoded as UTF-8
    ("telemetry", b"not json", "invalid_json"),
    ("telemetry", b"", "invalid_json"),
    ("telemetry", b"\xef\xbb\xbf{}", "invalid_json"),  # byte order mark
    ("telemetry", b'{"a": 1} {"b": 2}', "invalid_json"),
    ("telemetry", b'{"a": NaN}', "invalid_json"),
    ("telemetry", b'{"a": -Infinity}', "invalid_json"),
    ("telemetry", b'{"n": 1e400}', "invalid_json"),
    ("telemetry", b'{"n": ' + b"9" * 5000 + b"}", "invalid_json"),
    ("telemetry", b'{"a": "\\u0000"}', "invalid_json"),
    ("telemetry", b'{"a": "nul\x00"}', "invalid_json"),
    ("telemetry", b'{"s": "\\ud800"}', "invalid_json"),
    ("telemetry", b"[" * 50_000, "invalid_json"),
    ("telemetry", nested(990), "invalid_json"),  # parses, but too deep to store safely
    ("telemetry", nested(200), "invalid_json"),
    ("telemetry", b"[1, 2]", "not_object"),
    ("telemetry", b'"text"', "not_object"),
    ("telemetry", b'{"x": "' + b"a" * MAX_PAYLOAD + b'"}', "oversize"),
    ("telemetry", b'{"ts": 12}', "invalid_ts"),
    ("telemetry", b'{"ts": 1e300}', "invalid_ts"),
    ("telemetry", b'{"ts": "2026-01-01T00:00:00"}', "invalid_ts"),
    ("telemetry", b'{"ts": true}', "invalid_ts"),
    ("state", b'{"online": "yes"}', "invalid_state"),
    ("state", b'{"rssi": 1e30}', "invalid_state"),
    ("state", b'{"configVersion": -1}', "invalid_state"),
    ("state", b'{"fwVersion": ""}', "invalid_state"),
    ("event", b"{}", "invalid_topic"),
    ("event/a/b", b"{}", "invalid_topic"),
    ("event/" + "n" * 65, b"{}", "invalid_topic"),
    # Odd but valid: stored as sent.
    ("telemetry", b'{"ts": %d, "a": 1, "a": 2}' % (BASE_TS + 1), "stored"),
    ("telemetry", b'{"ts": %d, "big": 123456789012345678901234567890}' % (BASE_TS + 2), "stored"),
    (
        "telemetry",
        b'{"ts": %d, "s": "\\ud83d\\ude00 \xe2\x80\xa8 \\" \\\\ \'"}' % (BASE_TS + 3),
        "stored",
    ),
    ("telemetry", b'{"ts": %d, "tiny": 1e-400, "neg": -0.0}' % (BASE_TS + 4), "stored"),
    ("telemetry", b'{"ts": %d, "deep": %s}' % (BASE_TS + 5, nested(40)), "stored"),
    ("telemetry", b'{"ts": "2026-01-01T00:00:00.123456+14:00", "k": 1}', "stored"),
    ("event/x", b'{"ts": %d, "": null, "\\u00e9": [[], {}]}' % (BASE_TS + 6), "stored"),
    # A malformed ack is still stored as an event, and listed as rejected: it settles nothing.
    ("event/ack", b'{"id": 5, "ok": "maybe"}', "stored+invalid_ack"),
    ("event/ack", b'{"id": "c-none", "ok": true}', "stored+unknown_command"),
    ("event/ota", b'{"version": {"x": 1}, "status": "exploded"}', "stored"),
]


def generated_payloads(count: int) -> list[bytes]:
    """A fresh handful of the property tests' payloads for every run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        return [PAYLOADS.example() for _ in range(count)]


def unsettled_ack_reason(body: object) -> str:
    """No command exists in this test, so no ack settles one: why each is rejected."""
    try:
        parse_command_ack(body)
    except AckError:
        return "invalid_ack"
    except TimestampError:
        return "invalid_ts"
    return "unknown_command"


@dataclass
class Expected:
    rejected: Counter[str]
    telemetry: int
    events: int


def expectation(messages: list[tuple[str, bytes]]) -> Expected:
    """What the parser (checked on its own by the property tests) says must reach the
    database, allowing for the documented duplicate rule (one row per device ts; a different
    sample with a ts already taken is rejected)."""
    now = datetime.now(UTC)
    rejected: Counter[str] = Counter()
    telemetry_keys: dict[object, object] = {}
    event_keys: set[object] = set()
    for index, (topic, payload) in enumerate(messages):
        record = parse_message(topic, payload, now, retained=False, max_payload_bytes=MAX_PAYLOAD)
        own_ts = isinstance(record, TelemetryRecord | EventRecord) and (
            record.payload.get("ts") is not None
        )
        if isinstance(record, RejectedRecord):
            rejected[record.reason] += 1
        elif isinstance(record, TelemetryRecord):
            key = record.ts if own_ts else ("receive time", index)
            if key not in telemetry_keys:
                telemetry_keys[key] = record.payload
            elif not same_json(telemetry_keys[key], record.payload):
                rejected["duplicate_ts"] += 1  # a different sample with a ts already taken
        elif isinstance(record, EventRecord):
            key = (record.type, record.ts, record.digest) if own_ts else ("receive time", index)
            event_keys.add(key)
            if record.type == ACK_EVENT:
                rejected[unsettled_ack_reason(record.payload)] += 1
        elif isinstance(record, StateReport):
            rejected.update(aside.reason for aside in record.set_aside)
            if record.ack is not None:
                rejected[unsettled_ack_reason(record.ack)] += 1
    return Expected(rejected, len(telemetry_keys), len(event_keys))


async def fetch_all(api: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        response = await api.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            return items


async def test_hostile_payloads_are_each_stored_or_rejected_with_a_reason(
    api: httpx.AsyncClient, service: Service, broker: Broker
) -> None:
    created = await api.post("/devices", json={"model": "m", "id": DEVICE})
    device = await broker.device(DEVICE, created.json()["credentials"]["password"]).connect()
    messages = [(f"paku/{DEVICE}/{kind}", payload) for kind, payload, _ in CURATED]
    kinds = ["telemetry", "event/fuzz", "state"]
    messages += [
        (f"paku/{DEVICE}/{kinds[i % 3]}", payload)
        for i, payload in enumerate(generated_payloads(45))
    ]
    expected = expectation(messages)
    # The curated cases say on their own what a user must see; the oracle must agree.
    curated = expectation(messages[: len(CURATED)])
    assert curated.rejected == Counter(
        want.removeprefix("stored+") for _, _, want in CURATED if want != "stored"
    )
    try:
        for topic, payload in messages:
            # Every one is taken by the broker: the backend judges, not the broker.
            assert await device.publish(topic, payload) == 0, topic
        # The last one is ordinary: once it is stored, everything before it was handled.
        marker_ts = int(time.time() * 1000)
        await device.publish(f"paku/{DEVICE}/telemetry", json.dumps({"ts": marker_ts}))
    finally:
        await device.disconnect()

    async def marker_stored() -> None:
        rows = await fetch_all(api, f"/devices/{DEVICE}/telemetry")
        assert any(row["payload"] == {"ts": marker_ts} for row in rows)

    await eventually(marker_stored, timeout=30)
    rejected = await fetch_all(api, "/rejected", deviceId=DEVICE)
    telemetry = await fetch_all(api, f"/devices/{DEVICE}/telemetry")
    events = await fetch_all(api, f"/devices/{DEVICE}/events")
    detail = json.dumps([p.decode("latin-1") for _, p in messages[len(CURATED) :]])[:4000]
    assert Counter(str(r["reason"]) for r in rejected) == expected.rejected, detail
    assert all(r["detail"] for r in rejected)
    assert len(telemetry) == expected.telemetry + 1, detail
    assert len(events) == expected.events, detail

    by_ts = {row["ts"]: row["payload"] for row in telemetry}
    assert by_ts["2026-05-28T20:26:40.001000Z"] == {"ts": BASE_TS + 1, "a": 2}
    assert by_ts["2026-05-28T20:26:40.002000Z"]["big"] == 123456789012345678901234567890  # type: ignore[index]
    assert by_ts["2026-05-28T20:26:40.003000Z"]["s"] == "\U0001f600 \u2028 \" \\ '"  # type: ignore[index]

    # The collector is healthy: nothing stuck waiting, nothing degraded, still ingesting.
    health = await api.get("/health")
    assert health.json()["status"] == "ok", health.text
    assert service.link.ready
    assert service.stats.rejected.total() >= sum(expected.rejected.values())
