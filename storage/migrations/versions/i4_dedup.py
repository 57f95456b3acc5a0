"""near-duplicate stories: entry signatures, LSH buckets, remembered splits

Revision ID: i4_dedup
Revises: i3_polling
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i4_dedup"
down_revision = "i3_polling"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Entries stored before this revision have no signature: they are not near-duplicate
    # candidates, and age out of the matching window within days.
    op.create_table(
        "entry_signatures",
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("features", sa.LargeBinary(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("short", sa.Boolean(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("published", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_id"),
    )
    op.create_table(
        "story_buckets",
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("published", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_id", "bucket"),
    )
    op.create_index("ix_story_buckets_bucket_published", "story_buckets", ["bucket", "published"])
    op.create_table(
        "story_splits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("story_id", sa.Integer(), nullable=False),
        sa.Column("new_story_id", sa.Integer(), nullable=False),
        sa.Column("entry_ids", sa.JSON(), nullable=False),
        sa.Column("split_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["story_id"], ["stories.id"]),
        sa.ForeignKeyConstraint(["new_story_id"], ["stories.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_story_splits_story_id", "story_splits", ["story_id"])
    op.create_index("ix_story_splits_new_story_id", "story_splits", ["new_story_id"])


def downgrade() -> None:
    op.drop_index("ix_story_splits_new_story_id", table_name="story_splits")
    op.drop_index("ix_story_splits_story_id", table_name="story_splits")
    op.drop_table("story_splits")
    op.drop_index("ix_story_buckets_bucket_published", table_name="story_buckets")
    op.drop_table("story_buckets")
    op.drop_table("entry_signatures")
