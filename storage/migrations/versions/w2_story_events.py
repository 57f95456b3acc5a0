"""story events: coverage of one event by several outlets, and admins' corrections

Revision ID: w2_story_events
Revises: i3_bucket_blobs
Create Date: 2026-12-07

Two levels of grouping: a story holds copies of one text (as before); an event holds the
stories of one news event (``stories.event_id``: the event's lead story, NULL for a story
that is its own event, so every existing story starts as its own event). What event
matching compares of each entry is one ``event_signatures`` row (sentence-embedding
vector, names and numbers, title terms); ``event_keys`` indexes its headline terms and
names, so that a new story's candidates are found by key, however many are stored.
``story_corrections`` remembers what admins joined and split, so matching never undoes it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "w2_story_events"
down_revision = "i3_bucket_blobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTERs: on SQLite a batch (table copy) of ``stories`` trips the foreign keys
    # of entries to it, and SQLite cannot add a constraint to a table in place.
    op.add_column("stories", sa.Column("event_id", sa.Integer(), nullable=True))
    op.add_column("stories", sa.Column("event_reason", sa.Text(), nullable=True))
    op.create_index("ix_stories_event_id", "stories", ["event_id"], unique=False)
    if op.get_bind().dialect.name != "sqlite":
        op.create_foreign_key("fk_stories_event_id", "stories", "stories", ["event_id"], ["id"])
    op.create_table(
        "event_signatures",
        sa.Column(
            "entry_id",
            sa.Integer(),
            sa.ForeignKey("entries.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("published", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
    )
    op.create_index("ix_event_signatures_published", "event_signatures", ["published"])
    op.create_table(
        "event_keys",
        sa.Column("key", sa.BigInteger(), nullable=False),
        sa.Column(
            "entry_id",
            sa.Integer(),
            sa.ForeignKey("entries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("published", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "entry_id"),
    )
    op.create_index("ix_event_keys_key_published", "event_keys", ["key", "published"])
    op.create_index("ix_event_keys_entry_id", "event_keys", ["entry_id"])
    op.create_table(
        "story_corrections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("story_id", sa.Integer(), sa.ForeignKey("stories.id"), nullable=False),
        sa.Column("other_id", sa.Integer(), sa.ForeignKey("stories.id"), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_story_corrections_story_id", "story_corrections", ["story_id"])
    op.create_index("ix_story_corrections_other_id", "story_corrections", ["other_id"])


def downgrade() -> None:
    op.drop_index("ix_story_corrections_other_id", table_name="story_corrections")
    op.drop_index("ix_story_corrections_story_id", table_name="story_corrections")
    op.drop_table("story_corrections")
    op.drop_index("ix_event_keys_entry_id", table_name="event_keys")
    op.drop_index("ix_event_keys_key_published", table_name="event_keys")
    op.drop_table("event_keys")
    op.drop_index("ix_event_signatures_published", table_name="event_signatures")
    op.drop_table("event_signatures")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_stories_event_id", "stories", type_="foreignkey")
    op.drop_index("ix_stories_event_id", table_name="stories")
    # SQLite (3.35+) drops a plain column in place; a batch would copy the table.
    op.drop_column("stories", "event_reason")
    op.drop_column("stories", "event_id")
