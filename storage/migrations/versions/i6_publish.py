"""publishing: feed language, content version counter, full-text search

Revision ID: i6_publish
Revises: i8_leases
Create Date: 2026-11-25

- ``feeds.language``: the feed's declared language, for ``lang=`` filters.
- ``content_version``: one row, bumped by writes that change published content, so a
  web process can tell with one primary-key read whether its cached feeds are current.
- Full-text search over entries' title and text: on SQLite an FTS5 table with external
  content kept in sync by triggers (so every write path, not only ours, keeps it
  current); on PostgreSQL a stored generated ``tsvector`` column with a GIN index.
  Both use no stemming and no stop words ('simple'), because feeds come in many
  languages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i6_publish"
down_revision = "i8_leases"
branch_labels = None
depends_on = None

_SQLITE_FTS = [
    """CREATE VIRTUAL TABLE entries_fts USING fts5(
        title, text, content='entries', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER entries_fts_insert AFTER INSERT ON entries BEGIN
        INSERT INTO entries_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
    END""",
    """CREATE TRIGGER entries_fts_delete AFTER DELETE ON entries BEGIN
        INSERT INTO entries_fts(entries_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
    END""",
    """CREATE TRIGGER entries_fts_update AFTER UPDATE OF title, text ON entries BEGIN
        INSERT INTO entries_fts(entries_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
        INSERT INTO entries_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
    END""",
    # Index what is already stored.
    "INSERT INTO entries_fts(entries_fts) VALUES ('rebuild')",
]

_PG_FTS = [
    """ALTER TABLE entries ADD COLUMN search tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(text, ''))) STORED""",
    "CREATE INDEX ix_entries_search ON entries USING GIN (search)",
]


def upgrade() -> None:
    op.add_column("feeds", sa.Column("language", sa.String(length=35), nullable=True))
    op.create_table(
        "content_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO content_version (id, version) VALUES (1, 0)")
    statements = _PG_FTS if op.get_bind().dialect.name == "postgresql" else _SQLITE_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_entries_search")
        op.execute("ALTER TABLE entries DROP COLUMN search")
    else:
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER entries_fts_{trigger}")
        op.execute("DROP TABLE entries_fts")
    op.drop_table("content_version")
    # Not batch mode: on SQLite that recreates feeds, and dropping the old table with
    # foreign keys on would cascade-delete every entry. SQLite >= 3.35 drops a column.
    op.execute("ALTER TABLE feeds DROP COLUMN language")
