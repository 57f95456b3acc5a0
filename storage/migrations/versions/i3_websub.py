"""websub subscriber: our subscriptions to feeds' hubs (push in)

Revision ID: i3_websub
Revises: i4_dedup
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i3_websub"
down_revision = "i4_dedup"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A new table only: existing data is untouched (storage/push_subscriptions.py).
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feed_url", sa.String(length=2048), nullable=False, unique=True),
        sa.Column("callback_id", sa.String(length=64), nullable=False, unique=True),
        sa.Column("hub", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=True),
        sa.Column("requested_at", _TZ, nullable=False),
        sa.Column("expires_at", _TZ, nullable=True),
        sa.Column("last_push_at", _TZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("push_subscriptions")
