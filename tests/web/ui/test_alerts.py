"""The alerts pages over plain HTTP on both databases: the alert list (open first, filters,
paging), one alert with its deliveries, acknowledging and silencing, the rules page with its
form (an error keeps the input, never the secret), enabling, disabling and deleting; open
alerts on the fleet and device pages; every action refused without a session or CSRF token,
and audited."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from paku_iot.alerts.rules import DestinationSpec, RuleSpec
from paku_iot.server.service import Role, Service, running_service
from paku_iot.settings import Settings
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.records import (
    AlertDeliveryAttempt,
    AlertEvent,
    AlertRuleRecord,
    AlertTransition,
)
from tests.support.ui import sign_in

SECRET = "hook-secret-never-on-a-page"
HOOK = DestinationSpec("webhook", "https://hooks.example/paku/path-stays-hidden", SECRET)
ALERT_ROW = re.compile(r'<tr id="alert-(\d+)" data-alert-id="\d+" data-state="(\w+)">')
RULE_ROW = re.compile(r'<tr id="rule-([^"]+)" data-rule-id=')
RULE_FORM = {
    "name": "too hot",
    "kind": "threshold",
    "scope": "device",
    "device_id": "kitchen-01",
    "field": "env.temp",
    "above": "80",
    "for_seconds": "60",
    # Leftovers in another kind's fields are ignored, as the form says.
    "per_minute": "12",
    "dest_type": "webhook",
    "dest_url": "https://hooks.example/paku",
    "dest_secret": SECRET,
}


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    """The API and dashboard alone. With a collector, its outbox would send these tests'
    notifications (to hosts that do not resolve here) and its evaluator would act on the
    alerts they open by hand; neither is the dashboard's to test."""
    async with running_service(settings, frozenset({Role.API})) as running:
        yield running


@pytest.fixture
def store(service: Service) -> AlertStore:
    # The evaluator's side, not part of the dashboard: transitions go straight to the store.
    return AlertStore(service.engine)


async def hot_rule(service: Service, **changes: object) -> AlertRuleRecord:
    fields: dict[str, object] = {
        "name": "too hot",
        "kind": "threshold",
        "field": "temp",
        "above": 80.0,
        "for_seconds": 60,
        "destinations": (HOOK,),
    } | changes
    return await service.alert_rules.create(RuleSpec(**fields))  # type: ignore[arg-type]


async def open_alert(
    store: AlertStore, rule: AlertRuleRecord, device: str, at: datetime, value: float = 91.5
) -> None:
    opened = AlertTransition(rule.id, device, AlertEvent.OPENED, at, {"value": value, "limit": 80})
    await store.apply([opened], lambda _: rule.destinations)


async def resolve_alert(
    store: AlertStore, rule: AlertRuleRecord, device: str, at: datetime
) -> None:
    resolved = AlertTransition(rule.id, device, AlertEvent.RESOLVED, at, {"value": 20})
    await store.apply([resolved], lambda _: rule.destinations)


async def audit_of(service: Service, action: str) -> list[tuple[str, str, dict[str, object]]]:
    rows = await service.audit.page(limit=50, before_id=None, action=action, target=None)
    return [(r.actor, r.target, r.details) for r in rows]


