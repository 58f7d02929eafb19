"""The alert evaluator: rules checked against what the collector committed, in memory.

It reads no database and does no I/O, so the ingest path gains no per-message query: the
caller gives it the rules (`set_rules`), the device -> model map for model-scoped rules
(`set_device_models`), the device -> tags map for tag-scoped rules (`set_device_tags`), the
alerts already open in the database (`load_open`, after a
restart), then every committed batch (`observe`) and a clock tick about once a second
(`tick`). Both answer with the transitions to record: a (rule, device) alert that opens or
resolves. Each (rule, device) has at most one open alert: `opened` is never said twice without
a `resolved` between, nor `resolved` for an alert that is not open.

Cost (bench/alerts_eval.py): rules are indexed by kind and scope when they are set, and each
device caches the rules that apply to it (devices with the same rules share them), so a
telemetry record costs a dict lookup for its device and one per payload key (or per watched
field, whichever is fewer), not a loop over every rule. The rules on one field form a group
with the band where all of them are in range: a value inside it settles the whole group in
two comparisons; outside it, bisection finds the rules it crosses.

The kinds (docs/alerts.md):
- offline: a live state with `online: false` (the device's Last Will, or a clean offline)
  opens; a live `online: true`, or any telemetry or event from the device, resolves. Silence:
  nothing received from the device for `silence_seconds`, or, when the rule has none, for
  twice its reporting interval, learnt as the median gap between its last telemetry receive
  times. Until MIN_GAPS gaps are known the interval is not, and silence opens nothing (a rule
  without `silence_seconds` needs a few samples from a device first). The evaluator only
  watches devices that some offline rule covers, and knows nothing of a device from before
  it started (or from before the rule existed) until the device sends something.
- threshold: the telemetry field (dots walk nested objects) strictly above `above` or below
  `below`; with `for_seconds`, only once it stayed out of range that long (receive times;
  `tick` opens when the time passes without a new sample). Back in range resolves. A value
  that is missing, not a number, or a bool decides nothing.
- ota_failed: an `ota` event with status `failed` or `rolled_back` (a new image that never
  became healthy, or was left on command) opens, one with status `installed` or `confirmed`
  resolves.
- rejected_rate: a device's rejected messages over the last REJECTED_WINDOW_S seconds (per
  second buckets, so memory is bounded) above `per_minute` opens; back at or below resolves.

A transition's `at` is the receive time of the record that decided it, or the tick's `now`.

Across a restart the database keeps the open alerts (`load_open`) and the devices' last-seen
times (`set_last_seen`); what lives only here starts again: learnt intervals, a threshold's
pending `for_seconds`, the rejected counts (an open rejected-rate alert is held a whole window).
"""

from __future__ import annotations

import statistics
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from math import inf, isfinite
from typing import Any

from paku_iot.alerts.times import iso_utc
from paku_iot.protocol import OTA_EVENT, OTA_RUNNING_VERSION, STATE_ONLINE
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

# The reporting interval: the median of a device's last GAPS gaps between telemetry receive
# times (a median, so one long outage or one burst does not move it), known from MIN_GAPS.
GAPS = 10
MIN_GAPS = 3
SILENCE_FACTOR = 2.0
REJECTED_WINDOW_S = 60
OTA_OPENING = frozenset({"failed", "rolled_back"})
OTA_RESOLVING = frozenset({"installed", "confirmed"})

Transitions = list[AlertTransition]


class _Threshold:
    """A threshold rule made ready for the hot path: its field split once."""

    __slots__ = ("above", "below", "field", "for_seconds", "key", "rest", "rule_id")

    def __init__(self, rule: AlertRuleRecord) -> None:
        assert rule.field is not None
        self.rule_id = rule.id
        self.field = rule.field
        parts = rule.field.split(".")
        self.key = parts[0]
        self.rest = tuple(parts[1:])
        self.above = rule.above
        self.below = rule.below
        self.for_seconds = rule.for_seconds


