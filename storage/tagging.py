"""Queries of stored tags: read entries back for explanations and re-tagging, replace tags.

Used through ``storage.repository.Repository`` (``stored_entries``, ``entry_batch``,
``replace_tags``); every function here takes the caller's session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, selectinload

from aggregator.types import (
    Enclosure,
    FeedContext,
    ParsedEntry,
    StoredEntry,
    TopicTag,
    with_corrections,
)

from .models import (
    EntryRow,
    EntryTagRow,
    EventSignatureRow,
    FeedRow,
    StoryRow,
    TagCorrectionRow,
)


class TagChange(NamedTuple):
    """New tags (and language) for one stored entry, as computed from ``content_hash``."""

    entry_id: int
    content_hash: str  # the content they were computed from; a poll may have changed it since
    tags: tuple[TopicTag, ...]
    language: str | None
    keep: frozenset[str] | None = None  # None: ``tags`` replace all; else only topics in ``keep``


class TaggedText(NamedTuple):
    """What the classifier may learn from one stored entry (aggregator/learn.py)."""

    entry_id: int
    title: str
    text: str
    categories: tuple[str, ...]
    reasons: Mapping[str, str]  # topic -> why the entry is in it
    corrected: bool  # an admin corrected one of its topics
    vector: bytes | None  # its stored embedding (event matching's), if any
    feed_url: str


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
    feed = FeedContext(
        tuple(row.feed.tags or ()), row.feed.title or "", row.feed.language, row.feed.url
    )
    return StoredEntry(
        id=row.id,
        entry=entry,
        feed=feed,
        feed_url=row.feed.url,
        language=row.language,
        tags=tuple(TopicTag(t.topic, t.reason) for t in sorted(row.tags, key=lambda t: t.topic)),
        content_hash=row.content_hash,
        story_uid=row.story.uid,
        corrections={c.topic: c.inside for c in row.corrections},
    )


# What a StoredEntry needs besides the entry row, in four IN queries per batch.
_LOAD = (
    selectinload(EntryRow.tags),
    selectinload(EntryRow.feed),
    selectinload(EntryRow.story),
    selectinload(EntryRow.corrections),
)


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
    q = (
        select(EntryRow)
        .where(EntryRow.id.in_(list(by_id)))
        .options(selectinload(EntryRow.tags), selectinload(EntryRow.corrections))
    )
    changed: set[str] = set()
    drop: list[int] = []
    add: list[dict[str, object]] = []
    for row in s.scalars(q):
        c = by_id[row.id]
        if row.content_hash != c.content_hash:
            continue
        old = {t.topic: t for t in row.tags if c.keep is None or t.topic in c.keep}
        fixed = with_corrections(c.tags, {x.topic: x.inside for x in row.corrections}, c.keep)
        wanted = {t.topic: t.reason for t in fixed if c.keep is None or t.topic in c.keep}
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


# -- admins' corrections ------------------------------------------------------------------


class TagCorrection(NamedTuple):
    entry_id: int
    topic: str
    inside: bool
    made_at: datetime
    title: str
    story_uid: str


def correct(
    s: Session, entry_ids: Sequence[int], topic: str, inside: bool | None, now: datetime
) -> int:
    """Record that the entries are (``inside``) or are not in ``topic``; None forgets it.

    Returns how many entries' corrections changed. The stored tags follow when the caller
    re-tags the entries (``replace_tags`` applies every correction).
    """
    ids = sorted(set(entry_ids))
    if not ids:
        return 0
    q = select(TagCorrectionRow).where(
        TagCorrectionRow.entry_id.in_(ids), TagCorrectionRow.topic == topic
    )
    have = {c.entry_id: c for c in s.scalars(q)}
    changed = 0
    for eid in ids:
        row = have.get(eid)
        if inside is None:
            if row is not None:
                s.delete(row)
                changed += 1
        elif row is None:
            s.add(TagCorrectionRow(entry_id=eid, topic=topic, inside=inside, made_at=now))
            changed += 1
        elif row.inside != inside:
            row.inside, row.made_at = inside, now
            changed += 1
    s.flush()
    return changed


def story_corrections(s: Session, story_ids: Sequence[int]) -> dict[int, dict[str, bool]]:
    """story id -> topic -> in, from the corrections of the stories' entries.

    A copy that joins a corrected story later carries the story's corrections: the topic
    feed publishes the story, so "not in politics" holds for every copy of it.
    """
    if not story_ids:
        return {}
    q = (
        select(EntryRow.story_id, TagCorrectionRow.topic, TagCorrectionRow.inside)
        .join(EntryRow, EntryRow.id == TagCorrectionRow.entry_id)
        .where(EntryRow.story_id.in_(sorted(set(story_ids))))
        .order_by(TagCorrectionRow.made_at, TagCorrectionRow.id)
    )
    out: dict[int, dict[str, bool]] = {}
    for sid, topic, inside in s.execute(q):
        out.setdefault(sid, {})[topic] = inside  # the latest one wins
    return out


def corrections(s: Session, limit: int) -> list[TagCorrection]:
    """The ``limit`` latest corrections, newest first, with their entries' titles."""
    q = (
        select(TagCorrectionRow, EntryRow.title, StoryRow.uid)
        .join(EntryRow, EntryRow.id == TagCorrectionRow.entry_id)
        .join(StoryRow, StoryRow.id == EntryRow.story_id)
        .order_by(TagCorrectionRow.made_at.desc(), TagCorrectionRow.id.desc())
        .limit(limit)
    )
    return [
        TagCorrection(c.entry_id, c.topic, c.inside, c.made_at, title, uid)
        for c, title, uid in s.execute(q)
    ]


