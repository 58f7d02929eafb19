"""Initial schema: devices, telemetry, events, rejected messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paku_iot.storage.types import UtcDateTime, big_id_type, json_type

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("metadata", json_type(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("credentials_updated_at", UtcDateTime(), nullable=True),
        sa.Column("last_seen_at", UtcDateTime(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("fw_version", sa.String(64), nullable=True),
        sa.Column("rssi", sa.Integer(), nullable=True),
        sa.Column("reported_state", json_type(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_index("ix_devices_model_id", "devices", ["model", "id"])

    op.create_table(
        "telemetry",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("payload", json_type(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_telemetry"),
        sa.UniqueConstraint("device_id", "ts", name="uq_telemetry_device_id_ts"),
    )

    op.create_table(
        "events",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("payload", json_type(), nullable=False),
        sa.Column("digest", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint(
            "device_id", "type", "ts", "digest", name="uq_events_device_id_type_ts_digest"
        ),
    )
    op.create_index("ix_events_device_id_ts", "events", ["device_id", "ts"])

    op.create_table(
        "rejected_messages",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_messages"),
    )
    op.create_index("ix_rejected_messages_received_at", "rejected_messages", ["received_at"])


def downgrade() -> None:
    op.drop_table("rejected_messages")
    op.drop_table("events")
    op.drop_table("telemetry")
    op.drop_table("devices")
