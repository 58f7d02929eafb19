"""Token roles (issue 19): each named token has a role, and the audit log records the role
an action was taken with.

Named tokens made before roles could do everything, so they become `admin`; audit entries
made before have no role (NULL).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add a NOT NULL column without recreating the table;
    # the server default fills existing rows, then goes so that new tokens must name a role.
    with op.batch_alter_table("admin_tokens") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="admin"))
    with op.batch_alter_table("admin_tokens") as batch:
        batch.alter_column("role", server_default=None)
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("role")
    with op.batch_alter_table("admin_tokens") as batch:
        batch.drop_column("role")
