"""SQLAlchemy 2 typed models: the schema.

    feeds ──< polls
      │
      └──< entries >── stories          (a story groups entries that are one article)
              │
              ├──< entry_tags           (topic slug + the reason it was given)
              └──  entry_signatures     (near-duplicate features and LSH bucket keys)
    stories ──< story_splits            (entries an admin moved off a story, and where to)

Retention prunes entries to tombstones (``entries.pruned_at``: content emptied, identity,
hash and signature kept) and hides stories left without a live entry (``stories.pruned``).

An entry is unique per (feed, identity). A story's ``uid`` is fixed when the story is made
and is the published item id forever. Changes go through Alembic migrations
(storage/migrations), appended only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class FeedRow(Base):
    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str] = mapped_column(Text, default="")
    site_url: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(32))
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # Which worker polls the feed now, and until when (storage/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The feed's own <language> (or Content-Language), lower-cased; filters use it.
    language: Mapped[str | None] = mapped_column(String(35))
    moved_to: Mapped[str | None] = mapped_column(Text)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    schedule_hints: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    entries: Mapped[list[EntryRow]] = relationship(back_populates="feed")


class StoryRow(Base):
    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(64), unique=True)
    # One story per canonical URL; NULL when the first entry had no link.
    canonical_url: Mapped[str | None] = mapped_column(String(2048), unique=True)
    published: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Every entry pruned (storage/retention.py): kept for its uid and URL, not published.
    pruned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The event this story is coverage of: its lead story; NULL when the story is its own.
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("stories.id", name="fk_stories_event_id"), index=True
    )
    # Why it joined that event (aggregator/events.py ``Reason``), or the admin who joined it.
    event_reason: Mapped[str | None] = mapped_column(Text)

    entries: Mapped[list[EntryRow]] = relationship(
        back_populates="story", order_by="EntryRow.first_seen_at"
    )


class EntryRow(Base):
    __tablename__ = "entries"
    __table_args__ = (UniqueConstraint("feed_id", "identity", name="uq_entries_feed_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), index=True)
    identity: Mapped[str] = mapped_column(String(2048))
    content_hash: Mapped[str] = mapped_column(String(64))
    guid: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    canonical_url: Mapped[str | None] = mapped_column(String(2048), index=True)
    title: Mapped[str] = mapped_column(Text)
    summary_html: Mapped[str] = mapped_column(Text)
    content_html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    authors: Mapped[list[str]] = mapped_column(JSON, default=list)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    enclosures: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    published: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    date_from_fetch: Mapped[bool] = mapped_column(Boolean, default=False)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Detected from the item's words (ISO 639-1); NULL when unknown.
    language: Mapped[str | None] = mapped_column(String(16), index=True)
    # Set when retention pruned the entry: a tombstone (identity, hash, signature kept).
    pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    feed: Mapped[FeedRow] = relationship(back_populates="entries")
    story: Mapped[StoryRow] = relationship(back_populates="entries")
    tags: Mapped[list[EntryTagRow]] = relationship(
        back_populates="entry", cascade="all, delete-orphan"
    )
    corrections: Mapped[list[TagCorrectionRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class EntryTagRow(Base):
    __tablename__ = "entry_tags"
    __table_args__ = (
        UniqueConstraint("entry_id", "topic", name="uq_entry_tags_entry_topic"),
        Index("ix_entry_tags_topic_entry", "topic", "entry_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)

    entry: Mapped[EntryRow] = relationship(back_populates="tags")


class PollRow(Base):
    __tablename__ = "polls"
    __table_args__ = (Index("ix_polls_feed_started", "feed_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    new: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    elapsed_ms: Mapped[int] = mapped_column(Integer, default=0)


class ContentVersionRow(Base):
    """One row: a counter bumped by every write that changes what a feed could show.

    Web processes compare it (one primary-key read) with the version their cached
    renderings were made at, instead of querying stories on every request.
    """

    __tablename__ = "content_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class EntrySignatureRow(Base):
    """What near-duplicate matching compares (aggregator/neardup.py), one row per entry."""

    __tablename__ = "entry_signatures"

    entry_id: Mapped[int] = mapped_column(
        ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True
    )
    features: Mapped[bytes] = mapped_column(LargeBinary)  # sorted little-endian uint32s
    title: Mapped[str] = mapped_column(Text)  # folded title words, space-separated
    short: Mapped[bool] = mapped_column(Boolean)
    host: Mapped[str | None] = mapped_column(String(255))
    published: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The entry's distinct LSH bucket keys, signed 64-bit little-endian: read into each
    # saving process's memory index (storage/neardup.py), not indexed in the store.
    buckets: Mapped[bytes] = mapped_column(LargeBinary)


class StorySplitRow(Base):
    """An admin split entries off a story: kept so the split is visible and stays done."""

    __tablename__ = "story_splits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), index=True)
    new_story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), index=True)
    entry_ids: Mapped[list[int]] = mapped_column(JSON)
    split_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventSignatureRow(Base):
    """What event matching compares (aggregator/events.py), one row per entry."""

    __tablename__ = "event_signatures"

    entry_id: Mapped[int] = mapped_column(
        ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True
    )
    published: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)  # float16 unit vector
    terms: Mapped[str] = mapped_column(Text)  # names and numbers, space-separated
    title: Mapped[str] = mapped_column(Text)  # title terms (CJK as bigrams), space-separated


class EventKeyRow(Base):
    """A headline term or name of an entry, hashed: how event candidates are found."""

    __tablename__ = "event_keys"
    __table_args__ = (Index("ix_event_keys_key_published", "key", "published"),)

    key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    published: Mapped[datetime] = mapped_column(UTCDateTime)


class TagCorrectionRow(Base):
    """An admin put an entry in a topic or took it out: it wins over rules and the model at
    every later tagging, and the classifier learns from it (aggregator/learn.py)."""

    __tablename__ = "tag_corrections"
    __table_args__ = (UniqueConstraint("entry_id", "topic", name="uq_tag_corrections_entry_topic"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), index=True)
    topic: Mapped[str] = mapped_column(String(200))
    inside: Mapped[bool] = mapped_column(Boolean)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StoryCorrectionRow(Base):
    """An admin joined two stories' events, or split one story off another: kept so that
    matching respects it and admins see it."""

    __tablename__ = "story_corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "join" or "split"
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), index=True)
    other_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), index=True)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime)
