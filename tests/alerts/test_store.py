"""The alert store's guarantees, on both databases: one open alert per rule and device, the
outbox written with the transition (and not for a silenced alert), claims that never hand
one delivery to two workers, and what deleting a rule or a device takes with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.engine import create_engine
from paku_iot.storage.records import (
    AlertDeliveryAttempt,
    AlertDestination,
    AlertEvent,
    AlertKind,
    AlertRuleRecord,
    AlertState,
    AlertTransition,
    DestinationType,
    NewDevice,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOOK = AlertDestination(DestinationType.WEBHOOK, "http://hooks.example/a", "s3cret")
SLACK = AlertDestination(DestinationType.SLACK, "https://hooks.slack.example/b")


def rule(rule_id: str = "ar-1", **changes: object) -> AlertRuleRecord:
    fields: dict[str, object] = {
        "id": rule_id,
        "name": "too hot",
        "kind": AlertKind.THRESHOLD,
        "device_id": None,
        "model": None,
        "field": "temp",
        "above": 30.0,
        "below": None,
        "for_seconds": 0.0,
        "silence_seconds": None,
        "per_minute": None,
        "destinations": (HOOK, SLACK),
        "enabled": True,
        "created_at": T0,
        "updated_at": T0,
    } | changes
    return AlertRuleRecord(**fields)  # type: ignore[arg-type]


def opened(device: str = "dev-1", at: datetime = T0, rule_id: str = "ar-1") -> AlertTransition:
    return AlertTransition(rule_id, device, AlertEvent.OPENED, at, {"value": 31})


def resolved(device: str = "dev-1", at: datetime = T0, rule_id: str = "ar-1") -> AlertTransition:
    return AlertTransition(rule_id, device, AlertEvent.RESOLVED, at, {"value": 20})


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> AlertStore:
    alerts = AlertStore(engine)
    await alerts.create_rule(rule())
    return alerts


def destinations(rule_id: str) -> tuple[AlertDestination, ...]:
    return (HOOK, SLACK)


async def test_rules_round_trip_and_the_version_moves_on_every_change(store: AlertStore) -> None:
    stored = await store.get_rule("ar-1")
    assert stored == rule()
    first = await store.rules_version()
    assert first == (1, T0)

    later = T0 + timedelta(seconds=5)
    await store.create_rule(rule("ar-2", kind=AlertKind.OFFLINE, field=None, above=None))
    assert await store.rules_version() != first
    second = await store.rules_version()
    changed = await store.update_rule(rule("ar-2", enabled=False, updated_at=later))
    assert changed is not None
    assert changed.enabled is False
    assert changed.created_at == T0
    assert await store.rules_version() == (2, later)
    assert [r.id for r in await store.enabled_rules()] == ["ar-1"]
    assert second != (2, later)

    assert [r.id for r in await store.page_rules(limit=1)] == ["ar-1"]
    assert [r.id for r in await store.page_rules(limit=5, after=(T0, "ar-1"))] == ["ar-2"]

    assert await store.delete_rule("ar-2")
    assert await store.rules_version() == (1, T0)
    assert not await store.delete_rule("ar-2")
    assert await store.update_rule(rule("ar-9")) is None


async def test_a_duplicate_opened_opens_one_alert_with_one_set_of_deliveries(
    store: AlertStore,
) -> None:
    first = await store.apply([opened(), opened("dev-2")], destinations)
    assert [(a.device_id, a.state) for a in first] == [
        ("dev-1", AlertState.OPEN),
        ("dev-2", AlertState.OPEN),
    ]
    # Another replica, or a restarted evaluator, decides the same again: nothing changes.
    again = await store.apply([opened(at=T0 + timedelta(seconds=1))], destinations)
    assert again == []
    # Two at once, racing on two connections: still one.
    results = await asyncio.gather(
        *(store.apply([opened("dev-3")], destinations) for _ in range(4))
    )
    assert sum(len(r) for r in results) == 1

    open_now = await store.open_alerts()
    assert sorted(a.device_id for a in open_now) == ["dev-1", "dev-2", "dev-3"]
    assert [a.device_id for a in await store.open_alerts(device_id="dev-2")] == ["dev-2"]
    alert = first[0]
    deliveries = await store.deliveries(alert.id)
    assert [(d.event, d.destination, d.state, d.attempts) for d, _ in deliveries] == [
        (AlertEvent.OPENED, HOOK, "pending", 0),
        (AlertEvent.OPENED, SLACK, "pending", 0),
    ]


async def test_resolving_enqueues_resolved_deliveries_and_allows_a_new_alert(
    store: AlertStore,
) -> None:
    [alert] = await store.apply([opened()], destinations)
    assert await store.apply([resolved("dev-9")], destinations) == []  # nothing open there
    later = T0 + timedelta(minutes=1)
    [done] = await store.apply([resolved(at=later)], destinations)
    assert done.id == alert.id
    assert done.state is AlertState.RESOLVED
    assert done.resolved_at == later
    assert done.opened_at == T0
    events = [d.event for d, _ in await store.deliveries(alert.id)]
    assert events == [AlertEvent.OPENED] * 2 + [AlertEvent.RESOLVED] * 2
    assert await store.apply([resolved(at=later)], destinations) == []

    [second] = await store.apply([opened(at=later + timedelta(minutes=1))], destinations)
    assert second.id != alert.id
    assert await store.open_alerts() == [second]


async def test_a_silenced_alert_opens_and_resolves_without_notifications(
    store: AlertStore,
) -> None:
    [alert] = await store.apply([opened()], destinations)
    silenced = await store.silence(alert.id, T0 + timedelta(hours=1))
    assert silenced is not None
    assert silenced.silenced_until == T0 + timedelta(hours=1)
    [done] = await store.apply([resolved(at=T0 + timedelta(minutes=5))], destinations)
    assert done.state is AlertState.RESOLVED
    assert len(await store.deliveries(alert.id)) == 2  # the opening ones only

    # It flaps: the silence carries to the next alert of the rule and device while it lasts.
    [reopened] = await store.apply([opened(at=T0 + timedelta(minutes=10))], destinations)
    assert reopened.silenced_until == T0 + timedelta(hours=1)
    assert await store.deliveries(reopened.id) == []
    await store.apply([resolved(at=T0 + timedelta(minutes=11))], destinations)
    [after] = await store.apply([opened(at=T0 + timedelta(hours=2))], destinations)
    assert after.silenced_until is None
    assert len(await store.deliveries(after.id)) == 2


async def test_acknowledge_keeps_the_first_and_unknown_ids_are_none(store: AlertStore) -> None:
    [alert] = await store.apply([opened()], destinations)
    first = await store.acknowledge(alert.id, "alice", T0 + timedelta(seconds=1))
    assert first is not None
    assert (first.acknowledged_by, first.acknowledged_at) == ("alice", T0 + timedelta(seconds=1))
    second = await store.acknowledge(alert.id, "bob", T0 + timedelta(seconds=2))
    assert second == first
    assert await store.acknowledge(999, "bob", T0) is None
    assert await store.silence(999, T0) is None
    assert await store.get_alert(999) is None


async def test_paging_newest_first_with_filters(store: AlertStore) -> None:
    for n in range(5):
        at = T0 + timedelta(minutes=n)
        await store.apply([opened(f"dev-{n % 2}", at)], destinations)
        await store.apply([resolved(f"dev-{n % 2}", at + timedelta(seconds=1))], destinations)
    await store.apply([opened("dev-0", T0 + timedelta(minutes=9))], destinations)
    page = await store.page_alerts(limit=4)
    assert [a.opened_at.minute for a in page] == [9, 4, 3, 2]
    rest = await store.page_alerts(limit=4, before=(page[-1].opened_at, page[-1].id))
    assert [a.opened_at.minute for a in rest] == [1, 0]
    dev0 = await store.page_alerts(limit=10, device_id="dev-0", state=AlertState.RESOLVED)
    assert [a.opened_at.minute for a in dev0] == [4, 2, 0]
    assert await store.page_alerts(limit=10, rule_id="ar-0") == []


async def test_deleting_a_rule_or_a_device_takes_its_alerts_and_deliveries(
    store: AlertStore, engine: AsyncEngine
) -> None:
    devices = DeviceStore(engine)
    await devices.insert(NewDevice("dev-1", "lamp", None, {}, T0, None))
    [a1, a2] = await store.apply([opened("dev-1"), opened("dev-2")], destinations)
    assert await devices.delete("dev-1")
    assert await store.get_alert(a1.id) is None
    assert await store.deliveries(a1.id) == []
    assert await store.get_alert(a2.id) is not None

    assert await store.delete_rule("ar-1")
    assert await store.get_alert(a2.id) is None
    assert await store.claim_due_deliveries(T0 + timedelta(days=1), 10) == []
    # A transition of the deleted rule, from an evaluator that has not reloaded yet.
    assert await store.apply([opened("dev-2")], destinations) == []


async def test_claims_lease_and_attempts_settle(store: AlertStore) -> None:
    [alert] = await store.apply([opened()], destinations)
    assert await store.claim_due_deliveries(T0 - timedelta(seconds=1), 10) == []
    claimed = await store.claim_due_deliveries(T0, 10, lease=timedelta(seconds=30))
    assert [d.destination for d in claimed] == [HOOK, SLACK]
    assert all(d.next_attempt_at == T0 + timedelta(seconds=30) for d in claimed)
    # Leased: not handed out again until the lease runs out.
    assert await store.claim_due_deliveries(T0 + timedelta(seconds=29), 10) == []

    hook, slack = claimed
    ok = AlertDeliveryAttempt(hook.id, T0 + timedelta(seconds=1), 200, None, 12.5)
    done = await store.record_attempt(hook.id, ok, delivered=True, next_attempt_at=None)
    assert done is not None
    assert (done.state, done.attempts, done.last_status) == ("delivered", 1, 200)
    assert done.delivered_at == ok.at
    assert done.next_attempt_at is None

    retry_at = T0 + timedelta(seconds=5)
    refused = AlertDeliveryAttempt(slack.id, T0 + timedelta(seconds=1), None, "refused", 1.0)
    retried = await store.record_attempt(
        slack.id, refused, delivered=False, next_attempt_at=retry_at
    )
    assert retried is not None
    assert (retried.state, retried.attempts, retried.next_attempt_at) == ("pending", 1, retry_at)
    assert [d.id for d in await store.claim_due_deliveries(retry_at, 10)] == [slack.id]
    failed = AlertDeliveryAttempt(slack.id, retry_at, 500, "HTTP 500", 3.0)
    gave_up = await store.record_attempt(
        slack.id, failed, delivered=False, next_attempt_at=None, give_up=True
    )
    assert gave_up is not None
    assert gave_up.state == "failed"
    assert gave_up.attempts == 2

    # A late attempt on a settled delivery is logged, the state stays.
    late = await store.record_attempt(hook.id, failed, delivered=False, next_attempt_at=retry_at)
    assert late is not None
    assert late.state == "delivered"
    assert late.attempts == 1
    listed = dict(await store.deliveries(alert.id))
    assert [a.status_code for a in listed[gave_up]] == [None, 500]
    assert await store.claim_due_deliveries(T0 + timedelta(days=1), 10) == []
    assert await store.record_attempt(999, ok, delivered=True, next_attempt_at=None) is None


async def test_concurrent_claimers_never_get_the_same_delivery(store: AlertStore) -> None:
    await store.apply([opened(f"dev-{n}") for n in range(30)], destinations)  # 60 deliveries

    async def claimer() -> list[int]:
        got: list[int] = []
        while batch := await store.claim_due_deliveries(T0, 3):
            got.extend(d.id for d in batch)
        return got

    results = await asyncio.gather(*(claimer() for _ in range(6)))
    claimed = [i for r in results for i in r]
    assert len(claimed) == 60
    assert len(set(claimed)) == 60


# Row locks are PostgreSQL's; SQLite has one writer at a time.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_delivery_being_claimed_elsewhere_is_skipped_not_waited_for(
    store: AlertStore, engine: AsyncEngine
) -> None:
    await store.apply([opened()], destinations)
    async with engine.connect() as other:
        # Another worker's claim in flight: it holds the first delivery's row lock.
        await other.execute(text("SELECT id FROM alert_deliveries ORDER BY id LIMIT 1 FOR UPDATE"))
        claimed = await asyncio.wait_for(store.claim_due_deliveries(T0, 10), timeout=5)
        assert len(claimed) == 1
        first = (await other.execute(text("SELECT min(id) FROM alert_deliveries"))).scalar()
        assert claimed[0].id != first
        await other.rollback()
