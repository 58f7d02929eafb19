"""The tables, in SQLAlchemy Core. Migrations (not `create_all`) create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from paku_iot.storage.types import UtcDateTime, big_id_type, json_type

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("notes", Text, nullable=True),
    Column("metadata", json_type(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    # NULL while a device has no MQTT credentials (a claim-code device before its claim).
    Column("password_hash", String(255), nullable=True),
    Column("credentials_updated_at", UtcDateTime(), nullable=True),
    Column("last_seen_at", UtcDateTime(), nullable=True),
    Column("online", Boolean, nullable=False, default=False),
    Column("fw_version", String(64), nullable=True),
    Column("rssi", Integer, nullable=True),
    # The device's latest reported state, merged key by key, as it sent it.
    Column("reported_state", json_type(), nullable=True),
    # Set when the device was taken out of service: hidden from listings, credentials gone,
    # its history kept (DELETE is what erases it).
    Column("decommissioned_at", UtcDateTime(), nullable=True),
    Index(None, "model", "id"),
)

device_tags = Table(
    "device_tags",
    metadata,
    Column(
        "device_id",
        String(64),
        ForeignKey("devices.id", ondelete="CASCADE", name="fk_device_tags_device_id"),
        primary_key=True,
    ),
    Column("tag", String(32), primary_key=True),
    # "Devices with tag x, in id order": a range of this index, for filters and keyset pages.
    Index(None, "tag", "device_id"),
)

telemetry = Table(
    "telemetry",
    metadata,
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("payload", json_type(), nullable=False),
    # One sample per device and time: a broker redelivery of the same message is stored once.
    # It is also the index every per-device time query uses.
    UniqueConstraint("device_id", "ts"),
    Index(None, "ts"),  # retention finds old rows by time alone
)

events = Table(
    "events",
    metadata,
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("payload", json_type(), nullable=False),
    Column("digest", String(16), nullable=False),
    UniqueConstraint("device_id", "type", "ts", "digest"),
    Index(None, "device_id", "ts"),
)

rejected_messages = Table(
    "rejected_messages",
    metadata,
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("topic", Text, nullable=False),
    Column("device_id", String(64), nullable=True),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    # At most the first few KiB: enough to debug a device, never a way to fill the disk.
    Column("payload", LargeBinary, nullable=False),
    Column("payload_size", Integer, nullable=False),
    Index(None, "received_at"),
    Index(None, "device_id", "id"),  # a device's newest rejections (the dashboard)
)

commands = Table(
    "commands",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("params", json_type(), nullable=False),
    # queued -> sent -> acked | failed; queued or sent -> expired
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=True),
    Column("acked_at", UtcDateTime(), nullable=True),
    Column("result", json_type(), nullable=True),
    Column("error", Text, nullable=True),
    # A client's Idempotency-Key, scoped to the device: a retried POST finds its command.
    Column("idempotency_key", String(200), nullable=True),
    Index(None, "device_id", "created_at"),
    Index(None, "status", "expires_at"),
    UniqueConstraint("device_id", "idempotency_key"),
)

device_configs = Table(
    "device_configs",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("config", json_type(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

firmware_releases = Table(
    "firmware_releases",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    # base64 Ed25519 signatures (docs/protocol.md, 8a): `statement_signature` over the
    # release's statement (model, version, sha256, size), which current firmware verifies;
    # NULL for releases published before migration 0008. `signature` over the bare SHA-256
    # digest, for older firmware; NULL when a release signed off the server came without it.
    Column("signature", Text, nullable=True),
    Column("statement_signature", Text, nullable=True),
    Column("rollout_percent", Integer, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("notes", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    # Offered only to devices with this tag; NULL: to every device of the model.
    Column("tag", String(32), nullable=True),
    # The autopilot (ota/plans.py, docs/ota.md): a list of waves {percent, soakSeconds}, or
    # NULL for a release rolled out by hand. `rollout_percent` follows the current wave.
    Column("plan", json_type(), nullable=True),
    Column("min_confirmed", Integer, nullable=False, server_default="1"),
    Column("min_confirmed_percent", Integer, nullable=False, server_default="50"),
    Column("abort_failure_percent", Integer, nullable=False, server_default="10"),
    Column("abort_min_devices", Integer, nullable=False, server_default="3"),
    # rolling | paused | completed | aborted; `paused` is kept true when not rolling.
    Column("state", String(16), nullable=False, server_default="rolling"),
    Column("current_wave", Integer, nullable=False, server_default="0"),
    Column("state_reason", Text, nullable=True),
    Column("wave_started_at", UtcDateTime(), nullable=True),
    UniqueConstraint("model", "version"),
)

release_events = Table(
    "release_events",
    metadata,
    # A release's timeline: every state change, by the autopilot or an operator.
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column(
        "release_id",
        String(40),
        ForeignKey("firmware_releases.id", ondelete="CASCADE", name="fk_release_events_release_id"),
        nullable=False,
    ),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("detail", json_type(), nullable=False),
    Index(None, "release_id", "id"),
)

ota_progress = Table(
    "ota_progress",
    metadata,
    # The latest report of each device about each version it was updating to.
    Column("device_id", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    # SHA-256 of the token: tokens are 256-bit random strings, so a fast hash is enough and
    # every admin request can check one without a slow key derivation.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    # viewer, operator, publisher or admin (`security/roles.py`).
    Column("role", String(16), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(80), nullable=False),
    # The role the actor acted with; NULL before roles existed and for non-token actors
    # (a device's claim).
    Column("role", String(16), nullable=True),
    Column("action", String(40), nullable=False),
    Column("target", String(200), nullable=False),
    Column("details", json_type(), nullable=False),
    Index(None, "target"),
)

claim_codes = Table(
    "claim_codes",
    metadata,
    # Only the SHA-256 of a code is kept: a stolen database does not claim devices.
    Column("code_hash", String(64), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("claimed_at", UtcDateTime(), nullable=True),
    Index(None, "device_id"),
)

ui_sessions = Table(
    "ui_sessions",
    metadata,
    # A dashboard session lives while its row does: signing out deletes it, so a copied
    # cookie stops working. Only the SHA-256 of the session id (which the signed cookie
    # carries) is kept.
    Column("id_hash", String(64), primary_key=True),
    Column("actor", String(80), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index(None, "expires_at"),
)


claim_failures = Table(
    "claim_failures",
    metadata,
    # One row per refused claim, kept for the rate limit's window: in the database, so every
    # API process counts the same failures (security/claims.py FailureLimiter).
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column("address", String(64), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index(None, "address", "at"),  # an address's failures in the window
    Index(None, "at"),  # pruning by age
)


# ---- alerts (issue 18) ---------------------------------------------------------------------

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(32), nullable=False),
    # Scope: one device, or one model, or one tag, or none of them (every device).
    Column("device_id", String(64), nullable=True),
    Column("model", String(64), nullable=True),
    Column("tag", String(32), nullable=True),
    Column("field", String(200), nullable=True),
    Column("above", Float, nullable=True),
    Column("below", Float, nullable=True),
    Column("for_seconds", Float, nullable=False),
    Column("silence_seconds", Float, nullable=True),
    Column("per_minute", Integer, nullable=True),
    # [{"type", "url", "secret"}]: the secret is kept here (it signs webhooks), never returned.
    Column("destinations", json_type(), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index(None, "created_at", "id"),  # the listing's order
)

# At most one open alert per rule and device, whichever collector replica decided it: the
# database, not the evaluator's memory, is what keeps a duplicate `opened` from counting twice.
OPEN_ALERT_PREDICATE = text("state = 'open'")

alerts = Table(
    "alerts",
    metadata,
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column(
        "rule_id",
        String(40),
        ForeignKey("alert_rules.id", ondelete="CASCADE", name="fk_alerts_rule_id"),
        nullable=False,
    ),
    Column("device_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # open | resolved
    Column("opened_at", UtcDateTime(), nullable=False),
    Column("resolved_at", UtcDateTime(), nullable=True),
    # `values` is an SQL keyword and a ColumnCollection method: the Python key differs.
    Column("values", json_type(), nullable=False, key="values_"),
    Column("acknowledged_at", UtcDateTime(), nullable=True),
    Column("acknowledged_by", String(80), nullable=True),
    Column("silenced_until", UtcDateTime(), nullable=True),
    Index(
        "uq_alerts_open_rule_id_device_id",
        "rule_id",
        "device_id",
        unique=True,
        postgresql_where=OPEN_ALERT_PREDICATE,
        sqlite_where=OPEN_ALERT_PREDICATE,
    ),
    # Newest first, filtered by device, rule or state, or not at all (keyset pages).
    Index(None, "device_id", "opened_at", "id"),
    Index(None, "rule_id", "opened_at", "id"),
    Index(None, "state", "opened_at", "id"),
    Index(None, "opened_at", "id"),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    # The outbox: written in the transaction that opens or resolves the alert, so a
    # notification is never lost between deciding and sending.
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column(
        "alert_id",
        big_id_type(),
        ForeignKey("alerts.id", ondelete="CASCADE", name="fk_alert_deliveries_alert_id"),
        nullable=False,
    ),
    Column("event", String(16), nullable=False),  # opened | resolved
    Column("destination", json_type(), nullable=False),
    Column("state", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime(), nullable=True),
    Index(None, "state", "next_attempt_at"),  # what is due
    Index(None, "alert_id", "id"),
)

alert_delivery_attempts = Table(
    "alert_delivery_attempts",
    metadata,
    Column("id", big_id_type(), primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        big_id_type(),
        ForeignKey(
            "alert_deliveries.id",
            ondelete="CASCADE",
            name="fk_alert_delivery_attempts_delivery_id",
        ),
        nullable=False,
    ),
    Column("at", UtcDateTime(), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Index(None, "delivery_id", "id"),
)
