"""polling: moved URL, disabled reason, schedule hints per feed

Revision ID: i3_polling
Revises: i5_tagging
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i3_polling"
down_revision = "i5_tagging"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN is plain ALTER TABLE on both SQLite and PostgreSQL.
    with op.batch_alter_table("feeds", recreate="never") as batch:
        # Where a 301/308 said the feed lives now; feeds.yaml keeps the admin's URL as key.
        batch.add_column(sa.Column("moved_to", sa.Text(), nullable=True))
        # Set by a 410 Gone: the feed is not polled until an admin re-enables it.
        batch.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))
        # What the feed body said about polling (ttl, sy:update*, skip*, item gap).
        batch.add_column(sa.Column("schedule_hints", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE DROP COLUMN (SQLite 3.35+), not a batch copy: re-creating feeds
    # would drop the old table, and with foreign keys on that cascades to every entry.
    for column in ("schedule_hints", "disabled_reason", "moved_to"):
        op.drop_column("feeds", column)
