"""Release plans: waves the autopilot promotes, pauses or aborts (issue 20).

`firmware_releases` gains the plan (JSON waves), the promotion and abort criteria, and the
rollout's state; existing releases become `rolling` without a plan, so they keep working by
hand as before. `release_events` is each release's timeline, deleted with the release.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paku_iot.storage.types import UtcDateTime, big_id_type, json_type

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("plan", json_type(), None),
    ("min_confirmed", sa.Integer(), "1"),
    ("min_confirmed_percent", sa.Integer(), "50"),
    ("abort_failure_percent", sa.Integer(), "10"),
    ("abort_min_devices", sa.Integer(), "3"),
    ("state", sa.String(16), "rolling"),
    ("current_wave", sa.Integer(), "0"),
    ("state_reason", sa.Text(), None),
    ("wave_started_at", UtcDateTime(), None),
)


def upgrade() -> None:
    with op.batch_alter_table("firmware_releases") as batch:
        for name, type_, default in _COLUMNS:
            batch.add_column(
                sa.Column(name, type_, nullable=default is None, server_default=default)
            )
    # A release paused by hand before plans existed is `paused`, as it now would be.
    op.execute("UPDATE firmware_releases SET state = 'paused' WHERE paused")
    op.create_table(
        "release_events",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("release_id", sa.String(40), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("detail", json_type(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_release_events"),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["firmware_releases.id"],
            name="fk_release_events_release_id",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_release_events_release_id_id", "release_events", ["release_id", "id"])


def downgrade() -> None:
    op.drop_table("release_events")
    with op.batch_alter_table("firmware_releases") as batch:
        for name, _, _ in reversed(_COLUMNS):
            batch.drop_column(name)
