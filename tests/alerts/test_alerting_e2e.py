"""Alerting end to end (issue 18): `paku-iot serve` as a process, real Mosquitto, the
reference device, both databases, and a real HTTP receiver the test starts.

- A device that vanishes without DISCONNECT (its Will) opens one offline alert, delivered
  signed within 5 s; coming back resolves it, delivered too.
- A reading over a threshold opens one alert, delivered within 2 s of being stored; back in
  range resolves it.
- A receiver that is down: the notifications wait in the outbox, each attempt is logged, and
  after a paku-iot restart and the receiver's return every one arrives, once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paku_iot.alerts.signing import HEADER, verify
from paku_iot.device.client import DeviceConnectError, ReferenceDevice
from tests.support import eventually, free_port
from tests.support.broker import Broker
from tests.support.faults import Deployment
from tests.support.receiver import Receiver, receiver

SECRET = "whsec-test-" + "k" * 20
# The offline rule's own silence window is long: here the Will, not silence, opens it.
SILENCE_S = 3600


@pytest.fixture
def deployment(tmp_path: Path, broker: Broker, database_url: str) -> Iterator[Deployment]:
    made = Deployment(tmp_path, broker, database_url, tmp_path / "data")
    yield made
    made.stop_all()


async def make_rule(deployment: Deployment, url: str, **fields: Any) -> dict[str, Any]:
    async with deployment.client() as client:
        response = await client.post(
            "/alert-rules",
            json={**fields, "destinations": [{"type": "webhook", "url": url, "secret": SECRET}]},
        )
        assert response.status_code == 201, response.text
        rule: dict[str, Any] = response.json()
        return rule


async def connected_device(
    deployment: Deployment, device_id: str, password: str
) -> ReferenceDevice:
    device = ReferenceDevice(
        deployment.broker.host,
        deployment.broker.port,
        device_id,
        password,
        reconnect_delay_s=0.2,
        max_reconnect_delay_s=0.5,
    )

    async def connect() -> None:
        try:
            await device.connect(timeout=5)
        except DeviceConnectError as exc:  # the broker may not have reloaded its passwords
            raise AssertionError(str(exc)) from None

    await eventually(connect, timeout=15)
    return device


def notifications(hook: Receiver, rule_id: str) -> list[dict[str, Any]]:
    """The verified bodies the receiver got for a rule, in arrival order."""
    found = []
    for request in list(hook.requests):
        body = json.loads(request.body)
        if body["rule"]["id"] == rule_id:
            assert verify(request.headers[HEADER.lower()], SECRET, request.body, time.time())
            found.append(body)
    return found


async def wait_for(
    hook: Receiver, rule_id: str, count: int, timeout: float
) -> list[dict[str, Any]]:
    async def arrived() -> list[dict[str, Any]]:
        got = notifications(hook, rule_id)
        assert len(got) >= count, f"{len(got)} of {count} notifications: {got}"
        return got

    return await eventually(arrived, timeout=timeout)


async def test_a_vanished_device_and_a_hot_reading_are_notified_then_resolved(
    deployment: Deployment,
) -> None:
    deployment.process("all").start()
    await deployment.wait_healthy()
    [(device_id, password)] = await deployment.provision(1, prefix="al")
    async with receiver() as hook:
        offline = await make_rule(
            deployment,
            hook.url,
            name="Gone",
            kind="offline",
            deviceId=device_id,
            silenceSeconds=SILENCE_S,
        )
        # Scoped to a tag the device carries: the evaluator reads the fleet's tags.
        async with deployment.client() as client:
            tagged = await client.post(
                "/devices/tags", json={"ids": [device_id], "add": ["boilers"]}
            )
            assert tagged.status_code == 200, tagged.text
        hot = await make_rule(
            deployment,
            hook.url,
            name="Boiler hot",
            kind="threshold",
            tag="boilers",
            field="boiler.temp",
            above=80,
        )
        await asyncio.sleep(2.5)  # the collector polls the rules every 2 s
        device = await connected_device(deployment, device_id, password)
        await device.send_telemetry({"boiler": {"temp": 20.5}})

        # A reading over the line: stored, then notified within 2 s.
        await device.send_telemetry({"boiler": {"temp": 91.5}})
        acked = time.monotonic()
        [opened] = await wait_for(hook, hot["id"], 1, timeout=10)
        assert time.monotonic() - acked < 2.5  # stored within ~0.1 s of the PUBACK here
        assert opened["event"] == "opened"
        assert opened["alert"]["deviceId"] == device_id
        assert opened["alert"]["values"]["value"] == 91.5
        assert opened["device"] == {"id": device_id, "model": "m"}
        await device.send_telemetry({"boiler": {"temp": 70}})
        _, resolved = await wait_for(hook, hot["id"], 2, timeout=10)
        assert resolved["event"] == "resolved"
        assert resolved["alert"]["id"] == opened["alert"]["id"]
        assert resolved["alert"]["resolvedAt"] is not None

        # Gone without a word: the broker publishes its Will, the alert goes out within 5 s.
        await device.drop()
        dropped = time.monotonic()
        [gone] = await wait_for(hook, offline["id"], 1, timeout=15)
        assert time.monotonic() - dropped < 5, "offline notified too late"
        assert gone["event"] == "opened"
        await device.connect(timeout=10)
        _, back = await wait_for(hook, offline["id"], 2, timeout=10)
        assert back["event"] == "resolved"
        await device.disconnect()

        await asyncio.sleep(1.5)
        # Exactly one alert each, nothing twice.
        assert [n["event"] for n in notifications(hook, hot["id"])] == ["opened", "resolved"]
        assert [n["event"] for n in notifications(hook, offline["id"])][:2] == [
            "opened",
            "resolved",
        ]
        async with deployment.client() as client:
            page = (await client.get("/alerts", params={"ruleId": hot["id"]})).json()
        assert [(a["state"], a["deviceId"]) for a in page["items"]] == [("resolved", device_id)]


async def test_a_receiver_that_was_down_gets_every_notification_once_after_a_restart(
    deployment: Deployment,
) -> None:
    serve = deployment.process("all").start()
    await deployment.wait_healthy()
    [(device_id, password)] = await deployment.provision(1, prefix="ald")
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"  # nobody listens there yet
    hot = await make_rule(deployment, url, name="Hot", kind="threshold", field="t", above=50)
    await asyncio.sleep(2.5)
    device = await connected_device(deployment, device_id, password)
    await device.send_telemetry({"t": 60})
    await device.send_telemetry({"t": 10})
    await device.disconnect()

    async with deployment.client() as client:

        async def failed_attempts_logged() -> int:
            page = (await client.get("/alerts", params={"ruleId": hot["id"]})).json()
            assert len(page["items"]) == 1, page
            [alert] = page["items"]
            assert alert["state"] == "resolved"
            response = await client.get(f"/alerts/{alert['id']}/deliveries")
            deliveries = response.json()["items"]
            assert sorted(d["event"] for d in deliveries) == ["opened", "resolved"]
            for delivery in deliveries:
                assert delivery["state"] == "pending"
                assert delivery["attempts"] >= 1
                assert delivery["attemptLog"][0]["statusCode"] is None
                assert delivery["attemptLog"][0]["error"]
            return int(alert["id"])

        alert_id = await eventually(failed_attempts_logged, timeout=15)

    # paku-iot restarts while the receiver is still down; then the receiver comes back.
    serve.stop()
    serve.start()
    await deployment.wait_healthy()
    async with receiver(port=port) as hook:
        got = await wait_for(hook, hot["id"], 2, timeout=40)
        await asyncio.sleep(2)
        got = notifications(hook, hot["id"])
        assert sorted(n["event"] for n in got) == ["opened", "resolved"], got
        assert {n["alert"]["id"] for n in got} == {alert_id}
        ids = [r.headers["x-paku-delivery"] for r in hook.requests]
        assert len(ids) == len(set(ids)) == 2
    async with deployment.client() as client:
        deliveries = (await client.get(f"/alerts/{alert_id}/deliveries")).json()["items"]
    assert [d["state"] for d in deliveries] == ["delivered", "delivered"]
    assert all(d["attemptLog"][-1]["statusCode"] == 200 for d in deliveries)


async def metric(deployment: Deployment, line_start: str) -> float:
    async with deployment.client() as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start} in /metrics")


async def test_silence_a_failed_update_and_rejected_messages_are_notified(
    deployment: Deployment,
) -> None:
    deployment.process("all").start()
    await deployment.wait_healthy()
    [(device_id, password)] = await deployment.provision(1, prefix="als")
    async with receiver() as hook:
        quiet = await make_rule(
            deployment, hook.url, name="Quiet", kind="offline", silenceSeconds=3
        )
        update = await make_rule(deployment, hook.url, name="Update", kind="ota_failed")
        noisy = await make_rule(
            deployment, hook.url, name="Noisy", kind="rejected_rate", perMinute=3
        )
        await asyncio.sleep(2.5)
        device = await connected_device(deployment, device_id, password)
        await device.send_telemetry({"t": 1})

        # Connected, but nothing sent for longer than the rule's window.
        [silent] = await wait_for(hook, quiet["id"], 1, timeout=10)
        assert silent["alert"]["values"]["reason"] == "silent"
        await device.send_telemetry({"t": 2})
        _, spoke = await wait_for(hook, quiet["id"], 2, timeout=10)
        assert spoke["event"] == "resolved"

        await device.send_event("ota", {"version": "1.2.0", "status": "failed", "error": "sig"})
        [failed] = await wait_for(hook, update["id"], 1, timeout=10)
        assert failed["alert"]["values"]["version"] == "1.2.0"
        await device.send_event("ota", {"version": "1.2.1", "status": "installed"})
        _, installed = await wait_for(hook, update["id"], 2, timeout=10)
        assert installed["event"] == "resolved"

        # Four payloads that are not JSON objects in a minute: over the rule's three.
        for _ in range(4):
            await device.send_telemetry({"ts": "not a time"})
        [rejected] = await wait_for(hook, noisy["id"], 1, timeout=10)
        assert rejected["alert"]["values"]["count"] == 4
        await device.disconnect()

    assert await metric(deployment, 'paku_alerts_opened_total{kind="offline"}') >= 1
    assert await metric(deployment, 'paku_alerts_opened_total{kind="ota_failed"}') == 1
    assert await metric(deployment, 'paku_alerts_opened_total{kind="rejected_rate"}') == 1
    assert await metric(deployment, 'paku_alert_deliveries_total{result="delivered"}') >= 5
    assert await metric(deployment, "paku_alerts_open") >= 1
