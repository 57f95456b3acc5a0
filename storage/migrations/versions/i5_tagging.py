"""entries.language: the language detected from each item's words

Revision ID: i5_tagging
Revises: i6_publish
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i5_tagging"
down_revision = "i6_publish"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTERs, which SQLite does natively: a batch "move and copy" would recreate the
    # entries table and lose the full-text triggers that i6_publish put on it.
    # Existing rows stay NULL ("unknown") until `aggregator retag` detects them.
    op.add_column("entries", sa.Column("language", sa.String(length=16), nullable=True))
    op.create_index("ix_entries_language", "entries", ["language"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_entries_language", table_name="entries")
    op.execute("ALTER TABLE entries DROP COLUMN language")
