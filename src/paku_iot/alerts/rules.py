"""Alert rules: what makes one valid, and the service the API and dashboard change them
through (validated as a whole, so a PATCH cannot leave a rule half of one kind)."""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from paku_iot.exceptions import InvalidInput, NotFound
from paku_iot.protocol import is_valid_device_id
from paku_iot.registry.tags import is_valid_tag
from paku_iot.storage.alerts import AlertStore
from paku_iot.storage.devices import DeviceStore
from paku_iot.storage.records import (
    AlertDestination,
    AlertKind,
    AlertRuleRecord,
    DestinationType,
)

MAX_NAME = 100
MAX_FIELD = 200
MAX_DESTINATIONS = 10
MAX_URL = 2000
MAX_SECRET = 200
MAX_FOR_SECONDS = 7 * 24 * 3600
MAX_SILENCE_SECONDS = 30 * 24 * 3600
MAX_PER_MINUTE = 1_000_000
INVALID = "invalid_alert_rule"


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    type: str
    url: str
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as an admin describes it, before validation (field names as in the record)."""

    name: str
    kind: str
    device_id: str | None = None
    model: str | None = None
    tag: str | None = None
    field: str | None = None
    above: float | None = None
    below: float | None = None
    for_seconds: float = 0
    silence_seconds: float | None = None
    per_minute: int | None = None
    destinations: tuple[DestinationSpec, ...] = ()
    enabled: bool = True


def spec_of(rule: AlertRuleRecord) -> RuleSpec:
    return RuleSpec(
        name=rule.name,
        kind=str(rule.kind),
        device_id=rule.device_id,
        model=rule.model,
        tag=rule.tag,
        field=rule.field,
        above=rule.above,
        below=rule.below,
        for_seconds=rule.for_seconds,
        silence_seconds=rule.silence_seconds,
        per_minute=rule.per_minute,
        destinations=tuple(
            DestinationSpec(str(d.type), d.url, d.secret) for d in rule.destinations
        ),
        enabled=rule.enabled,
    )


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID)


def _number(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"{name} must be a finite number")
    return float(value)


def _check_kind_fields(spec: RuleSpec, kind: AlertKind) -> None:
    threshold = kind is AlertKind.THRESHOLD
    given = {
        "field": spec.field is not None,
        "above": spec.above is not None,
        "below": spec.below is not None,
        "forSeconds": bool(spec.for_seconds),
        "silenceSeconds": spec.silence_seconds is not None,
        "perMinute": spec.per_minute is not None,
    }
    own = {
        AlertKind.THRESHOLD: {"field", "above", "below", "forSeconds"},
        AlertKind.OFFLINE: {"silenceSeconds"},
        AlertKind.OTA_FAILED: set(),
        AlertKind.REJECTED_RATE: {"perMinute"},
    }[kind]
    foreign = sorted(name for name, present in given.items() if present and name not in own)
    if foreign:
        raise _invalid(f"{', '.join(foreign)} not allowed in {kind} rules")
    if threshold:
        _check_threshold(spec)
    if kind is AlertKind.OFFLINE and spec.silence_seconds is not None:
        silence = _number(spec.silence_seconds, "silenceSeconds")
        assert silence is not None
        if not 0 < silence <= MAX_SILENCE_SECONDS:
            raise _invalid(f"silenceSeconds must be above 0 and at most {MAX_SILENCE_SECONDS}")
    if kind is AlertKind.REJECTED_RATE:
        per_minute = spec.per_minute
        if per_minute is None:
            raise _invalid("perMinute is required for a rejected_rate rule")
        if isinstance(per_minute, bool) or not isinstance(per_minute, int):
            raise _invalid("perMinute must be a whole number")
        if not 1 <= per_minute <= MAX_PER_MINUTE:
            raise _invalid(f"perMinute must be between 1 and {MAX_PER_MINUTE}")


def _check_threshold(spec: RuleSpec) -> None:
    field = spec.field
    if field is None or not field.strip():
        raise _invalid("field is required for a threshold rule: the telemetry field to watch")
    if len(field) > MAX_FIELD or any(not part for part in field.split(".")):
        raise _invalid(
            f"field must be at most {MAX_FIELD} characters, with dots only between names "
            "(e.g. env.temp)"
        )
    above = _number(spec.above, "above")
    below = _number(spec.below, "below")
    if above is None and below is None:
        raise _invalid("a threshold rule needs above, below or both")
    # Both: the rule fires outside the range, below `below` or above `above`; the other way
    # round every value would fire it.
    if above is not None and below is not None and not below < above:
        raise _invalid(
            "with both above and below the rule fires outside the range: below must be less "
            "than above"
        )
    for_seconds = _number(spec.for_seconds, "forSeconds")
    assert for_seconds is not None
    if not 0 <= for_seconds <= MAX_FOR_SECONDS:
        raise _invalid(f"forSeconds must be between 0 and {MAX_FOR_SECONDS}")


def _check_scope(spec: RuleSpec) -> None:
    if sum(x is not None for x in (spec.device_id, spec.model, spec.tag)) > 1:
        raise _invalid("give one of deviceId, model and tag (none: every device)")
    if spec.tag is not None and not is_valid_tag(spec.tag):
        raise _invalid("tag must be 1-32 characters of a-z, 0-9, '.', '_' and '-'")
    if spec.device_id is not None and not is_valid_device_id(spec.device_id):
        raise _invalid("deviceId must be 3-64 characters of A-Z, a-z, 0-9, '_' and '-'")
    if spec.model is not None and not 1 <= len(spec.model) <= 64:
        raise _invalid("model must be 1-64 characters")


def _destination(index: int, spec: DestinationSpec) -> AlertDestination:
    where = f"destinations[{index}]"
    try:
        kind = DestinationType(spec.type)
    except ValueError:
        names = ", ".join(t.value for t in DestinationType)
        raise _invalid(f"{where}.type must be one of {names}") from None
    parts = urlsplit(spec.url) if len(spec.url) <= MAX_URL else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(
            f"{where}.url must be an absolute http:// or https:// URL of at most {MAX_URL} "
            "characters"
        )
    if spec.secret is not None:
        if kind is not DestinationType.WEBHOOK:
            raise _invalid(
                f"{where}.secret is for webhook destinations only ({kind} is not signed)"
            )
        if not 1 <= len(spec.secret) <= MAX_SECRET:
            raise _invalid(f"{where}.secret must be 1-{MAX_SECRET} characters")
    return AlertDestination(kind, spec.url, spec.secret)


def validate(spec: RuleSpec) -> tuple[AlertKind, tuple[AlertDestination, ...]]:
    """Check a whole rule; the first problem is an InvalidInput (HTTP 422) naming the field
    with the API's (camelCase) name. Returns the kind and destinations, parsed."""
    name = spec.name
    if not name.strip() or len(name) > MAX_NAME:
        raise _invalid(f"name must be 1-{MAX_NAME} characters, not only spaces")
    try:
        kind = AlertKind(spec.kind)
    except ValueError:
        names = ", ".join(k.value for k in AlertKind)
        raise _invalid(f"kind must be one of {names}") from None
    _check_scope(spec)
    _check_kind_fields(spec, kind)
    if not 1 <= len(spec.destinations) <= MAX_DESTINATIONS:
        raise _invalid(f"destinations must list 1-{MAX_DESTINATIONS} destinations")
    return kind, tuple(_destination(i, d) for i, d in enumerate(spec.destinations))


