"""The JSON shapes of the alert routes (camelCase on the wire, as `schemas.py`). Bodies carry
types only: what makes a rule valid is checked once, whole, by `alerts.rules.validate`, so the
API, the CLI and the dashboard give the same message."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from paku_iot.alerts.rules import DestinationSpec, RuleSpec
from paku_iot.alerts.service import AlertView
from paku_iot.storage.records import (
    AlertDeliveryAttempt,
    AlertDeliveryRecord,
    AlertDestination,
    AlertRuleRecord,
)
from paku_iot.web.api.schemas import ApiModel, RequestModel

Kind = Literal["offline", "threshold", "ota_failed", "rejected_rate"]
DestinationKind = Literal["webhook", "slack", "ntfy"]


class DestinationIn(RequestModel):
    type: DestinationKind
    url: str = Field(examples=["https://hooks.example.com/paku"])
    secret: str | None = Field(
        default=None,
        description="webhook only: signs each body (X-Paku-Signature). Stored, never returned.",
    )

    def spec(self) -> DestinationSpec:
        return DestinationSpec(self.type, self.url, self.secret)


class AlertRuleCreate(RequestModel):
    name: str = Field(examples=["freezer too warm"])
    kind: Kind
    device_id: str | None = Field(default=None, description="Scope: this device only.")
    model: str | None = Field(default=None, description="Scope: devices of this model.")
    tag: str | None = Field(default=None, description="Scope: devices with this tag.")
    field: str | None = Field(
        default=None, description="threshold: the telemetry field (dots for nested ones)."
    )
    above: float | None = Field(default=None, description="threshold: fire above this.")
    below: float | None = Field(
        default=None, description="threshold: fire below this (with both: outside the range)."
    )
    for_seconds: float = Field(
        default=0, description="threshold: only once out of range this long."
    )
    silence_seconds: float | None = Field(
        default=None,
        description="offline: quiet this long; default twice the reporting interval.",
    )
    per_minute: int | None = Field(
        default=None, description="rejected_rate: fire above this many rejects a minute."
    )
    destinations: list[DestinationIn] = Field(description="1-10 destinations.")
    enabled: bool = True

    def spec(self) -> RuleSpec:
        return RuleSpec(
            name=self.name,
            kind=self.kind,
            device_id=self.device_id,
            model=self.model,
            tag=self.tag,
            field=self.field,
            above=self.above,
            below=self.below,
            for_seconds=self.for_seconds,
            silence_seconds=self.silence_seconds,
            per_minute=self.per_minute,
            destinations=tuple(d.spec() for d in self.destinations),
            enabled=self.enabled,
        )


class AlertRuleUpdate(RequestModel):
    """The fields to change; null clears one (a scope, a kind's field). The rule is checked
    whole afterwards. `destinations` replaces the list, secrets included."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: str | None = None
    kind: Kind | None = None
    device_id: str | None = None
    model: str | None = None
    tag: str | None = None
    field: str | None = None
    above: float | None = None
    below: float | None = None
    for_seconds: float | None = None
    silence_seconds: float | None = None
    per_minute: int | None = None
    destinations: list[DestinationIn] | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> AlertRuleUpdate:
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one field")
        for name in ("name", "kind", "destinations", "enabled"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """RuleSpec's fields that were sent, with their new values."""
        changes: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name == "destinations":
                value = tuple(d.spec() for d in value)
            elif name == "for_seconds" and value is None:
                value = 0  # null: no waiting
            changes[name] = value
        return changes


class DestinationOut(ApiModel):
    type: DestinationKind
    url: str
    has_secret: bool

    @classmethod
    def of(cls, destination: AlertDestination) -> DestinationOut:
        return cls.model_validate(
            {
                "type": str(destination.type),
                "url": destination.url,
                "has_secret": destination.secret is not None,
            }
        )


class AlertRule(ApiModel):
    id: str
    name: str
    kind: Kind
    device_id: str | None
    model: str | None
    tag: str | None
    field: str | None
    above: float | None
    below: float | None
    for_seconds: float
    silence_seconds: float | None
    per_minute: int | None
    destinations: list[DestinationOut] = Field(description="Secrets are never returned.")
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rule: AlertRuleRecord) -> AlertRule:
        return cls.model_validate(
            {
                "id": rule.id,
                "name": rule.name,
                "kind": str(rule.kind),
                "device_id": rule.device_id,
                "model": rule.model,
                "tag": rule.tag,
                "field": rule.field,
                "above": rule.above,
                "below": rule.below,
                "for_seconds": rule.for_seconds,
                "silence_seconds": rule.silence_seconds,
                "per_minute": rule.per_minute,
                "destinations": [DestinationOut.of(d) for d in rule.destinations],
                "enabled": rule.enabled,
                "created_at": rule.created_at,
                "updated_at": rule.updated_at,
            }
        )


class AlertRulePage(ApiModel):
    items: list[AlertRule]
    next: str | None = Field(description="Cursor for the next page, null on the last one.")


class Alert(ApiModel):
    id: int
    rule_id: str
    name: str | None = Field(description="The rule's name.")
    kind: Kind | None = Field(description="The rule's kind.")
    device_id: str
    state: Literal["open", "resolved"]
    opened_at: datetime
    resolved_at: datetime | None
    values: dict[str, Any] = Field(description="What opened it: the reading, the limit...")
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    silenced_until: datetime | None

    @classmethod
    def of(cls, view: AlertView) -> Alert:
        alert, rule = view.alert, view.rule
        return cls.model_validate(
            {
                "id": alert.id,
                "rule_id": alert.rule_id,
                "name": rule.name if rule else None,
                "kind": str(rule.kind) if rule else None,
                "device_id": alert.device_id,
                "state": str(alert.state),
                "opened_at": alert.opened_at,
                "resolved_at": alert.resolved_at,
                "values": alert.values,
                "acknowledged_at": alert.acknowledged_at,
                "acknowledged_by": alert.acknowledged_by,
                "silenced_until": alert.silenced_until,
            }
        )


class AlertPage(ApiModel):
    items: list[Alert]
    next: str | None = Field(description="Cursor for the next page, null on the last one.")


class Silence(RequestModel):
    seconds: int = Field(description="1 to 604800 (7 days).", examples=[3600])


class DeliveryAttempt(ApiModel):
    at: datetime
    status_code: int | None = Field(description="null: no HTTP answer (refused, timed out).")
    error: str | None
    duration_ms: float

    @classmethod
    def of(cls, attempt: AlertDeliveryAttempt) -> DeliveryAttempt:
        return cls(
            at=attempt.at,
            status_code=attempt.status_code,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
        )


class DeliveryDestination(ApiModel):
    type: DestinationKind
    url: str


class Delivery(ApiModel):
    id: int
    event: Literal["opened", "resolved"]
    destination: DeliveryDestination
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[DeliveryAttempt]

    @classmethod
    def of(cls, delivery: AlertDeliveryRecord, attempts: list[AlertDeliveryAttempt]) -> Delivery:
        return cls.model_validate(
            {
                "id": delivery.id,
                "event": str(delivery.event),
                "destination": {
                    "type": str(delivery.destination.type),
                    "url": delivery.destination.url,
                },
                "state": delivery.state,
                "attempts": delivery.attempts,
                "next_attempt_at": delivery.next_attempt_at,
                "last_status": delivery.last_status,
                "last_error": delivery.last_error,
                "created_at": delivery.created_at,
                "delivered_at": delivery.delivered_at,
                "attempt_log": [DeliveryAttempt.of(a) for a in attempts],
            }
        )


class DeliveryList(ApiModel):
    items: list[Delivery]
