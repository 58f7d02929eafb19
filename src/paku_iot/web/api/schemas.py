"""The JSON shapes of the HTTP API (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from paku_iot.downlink.config import ConfigView
from paku_iot.protocol import (
    COMMAND_NAME_PATTERN,
    DEFAULT_COMMAND_TTL_S,
    DEVICE_ID_PATTERN,
    MAX_COMMAND_TTL_S,
    MIN_COMMAND_TTL_S,
    OTA_SIGNATURE_SCHEME,
)
from paku_iot.registry.tags import MAX_TAGS, TAG_PATTERN
from paku_iot.storage.records import (
    CommandRecord,
    DeviceRecord,
    EventRecord,
    ReleaseRecord,
    TelemetryRecord,
)
from paku_iot.web.api.inputs import check_json_input


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RequestModel(ApiModel):
    # A misspelt field is a mistake worth hearing about, not something to ignore silently.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return check_json_input(data)


class ErrorBody(ApiModel):
    code: str = Field(examples=["device_not_found"])
    message: str


class ErrorResponse(ApiModel):
    error: ErrorBody


# What an admin may say about a device, the same when it is made and when it is changed.
Notes = Annotated[
    str | None, Field(max_length=4000, description="Free text for people; null: none.")
]
Metadata = Annotated[
    dict[str, Any] | None,
    Field(description="Any JSON object, stored as given; null is the same as {}."),
]
Tag = Annotated[str, Field(pattern=TAG_PATTERN, examples=["floor-2"])]
Tags = Annotated[
    list[Tag] | None,
    Field(
        max_length=MAX_TAGS,
        description=f"Labels for grouping devices: at most {MAX_TAGS}, each 1-32 characters "
        "of a-z 0-9 . _ -; duplicates are dropped. null is the same as [].",
    ),
]


class DeviceCreate(RequestModel):
    model: str = Field(min_length=1, max_length=64, examples=["paku-sensor-v1"])
    id: str | None = Field(
        default=None,
        pattern=DEVICE_ID_PATTERN,
        description="3-64 characters of A-Z a-z 0-9 _ -; generated when absent.",
        examples=["kitchen-01"],
    )
    notes: Notes = None
    metadata: Metadata = None
    tags: Tags = None


class DeviceUpdate(RequestModel):
    """The fields to change; a field left out keeps its value."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    notes: Notes = None
    metadata: Metadata = Field(
        default=None,
        description="Replaces the whole object (it is not merged); null or {} clears it.",
    )
    tags: Tags = Field(
        default=None,
        max_length=MAX_TAGS,
        description="Replaces the device's whole set of tags; null or [] clears it. "
        "`POST /devices/tags` adds and removes tags on many devices.",
    )

    @model_validator(mode="after")
    def _changes_something(self) -> DeviceUpdate:
        if not self.model_fields_set:
            raise ValueError("nothing to change: send notes, metadata, tags or some of them")
        return self


class DeviceTagsChange(RequestModel):
    """Tags to add to and remove from every device in `ids` (removals first)."""

    ids: list[str] = Field(min_length=1, max_length=10_000)
    add: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    remove: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class Device(ApiModel):
    id: str
    model: str
    created_at: datetime
    last_seen_at: datetime | None
    online: bool
    fw_version: str | None
    rssi: int | None
    notes: str | None
    metadata: dict[str, Any]
    tags: list[str]
    decommissioned_at: datetime | None = Field(
        description="When the device was taken out of service; null while it is in service."
    )

    @classmethod
    def of(cls, record: DeviceRecord) -> Device:
        return cls(
            id=record.id,
            model=record.model,
            created_at=record.created_at,
            last_seen_at=record.last_seen_at,
            online=record.online,
            fw_version=record.fw_version,
            rssi=record.rssi,
            notes=record.notes,
            metadata=record.metadata,
            tags=list(record.tags),
            decommissioned_at=record.decommissioned_at,
        )


class DeviceDetail(Device):
    reported: dict[str, Any] | None = Field(
        description="The device's state as it reported it (paku/<id>/state: `online`, `rssi`, "
        "`fwVersion`, `configVersion` and any other key), each key as last received; "
        "null until it first reports."
    )

    @classmethod
    def of(cls, record: DeviceRecord) -> DeviceDetail:
        return cls(**Device.of(record).model_dump(), reported=record.reported_state)


class Credentials(ApiModel):
    username: str
    password: str = Field(description="Shown once; only a hash is stored.")


class ProvisionedDevice(Device):
    credentials: Credentials


class DeviceList(ApiModel):
    items: list[Device]


