"""Plain records that cross the storage boundary, so callers never see SQLAlchemy rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: str
    model: str
    notes: str | None
    metadata: JsonObject
    created_at: datetime
    has_credentials: bool
    last_seen_at: datetime | None
    online: bool
    fw_version: str | None
    rssi: int | None
    reported_state: JsonObject | None
    tags: tuple[str, ...] = ()
    decommissioned_at: datetime | None = None


class Keep(Enum):
    """A field of a change that is left as it is (None would mean: set it to null)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class DeviceDetails:
    """What an admin changes about a device; KEEP leaves a field as it is."""

    notes: str | Keep | None = KEEP
    metadata: JsonObject | Keep = KEEP
    tags: tuple[str, ...] | Keep = KEEP  # replaces the whole set


@dataclass(frozen=True, slots=True)
class NewDevice:
    id: str
    model: str
    notes: str | None
    metadata: JsonObject
    created_at: datetime
    password_hash: str | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    device_id: str
    ts: datetime
    received_at: datetime
    payload: JsonObject
    id: int = 0
    # The payload's JSON text as the device sent it, when known: PostgreSQL's jsonb parses it
    # itself, which spares encoding the dict again on the ingest path.
    text: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EventRecord:
    device_id: str
    type: str
    ts: datetime
    received_at: datetime
    payload: JsonObject
    # Tells a broker redelivery (same bytes) from a second event in the same millisecond.
    digest: str
    id: int = 0


@dataclass(frozen=True, slots=True)
class StateReport:
    """What a device said on its state topic: the fields to apply (`payload`, values checked
    and normalised). `live` is False for a retained copy the broker replays when we
    subscribe: it tells us the state but not that the device was seen now."""

    device_id: str
    received_at: datetime
    payload: JsonObject
    live: bool
    # Parts of the message that could not be applied (a bad field), each with its reason:
    # the rest of the state still is.
    set_aside: tuple[RejectedRecord, ...] = ()
    # A command answer the message carried (the `ack` object, unchecked): not a field.
    ack: Any = None
    # The message as the device sent it, for a rejection to show.
    sent: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes
    payload_size: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class RejectionCount:
    """How often one reason was given since some time, and to how many devices."""

    reason: str
    messages: int
    devices: int
    latest_at: datetime


@dataclass(slots=True)
class IngestBatch:
    """Everything one collector batch writes, in one transaction."""

    telemetry: list[TelemetryRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    states: list[StateReport] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)

    def device_ids(self) -> set[str]:
        ids = {r.device_id for r in self.telemetry}
        ids.update(r.device_id for r in self.events)
        ids.update(r.device_id for r in self.states)
        return ids


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: str
    device_id: str
    name: str
    params: JsonObject
    status: str
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None = None
    acked_at: datetime | None = None
    result: Any = None
    error: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class DesiredConfig:
    device_id: str
    version: int
    config: JsonObject
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    id: str
    model: str
    version: str
    sha256: str
    size: int
    # Over the bare digest, for firmware older than the statement; None when a release
    # signed off the server came without one (docs/protocol.md, 8a).
    signature: str | None
    # Over protocol.ota_statement; None for releases published before it existed.
    statement_signature: str | None
    rollout_percent: int
    paused: bool
    notes: str | None
    created_at: datetime
    tag: str | None = None  # offered only to devices with this tag
    # The autopilot's plan and criteria (ota/plans.py); None: rolled out by hand.
    plan: list[dict[str, int]] | None = None
    min_confirmed: int = 1
    min_confirmed_percent: int = 50
    abort_failure_percent: int = 10
    abort_min_devices: int = 3
    state: str = "rolling"  # rolling | paused | completed | aborted
    current_wave: int = 0
    state_reason: str | None = None
    wave_started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReleaseEvent:
    """One entry of a release's timeline."""

    id: int
    release_id: str
    at: datetime
    actor: str
    kind: str
    detail: JsonObject


@dataclass(frozen=True, slots=True)
class OtaProgress:
    device_id: str
    version: str
    status: str
    error: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AdminTokenRecord:
    """A named admin token (its hash never leaves storage)."""

    name: str
    created_at: datetime
    revoked_at: datetime | None
    role: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: JsonObject
    role: str | None = None


@dataclass(frozen=True, slots=True)
class NewClaimCode:
    """A claim code as stored: only its hash."""

    code_hash: str
    device_id: str
    created_at: datetime
    expires_at: datetime


# ---- alerts (issue 18; docs/alerts.md) ---------------------------------------------------


class AlertKind(StrEnum):
    OFFLINE = "offline"
    THRESHOLD = "threshold"
    OTA_FAILED = "ota_failed"
    REJECTED_RATE = "rejected_rate"


class AlertState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class AlertEvent(StrEnum):
    """What a notification tells: an alert opened or resolved."""

    OPENED = "opened"
    RESOLVED = "resolved"


class DestinationType(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    NTFY = "ntfy"


@dataclass(frozen=True, slots=True)
class AlertDestination:
    """Where a rule's notifications go. `secret` signs webhook bodies (X-Paku-Signature);
    it is stored, never returned by the API."""

    type: DestinationType
    url: str
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class AlertRuleRecord:
    """A rule as stored. Scope: `device_id`, or `model`, or `tag` (the devices that carry
    it), or none of them (every device). The kind's own fields are None where the kind has
    none."""

    id: str
    name: str
    kind: AlertKind
    device_id: str | None
    model: str | None
    field: str | None  # threshold: the telemetry field (dots for nested fields)
    above: float | None  # threshold: open when the value is above (strictly)
    below: float | None  # threshold: open when the value is below (strictly)
    for_seconds: float  # threshold: only once the value stayed out of range this long
    silence_seconds: float | None  # offline: None is twice the device's reporting interval
    per_minute: int | None  # rejected_rate: open when a device's rejects exceed this a minute
    destinations: tuple[AlertDestination, ...]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """What the evaluator decided: a (rule, device) alert opens or resolves, at `at`, with
    the values that made it (the reading, the limit, the last seen time...)."""

    rule_id: str
    device_id: str
    event: AlertEvent
    at: datetime
    values: JsonObject


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    rule_id: str
    device_id: str
    state: AlertState
    opened_at: datetime
    resolved_at: datetime | None
    values: JsonObject  # what opened it
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    silenced_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlertDeliveryRecord:
    """One notification to one destination: an outbox row, retried until delivered."""

    id: int
    alert_id: int
    event: AlertEvent
    destination: AlertDestination
    state: str  # pending | delivered | failed (given up)
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AlertDeliveryAttempt:
    delivery_id: int
    at: datetime
    status_code: int | None  # None: no HTTP answer (refused, timeout)
    error: str | None
    duration_ms: float
