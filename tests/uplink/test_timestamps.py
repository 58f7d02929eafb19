"""`ts` as firmware sends it: ESP-IDF's `time()` gives epoch seconds, others send
milliseconds or RFC 3339. Each is stored as the same instant; a clock that is not set is
rejected with a reason that states the rule."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.broker import Broker
from tests.support.downlink import provision
from tests.support.mqtt import DeviceClient
from tests.support.uplink import all_handled, listing, rejected_of, wait_rejected

DEVICE = "clock-1"


@pytest.fixture
async def device(api: httpx.AsyncClient, broker: Broker) -> AsyncIterator[DeviceClient]:
    client = await broker.device(DEVICE, await provision(api, DEVICE)).connect()
    yield client
    if client.is_connected:
        await client.disconnect()


# (ts as sent, the instant GET /telemetry shows)
SAME_FORMS = [
    (1780000000, "2026-05-28T20:26:40Z"),  # time(): epoch seconds
    (1780000001.25, "2026-05-28T20:26:41.250000Z"),  # seconds with a fraction
    (1780000002000, "2026-05-28T20:26:42Z"),  # epoch milliseconds
    (1780000003500.5, "2026-05-28T20:26:43.500500Z"),  # milliseconds with a fraction
    ("2026-05-28T22:26:44+02:00", "2026-05-28T20:26:44Z"),  # RFC 3339 with an offset
    ("2026-05-28T20:26:45.125Z", "2026-05-28T20:26:45.125000Z"),
]


async def test_seconds_milliseconds_and_rfc3339_are_stored_as_the_same_instant(
    api: httpx.AsyncClient, device: DeviceClient
) -> None:
    for n, (ts, _) in enumerate(SAME_FORMS):
        payload = json.dumps({"ts": ts, "n": n})
        assert await device.publish(f"paku/{DEVICE}/telemetry", payload) == 0
    assert await device.publish(f"paku/{DEVICE}/event/button", '{"ts": 1780000009}') == 0
    await all_handled(api, device, DEVICE)

    rows = await listing(api, f"/devices/{DEVICE}/telemetry")
    stored = {row["payload"].get("n"): row["ts"] for row in rows}
    assert stored == {n: shown for n, (_, shown) in enumerate(SAME_FORMS)} | {None: rows[0]["ts"]}
    # The payload is kept as sent, with its own `ts`.
    assert {row["payload"]["ts"] for row in rows if "n" in row["payload"]} == {
        ts for ts, _ in SAME_FORMS
    }
    events = await listing(api, f"/devices/{DEVICE}/events", type="button")
    assert [e["ts"] for e in events] == ["2026-05-28T20:26:49Z"]
    assert await rejected_of(api, DEVICE) == []


async def test_a_clock_that_is_not_set_is_rejected_with_the_rule(
    api: httpx.AsyncClient, device: DeviceClient
) -> None:
    # An ESP32 before NTP: time() counts from 1970 (here 12 s after boot). In milliseconds
    # that is 12000, read as seconds (1970 either way); a wrong clock in milliseconds shows as
    # such once it is past 10^11 (1973).
    for ts in (12, 150_000_000_000, "1970-01-01T00:00:12Z", "1764000000"):
        payload = json.dumps({"ts": ts, "temp": 21.5})
        assert await device.publish(f"paku/{DEVICE}/telemetry", payload) == 0
    items = await wait_rejected(api, DEVICE, 4)
    assert [i["reason"] for i in items] == ["invalid_ts"] * 4
    seconds, millis, text, numeric_string = (i["detail"] for i in items)
    assert "ts 12 (epoch seconds: 1970-01-01T00:00:12+00:00) is outside 2000-2199" in seconds
    assert "clock set" in seconds
    # The rule that told the two apart is in the message, so a wrong guess is visible.
    for detail in (seconds, millis):
        assert "below 10^11" in detail, detail
    assert "(epoch milliseconds: 1974-10-03" in millis
    assert "is outside 2000-2199" in text
    assert "JSON number" in numeric_string
    assert await listing(api, f"/devices/{DEVICE}/telemetry") == []


async def test_a_clock_far_ahead_is_rejected_and_a_little_skew_is_not(
    api: httpx.AsyncClient, device: DeviceClient
) -> None:
    """A sample dated in 2199 would outlive every retention run (they delete by age): a `ts`
    more than a day ahead of the server's clock is rejected, saying so."""
    now = time.time()
    two_days_ahead = int((now + 2 * 86400) * 1000)
    for ts in (7_258_118_399, 7_258_118_399_000, "2199-12-31T23:59:59Z", two_days_ahead):
        payload = json.dumps({"ts": ts, "temp": 21.5})
        assert await device.publish(f"paku/{DEVICE}/telemetry", payload) == 0
    # A device clock a few hours fast (skew, a wrong time zone) is still taken.
    skewed = int((now + 3 * 3600) * 1000)
    assert await device.publish(f"paku/{DEVICE}/telemetry", json.dumps({"ts": skewed})) == 0
    await all_handled(api, device, DEVICE)
    items = await rejected_of(api, DEVICE)
    assert [i["reason"] for i in items] == ["invalid_ts"] * 4
    for item in items:
        assert "ahead of the server's clock" in item["detail"], item["detail"]
        assert "at most 1 day" in item["detail"], item["detail"]
    rows = await listing(api, f"/devices/{DEVICE}/telemetry")
    assert [row["payload"]["ts"] for row in rows if "marker" not in row["payload"]] == [skewed]
