"""The alert evaluator on real records: every kind, scope, durations, silence learning, a
restart, no duplicate, disabled and changed rules. Pure logic: no broker, no database."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from paku_iot.alerts.evaluate import AlertEvaluator
from paku_iot.storage.records import (
    AlertEvent,
    AlertKind,
    AlertRuleRecord,
    AlertTransition,
    EventRecord,
    IngestBatch,
    RejectedRecord,
    StateReport,
    TelemetryRecord,
)

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(
    rule_id: str,
    kind: AlertKind,
    *,
    device_id: str | None = None,
    model: str | None = None,
    tag: str | None = None,
    field: str | None = None,
    above: float | None = None,
    below: float | None = None,
    for_seconds: float = 0,
    silence_seconds: float | None = None,
    per_minute: int | None = None,
    enabled: bool = True,
) -> AlertRuleRecord:
    return AlertRuleRecord(
        id=rule_id,
        name=f"rule {rule_id}",
        kind=kind,
        device_id=device_id,
        model=model,
        field=field,
        above=above,
        below=below,
        for_seconds=for_seconds,
        silence_seconds=silence_seconds,
        per_minute=per_minute,
        destinations=(),
        enabled=enabled,
        created_at=T0,
        updated_at=T0,
        tag=tag,
    )


def hot(rule_id: str = "hot", **kwargs: Any) -> AlertRuleRecord:
    return rule(rule_id, AlertKind.THRESHOLD, field="temp", above=80, **kwargs)


def telemetry(device: str, seconds: float, **payload: Any) -> TelemetryRecord:
    return TelemetryRecord(
        device_id=device, ts=at(seconds), received_at=at(seconds), payload=payload
    )


def event(device: str, seconds: float, type_: str, **payload: Any) -> EventRecord:
    return EventRecord(
        device_id=device,
        type=type_,
        ts=at(seconds),
        received_at=at(seconds),
        payload=payload,
        digest=f"{device}-{seconds}",
    )


def state(device: str, seconds: float, *, online: bool, live: bool = True) -> StateReport:
    return StateReport(
        device_id=device, received_at=at(seconds), payload={"online": online}, live=live
    )


def rejected(device: str | None, seconds: float) -> RejectedRecord:
    return RejectedRecord(
        received_at=at(seconds),
        topic=f"paku/{device}/telemetry",
        device_id=device,
        reason="bad_json",
        detail="not JSON",
        payload=b"{",
        payload_size=1,
    )


def observe(evaluator: AlertEvaluator, *records: Any) -> list[AlertTransition]:
    batch = IngestBatch()
    for record in records:
        if isinstance(record, TelemetryRecord):
            batch.telemetry.append(record)
        elif isinstance(record, EventRecord):
            batch.events.append(record)
        elif isinstance(record, StateReport):
            batch.states.append(record)
        else:
            batch.rejected.append(record)
    now = max((getattr(r, "received_at", T0) for r in records), default=T0)
    return evaluator.observe(batch, now)


def events(transitions: list[AlertTransition]) -> list[tuple[str, str, str]]:
    return [(t.rule_id, t.device_id, t.event.value) for t in transitions]


# ---- threshold ---------------------------------------------------------------------------


def test_threshold_opens_at_once_and_resolves_back_in_range() -> None:
    evaluator = AlertEvaluator([hot()])
    assert observe(evaluator, telemetry("kitchen-01", 0, temp=79.9)) == []
    opened = observe(evaluator, telemetry("kitchen-01", 1, temp=81.2))
    assert events(opened) == [("hot", "kitchen-01", "opened")]
    assert opened[0].at == at(1)
    assert opened[0].values == {
        "field": "temp",
        "value": 81.2,
        "above": 80,
        "below": None,
        "forSeconds": 0,
        "ts": "2026-12-01T12:00:01Z",
    }
    # Still hot: no second `opened`.
    assert observe(evaluator, telemetry("kitchen-01", 2, temp=90)) == []
    resolved = observe(evaluator, telemetry("kitchen-01", 3, temp=80))  # not strictly above
    assert events(resolved) == [("hot", "kitchen-01", "resolved")]
    assert resolved[0].values["value"] == 80
    assert observe(evaluator, telemetry("kitchen-01", 4, temp=70)) == []


def test_threshold_below_and_range() -> None:
    evaluator = AlertEvaluator(
        [
            rule("cold", AlertKind.THRESHOLD, field="temp", below=5),
            rule("band", AlertKind.THRESHOLD, field="temp", above=30, below=10),
        ]
    )
    assert events(observe(evaluator, telemetry("d1", 0, temp=4))) == [
        ("cold", "d1", "opened"),
        ("band", "d1", "opened"),
    ]
    assert sorted(events(observe(evaluator, telemetry("d1", 1, temp=20)))) == [
        ("band", "d1", "resolved"),
        ("cold", "d1", "resolved"),
    ]
    assert events(observe(evaluator, telemetry("d1", 2, temp=31))) == [("band", "d1", "opened")]


def test_threshold_nested_field_and_values_that_decide_nothing() -> None:
    evaluator = AlertEvaluator([rule("p", AlertKind.THRESHOLD, field="env.pressure", above=1)])
    for payload in (
        {"env": {"pressure": "high"}},
        {"env": {"pressure": True}},
        {"env": {"pressure": None}},
        {"env": {"other": 5}},
        {"env": 5},
        {"pressure": 5},
        {"env": {"pressure": float("nan")}},
    ):
        record = TelemetryRecord("d1", T0, T0, payload)
        assert observe(evaluator, record) == [], payload
    assert events(observe(evaluator, telemetry("d1", 1, env={"pressure": 2}))) == [
        ("p", "d1", "opened")
    ]
    # A missing value neither resolves nor reopens.
    assert observe(evaluator, telemetry("d1", 2, other=1)) == []
    assert evaluator.is_open("p", "d1")


def test_bool_is_no_reading() -> None:
    evaluator = AlertEvaluator([rule("b", AlertKind.THRESHOLD, field="on", below=0.5)])
    assert observe(evaluator, telemetry("d1", 0, on=False)) == []
    assert events(observe(evaluator, telemetry("d1", 1, on=0))) == [("b", "d1", "opened")]


def test_threshold_for_seconds_opens_on_a_later_sample() -> None:
    evaluator = AlertEvaluator([hot(for_seconds=10)])
    assert observe(evaluator, telemetry("d1", 0, temp=85)) == []
    assert observe(evaluator, telemetry("d1", 5, temp=86)) == []
    opened = observe(evaluator, telemetry("d1", 10, temp=87))
    assert events(opened) == [("hot", "d1", "opened")]
    assert opened[0].values["value"] == 87
    assert opened[0].values["forSeconds"] == 10


def test_threshold_for_seconds_back_in_range_resets_the_timer() -> None:
    evaluator = AlertEvaluator([hot(for_seconds=10)])
    observe(evaluator, telemetry("d1", 0, temp=85))
    observe(evaluator, telemetry("d1", 6, temp=70))
    assert observe(evaluator, telemetry("d1", 8, temp=85)) == []
    assert observe(evaluator, telemetry("d1", 12, temp=85)) == []  # 4 s, not 12
    assert evaluator.tick(at(17)) == []
    assert events(observe(evaluator, telemetry("d1", 18, temp=85))) == [("hot", "d1", "opened")]


def test_threshold_for_seconds_opens_on_tick_without_a_new_sample() -> None:
    evaluator = AlertEvaluator([hot(for_seconds=10)])
    observe(evaluator, telemetry("d1", 0, temp=85))
    assert evaluator.tick(at(9.5)) == []
    opened = evaluator.tick(at(10.2))
    assert events(opened) == [("hot", "d1", "opened")]
    assert opened[0].at == at(10.2)
    assert opened[0].values["value"] == 85
    assert evaluator.tick(at(20)) == []
    assert observe(evaluator, telemetry("d1", 21, temp=99)) == []


# ---- scope -------------------------------------------------------------------------------


def test_scope_device_model_and_all() -> None:
    evaluator = AlertEvaluator(
        [
            hot("one", device_id="d1"),
            hot("boilers", model="boiler"),
            hot("all"),
        ],
        devices={"d1": "sensor", "d2": "boiler", "d3": "sensor"},
    )
    assert sorted(events(observe(evaluator, telemetry("d1", 0, temp=99)))) == [
        ("all", "d1", "opened"),
        ("one", "d1", "opened"),
    ]
    assert sorted(events(observe(evaluator, telemetry("d2", 0, temp=99)))) == [
        ("all", "d2", "opened"),
        ("boilers", "d2", "opened"),
    ]
    assert events(observe(evaluator, telemetry("d3", 0, temp=99))) == [("all", "d3", "opened")]
    # A device the map does not know yet: only the rules for every device.
    assert events(observe(evaluator, telemetry("d9", 0, temp=99))) == [("all", "d9", "opened")]
    evaluator.set_device_models({"d9": "boiler"})
    assert events(observe(evaluator, telemetry("d9", 1, temp=99))) == [("boilers", "d9", "opened")]


def test_disabled_rules_do_nothing() -> None:
    evaluator = AlertEvaluator(
        [
            hot(enabled=False),
            rule("off", AlertKind.OFFLINE, silence_seconds=5, enabled=False),
            rule("ota", AlertKind.OTA_FAILED, enabled=False),
            rule("rej", AlertKind.REJECTED_RATE, per_minute=0, enabled=False),
        ]
    )
    assert (
        observe(
            evaluator,
            telemetry("d1", 0, temp=99),
            event("d1", 0, "ota", status="failed", version="1.2.0"),
            state("d1", 1, online=False),
            rejected("d1", 1),
        )
        == []
    )
    assert evaluator.tick(at(100)) == []


# ---- offline -----------------------------------------------------------------------------


def test_last_will_opens_and_coming_back_resolves() -> None:
    evaluator = AlertEvaluator([rule("off", AlertKind.OFFLINE)])
    observe(evaluator, telemetry("d1", 0, temp=20))
    opened = observe(evaluator, state("d1", 3, online=False))
    assert events(opened) == [("off", "d1", "opened")]
    assert opened[0].values == {"lastSeenAt": "2026-12-01T12:00:03Z", "reason": "offline"}
    assert observe(evaluator, state("d1", 4, online=False)) == []  # no duplicate
    assert events(observe(evaluator, state("d1", 9, online=True))) == [("off", "d1", "resolved")]
    observe(evaluator, state("d1", 10, online=False))
    assert events(observe(evaluator, telemetry("d1", 11, temp=20))) == [("off", "d1", "resolved")]
    observe(evaluator, state("d1", 12, online=False))
    assert events(observe(evaluator, event("d1", 13, "boot"))) == [("off", "d1", "resolved")]


def test_retained_offline_state_is_no_news() -> None:
    evaluator = AlertEvaluator([rule("off", AlertKind.OFFLINE)])
    assert observe(evaluator, state("d1", 0, online=False, live=False)) == []


def test_offline_older_than_a_message_in_the_same_batch_opens_nothing() -> None:
    evaluator = AlertEvaluator([rule("off", AlertKind.OFFLINE)])
    assert observe(evaluator, state("d1", 1, online=False), telemetry("d1", 2, temp=1)) == []
    assert events(observe(evaluator, telemetry("d1", 3, temp=1), state("d1", 4, online=False))) == [
        ("off", "d1", "opened")
    ]


def test_silence_with_a_fixed_window() -> None:
    evaluator = AlertEvaluator([rule("quiet", AlertKind.OFFLINE, silence_seconds=30)])
    observe(evaluator, telemetry("d1", 0, temp=1))
    assert evaluator.tick(at(30)) == []
    opened = evaluator.tick(at(30.5))
    assert events(opened) == [("quiet", "d1", "opened")]
    assert opened[0].values == {
        "lastSeenAt": "2026-12-01T12:00:00Z",
        "silenceSeconds": 30,
        "reason": "silent",
    }
    assert evaluator.tick(at(60)) == []
    assert events(observe(evaluator, telemetry("d1", 61, temp=1))) == [("quiet", "d1", "resolved")]
    assert evaluator.tick(at(80)) == []


def test_silence_learns_the_reporting_interval() -> None:
    evaluator = AlertEvaluator([rule("quiet", AlertKind.OFFLINE)])
    observe(evaluator, telemetry("d1", 0, temp=1))
    observe(evaluator, telemetry("d1", 10, temp=1))
    observe(evaluator, telemetry("d1", 20, temp=1))
    # Two gaps: no interval yet, so no silence alert however long it is quiet.
    assert evaluator.interval("d1") is None
    assert evaluator.tick(at(1000)) == []
    for second in (1000, 1010, 1020, 1030, 1040):
        observe(evaluator, telemetry("d1", second, temp=1))
    # Gaps 10, 10, 980, 10, 10, 10, 10: the median ignores the outage.
    assert evaluator.interval("d1") == 10
    assert evaluator.tick(at(1060)) == []  # 20 s: twice the interval, not more
    opened = evaluator.tick(at(1060.5))
    assert events(opened) == [("quiet", "d1", "opened")]
    assert opened[0].values["silenceSeconds"] == 20
    assert opened[0].values["lastSeenAt"] == "2026-12-01T12:17:20Z"


def test_silence_counts_events_and_live_states_as_signs_of_life() -> None:
    evaluator = AlertEvaluator([rule("quiet", AlertKind.OFFLINE, silence_seconds=30)])
    observe(evaluator, telemetry("d1", 0, temp=1))
    observe(evaluator, event("d1", 20, "button"))
    assert evaluator.tick(at(45)) == []
    observe(evaluator, state("d1", 40, online=True))
    assert evaluator.tick(at(65)) == []
    assert events(evaluator.tick(at(71))) == [("quiet", "d1", "opened")]


def test_last_will_and_silence_open_one_alert() -> None:
    evaluator = AlertEvaluator([rule("off", AlertKind.OFFLINE, silence_seconds=5)])
    observe(evaluator, telemetry("d1", 0, temp=1))
    assert events(observe(evaluator, state("d1", 1, online=False))) == [("off", "d1", "opened")]
    assert evaluator.tick(at(60)) == []


# ---- ota -------------------------------------------------------------------------------


def test_ota_failed_opens_and_installed_resolves() -> None:
    evaluator = AlertEvaluator([rule("ota", AlertKind.OTA_FAILED)])
    assert observe(evaluator, event("d1", 0, "ota", status="downloading", version="1.3.0")) == []
    assert observe(evaluator, event("d1", 0, "log", status="failed")) == []
    opened = observe(
        evaluator, event("d1", 1, "ota", status="failed", version="1.3.0", error="bad sig")
    )
    assert events(opened) == [("ota", "d1", "opened")]
    assert opened[0].values == {"version": "1.3.0", "error": "bad sig"}
    assert observe(evaluator, event("d1", 2, "ota", status="failed", version="1.3.0")) == []
    resolved = observe(evaluator, event("d1", 3, "ota", status="installed", version="1.3.1"))
    assert events(resolved) == [("ota", "d1", "resolved")]
    assert observe(evaluator, event("d1", 4, "ota", status="installed", version="1.3.1")) == []


def test_ota_failed_opens_on_a_rollback_and_resolves_on_a_confirmation() -> None:
    evaluator = AlertEvaluator([rule("ota", AlertKind.OTA_FAILED)])
    back = event(
        "d1", 1, "ota", status="rolled_back", version="1.3.0", runningVersion="1.2.0",
        error="no healthy run within 60 s",
    )  # fmt: skip
    opened = observe(evaluator, back)
    assert events(opened) == [("ota", "d1", "opened")]
    assert opened[0].values == {
        "version": "1.3.0",
        "error": "no healthy run within 60 s",
        "status": "rolled_back",
        "runningVersion": "1.2.0",
    }
    resolved = observe(evaluator, event("d1", 2, "ota", status="confirmed", version="1.3.1"))
    assert events(resolved) == [("ota", "d1", "resolved")]


# ---- rejected rate ---------------------------------------------------------------------------


def test_rejected_rate_over_a_sliding_minute() -> None:
    evaluator = AlertEvaluator([rule("rej", AlertKind.REJECTED_RATE, per_minute=3)])
    assert observe(evaluator, *(rejected("d1", s) for s in (0, 10, 20))) == []
    assert observe(evaluator, rejected(None, 21)) == []  # no device: counted for none
    opened = observe(evaluator, rejected("d1", 30))
    assert events(opened) == [("rej", "d1", "opened")]
    assert opened[0].values == {"count": 4, "perMinute": 3, "windowSeconds": 60}
    assert observe(evaluator, rejected("d1", 40)) == []  # 5, still open
    assert evaluator.tick(at(59)) == []
    # At 61 the reject of second 0 has left the window: 4 remain, still over.
    assert evaluator.tick(at(61)) == []
    resolved = evaluator.tick(at(71))  # 10 gone too: 3, at the limit
    assert events(resolved) == [("rej", "d1", "resolved")]
    assert resolved[0].values["count"] == 3
    assert evaluator.tick(at(200)) == []
    assert observe(evaluator, rejected("d1", 201)) == []


def test_rejected_rate_memory_is_bounded() -> None:
    evaluator = AlertEvaluator([rule("rej", AlertKind.REJECTED_RATE, per_minute=10**9)])
    for second in range(600):
        observe(evaluator, *(rejected("d1", second + i / 10) for i in range(10)))
    device = evaluator._devices["d1"]
    assert len(device.rejects) <= 60
    assert device.reject_count == 600


# ---- restart, duplicates, rule changes ----------------------------------------------------


def test_restart_resolves_what_was_open_instead_of_opening_again() -> None:
    evaluator = AlertEvaluator(
        [hot(), rule("off", AlertKind.OFFLINE), rule("ota", AlertKind.OTA_FAILED)]
    )
    evaluator.load_open([("hot", "d1"), ("off", "d2"), ("gone", "d3")])
    assert observe(evaluator, telemetry("d1", 0, temp=99)) == []
    assert events(observe(evaluator, telemetry("d1", 1, temp=20))) == [("hot", "d1", "resolved")]
    assert observe(evaluator, state("d2", 1, online=False)) == []
    assert events(observe(evaluator, state("d2", 2, online=True))) == [("off", "d2", "resolved")]
    assert not evaluator.is_open("gone", "d3")


def test_never_a_duplicate_open_nor_a_resolve_of_nothing() -> None:
    evaluator = AlertEvaluator([hot(), rule("off", AlertKind.OFFLINE, silence_seconds=1)])
    batch = [telemetry("d1", s / 10, temp=70 + (s % 3) * 10) for s in range(100)]
    transitions = observe(evaluator, *batch)
    transitions += evaluator.tick(at(100))
    transitions += observe(
        evaluator, state("d1", 101, online=False), state("d1", 102, online=False)
    )
    transitions += observe(evaluator, state("d1", 103, online=True), telemetry("d1", 104, temp=1))
    open_now: set[tuple[str, str]] = set()
    for transition in transitions:
        key = (transition.rule_id, transition.device_id)
        if transition.event is AlertEvent.OPENED:
            assert key not in open_now, transition
            open_now.add(key)
        else:
            assert key in open_now, transition
            open_now.discard(key)


def test_rule_change_keeps_what_is_unchanged() -> None:
    evaluator = AlertEvaluator(
        [hot(for_seconds=10), rule("cold", AlertKind.THRESHOLD, field="temp", below=0)]
    )
    observe(evaluator, telemetry("d1", 0, temp=85))
    observe(evaluator, telemetry("d2", 0, temp=-5))
    assert (
        evaluator.set_rules(
            [hot(for_seconds=10), rule("cold", AlertKind.THRESHOLD, field="temp", below=0)],
            now=at(1),
        )
        == []
    )
    # The pending timer of an unchanged rule survives the change.
    assert events(evaluator.tick(at(10))) == [("hot", "d1", "opened")]


def test_rule_change_drops_pending_and_new_condition_resolves() -> None:
    evaluator = AlertEvaluator([hot(), hot("slow", for_seconds=10)])
    observe(evaluator, telemetry("d1", 0, temp=85))
    assert evaluator.is_open("hot", "d1")
    # Raised to 90: the open alert is kept, and the next sample in range under the new
    # limit resolves it; the changed slow rule forgets its pending timer.
    changed = [
        rule("hot", AlertKind.THRESHOLD, field="temp", above=90),
        hot("slow", for_seconds=20),
    ]
    assert evaluator.set_rules(changed, now=at(1)) == []
    assert evaluator.tick(at(15)) == []
    assert events(observe(evaluator, telemetry("d1", 16, temp=85))) == [("hot", "d1", "resolved")]


def test_removed_disabled_or_out_of_scope_rules_resolve_their_alerts() -> None:
    evaluator = AlertEvaluator([hot(), hot("other"), hot("scoped")])
    observe(evaluator, telemetry("d1", 0, temp=99))
    assert evaluator.is_open("scoped", "d1")
    resolved = evaluator.set_rules(
        [hot("other", enabled=False), hot("scoped", device_id="d2")], now=at(5)
    )
    assert sorted(events(resolved)) == [
        ("hot", "d1", "resolved"),
        ("other", "d1", "resolved"),
        ("scoped", "d1", "resolved"),
    ]
    assert all(t.at == at(5) and t.values == {"reason": "rule changed"} for t in resolved)
    assert observe(evaluator, telemetry("d1", 6, temp=99)) == []
    # A rule added later applies at once.
    evaluator.set_rules([hot("new")])
    assert events(observe(evaluator, telemetry("d1", 7, temp=99))) == [("new", "d1", "opened")]


def test_no_rules_costs_nothing_and_says_nothing() -> None:
    evaluator = AlertEvaluator([])
    assert observe(evaluator, telemetry("d1", 0, temp=99), state("d1", 1, online=False)) == []
    assert evaluator.tick(at(1000)) == []
    assert evaluator._devices == {}


def test_restart_holds_a_rejected_rate_alert_for_a_whole_window() -> None:
    evaluator = AlertEvaluator([rule("rej", AlertKind.REJECTED_RATE, per_minute=3)])
    evaluator.load_open([("rej", "d1")], now=at(0))
    # Still rejecting after the restart: no flap (resolved, then opened again).
    assert observe(evaluator, *(rejected("d1", s) for s in (50, 51, 52, 53))) == []
    assert evaluator.tick(at(30)) == []
    assert evaluator.tick(at(64)) == []  # four within the minute: still over
    assert evaluator.tick(at(109)) == []
    assert events(evaluator.tick(at(110))) == [("rej", "d1", "resolved")]  # 51-53: 3


def test_restart_resolves_a_quiet_rejected_rate_alert_after_a_window() -> None:
    evaluator = AlertEvaluator([rule("rej", AlertKind.REJECTED_RATE, per_minute=3)])
    evaluator.load_open([("rej", "d1")], now=at(0))
    assert evaluator.tick(at(59)) == []
    assert events(evaluator.tick(at(60))) == [("rej", "d1", "resolved")]
    assert evaluator.tick(at(61)) == []


def test_a_device_that_changes_model_leaves_the_model_rule() -> None:
    evaluator = AlertEvaluator([hot("boilers", model="boiler")], devices={"d1": "boiler"})
    observe(evaluator, telemetry("d1", 0, temp=99))
    resolved = evaluator.set_device_models({"d1": "sensor"}, now=at(1))
    assert events(resolved) == [("boilers", "d1", "resolved")]
    assert observe(evaluator, telemetry("d1", 2, temp=99)) == []


def test_tag_scope_follows_the_devices_tags() -> None:
    evaluator = AlertEvaluator(
        [
            hot("roof", tag="roof"),
            rule("cellar", AlertKind.THRESHOLD, field="temp", above=50, tag="cellar"),
        ]
    )
    evaluator.set_device_tags({"d1": ["roof"], "d2": ["roof", "cellar"], "d3": []})
    opened = observe(
        evaluator,
        telemetry("d1", 0, temp=60),
        telemetry("d2", 0, temp=99),
        telemetry("d3", 0, temp=99),
    )
    # d1: 60 is over the cellar's 50, but d1 is not in the cellar; d3 carries no tag.
    assert sorted(events(opened)) == [("cellar", "d2", "opened"), ("roof", "d2", "opened")]
    # d2 leaves the roof: its roof alert resolves, the cellar one stays.
    resolved = evaluator.set_device_tags({"d2": ["cellar"]}, now=at(1))
    assert events(resolved) == [("roof", "d2", "resolved")]
    assert evaluator.is_open("cellar", "d2")
    assert observe(evaluator, telemetry("d1", 2, temp=99)) == []  # d1 lost its tags too


def test_last_seen_from_before_a_restart_meets_a_silence_window() -> None:
    evaluator = AlertEvaluator(
        [
            rule("quiet", AlertKind.OFFLINE, silence_seconds=30),
            rule("learnt", AlertKind.OFFLINE),
        ]
    )
    evaluator.set_last_seen({"d1": at(0)})
    assert evaluator.tick(at(30)) == []
    # The fixed window fires; the learnt one has no interval for this device.
    assert events(evaluator.tick(at(31))) == [("quiet", "d1", "opened")]
    assert evaluator.tick(at(1000)) == []


def test_many_rules_on_one_field_agree_with_checking_each_rule() -> None:
    """The grouped, bisected path against the plain definition, on random readings: after
    each sample exactly the rules the value is out of range for are open."""
    limits: list[tuple[float | None, float | None]] = [
        (10, None),
        (20, None),
        (20, None),
        (30, None),
        (None, 0),
        (None, -5),
        (50, -10),
        (15, 25),  # misconfigured (above < below): always out of range
    ]
    rules = [
        rule(f"r{i}", AlertKind.THRESHOLD, field="x", above=above, below=below)
        for i, (above, below) in enumerate(limits)
    ]
    evaluator = AlertEvaluator(rules)
    chance = random.Random(18)
    for n in range(2000):
        value = chance.choice(
            [chance.uniform(-20, 60), chance.choice([-10, -5, 0, 10, 20, 30, 50])]
        )
        transitions = observe(evaluator, telemetry("d1", n, x=value))
        expected = {
            f"r{i}"
            for i, (above, below) in enumerate(limits)
            if (above is not None and value > above) or (below is not None and value < below)
        }
        assert {r.id for r in rules if evaluator.is_open(r.id, "d1")} == expected, value
        assert len({t.rule_id for t in transitions}) == len(transitions)


def test_the_interval_follows_the_last_samples_in_bounded_memory() -> None:
    evaluator = AlertEvaluator([rule("quiet", AlertKind.OFFLINE)])
    for n in range(100):
        observe(evaluator, telemetry("d1", n * 60, temp=1))
    assert evaluator.interval("d1") == 60
    for n in range(20):
        observe(evaluator, telemetry("d1", 99 * 60 + (n + 1) * 5, temp=1))
    # The device now reports every 5 s: the last ten gaps say so.
    assert evaluator.interval("d1") == 5
    gaps = evaluator._devices["d1"].gaps
    assert gaps is not None
    assert len(gaps) == 10
    # A device no offline rule covers is not tracked at all.
    other = AlertEvaluator([hot()])
    observe(other, telemetry("d1", 0, temp=1), telemetry("d1", 1, temp=1))
    assert other._devices["d1"].gaps is None
    assert other.interval("d1") is None