class _Group:
    """The threshold rules of one device on one field, with the band where every one of
    them is in range: a value inside it, on a device with no open or pending alert, is done
    with in two comparisons however many rules watch the field. Outside it, the one-sided
    rules are sorted by their limit, so a bisection finds those the value crosses; the rest
    matter only when open or pending."""

    __slots__ = (
        "above",
        "above_limits",
        "below",
        "below_limits",
        "by_id",
        "high",
        "low",
        "members",
        "ranged",
        "rest",
    )

    def __init__(self, members: list[_Threshold]) -> None:
        self.members = tuple(members)
        self.by_id = {t.rule_id: t for t in members}
        self.rest = members[0].rest
        above = sorted((t for t in members if t.below is None), key=lambda t: t.above or 0)
        below = sorted((t for t in members if t.above is None), key=lambda t: t.below or 0)
        self.above = tuple(above)
        self.above_limits = [t.above for t in above if t.above is not None]
        self.below = tuple(below)
        self.below_limits = [t.below for t in below if t.below is not None]
        self.ranged = tuple(t for t in members if t.above is not None and t.below is not None)
        aboves = [t.above for t in members if t.above is not None]
        belows = [t.below for t in members if t.below is not None]
        # In range for all: value <= every `above` and >= every `below`.
        self.high = min(aboves) if aboves else inf
        self.low = max(belows) if belows else -inf

    def crossed(self, value: float) -> list[_Threshold]:
        """The rules this value is out of range for, and the two-sided ones (few: checked
        one by one)."""
        found = list(self.above[: bisect_left(self.above_limits, value)])  # above < value
        found += self.below[bisect_right(self.below_limits, value) :]  # below > value
        found += self.ranged
        return found


class _Rules:
    """Rules of one scope (every device, one model, one tag or one device), by kind."""

    __slots__ = ("offline", "ota", "rejected", "thresholds")

    def __init__(self) -> None:
        self.offline: list[AlertRuleRecord] = []
        self.thresholds: list[_Threshold] = []
        self.ota: list[AlertRuleRecord] = []
        self.rejected: list[AlertRuleRecord] = []


class _Scope:
    """The enabled rules that apply to one device; thresholds in groups by field, keyed by
    the field's first part, so a record is matched by key lookups."""

    __slots__ = ("offline", "ota", "rejected", "thresholds")

    def __init__(self, parts: Iterable[_Rules]) -> None:
        offline: list[AlertRuleRecord] = []
        ota: list[AlertRuleRecord] = []
        rejected: list[AlertRuleRecord] = []
        by_field: dict[str, list[_Threshold]] = {}
        for rules in parts:
            offline += rules.offline
            ota += rules.ota
            rejected += rules.rejected
            for threshold in rules.thresholds:
                by_field.setdefault(threshold.field, []).append(threshold)
        self.offline = tuple(offline)
        self.ota = tuple(ota)
        self.rejected = tuple(rejected)
        groups: dict[str, list[_Group]] = {}
        for members in by_field.values():
            groups.setdefault(members[0].key, []).append(_Group(members))
        self.thresholds = {key: tuple(found) for key, found in groups.items()}


class _Pending:
    """A threshold out of range since `since`, not yet for long enough."""

    __slots__ = ("since", "threshold", "values")

    def __init__(self, threshold: _Threshold, since: datetime, values: dict[str, Any]) -> None:
        self.threshold = threshold
        self.since = since
        self.values = values


class _Device:
    """What the evaluator knows of one device. Kept small, and its containers made only
    when a rule needs them: a fleet of many devices is many of these."""

    __slots__ = (
        "gaps",
        "gaps_changed",
        "generation",
        "interval",
        "last_seen",
        "last_telemetry",
        "open",
        "pending",
        "rate_since",
        "reject_count",
        "rejects",
        "scope",
    )

    def __init__(self) -> None:
        self.generation = -1
        self.scope: _Scope = _NO_RULES
        # Rule ids with an open alert. A frozenset, replaced on change: alerts open and
        # resolve rarely, and every device without one shares the one empty set.
        self.open: frozenset[str] = _NONE_OPEN
        self.pending: dict[str, _Pending] = {}
        self.last_seen: datetime | None = None
        self.last_telemetry: datetime | None = None
        # The last GAPS gaps between telemetry receive times, in seconds (8 bytes each); the
        # median is taken when silence is checked, not per message.
        self.gaps: array[float] | None = None
        self.gaps_changed = False
        self.interval: float | None = None
        self.rejects: deque[list[int]] | None = None  # [unix second, count], oldest first
        self.reject_count = 0
        self.rate_since = 0  # the unix second from which the window is counted in full