class DevicePage(ApiModel):
    items: list[Device]
    next: str | None = Field(description="Cursor for the next page, null on the last one.")


class TelemetryItem(ApiModel):
    ts: datetime = Field(description="Sample time: the device's `ts`, else the receive time.")
    received_at: datetime
    payload: dict[str, Any]

    @classmethod
    def of(cls, record: TelemetryRecord) -> TelemetryItem:
        return cls(ts=record.ts, received_at=record.received_at, payload=record.payload)


class TelemetryPage(ApiModel):
    items: list[TelemetryItem]
    next: str | None


class EventItem(ApiModel):
    ts: datetime
    type: str
    received_at: datetime
    payload: dict[str, Any]

    @classmethod
    def of(cls, record: EventRecord) -> EventItem:
        return cls(
            ts=record.ts, type=record.type, received_at=record.received_at, payload=record.payload
        )


class EventPage(ApiModel):
    items: list[EventItem]
    next: str | None


class RejectedItem(ApiModel):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: str = Field(description="The payload (first 4 KiB), as text where it is UTF-8.")
    payload_size: int


class RejectedPage(ApiModel):
    items: list[RejectedItem]
    next: str | None


ComponentStatus = Literal["ok", "unavailable", "degraded"]


class Health(ApiModel):
    status: Literal["ok", "unavailable", "degraded"]
    components: dict[str, ComponentStatus]
    details: dict[str, str] = Field(default_factory=dict)


class CommandCreate(RequestModel):
    name: str = Field(pattern=COMMAND_NAME_PATTERN, examples=["reboot"])
    params: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int = Field(
        default=DEFAULT_COMMAND_TTL_S,
        ge=MIN_COMMAND_TTL_S,
        le=MAX_COMMAND_TTL_S,
        description="How long the command may wait for the device and its answer.",
    )


class BulkCommandCreate(CommandCreate):
    """Exactly one target: `deviceIds`, a `model` or a `tag`."""

    device_ids: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    model: str | None = Field(default=None, min_length=1, max_length=64)
    tag: Tag | None = None


class Command(ApiModel):
    id: str
    device_id: str
    name: str
    params: dict[str, Any]
    status: Literal["queued", "sent", "acked", "failed", "expired"]
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    result: Any
    error: str | None

    @classmethod
    def of(cls, record: CommandRecord) -> Command:
        return cls.model_validate(
            {
                "id": record.id,
                "device_id": record.device_id,
                "name": record.name,
                "params": record.params,
                "status": record.status,
                "created_at": record.created_at,
                "expires_at": record.expires_at,
                "sent_at": record.sent_at,
                "acked_at": record.acked_at,
                "result": record.result,
                "error": record.error,
            }
        )


class CommandPage(ApiModel):
    items: list[Command]
    next: str | None


class CommandBatch(ApiModel):
    items: list[Command]


class ConfigPut(RequestModel):
    config: dict[str, Any]


class BulkConfigPut(ConfigPut):
    """The same desired configuration for many devices: exactly one of `deviceIds`, `model`
    or `tag`."""

    device_ids: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    model: str | None = Field(default=None, min_length=1, max_length=64)
    tag: Tag | None = None


class DeviceConfig(ApiModel):
    version: int = Field(description="Desired version; 0 when none was ever set.")
    config: dict[str, Any]
    reported_version: int | None = Field(description="`configVersion` from the device's state.")
    in_sync: bool
    updated_at: datetime | None

    @classmethod
    def of(cls, view: ConfigView) -> DeviceConfig:
        return cls(
            version=view.version,
            config=view.config,
            reported_version=view.reported_version,
            in_sync=view.in_sync,
            updated_at=view.updated_at,
        )


class BulkConfigItem(DeviceConfig):
    device_id: str


class BulkConfigResult(ApiModel):
    items: list[BulkConfigItem]


class Wave(ApiModel):
    percent: int = Field(ge=1, le=100, description="The rollout percentage of this wave.")
    soak_seconds: int = Field(
        default=0, ge=0, description="How long the wave runs before it may be promoted."
    )


