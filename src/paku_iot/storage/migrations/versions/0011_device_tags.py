"""Device tags, decommissioned devices, and releases restricted to a tag (issue 19).

`device_tags` is a table, not a JSON column, so that "devices with tag x" is an index range
on (tag, device_id) on both databases, in id order for keyset pages. Tags go with their
device (ON DELETE CASCADE). `devices.decommissioned_at` hides a device from listings while
keeping its history; `firmware_releases.tag` offers a release only to devices with the tag.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paku_iot.storage.types import UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_tags",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "tag", name="pk_device_tags"),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], ondelete="CASCADE", name="fk_device_tags_device_id"
        ),
    )
    op.create_index("ix_device_tags_tag_device_id", "device_tags", ["tag", "device_id"])
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("decommissioned_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("firmware_releases") as batch:
        batch.add_column(sa.Column("tag", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("firmware_releases") as batch:
        batch.drop_column("tag")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("decommissioned_at")
    op.drop_table("device_tags")
