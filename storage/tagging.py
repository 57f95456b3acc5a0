"""Queries of stored tags: read entries back for explanations and re-tagging, replace tags.

Used through ``storage.repository.Repository`` (``stored_entries``, ``entry_batch``,
``replace_tags``); every function here takes the caller's session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, selectinload

from aggregator.types import Enclosure, FeedContext, ParsedEntry, StoredEntry, TopicTag

from .models import EntryRow, EntryTagRow, StoryRow


class TagChange(NamedTuple):
    """New tags (and language) for one stored entry, as computed from ``content_hash``."""

    entry_id: int
    content_hash: str  # the content they were computed from; a poll may have changed it since
    tags: tuple[TopicTag, ...]
    language: str | None
    keep: frozenset[str] | None = None  # None: ``tags`` replace all; else only topics in ``keep``


def _stored(row: EntryRow) -> StoredEntry:
    entry = ParsedEntry(
        guid=row.guid,
        link=row.link,
        title=row.title,
        summary_html=row.summary_html,
        content_html=row.content_html,
        text=row.text,
        authors=tuple(row.authors),
        published=row.published,
        updated=row.updated,
        date_from_fetch=row.date_from_fetch,
        categories=tuple(row.categories),
        enclosures=tuple(
            Enclosure(d.get("url", ""), d.get("type"), d.get("length")) for d in row.enclosures
        ),
    )
    feed = FeedContext(tuple(row.feed.tags or ()), row.feed.title or "", row.feed.language)
    return StoredEntry(
        id=row.id,
        entry=entry,
        feed=feed,
        feed_url=row.feed.url,
        language=row.language,
        tags=tuple(TopicTag(t.topic, t.reason) for t in sorted(row.tags, key=lambda t: t.topic)),
        content_hash=row.content_hash,
        story_uid=row.story.uid,
    )


# What a StoredEntry needs besides the entry row, in three IN queries per batch.
_LOAD = (selectinload(EntryRow.tags), selectinload(EntryRow.feed), selectinload(EntryRow.story))


def stored_entries(s: Session, ids: Sequence[int]) -> list[StoredEntry]:
    """The entries with these ids (missing ones left out), in id order."""
    if not ids:
        return []
    q = select(EntryRow).where(EntryRow.id.in_(list(ids))).options(*_LOAD).order_by(EntryRow.id)
    return [_stored(r) for r in s.scalars(q)]


def story_entry_ids(s: Session, uid: str) -> list[int]:
    q = select(EntryRow.id).join(StoryRow).where(StoryRow.uid == uid).order_by(EntryRow.id)
    return list(s.scalars(q))


def entry_batch(s: Session, after_id: int, limit: int) -> list[StoredEntry]:
    """Up to ``limit`` entries with an id above ``after_id``, in id order (keyset paging)."""
    q = (
        select(EntryRow)
        # Tombstones have no content left to tag (storage/retention.py).
        .where(EntryRow.id > after_id, EntryRow.pruned_at.is_(None))
        .options(*_LOAD)
        .order_by(EntryRow.id)
        .limit(limit)
    )
    return [_stored(r) for r in s.scalars(q)]


def recent_entries(s: Session, limit: int) -> list[StoredEntry]:
    """The ``limit`` entries stored last, newest first."""
    # By primary key: ids grow as entries are stored, and the key needs no extra index.
    q = select(EntryRow).options(*_LOAD).order_by(EntryRow.id.desc()).limit(limit)
    return [_stored(r) for r in s.scalars(q)]


def replace_tags(s: Session, changes: Sequence[TagChange]) -> set[str]:
    """Apply the changes; returns the tag keys (and ``lang:xx``) whose entries changed.

    An entry whose content changed since its tags were computed (a poll saved it in between)
    is left alone: the poll tagged the new content already.
    """
    if not changes:
        return set()
    by_id = {c.entry_id: c for c in changes}
    q = select(EntryRow).where(EntryRow.id.in_(list(by_id))).options(selectinload(EntryRow.tags))
    changed: set[str] = set()
    drop: list[int] = []
    add: list[dict[str, object]] = []
    for row in s.scalars(q):
        c = by_id[row.id]
        if row.content_hash != c.content_hash:
            continue
        old = {t.topic: t for t in row.tags if c.keep is None or t.topic in c.keep}
        wanted = {t.topic: t.reason for t in c.tags if c.keep is None or t.topic in c.keep}
        for topic, tag in old.items():
            if topic not in wanted:
                drop.append(tag.id)
                changed.add(topic)
            elif tag.reason != wanted[topic]:
                tag.reason = wanted[topic]
        for topic, reason in wanted.items():
            if topic not in old:
                add.append({"entry_id": row.id, "topic": topic, "reason": reason})
                changed.add(topic)
        if c.keep is None and row.language != c.language:
            # lang= filters select on it: the feeds of both languages change.
            changed.update(f"lang:{x}" for x in (row.language, c.language) if x)
            row.language = c.language
    s.flush()
    if drop:
        s.execute(delete(EntryTagRow).where(EntryTagRow.id.in_(drop)))
    if add:
        s.execute(insert(EntryTagRow), add)
    return changed
