"""near-duplicate lookup: text signatures cut into 48 bands of 3 rows (were 32 of 2)

Revision ID: i3_lsh_bands
Revises: i7_retention
Create Date: 2026-12-01

Bucket keys are derived from the stored features and title words
(``entry_signatures``), so every entry's buckets are rebuilt from them with the
current ``aggregator.neardup.buckets``; nothing is re-fetched. Reads and writes go in
batches of 1,000 entries. About 1 s per 10,000 stored entries on SQLite.
"""

from __future__ import annotations

from array import array

import sqlalchemy as sa
from alembic import op

from aggregator.neardup import buckets

revision = "i3_lsh_bands"
down_revision = "i7_retention"
branch_labels = None
depends_on = None

BATCH = 1000


def _rebuild() -> None:
    conn = op.get_bind()
    meta = sa.MetaData()
    sigs = sa.Table("entry_signatures", meta, autoload_with=conn)
    rows = sa.Table("story_buckets", meta, autoload_with=conn)
    conn.execute(sa.delete(rows))
    last = -1
    while True:
        batch = conn.execute(
            sa.select(sigs.c.entry_id, sigs.c.features, sigs.c.title, sigs.c.published)
            .where(sigs.c.entry_id > last)
            .order_by(sigs.c.entry_id)
            .limit(BATCH)
        ).all()
        if not batch:
            return
        new = [
            {"entry_id": eid, "bucket": b, "published": published}
            for eid, features, title, published in batch
            for b in dict.fromkeys(buckets(tuple(array("I", features)), tuple(title.split())))
        ]
        if new:
            conn.execute(sa.insert(rows), new)
        last = batch[-1][0]


def upgrade() -> None:
    _rebuild()


def downgrade() -> None:
    # The bands are module constants: run the downgrade with the old code, which then
    # rebuilds the buckets it expects.
    _rebuild()
