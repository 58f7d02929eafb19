"""Rejected messages by device: the dashboard's device page lists a device's newest ones.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without it, "this device's newest rejections" walks the whole table backwards whenever
    # the device has few of them: the worst case is exactly the device the page is about.
    op.create_index("ix_rejected_messages_device_id_id", "rejected_messages", ["device_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_rejected_messages_device_id_id", table_name="rejected_messages")