def new_rule_id() -> str:
    return "ar-" + secrets.token_hex(8)


class AlertRuleService:
    """Rules as admins change them. A rule scoped to a `deviceId` must name a device that
    exists (a typo is a 404 `device_not_found` at once, not a rule that never fires); a
    rule for a model with no devices yet is fine. A rule stays when its device is deleted:
    the device's alerts go, and the rule applies again if the id is provisioned again."""

    def __init__(self, store: AlertStore, devices: DeviceStore) -> None:
        self._store = store
        self._devices = devices

    async def _record(
        self, rule_id: str, spec: RuleSpec, created_at: datetime, now: datetime
    ) -> AlertRuleRecord:
        kind, destinations = validate(spec)
        if spec.device_id is not None and await self._devices.get(spec.device_id) is None:
            raise NotFound(f"no device {spec.device_id!r}", code="device_not_found")
        threshold = kind is AlertKind.THRESHOLD
        return AlertRuleRecord(
            id=rule_id,
            name=spec.name,
            kind=kind,
            device_id=spec.device_id,
            model=spec.model,
            tag=spec.tag,
            field=spec.field if threshold else None,
            above=_number(spec.above, "above") if threshold else None,
            below=_number(spec.below, "below") if threshold else None,
            for_seconds=float(spec.for_seconds) if threshold else 0.0,
            silence_seconds=_number(spec.silence_seconds, "silenceSeconds"),
            per_minute=spec.per_minute,
            destinations=destinations,
            enabled=spec.enabled,
            created_at=created_at,
            updated_at=now,
        )

    async def create(self, spec: RuleSpec) -> AlertRuleRecord:
        now = datetime.now(UTC)
        return await self._store.create_rule(await self._record(new_rule_id(), spec, now, now))

    async def get(self, rule_id: str) -> AlertRuleRecord:
        rule = await self._store.get_rule(rule_id)
        if rule is None:
            raise NotFound(f"no alert rule {rule_id!r}", code="alert_rule_not_found")
        return rule

    async def page(
        self, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[AlertRuleRecord]:
        return await self._store.page_rules(limit=limit, after=after)

    async def update(self, rule_id: str, changes: Mapping[str, Any]) -> AlertRuleRecord:
        """Change the given fields (RuleSpec's names; `destinations` replaces the whole list,
        secrets included), then validate the rule as it would be."""
        current = await self.get(rule_id)
        try:
            merged = dataclasses.replace(spec_of(current), **changes)
        except TypeError as exc:
            raise _invalid(f"unknown rule field: {exc}") from None
        record = await self._record(rule_id, merged, current.created_at, datetime.now(UTC))
        updated = await self._store.update_rule(record)
        if updated is None:  # deleted meanwhile
            raise NotFound(f"no alert rule {rule_id!r}", code="alert_rule_not_found")
        return updated

    async def set_enabled(self, rule_id: str, enabled: bool) -> AlertRuleRecord:
        return await self.update(rule_id, {"enabled": enabled})

    async def delete(self, rule_id: str) -> None:
        """Delete the rule with its alerts and their delivery log."""
        if not await self._store.delete_rule(rule_id):
            raise NotFound(f"no alert rule {rule_id!r}", code="alert_rule_not_found")

    async def rules_version(self) -> tuple[int, datetime | None]:
        return await self._store.rules_version()

    async def enabled_rules(self) -> list[AlertRuleRecord]:
        return await self._store.enabled_rules()
