"""Release signatures over a statement of model, version, sha256 and size (paku-ota-v1).

`statement_signature` is what current firmware verifies; releases published before this
revision have none (the key may not even be on the server to make one, and signing what the
database says now would sign whatever it was changed to). `signature`, over the bare digest,
becomes optional: a release signed off the server may come without one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop NOT NULL in place, so Alembic rebuilds the table there
    # (PostgreSQL gets plain ALTERs).
    with op.batch_alter_table("firmware_releases") as batch:
        batch.add_column(sa.Column("statement_signature", sa.Text(), nullable=True))
        batch.alter_column("signature", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # Releases without a digest signature cannot be kept by the older schema.
    op.execute("DELETE FROM firmware_releases WHERE signature IS NULL")
    with op.batch_alter_table("firmware_releases") as batch:
        batch.alter_column("signature", existing_type=sa.Text(), nullable=False)
        batch.drop_column("statement_signature")