def corrected_entries(s: Session, limit: int) -> list[tuple[ParsedEntry, Mapping[str, bool]]]:
    """Entries admins corrected, with their corrections, oldest correction first: what the
    classifier learns from (tombstones have no text left and are left out)."""
    latest = (
        select(TagCorrectionRow.entry_id)
        .group_by(TagCorrectionRow.entry_id)
        .order_by(TagCorrectionRow.entry_id.desc())
        .limit(limit)
    )
    q = (
        select(EntryRow)
        .where(EntryRow.id.in_(latest), EntryRow.pruned_at.is_(None))
        .options(*_LOAD)
        .order_by(EntryRow.id)
    )
    out = []
    for row in s.scalars(q):
        stored = _stored(row)
        out.append((stored.entry, stored.corrections))
    return out


def latest_tagged(s: Session, limit: int, chars: int) -> list[TaggedText]:
    """The newest ``limit`` entries with text left, newest first, with their tags' reasons;
    only the first ``chars`` characters of each text are read."""
    latest = (
        select(EntryRow.id)
        .where(EntryRow.pruned_at.is_(None))
        .order_by(EntryRow.id.desc())
        .limit(limit)
        .scalar_subquery()
    )
    reasons: dict[int, dict[str, str]] = {}
    for entry_id, topic, reason in s.execute(
        select(EntryTagRow.entry_id, EntryTagRow.topic, EntryTagRow.reason).where(
            EntryTagRow.entry_id.in_(latest)
        )
    ):
        reasons.setdefault(entry_id, {})[topic] = reason
    corrected = set(
        s.scalars(select(TagCorrectionRow.entry_id).where(TagCorrectionRow.entry_id.in_(latest)))
    )
    rows = s.execute(
        select(
            EntryRow.id,
            EntryRow.title,
            func.substr(EntryRow.text, 1, chars).label("text"),
            EntryRow.categories,
            EventSignatureRow.vector,
            FeedRow.url,
        )
        .join(FeedRow, FeedRow.id == EntryRow.feed_id)
        .outerjoin(EventSignatureRow, EventSignatureRow.entry_id == EntryRow.id)
        .where(EntryRow.id.in_(latest))
        .order_by(EntryRow.id.desc())
    )
    return [
        TaggedText(
            r.id,
            r.title,
            r.text,
            tuple(r.categories),
            reasons.get(r.id, {}),
            r.id in corrected,
            r.vector,
            r.url,
        )
        for r in rows
    ]
