"""tag corrections: an admin's "this item is (not) in this topic"

Revision ID: w3_tag_corrections
Revises: w2_story_events
Create Date: 2026-12-07

One row per corrected (entry, topic); ``inside`` says which way. Tagging applies them over
whatever rules and the classifier decide, and the classifier learns from them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "w3_tag_corrections"
down_revision = "w2_story_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tag_corrections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "entry_id",
            sa.Integer(),
            sa.ForeignKey("entries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("inside", sa.Boolean(), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("entry_id", "topic", name="uq_tag_corrections_entry_topic"),
    )
    op.create_index("ix_tag_corrections_entry_id", "tag_corrections", ["entry_id"])


def downgrade() -> None:
    op.drop_index("ix_tag_corrections_entry_id", table_name="tag_corrections")
    op.drop_table("tag_corrections")
