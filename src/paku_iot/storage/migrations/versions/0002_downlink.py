"""Downlink: commands with delivery status, and desired device configuration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paku_iot.storage.types import UtcDateTime, json_type

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("params", json_type(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("acked_at", UtcDateTime(), nullable=True),
        sa.Column("result", json_type(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
        sa.UniqueConstraint(
            "device_id", "idempotency_key", name="uq_commands_device_id_idempotency_key"
        ),
    )
    op.create_index("ix_commands_device_id_created_at", "commands", ["device_id", "created_at"])
    op.create_index("ix_commands_status_expires_at", "commands", ["status", "expires_at"])
    op.create_table(
        "device_configs",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", json_type(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_configs"),
    )


def downgrade() -> None:
    op.drop_table("device_configs")
    op.drop_table("commands")