_NONE_OPEN: frozenset[str] = frozenset()


_NO_RULES = _Scope(())


def _usable(rule: AlertRuleRecord) -> bool:
    """An enabled rule with the fields its kind needs (the API checks them; a rule without
    them would decide nothing, so it is left out rather than fail the ingest path)."""
    if not rule.enabled:
        return False
    if rule.kind is AlertKind.THRESHOLD:
        return bool(rule.field) and (rule.above is not None or rule.below is not None)
    if rule.kind is AlertKind.REJECTED_RATE:
        return rule.per_minute is not None
    return True


def _condition(rule: AlertRuleRecord) -> tuple[Any, ...]:
    """What decides a rule's alerts: a rule changed in these loses its pending state."""
    return (
        rule.kind,
        rule.device_id,
        rule.model,
        rule.tag,
        rule.field,
        rule.above,
        rule.below,
        rule.for_seconds,
        rule.silence_seconds,
        rule.per_minute,
    )


def _field_value(top: Any, rest: tuple[str, ...]) -> float | None:
    """The number at a field path, or None when the path is missing or holds no number."""
    value = top
    for part in rest:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    kind = type(value)
    # `type is`, not isinstance: a bool is an int to Python but no reading to us.
    if (kind is float and isfinite(value)) or kind is int:
        return value  # type: ignore[no-any-return]
    return None


