"""The alert API on both databases: rules made, listed, changed and deleted, each mistake
refused with a message that names it, secrets never answered, every change audited; and the
alert history with acknowledgement, silencing and the delivery log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from paku_iot.server.service import Role, Service, running_service
from paku_iot.settings import Settings
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.records import (
    AlertDeliveryAttempt,
    AlertEvent,
    AlertTransition,
)
from paku_iot.web.api.cursors import encode_cursor

SECRET = "hook-secret-do-not-show"
HOOK = {"type": "webhook", "url": "https://hooks.example/paku", "secret": SECRET}
NTFY = {"type": "ntfy", "url": "https://ntfy.example/paku-alerts"}
HOT = {
    "name": "too hot",
    "kind": "threshold",
    "field": "env.temp",
    "above": 30,
    "forSeconds": 60,
    "destinations": [HOOK, NTFY],
}


async def audit_trail(api: httpx.AsyncClient, action: str) -> list[tuple[str, str, Any]]:
    items = (await api.get("/audit", params={"action": action})).json()["items"]
    return [(e["actor"], e["target"], e["details"]) for e in items]


async def test_rules_are_made_listed_changed_and_deleted(api: httpx.AsyncClient) -> None:
    created = await api.post("/alert-rules", json=HOT)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert SECRET not in created.text
    assert rule["id"].startswith("ar-")
    assert rule["destinations"] == [
        {"type": "webhook", "url": HOOK["url"], "hasSecret": True},
        {"type": "ntfy", "url": NTFY["url"], "hasSecret": False},
    ]
    assert {k: rule[k] for k in ("kind", "field", "above", "below", "forSeconds", "enabled")} == {
        "kind": "threshold",
        "field": "env.temp",
        "above": 30,
        "below": None,
        "forSeconds": 60,
        "enabled": True,
    }
    assert rule["deviceId"] is None
    assert rule["model"] is None
    rule_id = rule["id"]

    offline = {"name": "gone", "kind": "offline", "model": "lamp", "destinations": [NTFY]}
    second = (await api.post("/alert-rules", json=offline)).json()
    assert second["silenceSeconds"] is None
    assert second["forSeconds"] == 0

    fetched = await api.get(f"/alert-rules/{rule_id}")
    assert fetched.json() == rule
    first_page = (await api.get("/alert-rules", params={"limit": 1})).json()
    assert [r["id"] for r in first_page["items"]] == [rule_id]
    assert first_page["next"]
    rest = (await api.get("/alert-rules", params={"limit": 1, "cursor": first_page["next"]})).json()
    assert [r["id"] for r in rest["items"]] == [second["id"]]
    assert SECRET not in (await api.get("/alert-rules")).text

    patched = await api.patch(f"/alert-rules/{rule_id}", json={"below": -5, "enabled": False})
    assert patched.status_code == 200, patched.text
    changed = patched.json()
    assert (changed["above"], changed["below"], changed["enabled"]) == (30, -5, False)
    assert changed["name"] == "too hot"
    assert changed["destinations"] == rule["destinations"]  # kept, secret and all
    assert changed["updatedAt"] > rule["updatedAt"]
    assert changed["createdAt"] == rule["createdAt"]

    # Another kind: the old kind's fields must go in the same change.
    half = await api.patch(f"/alert-rules/{rule_id}", json={"kind": "ota_failed"})
    assert half.status_code == 422
    assert "above, below, field, forSeconds not allowed in ota_failed rules" in half.text
    whole = await api.patch(
        f"/alert-rules/{rule_id}",
        json={
            "kind": "ota_failed",
            "field": None,
            "above": None,
            "below": None,
            "forSeconds": None,
        },
    )
    assert whole.status_code == 200, whole.text
    assert whole.json()["kind"] == "ota_failed"
    assert whole.json()["forSeconds"] == 0

    assert (await api.delete(f"/alert-rules/{rule_id}")).status_code == 204
    gone = await api.get(f"/alert-rules/{rule_id}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "alert_rule_not_found"
    assert (await api.delete(f"/alert-rules/{rule_id}")).status_code == 404
    missing = await api.patch(f"/alert-rules/{rule_id}", json={"name": "x"})
    assert missing.status_code == 404

    assert await audit_trail(api, "alert_rule.create") == [
        ("admin", second["id"], {"name": "gone", "kind": "offline"}),
        ("admin", rule_id, {"name": "too hot", "kind": "threshold"}),
    ]
    assert [t[2] for t in await audit_trail(api, "alert_rule.update")] == [
        {"fields": ["above", "below", "field", "forSeconds", "kind"]},
        {"fields": ["below", "enabled"]},
    ]
    assert await audit_trail(api, "alert_rule.delete") == [("admin", rule_id, {})]
    everything = (await api.get("/audit", params={"limit": 1000})).text
    assert SECRET not in everything


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"kind": "smoke"}, "kind: Input should be"),
    ({"name": "  "}, "name must be 1-100 characters"),
    ({"name": "x" * 101}, "name must be 1-100 characters"),
    ({"field": None}, "field is required for a threshold rule"),
    ({"field": "env..temp"}, "dots only between names"),
    ({"above": None}, "a threshold rule needs above, below or both"),
    ({"above": 10, "below": 20}, "below must be less than above"),
    ({"forSeconds": -1}, "forSeconds must be between 0 and 604800"),
    ({"perMinute": 5}, "perMinute not allowed in threshold rules"),
    ({"silenceSeconds": 5}, "silenceSeconds not allowed in threshold rules"),
    ({"deviceId": "lamp-1", "model": "lamp"}, "give one of deviceId, model and tag"),
    ({"model": "lamp", "tag": "roof"}, "give one of deviceId, model and tag"),
    ({"tag": "Roof Top"}, "tag must be 1-32 characters of a-z"),
    ({"deviceId": "a b"}, "deviceId must be 3-64 characters"),
    ({"destinations": []}, "destinations must list 1-10 destinations"),
    ({"destinations": [NTFY] * 11}, "destinations must list 1-10 destinations"),
    ({"destinations": [{"type": "email", "url": "https://x.example"}]}, "destinations.0.type"),
    ({"destinations": [{"type": "webhook", "url": "ftp://x.example"}]}, "destinations[0].url"),
    ({"destinations": [{"type": "slack", "url": "/relative"}]}, "absolute http:// or https://"),
    (
        {"destinations": [NTFY, {"type": "slack", "url": "https://s.example", "secret": "s"}]},
        "destinations[1].secret is for webhook destinations only",
    ),
    ({"destinations": [HOOK | {"secret": ""}]}, "destinations[0].secret must be 1-200"),
    ({"wat": 1}, "wat: Extra inputs are not permitted"),
]


async def test_each_mistake_is_refused_with_a_message_naming_it(api: httpx.AsyncClient) -> None:
    for change, message in INVALID:
        response = await api.post("/alert-rules", json=HOT | change)
        assert response.status_code == 422, (change, response.text)
        assert message in response.json()["error"]["message"], (change, response.text)

    for body, message in [
        ({"name": "x", "kind": "rejected_rate", "destinations": [NTFY]}, "perMinute is required"),
        (
            {"name": "x", "kind": "rejected_rate", "perMinute": 0, "destinations": [NTFY]},
            "perMinute must be between 1 and",
        ),
        (
            {"name": "x", "kind": "offline", "silenceSeconds": 0, "destinations": [NTFY]},
            "silenceSeconds must be above 0",
        ),
        ({"name": "x", "kind": "offline", "field": "t", "destinations": [NTFY]}, "field not"),
    ]:
        response = await api.post("/alert-rules", json=body)
        assert response.status_code == 422, (body, response.text)
        assert message in response.json()["error"]["message"], (body, response.text)

    unknown = await api.post("/alert-rules", json=HOT | {"deviceId": "ghost-1"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {"code": "device_not_found", "message": "no device 'ghost-1'"}
    await api.post("/devices", json={"model": "lamp", "id": "lamp-1"})
    scoped = await api.post("/alert-rules", json=HOT | {"deviceId": "lamp-1"})
    assert scoped.status_code == 201, scoped.text
    rule_id = scoped.json()["id"]
    for body, status in [({}, 422), ({"name": None}, 422), ({"above": 1, "below": 2}, 422)]:
        response = await api.patch(f"/alert-rules/{rule_id}", json=body)
        assert response.status_code == status, (body, response.text)
    assert (await api.get("/alert-rules")).json()["items"][0]["above"] == 30
    assert await audit_trail(api, "alert_rule.update") == []


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    """The API alone: a collector's outbox worker would claim and send the deliveries that
    these tests claim and record by hand."""
    async with running_service(settings, frozenset({Role.API})) as running:
        yield running


@pytest.fixture
def store(service: Service) -> AlertStore:
    # The evaluator's side, which this part of the work does not include: transitions are
    # applied straight to the store.
    return AlertStore(service.engine)


async def test_alerts_are_listed_acknowledged_silenced_and_their_deliveries_shown(
    api: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    rule = (await api.post("/alert-rules", json=HOT)).json()
    rule_record = await service.alert_rules.get(rule["id"])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for n in range(3):
        at = t0 + timedelta(minutes=n)
        opened = AlertTransition(rule["id"], f"dev-{n}", AlertEvent.OPENED, at, {"value": 31 + n})
        await store.apply([opened], lambda _: rule_record.destinations)
    resolved = AlertTransition(
        rule["id"], "dev-0", AlertEvent.RESOLVED, t0 + timedelta(minutes=5), {}
    )
    await store.apply([resolved], lambda _: rule_record.destinations)

    page = (await api.get("/alerts", params={"limit": 2})).json()
    assert [a["deviceId"] for a in page["items"]] == ["dev-2", "dev-1"]
    more = (await api.get("/alerts", params={"limit": 2, "cursor": page["next"]})).json()
    assert [a["deviceId"] for a in more["items"]] == ["dev-0"]
    assert more["next"] is None
    [first] = more["items"]
    assert set(first) == {
        "id",
        "ruleId",
        "name",
        "kind",
        "deviceId",
        "state",
        "openedAt",
        "resolvedAt",
        "values",
        "acknowledgedAt",
        "acknowledgedBy",
        "silencedUntil",
    }
    assert (first["ruleId"], first["name"], first["kind"]) == (rule["id"], "too hot", "threshold")
    assert (first["state"], first["values"]) == ("resolved", {"value": 31})
    assert datetime.fromisoformat(first["resolvedAt"]) == t0 + timedelta(minutes=5)
    opens = (await api.get("/alerts", params={"state": "open"})).json()["items"]
    assert [a["deviceId"] for a in opens] == ["dev-2", "dev-1"]
    by_device = (await api.get("/alerts", params={"deviceId": "dev-1"})).json()["items"]
    assert [a["id"] for a in by_device] == [opens[1]["id"]]
    assert (await api.get("/alerts", params={"ruleId": "ar-none"})).json()["items"] == []
    assert (await api.get("/alerts", params={"state": "closed"})).status_code == 422
    assert (await api.get("/alerts", params={"cursor": "nonsense!"})).status_code == 422
    forged = encode_cursor(t0, 2**70)
    assert (await api.get("/alerts", params={"cursor": forged})).status_code == 422

    alert_id = first["id"]
    assert (await api.get(f"/alerts/{alert_id}")).json() == first
    acked = (await api.post(f"/alerts/{alert_id}/acknowledge")).json()
    assert acked["acknowledgedBy"] == "admin"
    assert acked["acknowledgedAt"] is not None
    silenced = await api.post(f"/alerts/{alert_id}/silence", json={"seconds": 3600})
    assert silenced.status_code == 200, silenced.text
    until = datetime.fromisoformat(silenced.json()["silencedUntil"])
    assert timedelta(minutes=59) < until - datetime.now(UTC) <= timedelta(hours=1)
    for seconds in (0, 7 * 24 * 3600 + 1):
        refused = await api.post(f"/alerts/{alert_id}/silence", json={"seconds": seconds})
        assert refused.status_code == 422
        assert "seconds must be between 1 and 604800" in refused.text
    assert await audit_trail(api, "alert.acknowledge") == [("admin", f"alert:{alert_id}", {})]
    assert await audit_trail(api, "alert.silence") == [
        ("admin", f"alert:{alert_id}", {"seconds": 3600})
    ]

    [hook, *_] = await store.claim_due_deliveries(datetime.now(UTC), 100)
    failed = AlertDeliveryAttempt(hook.id, t0, None, "connection refused", 3.5)
    await store.record_attempt(hook.id, failed, delivered=False, next_attempt_at=t0)
    ok = AlertDeliveryAttempt(hook.id, t0 + timedelta(seconds=2), 204, None, 8.25)
    await store.record_attempt(hook.id, ok, delivered=True, next_attempt_at=None)
    shown = await api.get(f"/alerts/{alert_id}/deliveries")
    assert shown.status_code == 200
    assert SECRET not in shown.text
    items = shown.json()["items"]
    assert [(d["event"], d["destination"]["type"], d["state"]) for d in items] == [
        ("opened", "webhook", "delivered"),
        ("opened", "ntfy", "pending"),
        ("resolved", "webhook", "pending"),
        ("resolved", "ntfy", "pending"),
    ]
    delivered = items[0]
    assert delivered["destination"] == {"type": "webhook", "url": HOOK["url"]}
    assert (delivered["attempts"], delivered["lastStatus"], delivered["lastError"]) == (
        2,
        204,
        None,
    )
    assert [(a["statusCode"], a["error"], a["durationMs"]) for a in delivered["attemptLog"]] == [
        (None, "connection refused", 3.5),
        (204, None, 8.25),
    ]
    assert json.loads(shown.text)["items"][1]["attemptLog"] == []

    for method, path in [
        ("GET", "/alerts/999999"),
        ("POST", "/alerts/999999/acknowledge"),
        ("GET", "/alerts/999999/deliveries"),
    ]:
        response = await api.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "alert_not_found"
    response = await api.post("/alerts/999999/silence", json={"seconds": 5})
    assert response.status_code == 404
    assert (await api.get("/alerts/abc")).status_code == 422
    assert (await api.get(f"/alerts/{2**64}")).status_code == 422

    # Deleting the rule takes its alerts with it.
    assert (await api.delete(f"/alert-rules/{rule['id']}")).status_code == 204
    assert (await api.get("/alerts")).json()["items"] == []
