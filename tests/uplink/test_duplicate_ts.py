"""Two samples with one `ts`: a telemetry row is unique per (device, ts). An exact
redelivery (QoS 1 at-least-once) is stored once, silently; a different sample with a `ts`
already taken is not stored, and GET /rejected says so."""

from __future__ import annotations

import json

import httpx

from tests.support.broker import Broker
from tests.support.downlink import provision
from tests.support.uplink import all_handled, listing, rejected_of

TS = 1780000000000


async def test_a_different_sample_with_a_taken_ts_is_rejected_and_a_redelivery_is_not(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await broker.device("dup-1", await provision(api, "dup-1")).connect()
    first = json.dumps({"ts": TS, "temp": 21.5})
    second = json.dumps({"ts": TS, "temp": 22.0})
    for payload in (first, first, second, first):
        assert await device.publish("paku/dup-1/telemetry", payload) == 0
    # The same in bursts, as a batch may hold several (QoS 0: no waiting in between).
    burst = [json.dumps({"ts": TS + 1, "n": n % 2}) for n in range(6)]
    for payload in burst:
        assert await device.publish("paku/dup-1/telemetry", payload, qos=0) == 0
    # Values a database may write back differently are still the same sample when redelivered
    # (PostgreSQL's jsonb keeps -0.0 as 0.0, 1e308 as its digits); true is not 1.
    odd = f'{{"ts": {TS + 2}, "z": -0.0, "big": 1e308, "f": 1.50}}'
    one, true = f'{{"ts": {TS + 3}, "v": 1}}', f'{{"ts": {TS + 3}, "v": true}}'
    for payload in (odd, odd, one, true):
        assert await device.publish("paku/dup-1/telemetry", payload) == 0
    await all_handled(api, device, "dup-1")

    rows = await listing(api, "/devices/dup-1/telemetry", to="2026-06-01T00:00:00Z")
    odd_row = rows[1]["payload"]
    assert float(odd_row.pop("big")) == 1e308  # PostgreSQL gives it back as its digits
    assert [(row["ts"], row["payload"]) for row in rows] == [
        ("2026-05-28T20:26:40.003000Z", {"ts": TS + 3, "v": 1}),
        ("2026-05-28T20:26:40.002000Z", {"ts": TS + 2, "z": 0.0, "f": 1.5}),
        ("2026-05-28T20:26:40.001000Z", {"ts": TS + 1, "n": 0}),
        ("2026-05-28T20:26:40Z", {"ts": TS, "temp": 21.5}),
    ]
    items = await rejected_of(api, "dup-1")
    assert [i["reason"] for i in items] == ["duplicate_ts"] * 5
    assert [json.loads(i["payload"]) for i in items] == [
        {"ts": TS, "temp": 22.0},
        *[{"ts": TS + 1, "n": 1}] * 3,
        {"ts": TS + 3, "v": True},
    ]
    assert items[0]["detail"] == (
        "ts 2026-05-28T20:26:40+00:00 already holds a different sample of this device: this "
        "one was not stored (give each sample its own ts)"
    )
    await device.disconnect()