class Release(ApiModel):
    id: str
    model: str
    version: str
    sha256: str
    size: int
    url: str = Field(description="Absolute download URL (byte ranges supported).")
    signature: str | None = Field(
        description="base64 Ed25519 signature of the bare SHA-256 digest, for firmware built "
        "before paku-ota-v1; null when the release was signed off the server without one."
    )
    signature_scheme: Literal["paku-ota-v1"] | None = Field(
        description="What `statementSignature` signs (docs/protocol.md, 8a); null for a "
        "release published before statements were signed."
    )
    statement_signature: str | None = Field(
        description="base64 Ed25519 signature of the release statement (scheme, model, "
        "version, sha256, size): what firmware must verify."
    )
    rollout_percent: int
    paused: bool
    notes: str | None
    created_at: datetime
    tag: str | None = Field(
        description="Offered only to devices with this tag; null: every device of the model."
    )
    state: Literal["rolling", "paused", "completed", "aborted"] = Field(
        description="`aborted`: offered to nobody. docs/ota.md"
    )
    state_reason: str | None = Field(description="Why it was paused or aborted.")
    plan: list[Wave] | None = Field(
        description="The waves the autopilot rolls the release out in; null: by hand."
    )
    current_wave: int | None = Field(description="1-based wave number; null without a plan.")
    wave_started_at: datetime | None
    min_confirmed: int
    min_confirmed_percent: int
    abort_failure_percent: int
    abort_min_devices: int

    @classmethod
    def of(cls, record: ReleaseRecord, url: str) -> Release:
        return cls(
            id=record.id,
            model=record.model,
            version=record.version,
            sha256=record.sha256,
            size=record.size,
            url=url,
            signature=record.signature,
            signature_scheme=signature_scheme(record),
            statement_signature=record.statement_signature,
            rollout_percent=record.rollout_percent,
            paused=record.paused,
            notes=record.notes,
            created_at=record.created_at,
            tag=record.tag,
            state=record.state,
            state_reason=record.state_reason,
            plan=None if record.plan is None else [Wave(**w) for w in record.plan],
            current_wave=None if record.plan is None else record.current_wave + 1,
            wave_started_at=record.wave_started_at,
            min_confirmed=record.min_confirmed,
            min_confirmed_percent=record.min_confirmed_percent,
            abort_failure_percent=record.abort_failure_percent,
            abort_min_devices=record.abort_min_devices,
        )


class ReleaseList(ApiModel):
    items: list[Release]


class RolloutView(ApiModel):
    counts: dict[str, int] = Field(
        description="Devices per state; `confirmed` alone counts toward promotion."
    )
    devices: dict[str, list[str]]
    never_seen: int = Field(description="Devices of the model that have never connected.")


class ReleaseWithStatus(Release):
    rollout: RolloutView


class ReleaseUpdate(RequestModel):
    rollout_percent: int | None = Field(default=None, ge=0, le=100)
    paused: bool | None = None
    tag: Tag | None = Field(
        default=None, description="Restrict the release to devices with this tag; null: lift it."
    )
    plan: list[dict[str, Any]] | None = Field(
        default=None,
        description="Waves `[{percent, soakSeconds}]`: the release starts again at the first; "
        "null: no plan (rolled out by hand from where it is).",
    )
    min_confirmed: int | None = Field(default=None, ge=0)
    min_confirmed_percent: int | None = Field(default=None, ge=0, le=100)
    abort_failure_percent: int | None = Field(default=None, ge=0, le=100)
    abort_min_devices: int | None = Field(default=None, ge=1)


class ManifestEntry(ApiModel):
    """What a device acts on (docs/protocol.md, 8a). `signature` keeps its old meaning for
    firmware built before paku-ota-v1."""

    model: str
    version: str
    url: str
    sha256: str
    size: int
    signature: str | None
    signature_scheme: Literal["paku-ota-v1"] | None
    statement_signature: str | None

    @classmethod
    def of(cls, record: ReleaseRecord, url: str) -> ManifestEntry:
        return cls(
            model=record.model,
            version=record.version,
            url=url,
            sha256=record.sha256,
            size=record.size,
            signature=record.signature,
            signature_scheme=signature_scheme(record),
            statement_signature=record.statement_signature,
        )


def signature_scheme(record: ReleaseRecord) -> Literal["paku-ota-v1"] | None:
    return OTA_SIGNATURE_SCHEME if record.statement_signature is not None else None


class PublicKey(ApiModel):
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key: str = Field(description="The raw 32-byte public key, base64.")
    pem: str
    signed_message: str = (
        f"the {OTA_SIGNATURE_SCHEME} release statement (docs/protocol.md, 8a); `signature` "
        "alone: the 32-byte SHA-256 digest of the image"
    )


class AggregateItem(ApiModel):
    t: datetime = Field(description="The bucket's start.")
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None
    last: float | None = Field(default=None, description="The value of the newest sample.")


class AggregatePage(ApiModel):
    """Only the functions asked for are present in each item."""

    items: list[AggregateItem]