class AlertEvaluator:
    def __init__(
        self, rules: Sequence[AlertRuleRecord], devices: Mapping[str, str] | None = None
    ) -> None:
        self._models: dict[str, str] = dict(devices or {})
        self._tags: dict[str, frozenset[str]] = {}
        self._devices: dict[str, _Device] = {}
        self._generation = 0
        self._rules: dict[str, AlertRuleRecord] = {}
        self._global = _Rules()
        self._by_model: dict[str, _Rules] = {}
        self._by_tag: dict[str, _Rules] = {}
        self._by_device: dict[str, _Rules] = {}
        self._pending_devices: set[str] = set()
        self._rejecting_devices: set[str] = set()
        self._scopes: dict[tuple[str | None, tuple[str, ...], str | None], _Scope] = {}
        self.set_rules(rules)

    # ---- configuration ----------------------------------------------------------------

    def set_rules(
        self, rules: Sequence[AlertRuleRecord], now: datetime | None = None
    ) -> Transitions:
        """Replace the rules. A rule that still exists, enabled, keeps its open alerts (the
        new condition resolves them when it clears, so none is opened twice); pending
        timers are kept only where the condition did not change. Alerts of rules that are
        gone, disabled, or no longer cover their device are resolved: the returned
        transitions (values {"reason": "rule changed"}, at `now`, default the clock) are for
        the caller to record."""
        old = self._rules
        self._rules = {rule.id: rule for rule in rules if _usable(rule)}
        self._global = _Rules()
        self._by_model = {}
        self._by_tag = {}
        self._by_device = {}
        for rule in self._rules.values():
            if rule.device_id is not None:
                target = self._by_device.setdefault(rule.device_id, _Rules())
            elif rule.model is not None:
                target = self._by_model.setdefault(rule.model, _Rules())
            elif rule.tag is not None:
                target = self._by_tag.setdefault(rule.tag, _Rules())
            else:
                target = self._global
            if rule.kind is AlertKind.OFFLINE:
                target.offline.append(rule)
            elif rule.kind is AlertKind.THRESHOLD:
                target.thresholds.append(_Threshold(rule))
            elif rule.kind is AlertKind.OTA_FAILED:
                target.ota.append(rule)
            else:
                target.rejected.append(rule)
        self._generation += 1
        self._scopes = {}
        changed = {
            rule_id
            for rule_id, rule in old.items()
            if rule_id not in self._rules or _condition(self._rules[rule_id]) != _condition(rule)
        }
        return self._forget(changed, now or datetime.now(UTC))

    def set_device_models(
        self, mapping: Mapping[str, str], now: datetime | None = None
    ) -> Transitions:
        """Replace the device -> model map that model-scoped rules are matched with. An open
        alert of a model-scoped rule whose device is no longer of that model resolves (the
        returned transitions, as set_rules')."""
        self._models = dict(mapping)
        self._generation += 1
        self._scopes = {}
        return self._forget(set(), now or datetime.now(UTC))

    def set_device_tags(
        self, mapping: Mapping[str, Iterable[str]], now: datetime | None = None
    ) -> Transitions:
        """Replace the device -> tags map that tag-scoped rules are matched with (devices
        left out have no tags). An open alert of a tag-scoped rule whose device no longer
        carries the tag resolves (the returned transitions, as set_rules')."""
        self._tags = {device: frozenset(tags) for device, tags in mapping.items() if tags}
        self._generation += 1
        self._scopes = {}
        return self._forget(set(), now or datetime.now(UTC))

    def load_open(self, alerts: Iterable[tuple[str, str]], now: datetime | None = None) -> None:
        """(rule id, device id) pairs open in the database (after a restart): they are
        resolved when their condition clears, not opened again. Pairs of rules the evaluator
        does not have (gone, disabled) are ignored. A rejected-rate alert is not resolved
        before a whole window has been counted again from `now` (default the clock): the
        count from before the restart is gone, and an empty count is not a quiet device."""
        second = int((now or datetime.now(UTC)).timestamp())
        for rule_id, device_id in alerts:
            rule = self._rules.get(rule_id)
            if rule is None:
                continue
            device = self._device(device_id)
            device.open = device.open | {rule_id}
            if rule.kind is AlertKind.REJECTED_RATE:
                device.rate_since = second
                self._rejecting_devices.add(device_id)

    def set_last_seen(self, seen: Mapping[str, datetime]) -> None:
        """When devices were last seen before the evaluator started (the devices table's
        `last_seen_at`), so a device that never speaks again after a restart still meets
        an offline rule with `silence_seconds` (its interval is not known: a rule without
        one waits for samples). A later time the evaluator already has wins."""
        for device_id, at in seen.items():
            device = self._device(device_id)
            if device.last_seen is None or at > device.last_seen:
                device.last_seen = at

    def is_open(self, rule_id: str, device_id: str) -> bool:
        device = self._devices.get(device_id)
        return device is not None and rule_id in device.open

    def _forget(self, changed: set[str], now: datetime) -> Transitions:
        out: Transitions = []
        for device_id, device in self._devices.items():
            for rule_id in [r for r in device.pending if r in changed]:
                del device.pending[rule_id]
            if not device.open:
                continue
            scope = self._scope(device_id, device)
            covering = {r.id for r in scope.offline + scope.ota + scope.rejected}
            covering.update(
                t.rule_id for groups in scope.thresholds.values() for g in groups for t in g.members
            )
            for rule_id in sorted(device.open - covering):
                device.open = device.open - {rule_id}
                out.append(
                    AlertTransition(
                        rule_id, device_id, AlertEvent.RESOLVED, now, {"reason": "rule changed"}
                    )
                )
        return out

    # ---- devices ------------------------------------------------------------------------

    def _device(self, device_id: str) -> _Device:
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device()
        return device

    def _scope(self, device_id: str, device: _Device) -> _Scope:
        if device.generation != self._generation:
            model = self._models.get(device_id)
            if model not in self._by_model:
                model = None
            own = device_id if device_id in self._by_device else None
            tags = tuple(sorted(self._tags.get(device_id, frozenset()) & self._by_tag.keys()))
            # Devices with the same rules share one scope: a fleet of 10,000 devices of four
            # models has a handful of scopes, which stay in the CPU's caches.
            key = (model, tags, own)
            scope = self._scopes.get(key)
            if scope is None:
                parts = [self._global]
                if model is not None:
                    parts.append(self._by_model[model])
                parts.extend(self._by_tag[tag] for tag in tags)
                if own is not None:
                    parts.append(self._by_device[own])
                scope = self._scopes[key] = _Scope(parts)
            device.scope = scope
            device.generation = self._generation
        return device.scope

    # ---- transitions ------------------------------------------------------------------------

    @staticmethod
    def _open(
        out: Transitions,
        device: _Device,
        rule_id: str,
        device_id: str,
        at: datetime,
        values: dict[str, Any],
    ) -> None:
        if rule_id not in device.open:
            device.open = device.open | {rule_id}
            out.append(AlertTransition(rule_id, device_id, AlertEvent.OPENED, at, values))

    @staticmethod
    def _resolve(
        out: Transitions,
        device: _Device,
        rule_id: str,
        device_id: str,
        at: datetime,
        values: dict[str, Any],
    ) -> None:
        if rule_id in device.open:
            device.open = device.open - {rule_id}
            out.append(AlertTransition(rule_id, device_id, AlertEvent.RESOLVED, at, values))

    # ---- observe ------------------------------------------------------------------------

    def observe(self, batch: IngestBatch, now: datetime) -> Transitions:
        """The transitions one committed batch makes. Telemetry and events are taken first,
        then states, so a Last Will is weighed against what the device sent in the same
        batch (an offline state older than the device's latest message opens nothing).
        Decisions go by the records' receive times; `now` (the commit) is not needed for
        them and is taken for the symmetry with `tick`."""
        out: Transitions = []
        if not self._rules:
            return out
        for record in batch.telemetry:
            self._telemetry(record, out)
        for event in batch.events:
            self._event(event, out)
        for state in batch.states:
            self._state(state, out)
        for rejected in batch.rejected:
            self._rejected(rejected, out)
        return out

    def _telemetry(self, record: TelemetryRecord, out: Transitions) -> None:
        device_id = record.device_id
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device()
        scope = (
            device.scope
            if device.generation == self._generation
            else self._scope(device_id, device)
        )
        at = record.received_at
        if scope.offline:
            previous = device.last_telemetry
            if previous is not None:
                gap = (at - previous).total_seconds()
                if gap > 0:
                    gaps = device.gaps
                    if gaps is None:
                        gaps = device.gaps = array("d")
                    gaps.append(gap)
                    if len(gaps) > GAPS:
                        del gaps[0]
                    device.gaps_changed = True
            device.last_telemetry = at
            device.last_seen = at  # the collector commits in receive order
            if device.open:
                self._back(device_id, device, scope, at, out)
        index = scope.thresholds
        if not index:
            return
        payload = record.payload
        # Nothing open or pending on the device: a plain number inside a group's band is
        # settled here, without a call (the common case, per record and field).
        quiet = not device.open and not device.pending
        if len(index) <= len(payload):
            for key, groups in index.items():
                top = payload.get(key)
                if top is not None:
                    kind = type(top)
                    for group in groups:
                        if (
                            quiet
                            and (kind is float or kind is int)
                            and not group.rest
                            and group.low <= top <= group.high
                        ):
                            continue
                        self._group(group, top, device_id, device, record, out)
        else:
            for key, top in payload.items():
                found = index.get(key)
                if found is not None:
                    kind = type(top)
                    for group in found:
                        if (
                            quiet
                            and (kind is float or kind is int)
                            and not group.rest
                            and group.low <= top <= group.high
                        ):
                            continue
                        self._group(group, top, device_id, device, record, out)

    def _group(
        self,
        group: _Group,
        top: Any,
        device_id: str,
        device: _Device,
        record: TelemetryRecord,
        out: Transitions,
    ) -> None:
        value: Any = top if not group.rest else _field_value(top, group.rest)
        kind = type(value)
        if not ((kind is float and isfinite(value)) or kind is int):
            return
        if group.low <= value <= group.high:
            # In range for every rule of the field: only an open or pending one changes.
            if device.open or device.pending:
                by_id = group.by_id
                for rule_id in [r for r in (*device.open, *device.pending) if r in by_id]:
                    self._check(by_id[rule_id], value, device_id, device, record, out)
            return
        check = {t.rule_id: t for t in group.crossed(value)}
        if device.open or device.pending:
            by_id = group.by_id
            for rule_id in (*device.open, *device.pending):
                if rule_id in by_id and rule_id not in check:
                    check[rule_id] = by_id[rule_id]
        for threshold in check.values():
            self._check(threshold, value, device_id, device, record, out)

    def _check(
        self,
        threshold: _Threshold,
        value: float,
        device_id: str,
        device: _Device,
        record: TelemetryRecord,
        out: Transitions,
    ) -> None:
        above = threshold.above
        below = threshold.below
        rule_id = threshold.rule_id
        if (above is not None and value > above) or (below is not None and value < below):
            if rule_id in device.open:
                return
            at = record.received_at
            values = {
                "field": threshold.field,
                "value": value,
                "above": above,
                "below": below,
                "forSeconds": threshold.for_seconds,
                "ts": iso_utc(record.ts),
            }
            if threshold.for_seconds <= 0:
                self._open(out, device, rule_id, device_id, at, values)
                return
            pending = device.pending.get(rule_id)
            if pending is None:
                device.pending[rule_id] = _Pending(threshold, at, values)
                self._pending_devices.add(device_id)
            elif (at - pending.since).total_seconds() >= threshold.for_seconds:
                del device.pending[rule_id]
                self._open(out, device, rule_id, device_id, at, values)
            else:
                pending.values = values
            return
        # In range: the common case costs two empty-container checks.
        if device.pending:
            device.pending.pop(rule_id, None)
        if device.open and rule_id in device.open:
            values = {
                "field": threshold.field,
                "value": value,
                "above": above,
                "below": below,
                "forSeconds": threshold.for_seconds,
                "ts": iso_utc(record.ts),
            }
            self._resolve(out, device, rule_id, device_id, record.received_at, values)

    def _seen(
        self, device_id: str, device: _Device, scope: _Scope, at: datetime, out: Transitions
    ) -> None:
        """The device sent something (its offline rules are non-empty): it is not silent, and
        whatever offline alert it has resolves."""
        if device.last_seen is None or at > device.last_seen:
            device.last_seen = at
        if device.open:
            self._back(device_id, device, scope, at, out)

    def _back(
        self, device_id: str, device: _Device, scope: _Scope, at: datetime, out: Transitions
    ) -> None:
        for rule in scope.offline:
            self._resolve(
                out, device, rule.id, device_id, at, {"lastSeenAt": iso_utc(at), "online": True}
            )

    def _event(self, event: EventRecord, out: Transitions) -> None:
        device = self._device(event.device_id)
        scope = self._scope(event.device_id, device)
        if scope.offline:
            self._seen(event.device_id, device, scope, event.received_at, out)
        if not scope.ota or event.type != OTA_EVENT:
            return
        status = event.payload.get("status")
        for rule in scope.ota:
            if status in OTA_OPENING:
                values = {
                    "version": event.payload.get("version"),
                    "error": event.payload.get("error"),
                }
                if status == "rolled_back":
                    values["status"] = status
                    values[OTA_RUNNING_VERSION] = event.payload.get(OTA_RUNNING_VERSION)
                self._open(out, device, rule.id, event.device_id, event.received_at, values)
            elif status in OTA_RESOLVING:
                values = {"version": event.payload.get("version")}
                self._resolve(out, device, rule.id, event.device_id, event.received_at, values)

    def _state(self, state: StateReport, out: Transitions) -> None:
        if not state.live:
            # A retained copy replayed by the broker tells nothing about now.
            return
        device = self._device(state.device_id)
        scope = self._scope(state.device_id, device)
        if not scope.offline:
            return
        online = state.payload.get(STATE_ONLINE)
        at = state.received_at
        if online is False:
            if device.last_seen is not None and device.last_seen > at:
                return  # the device spoke after this offline (same batch): it is back
            device.last_seen = at
            values = {"lastSeenAt": iso_utc(at), "reason": "offline"}
            for rule in scope.offline:
                self._open(out, device, rule.id, state.device_id, at, values)
        else:
            self._seen(state.device_id, device, scope, at, out)

    def _rejected(self, record: RejectedRecord, out: Transitions) -> None:
        device_id = record.device_id
        if device_id is None:
            return
        device = self._device(device_id)
        scope = self._scope(device_id, device)
        if not scope.rejected:
            return
        second = int(record.received_at.timestamp())
        buckets = device.rejects
        if buckets is None:
            buckets = device.rejects = deque()
        if buckets and buckets[-1][0] >= second:
            buckets[-1][1] += 1  # same second, or a record a little out of order
        else:
            buckets.append([second, 1])
        device.reject_count += 1
        self._rejecting_devices.add(device_id)
        self._rate(device_id, device, scope, second, record.received_at, out)

    def _rate(
        self,
        device_id: str,
        device: _Device,
        scope: _Scope,
        second: int,
        at: datetime,
        out: Transitions,
    ) -> None:
        buckets = device.rejects
        while buckets and buckets[0][0] <= second - REJECTED_WINDOW_S:
            device.reject_count -= buckets.popleft()[1]
        count = device.reject_count
        for rule in scope.rejected:
            assert rule.per_minute is not None
            values = {
                "count": count,
                "perMinute": rule.per_minute,
                "windowSeconds": REJECTED_WINDOW_S,
            }
            if count > rule.per_minute:
                self._open(out, device, rule.id, device_id, at, values)
            elif second - device.rate_since >= REJECTED_WINDOW_S:
                self._resolve(out, device, rule.id, device_id, at, values)

    # ---- tick -----------------------------------------------------------------------------

    def tick(self, now: datetime) -> Transitions:
        """What time alone decides: silence windows passed, threshold durations passed,
        rejected windows emptied. Called about once a second."""
        out: Transitions = []
        if not self._rules:
            return out
        self._tick_silence(now, out)
        self._tick_pending(now, out)
        self._tick_rejected(now, out)
        return out

    def interval(self, device_id: str) -> float | None:
        """The device's learnt reporting interval in seconds (None: not known yet)."""
        device = self._devices.get(device_id)
        if device is None:
            return None
        if device.gaps_changed:
            # Learnt here rather than per sample: a median per message would cost the
            # ingest path; once per tick per device costs little.
            device.gaps_changed = False
            gaps = device.gaps
            known = gaps is not None and len(gaps) >= MIN_GAPS
            device.interval = statistics.median(gaps) if gaps is not None and known else None
        return device.interval

    def _tick_silence(self, now: datetime, out: Transitions) -> None:
        for device_id, device in self._devices.items():
            last_seen = device.last_seen
            if last_seen is None:
                continue
            scope = self._scope(device_id, device)
            if not scope.offline:
                continue
            silent = (now - last_seen).total_seconds()
            for rule in scope.offline:
                if rule.id in device.open:
                    continue
                window = rule.silence_seconds
                if window is None:
                    interval = self.interval(device_id)
                    if interval is None:
                        continue
                    window = SILENCE_FACTOR * interval
                if silent > window:
                    values = {
                        "lastSeenAt": iso_utc(last_seen),
                        "silenceSeconds": window,
                        "reason": "silent",
                    }
                    self._open(out, device, rule.id, device_id, now, values)

    def _tick_pending(self, now: datetime, out: Transitions) -> None:
        for device_id in list(self._pending_devices):
            device = self._devices[device_id]
            for rule_id, pending in list(device.pending.items()):
                if (now - pending.since).total_seconds() >= pending.threshold.for_seconds:
                    del device.pending[rule_id]
                    self._open(out, device, rule_id, device_id, now, pending.values)
            if not device.pending:
                self._pending_devices.discard(device_id)

    def _tick_rejected(self, now: datetime, out: Transitions) -> None:
        second = int(now.timestamp())
        for device_id in list(self._rejecting_devices):
            device = self._devices[device_id]
            scope = self._scope(device_id, device)
            self._rate(device_id, device, scope, second, now, out)
            if not device.rejects and not (
                device.open and second < device.rate_since + REJECTED_WINDOW_S
            ):
                self._rejecting_devices.discard(device_id)