async def test_the_alerts_page_shows_open_alerts_first_then_history(
    ui: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    for device in ("kitchen-01", "porch-01", "attic-01"):
        await service.registry.provision(model="m", device_id=device)
    rule = await hot_rule(service)
    other = await hot_rule(
        service, name="gone quiet", kind="offline", field=None, above=None, for_seconds=0
    )
    t0 = datetime(2026, 12, 1, 9, 30, 5, tzinfo=UTC)
    await open_alert(store, rule, "kitchen-01", t0)
    await open_alert(store, rule, "porch-01", t0 + timedelta(minutes=1))
    await resolve_alert(store, rule, "porch-01", t0 + timedelta(minutes=2))
    await open_alert(store, other, "attic-01", t0 + timedelta(minutes=3))
    await sign_in(ui)

    page = await ui.get("/ui/alerts")
    assert page.status_code == 200
    assert '<a href="/ui/alerts" aria-current="page">Alerts</a>' in page.text
    rows = ALERT_ROW.findall(page.text)
    # The open ones (newest first), then the history.
    assert [state for _, state in rows] == ["open", "open", "resolved"]
    open_section, history = page.text.split('id="alert-history"')
    assert "attic-01" in open_section
    assert "kitchen-01" in open_section
    assert "porch-01" in history
    assert "2026-12-01 09:30:05 UTC" in page.text  # the dashboard's 24-hour UTC time
    assert "2026-12-01 09:32:05 UTC" in page.text  # porch-01 resolved
    assert "limit=80, value=91.5" in page.text
    assert '<a href="/ui/devices/kitchen-01">kitchen-01</a>' in page.text
    assert "gone quiet" in page.text
    assert "offline" in page.text
    assert SECRET not in page.text
    assert "path-stays-hidden" not in page.text

    def devices(html: str) -> list[str]:
        return re.findall(r'<td><a href="/ui/devices/[^"]+">([^<]+)</a></td>', html)

    only_open = await ui.get("/ui/alerts", params={"state": "open"})
    assert devices(only_open.text) == ["attic-01", "kitchen-01"]
    resolved = await ui.get("/ui/alerts", params={"state": "resolved"})
    assert devices(resolved.text) == ["porch-01"]
    by_device = await ui.get("/ui/alerts", params={"device": "kitchen-01"})
    assert devices(by_device.text) == ["kitchen-01"]
    assert "No resolved alerts." in by_device.text
    by_rule = await ui.get("/ui/alerts", params={"rule": other.id})
    assert devices(by_rule.text) == ["attic-01"]
    assert f'<option value="{other.id}" selected>' in by_rule.text
    assert (await ui.get("/ui/alerts", params={"state": "closed"})).status_code == 422
    assert (await ui.get("/ui/alerts", params={"before": 2**64})).status_code == 422


async def test_the_history_pages_by_opened_time(
    ui: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    rule = await hot_rule(service)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    for n in range(60):  # 60 alerts that opened and resolved one after the other
        await open_alert(store, rule, "kitchen-01", t0 + timedelta(minutes=2 * n))
        await resolve_alert(store, rule, "kitchen-01", t0 + timedelta(minutes=2 * n + 1))
    await sign_in(ui)
    first = await ui.get("/ui/alerts", params={"state": "resolved"})
    ids = [int(i) for i, _ in ALERT_ROW.findall(first.text)]
    assert len(ids) == 50
    assert ids == sorted(ids, reverse=True)
    older = re.search(r'<a href="([^"]+)" rel="next">Older', first.text)
    assert older
    second = await ui.get(older.group(1).replace("&amp;", "&"))
    rest = [int(i) for i, _ in ALERT_ROW.findall(second.text)]
    assert len(rest) == 10
    assert max(rest) < min(ids)
    assert 'rel="next"' not in second.text
    assert "&larr; Newest" in second.text


async def test_acknowledge_and_silence_from_the_page(
    ui: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    rule = await hot_rule(service)
    await open_alert(store, rule, "kitchen-01", datetime.now(UTC) - timedelta(minutes=5))
    [alert] = await service.alerts.open_alerts()
    csrf = await sign_in(ui)
    page = await ui.get("/ui/alerts")
    assert f'action="/ui/alerts/{alert.id}/acknowledge"' in page.text
    assert page.text.count(f'action="/ui/alerts/{alert.id}/silence"') == 1

    acked = await ui.post(
        f"/ui/alerts/{alert.id}/acknowledge",
        data={"csrf": csrf, "next": "/ui/alerts?state=open"},
    )
    assert acked.status_code == 303
    assert acked.headers["location"] == f"/ui/alerts?state=open#alert-{alert.id}"
    after = (await service.alerts.get(alert.id)).alert
    assert after.acknowledged_by == "admin"
    page = await ui.get("/ui/alerts")
    assert f'action="/ui/alerts/{alert.id}/acknowledge"' not in page.text  # done once
    assert "admin <span" in page.text

    # Only the offered lengths; and never back to another site.
    bad = await ui.post(f"/ui/alerts/{alert.id}/silence", data={"csrf": csrf, "seconds": "5"})
    assert bad.status_code == 422
    silenced = await ui.post(
        f"/ui/alerts/{alert.id}/silence",
        data={"csrf": csrf, "seconds": "86400", "next": "https://evil.example/"},
    )
    assert silenced.headers["location"] == f"/ui/alerts#alert-{alert.id}"
    until = (await service.alerts.get(alert.id)).alert.silenced_until
    assert until is not None
    assert timedelta(hours=23, minutes=59) < until - datetime.now(UTC) <= timedelta(days=1)
    page = await ui.get("/ui/alerts")
    assert until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") in page.text

    missing = await ui.post("/ui/alerts/999999/acknowledge", data={"csrf": csrf})
    assert missing.status_code == 404
    assert await audit_of(service, "alert.acknowledge") == [
        ("admin", f"alert:{alert.id}", {"via": "ui"})
    ]
    assert await audit_of(service, "alert.silence") == [
        ("admin", f"alert:{alert.id}", {"seconds": 86400, "via": "ui"})
    ]


async def test_one_alert_with_its_delivery_log(
    ui: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    rule = await hot_rule(service)
    at = datetime(2026, 12, 2, 18, 4, 0, tzinfo=UTC)
    await open_alert(store, rule, "kitchen-01", at)
    [alert] = await service.alerts.open_alerts()
    [(delivery, _)] = await service.alerts.deliveries(alert.id)
    await store.record_attempt(
        delivery.id,
        AlertDeliveryAttempt(delivery.id, at + timedelta(seconds=1), 503, "HTTP 503", 12.0),
        delivered=False,
        next_attempt_at=at + timedelta(seconds=30),
    )
    await store.record_attempt(
        delivery.id,
        AlertDeliveryAttempt(delivery.id, at + timedelta(seconds=31), 204, None, 8.0),
        delivered=True,
        next_attempt_at=None,
    )
    await sign_in(ui)
    listing = await ui.get("/ui/alerts")
    assert f'<a href="/ui/alerts/{alert.id}">Deliveries' in listing.text
    page = await ui.get(f"/ui/alerts/{alert.id}")
    assert page.status_code == 200
    assert "temp &gt; 80 for 60 s" in page.text
    assert "webhook" in page.text
    assert HOOK.url in page.text
    assert "2026-12-02 18:04:01 UTC: HTTP 503" in page.text
    assert "2026-12-02 18:04:31 UTC: HTTP 204" in page.text
    assert 'class="status status-delivered">delivered<' in page.text
    assert SECRET not in page.text
    assert (await ui.get("/ui/alerts/424242")).status_code == 404
    assert (await ui.get("/ui/alerts/0")).status_code == 422


async def test_rules_are_created_with_errors_shown_then_disabled_and_deleted(
    ui: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    csrf = await sign_in(ui)
    empty = await ui.get("/ui/alert-rules")
    assert "No rules yet." in empty.text
    assert '<a href="/ui/alert-rules" aria-current="page">Alert rules</a>' in empty.text

    # validate's message on the form, the input kept, the secret not.
    wrong = await ui.post(
        "/ui/alert-rules", data={"csrf": csrf, **RULE_FORM, "above": "", "below": ""}
    )
    assert wrong.status_code == 422
    assert "a threshold rule needs above, below or both" in wrong.text
    assert 'value="env.temp"' in wrong.text
    assert 'value="kitchen-01"' in wrong.text
    assert 'value="device" checked' in wrong.text
    assert SECRET not in wrong.text
    assert "enter it once more" in wrong.text
    not_a_number = await ui.post(
        "/ui/alert-rules", data={"csrf": csrf, **RULE_FORM, "above": "hot"}
    )
    assert not_a_number.status_code == 422
    assert "Above must be a number" in not_a_number.text
    no_device = await ui.post(
        "/ui/alert-rules", data={"csrf": csrf, **RULE_FORM, "device_id": "nobody-01"}
    )
    assert no_device.status_code == 404
    assert "no device &#39;nobody-01&#39;" in no_device.text
    bad_url = await ui.post("/ui/alert-rules", data={"csrf": csrf, **RULE_FORM, "dest_url": "x"})
    assert "destinations[0].url must be an absolute" in bad_url.text
    assert await service.alert_rules.page(limit=10) == []

    made = await ui.post("/ui/alert-rules", data={"csrf": csrf, **RULE_FORM})
    assert made.status_code == 303, made.text
    [rule] = await service.alert_rules.page(limit=10)
    assert made.headers["location"] == f"/ui/alert-rules?notice=created#rule-{rule.id}"
    assert (rule.device_id, rule.field, rule.above, rule.for_seconds) == (
        "kitchen-01",
        "env.temp",
        80.0,
        60.0,
    )
    assert rule.per_minute is None
    assert rule.destinations[0].secret == SECRET
    offline = await ui.post(
        "/ui/alert-rules",
        data={
            "csrf": csrf,
            "name": "lamps gone",
            "kind": "offline",
            "scope": "model",
            "model": "lamp",
            "field": "ignored",
            "dest_type": "ntfy",
            "dest_url": "https://ntfy.example/paku",
        },
    )
    assert offline.status_code == 303, offline.text

    page = await ui.get("/ui/alert-rules?notice=created")
    assert RULE_ROW.findall(page.text)[0] == rule.id
    assert "Rule created." in page.text
    assert "env.temp &gt; 80 for 60 s" in page.text
    assert 'device <a href="/ui/devices/kitchen-01">kitchen-01</a>' in page.text
    assert "model lamp" in page.text
    assert "offline, or silent for twice its reporting interval" in page.text
    assert "<li>webhook hooks.example</li>" in page.text
    assert "<li>ntfy ntfy.example</li>" in page.text
    assert SECRET not in page.text

    # An open alert is counted on its rule's row.
    await open_alert(store, rule, "kitchen-01", datetime.now(UTC))
    page = await ui.get("/ui/alert-rules")
    assert "1 open</a>" in page.text

    path = f"/ui/alert-rules/{rule.id}"
    disabled = await ui.post(f"{path}/enabled", data={"csrf": csrf, "enabled": "false"})
    assert disabled.status_code == 303
    assert not (await service.alert_rules.get(rule.id)).enabled
    page = await ui.get("/ui/alert-rules")
    assert '<span class="badge offline">disabled</span>' in page.text
    assert (await service.alert_rules.get(rule.id)).destinations[0].secret == SECRET
    enabled = await ui.post(f"{path}/enabled", data={"csrf": csrf, "enabled": "true"})
    assert enabled.status_code == 303
    assert (await service.alert_rules.get(rule.id)).enabled

    deleted = await ui.post(f"{path}/delete", data={"csrf": csrf})
    assert deleted.headers["location"] == "/ui/alert-rules?notice=deleted"
    assert [r.name for r in await service.alert_rules.page(limit=10)] == ["lamps gone"]
    assert await service.alerts.open_alerts() == []  # its alerts went with it
    assert (await ui.post(f"{path}/delete", data={"csrf": csrf})).status_code == 404

    created = await audit_of(service, "alert_rule.create")
    assert ("admin", rule.id, {"name": "too hot", "kind": "threshold", "via": "ui"}) in created
    assert await audit_of(service, "alert_rule.update") == [
        ("admin", rule.id, {"fields": ["enabled"], "via": "ui"}),
        ("admin", rule.id, {"fields": ["enabled"], "via": "ui"}),
    ]
    assert await audit_of(service, "alert_rule.delete") == [("admin", rule.id, {"via": "ui"})]
    for entry in created:
        assert SECRET not in str(entry)


async def test_open_alerts_on_the_fleet_and_device_pages(
    ui: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    for device in ("kitchen-01", "porch-01"):
        await service.registry.provision(model="m", device_id=device)
    await sign_in(ui)
    fleet = await ui.get("/ui/fleet")
    assert '<span class="count" id="count-open-alerts">0</span> open alerts' in fleet.text
    rule = await hot_rule(service)
    other = await hot_rule(service, name="too cold", above=None, below=5.0)
    since = datetime(2026, 12, 3, 7, 15, 0, tzinfo=UTC)
    await open_alert(store, rule, "kitchen-01", since)
    await open_alert(store, other, "kitchen-01", since + timedelta(minutes=1))
    await open_alert(store, rule, "porch-01", since)
    await resolve_alert(store, rule, "porch-01", since + timedelta(minutes=2))

    fleet = await ui.get("/ui/fleet")
    assert '<span class="count" id="count-open-alerts">2</span> open alerts' in fleet.text
    assert 'href="/ui/alerts?state=open" id="open-alerts-link"' in fleet.text
    live = await ui.get("/ui/fleet/live")
    assert 'id="count-open-alerts">2<' in live.text

    device = await ui.get("/ui/devices/kitchen-01")
    listed = device.text.split('id="device-open-alerts"')[1].split("</ul>")[0]
    assert "too hot" in listed
    assert "too cold" in listed
    assert "since <time" in listed
    assert "2026-12-03 07:15:00 UTC" in listed
    state = await ui.get("/ui/devices/kitchen-01/live", params={"part": "state"})
    assert "too cold" in state.text
    porch = await ui.get("/ui/devices/porch-01")
    assert '<p id="device-open-alerts">None.' in porch.text


ACTIONS = [
    ("/ui/alerts/1/acknowledge", {}),
    ("/ui/alerts/1/silence", {"seconds": "3600"}),
    ("/ui/alert-rules", RULE_FORM),
    ("/ui/alert-rules/ar-x/enabled", {"enabled": "false"}),
    ("/ui/alert-rules/ar-x/delete", {}),
]


async def test_signed_out_and_forged_requests_are_refused(
    ui: httpx.AsyncClient, service: Service, store: AlertStore
) -> None:
    await service.registry.provision(model="m", device_id="kitchen-01")
    rule = await hot_rule(service)
    await open_alert(store, rule, "kitchen-01", datetime.now(UTC))
    [alert] = await service.alerts.open_alerts()
    actions = [
        (path.replace("/1/", f"/{alert.id}/").replace("ar-x", rule.id), form)
        for path, form in ACTIONS
    ]
    for page in ("/ui/alerts", f"/ui/alerts/{alert.id}", "/ui/alert-rules"):
        response = await ui.get(page)
        assert response.status_code == 303, page
        assert response.headers["location"].startswith("/ui/signin?next=%2Fui%2Falert")
    for path, form in actions:
        assert (await ui.post(path, data={"csrf": "x", **form})).status_code == 401, path

    csrf = await sign_in(ui)
    for path, form in actions:
        assert (await ui.post(path, data={"csrf": "wrong", **form})).status_code == 403, path
        assert (await ui.post(path, data=form)).status_code == 403, path
        cross = await ui.post(
            path, data={"csrf": csrf, **form}, headers={"origin": "https://evil.example"}
        )
        assert cross.status_code == 403, path

    # Nothing changed.
    after = (await service.alerts.get(alert.id)).alert
    assert (after.acknowledged_at, after.silenced_until) == (None, None)
    assert (await service.alert_rules.get(rule.id)).enabled
    assert len(await service.alert_rules.page(limit=10)) == 1
    assert await audit_of(service, "alert.acknowledge") == []
