"""WebSub hub: subscriptions, topics' last pushed content, pending deliveries

Revision ID: i6_websub
Revises: i3_websub
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i6_websub"
down_revision = "i3_websub"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "websub_subscriptions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("topic", sa.String(length=2000), nullable=False),
        sa.Column("callback", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("expires_at", _TZ, nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.UniqueConstraint("topic", "callback", name="uq_websub_topic_callback"),
    )
    op.create_index("ix_websub_subscriptions_topic", "websub_subscriptions", ["topic"])
    op.create_index("ix_websub_subscriptions_expires_at", "websub_subscriptions", ["expires_at"])
    op.create_table(
        "websub_topics",
        sa.Column("topic", sa.String(length=2000), primary_key=True),
        sa.Column("etag", sa.String(length=100), nullable=False),
        sa.Column("changed_at", _TZ, nullable=False),
    )
    op.create_table(
        "websub_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "subscription_id",
            sa.Integer(),
            sa.ForeignKey("websub_subscriptions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("link", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TZ, nullable=False),
        sa.Column("lease_until", _TZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_index(
        "ix_websub_deliveries_subscription_id", "websub_deliveries", ["subscription_id"]
    )
    op.create_index(
        "ix_websub_deliveries_next_attempt_at", "websub_deliveries", ["next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("websub_deliveries")
    op.drop_table("websub_topics")
    op.drop_table("websub_subscriptions")
