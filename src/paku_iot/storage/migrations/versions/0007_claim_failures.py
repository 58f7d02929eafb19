"""Refused claims in the database, so the claim rate limit holds across API processes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from paku_iot.storage.types import UtcDateTime, big_id_type

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claim_failures",
        sa.Column("id", big_id_type(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_claim_failures"),
    )
    op.create_index("ix_claim_failures_address_at", "claim_failures", ["address", "at"])
    op.create_index("ix_claim_failures_at", "claim_failures", ["at"])


def downgrade() -> None:
    op.drop_table("claim_failures")
