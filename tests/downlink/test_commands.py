"""Commands and desired configuration with real devices: paho clients and the mosquitto
command-line tools, against a real broker and both databases."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import eventually, require
from tests.support.broker import Broker
from tests.support.downlink import command_status, go_online, next_message, provision, wait_status


def epoch_ms(rfc3339: str) -> int:
    """The API's `expiresAt` in epoch milliseconds, computed apart from the backend's code."""
    instant = datetime.fromisoformat(rfc3339)
    return (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


async def test_command_to_an_online_device_is_sent_then_acked_or_failed(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await go_online(api, broker, "lamp-1", await provision(api, "lamp-1"))
    response = await api.post(
        "/devices/lamp-1/commands", json={"name": "blink", "params": {"times": 3}}
    )
    assert response.status_code == 202
    command = response.json()
    assert command["status"] == "sent"
    assert command["sentAt"] is not None
    assert command["deviceId"] == "lamp-1"
    assert set(command) == {
        "id",
        "deviceId",
        "name",
        "params",
        "status",
        "createdAt",
        "expiresAt",
        "sentAt",
        "ackedAt",
        "result",
        "error",
    }

    message = await next_message(device)
    assert message.topic == "paku/lamp-1/cmd"
    sent = json.loads(message.payload)
    assert sent == {
        "id": command["id"],
        "name": "blink",
        "params": {"times": 3},
        "expiresAt": command["expiresAt"],
        "expiresAtMs": epoch_ms(command["expiresAt"]),
        "ttlSeconds": sent["ttlSeconds"],
    }
    # Whole seconds left when it was published: just under the default hour.
    assert 3590 <= sent["ttlSeconds"] < 3600

    await device.publish(
        "paku/lamp-1/event/ack", json.dumps({"id": sent["id"], "ok": True, "result": {"on": 1}})
    )
    acked = await wait_status(api, "lamp-1", command["id"], "acked")
    assert acked["result"] == {"on": 1}
    assert acked["ackedAt"] is not None
    assert acked["error"] is None

    second = (await api.post("/devices/lamp-1/commands", json={"name": "fly"})).json()
    received = json.loads((await next_message(device)).payload)
    assert received["params"] == {}
    await device.publish(
        "paku/lamp-1/event/ack",
        json.dumps({"id": second["id"], "ok": False, "error": "unknown command: fly"}),
    )
    failed = await wait_status(api, "lamp-1", second["id"], "failed")
    assert failed["error"] == "unknown command: fly"
    await device.disconnect()


async def test_command_to_an_offline_device_waits_until_it_comes_online(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    password = await provision(api, "lamp-2")
    queued = (await api.post("/devices/lamp-2/commands", json={"name": "reboot"})).json()
    assert queued["status"] == "queued"
    assert queued["sentAt"] is None
    await asyncio.sleep(1.5)  # a sweep or two: nothing may pretend it was sent
    assert (await command_status(api, "lamp-2", queued["id"]))["status"] == "queued"

    device = await go_online(api, broker, "lamp-2", password)
    message = json.loads((await next_message(device)).payload)
    assert message["id"] == queued["id"]
    # The expiry a device without a date parser reads: absolute, and what was left at sending.
    assert message["expiresAtMs"] == epoch_ms(queued["expiresAt"])
    assert 3590 <= message["ttlSeconds"] <= 3600 - 2  # it waited 1.5 s and more
    await wait_status(api, "lamp-2", queued["id"], "sent")
    await device.publish("paku/lamp-2/event/ack", json.dumps({"id": queued["id"], "ok": True}))
    await wait_status(api, "lamp-2", queued["id"], "acked")
    listed = (await api.get("/devices/lamp-2/commands", params={"status": "acked"})).json()
    assert [c["id"] for c in listed["items"]] == [queued["id"]]
    await device.disconnect()


async def test_unanswered_commands_expire_and_are_never_sent_late(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    password = await provision(api, "lamp-3")
    doomed = (
        await api.post("/devices/lamp-3/commands", json={"name": "reboot", "ttlSeconds": 1})
    ).json()
    await wait_status(api, "lamp-3", doomed["id"], "expired", timeout=5)

    device = await go_online(api, broker, "lamp-3", password)
    unanswered = (
        await api.post("/devices/lamp-3/commands", json={"name": "ping", "ttlSeconds": 1})
    ).json()
    assert unanswered["status"] == "sent"
    assert json.loads((await next_message(device)).payload)["id"] == unanswered["id"]
    await wait_status(api, "lamp-3", unanswered["id"], "expired", timeout=5)
    assert device.messages.empty()  # the expired queued one never went out
    await device.disconnect()


@pytest.mark.parametrize("ttl", [0, -5, 31 * 24 * 3600, "soon"])
async def test_bad_ttl_and_names_are_refused(api: httpx.AsyncClient, ttl: object) -> None:
    await provision(api, "lamp-4")
    response = await api.post("/devices/lamp-4/commands", json={"name": "x", "ttlSeconds": ttl})
    assert response.status_code == 422
    bad_name = await api.post("/devices/lamp-4/commands", json={"name": "a/b"})
    assert bad_name.status_code == 422
    missing = await api.post("/devices/nope-9/commands", json={"name": "x"})
    assert missing.status_code == 404


async def test_idempotency_key_returns_the_same_command(api: httpx.AsyncClient) -> None:
    await provision(api, "lamp-5")
    headers = {"Idempotency-Key": "retry-123"}
    first = await api.post("/devices/lamp-5/commands", json={"name": "x"}, headers=headers)
    again = await api.post("/devices/lamp-5/commands", json={"name": "x"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = await api.post("/devices/lamp-5/commands", json={"name": "x"})
    assert other.json()["id"] != first.json()["id"]
    listed = (await api.get("/devices/lamp-5/commands")).json()["items"]
    assert len(listed) == 2


async def test_bulk_commands_by_ids_and_by_model(api: httpx.AsyncClient) -> None:
    for device_id, model in [("bulk-1", "lamp"), ("bulk-2", "lamp"), ("bulk-3", "sensor")]:
        await provision(api, device_id, model)
    by_model = await api.post("/commands", json={"model": "lamp", "name": "off"})
    assert by_model.status_code == 202
    items = by_model.json()["items"]
    assert sorted(c["deviceId"] for c in items) == ["bulk-1", "bulk-2"]
    assert {c["status"] for c in items} == {"queued"}

    by_ids = await api.post(
        "/commands", json={"deviceIds": ["bulk-3", "bulk-1"], "name": "on", "params": {"l": 1}}
    )
    assert [c["deviceId"] for c in by_ids.json()["items"]] == ["bulk-3", "bulk-1"]

    unknown = await api.post("/commands", json={"deviceIds": ["bulk-1", "ghost-1"], "name": "on"})
    assert unknown.status_code == 404
    assert "ghost-1" in unknown.json()["error"]["message"]
    assert len((await api.get("/devices/bulk-1/commands")).json()["items"]) == 2  # none added

    both = await api.post("/commands", json={"deviceIds": ["bulk-1"], "model": "lamp", "name": "x"})
    neither = await api.post("/commands", json={"name": "x"})
    assert both.status_code == neither.status_code == 422
    empty = await api.post("/commands", json={"model": "no-such-model", "name": "x"})
    assert empty.json() == {"items": []}


async def test_unknown_duplicate_and_malformed_acks_change_nothing(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    device = await go_online(api, broker, "lamp-6", await provision(api, "lamp-6"))
    other = await go_online(api, broker, "lamp-7", await provision(api, "lamp-7"))
    command = (await api.post("/devices/lamp-6/commands", json={"name": "x"})).json()
    await next_message(device)
    # Another device cannot answer for it; unknown ids and junk are only recorded.
    await other.publish("paku/lamp-7/event/ack", json.dumps({"id": command["id"], "ok": False}))
    await device.publish("paku/lamp-6/event/ack", json.dumps({"id": "c-nope", "ok": True}))
    await device.publish("paku/lamp-6/event/ack", json.dumps({"id": 5, "ok": "yes"}))
    await device.publish("paku/lamp-6/event/ack", json.dumps({"id": command["id"], "ok": True}))
    await wait_status(api, "lamp-6", command["id"], "acked")
    await device.publish(
        "paku/lamp-6/event/ack", json.dumps({"id": command["id"], "ok": False, "error": "late"})
    )

    async def all_recorded() -> None:
        acks = (await api.get("/devices/lamp-6/events", params={"type": "ack"})).json()["items"]
        assert len(acks) == 4

    await eventually(all_recorded)
    final = await command_status(api, "lamp-6", command["id"])
    assert final["status"] == "acked"
    assert final["error"] is None
    assert (await api.get("/health")).json()["status"] == "ok"
    await device.disconnect()
    await other.disconnect()


async def test_mosquitto_command_line_device_answers_a_command(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    sub_tool, pub_tool = shutil.which("mosquitto_sub"), shutil.which("mosquitto_pub")
    require(sub_tool is not None and pub_tool is not None, "mosquitto clients not installed")
    password = await provision(api, "cli-1")
    auth = ["-h", broker.host, "-p", str(broker.port), "-u", "cli-1", "-P", password]
    # One connection at a time: the broker gives every connection of a device its device id
    # as client id, so each tool runs while no other holds the device's connection.
    online = await asyncio.create_subprocess_exec(
        str(pub_tool), *auth, "-q", "1", "-r", "-t", "paku/cli-1/state", "-m", '{"online": true}'
    )
    assert await online.wait() == 0
    listener = await asyncio.create_subprocess_exec(
        str(sub_tool),
        *auth,
        "-q",
        "1",
        "-C",
        "1",
        "-W",
        "20",
        "-t",
        "paku/cli-1/cmd",
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(0.3)  # let it subscribe
    command = (await api.post("/devices/cli-1/commands", json={"name": "beep"})).json()
    stdout, _ = await listener.communicate()
    received = json.loads(stdout)
    assert received["id"] == command["id"]
    ack = json.dumps({"id": received["id"], "ok": True, "result": "beeped"})
    answer = await asyncio.create_subprocess_exec(
        str(pub_tool), *auth, "-q", "1", "-t", "paku/cli-1/event/ack", "-m", ack
    )
    assert await answer.wait() == 0
    done = await wait_status(api, "cli-1", command["id"], "acked")
    assert done["result"] == "beeped"


async def test_command_list_pages_newest_first(api: httpx.AsyncClient) -> None:
    await provision(api, "lamp-8")
    made = [
        (await api.post("/devices/lamp-8/commands", json={"name": f"n{n}"})).json()["id"]
        for n in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/devices/lamp-8/commands", params=params)).json()
        seen.extend(c["id"] for c in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    bad = await api.get("/devices/lamp-8/commands", params={"cursor": "xyz"})
    assert bad.status_code == 422
    wrong_status = await api.get("/devices/lamp-8/commands", params={"status": "done"})
    assert wrong_status.status_code == 422
