"""Alerts: rules, the alerts they open (at most one open per rule and device), and the
outbox of notifications with every delivery attempt (issue 18).

Alerts, deliveries and attempts go with their rule (ON DELETE CASCADE); a device's alerts are
deleted with the device (storage/devices.py). The partial unique index works on both
databases: PostgreSQL and SQLite (3.8+) both have `CREATE UNIQUE INDEX ... WHERE`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paku_iot.storage.types import UtcDateTime, big_id_type, json_type

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OPEN = sa.text("state = 'open'")


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("model", sa.String(64), nullable=True),
        sa.Column("field", sa.String(200), nullable=True),
        sa.Column("above", sa.Float(), nullable=True),
        sa.Column("below", sa.Float(), nullable=True),
        sa.Column("for_seconds", sa.Float(), nullable=False),
        sa.Column("silence_seconds", sa.Float(), nullable=True),
        sa.Column("per_minute", sa.Integer(), nullable=True),
        sa.Column("destinations", json_type(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
    )
    op.create_index("ix_alert_rules_created_at_id", "alert_rules", ["created_at", "id"])

    op.create_table(
        "alerts",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(40), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("values", json_type(), nullable=False),
        sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(80), nullable=True),
        sa.Column("silenced_until", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name="fk_alerts_rule_id", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "uq_alerts_open_rule_id_device_id",
        "alerts",
        ["rule_id", "device_id"],
        unique=True,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index("ix_alerts_device_id_opened_at_id", "alerts", ["device_id", "opened_at", "id"])
    op.create_index("ix_alerts_rule_id_opened_at_id", "alerts", ["rule_id", "opened_at", "id"])
    op.create_index("ix_alerts_state_opened_at_id", "alerts", ["state", "opened_at", "id"])
    op.create_index("ix_alerts_opened_at_id", "alerts", ["opened_at", "id"])

    op.create_table(
        "alert_deliveries",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("alert_id", big_id_type(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("destination", json_type(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_deliveries_alert_id", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_alert_deliveries_state_next_attempt_at",
        "alert_deliveries",
        ["state", "next_attempt_at"],
    )
    op.create_index("ix_alert_deliveries_alert_id_id", "alert_deliveries", ["alert_id", "id"])

    op.create_table(
        "alert_delivery_attempts",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", big_id_type(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_delivery_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["alert_deliveries.id"],
            name="fk_alert_delivery_attempts_delivery_id",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_alert_delivery_attempts_delivery_id_id",
        "alert_delivery_attempts",
        ["delivery_id", "id"],
    )


def downgrade() -> None:
    op.drop_table("alert_delivery_attempts")
    op.drop_table("alert_deliveries")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
