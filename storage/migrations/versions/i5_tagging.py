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
    # Existing rows stay NULL ("unknown") until `aggregator retag` detects them.
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_entries_language", ["language"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index("ix_entries_language")
        batch_op.drop_column("language")
