"""retention: entries pruned to tombstones, stories hidden when no live entry is left

Revision ID: i7_retention
Revises: i6_websub
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i7_retention"
down_revision = "i6_websub"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch table copy): on SQLite, copying `stories` would break the
    # foreign keys that point at it.
    op.add_column("entries", sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "stories", sa.Column("pruned", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("stories", "pruned")
    op.drop_column("entries", "pruned_at")
