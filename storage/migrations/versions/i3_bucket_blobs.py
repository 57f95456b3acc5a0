"""near-duplicate lookup: bucket keys packed in entry_signatures, story_buckets dropped

Revision ID: i3_bucket_blobs
Revises: i3_lsh_bands
Create Date: 2026-12-02

The lookup's index moves to memory (storage/neardup.py ``BucketIndex``): each entry's
bucket keys become one packed column of its signature row, and the 56-rows-per-entry
``story_buckets`` table with its random-key index goes. The keys are derived from the
stored features and title words with the current ``aggregator.neardup.buckets``, as
``i3_lsh_bands`` did, in batches of 1,000 entries. The downgrade writes the rows back.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op

from aggregator.neardup import buckets

revision = "i3_bucket_blobs"
down_revision = "i3_lsh_bands"
branch_labels = None
depends_on = None

BATCH = 1000


def _signatures(conn: sa.Connection) -> sa.Table:
    return sa.Table("entry_signatures", sa.MetaData(), autoload_with=conn)


def _batches(conn: sa.Connection, sigs: sa.Table, *columns: str) -> Iterator[list[Any]]:
    """(entry_id, *columns) of every signature row, BATCH rows at a time."""
    last = -1
    while True:
        batch = conn.execute(
            sa.select(sigs.c.entry_id, *(sigs.c[c] for c in columns))
            .where(sigs.c.entry_id > last)
            .order_by(sigs.c.entry_id)
            .limit(BATCH)
        ).all()
        if not batch:
            return
        yield list(batch)
        last = batch[-1][0]


def upgrade() -> None:
    op.add_column("entry_signatures", sa.Column("buckets", sa.LargeBinary(), nullable=True))
    conn = op.get_bind()
    sigs = _signatures(conn)
    for batch in _batches(conn, sigs, "features", "title"):
        conn.execute(
            sa.update(sigs).where(sigs.c.entry_id == sa.bindparam("eid")),
            [
                {
                    "eid": eid,
                    "buckets": np.fromiter(
                        dict.fromkeys(buckets(tuple(array("I", features)), tuple(title.split()))),
                        dtype="<i8",
                    ).tobytes(),
                }
                for eid, features, title in batch
            ],
        )
    with op.batch_alter_table("entry_signatures") as batch_op:
        batch_op.alter_column("buckets", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.create_index("ix_entry_signatures_published", ["published"])
    op.drop_index("ix_story_buckets_bucket_published", table_name="story_buckets")
    op.drop_table("story_buckets")


def downgrade() -> None:
    op.create_table(
        "story_buckets",
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("published", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_id", "bucket"),
    )
    op.create_index("ix_story_buckets_bucket_published", "story_buckets", ["bucket", "published"])
    conn = op.get_bind()
    sigs = _signatures(conn)
    rows = sa.Table("story_buckets", sa.MetaData(), autoload_with=conn)
    for batch in _batches(conn, sigs, "published", "buckets"):
        new = [
            {"entry_id": eid, "bucket": int(b), "published": published}
            for eid, published, blob in batch
            for b in np.frombuffer(blob, dtype="<i8").tolist()
        ]
        if new:
            conn.execute(sa.insert(rows), new)
    with op.batch_alter_table("entry_signatures") as batch_op:
        batch_op.drop_index("ix_entry_signatures_published")
        batch_op.drop_column("buckets")
