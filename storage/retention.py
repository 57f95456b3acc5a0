"""Retention: prune old entries to tombstones, and expire tombstones much later.

Used through ``Repository.prune`` (aggregator/retention.py decides the rules). Two steps,
one transaction::

    prune:   entries older than the feed's `days`, or past its newest `max_items`
             -> content emptied, tags dropped, pruned_at = now        (a tombstone)
             stories left with no live entry -> stories.pruned (no longer published)
    expire:  tombstones the feed has not sent for `tombstone_days` -> rows deleted

A tombstone keeps what dedup needs: the entry's (feed, identity) and content hash, its
near-duplicate signature (with its buckets), and its story (uid and canonical URL). So a
pruned item its feed sends again is "unchanged", never new; a rewrite of it joins its old story.
Expiry counts from ``last_seen_at``, which every poll that still sees the item refreshes:
a tombstone never expires while its feed still carries the item.

Ids are never reused: stories are never deleted (a story row is a uid and a URL), and the
newest entry row is never deleted (SQLite would hand out the highest rowid again;
PostgreSQL sequences never do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .models import (
    EntryRow,
    EntrySignatureRow,
    EntryTagRow,
    FeedRow,
    StoryRow,
    TagCorrectionRow,
)


@dataclass(frozen=True)
class Rule:
    """How much of one feed to keep: entries newer than ``days``, at most ``max_items``."""

    days: int | None = None
    max_items: int | None = None


@dataclass
class PruneCounts:
    pruned: dict[str, int] = field(default_factory=dict)  # feed URL -> entries pruned
    stories_hidden: int = 0  # stories with no live entry left
    tombstones_expired: int = 0
    tombstones: int = 0  # pruned entries kept (after this run)

    @property
    def entries(self) -> int:
        return sum(self.pruned.values())


def prune(
    s: Session,
    rules: Mapping[str, Rule],
    default: Rule,
    tombstone_days: int,
    now: datetime,
    *,
    dry_run: bool = False,
) -> PruneCounts:
    """Prune every feed by its rule (``rules[url]``, else ``default``); see the docstring."""
    counts = PruneCounts()
    doomed: list[int] = []
    for feed_id, url in s.execute(select(FeedRow.id, FeedRow.url).order_by(FeedRow.id)).all():
        ids = _expired_ids(s, feed_id, rules.get(url, default), now)
        if ids:
            counts.pruned[url] = len(ids)
            doomed += ids
    story_ids: set[int] = set()
    for chunk in _chunks(doomed):
        story_ids |= set(s.scalars(select(EntryRow.story_id).where(EntryRow.id.in_(chunk))))
    # A story stays published while any of its entries stays live.
    gone = set(doomed)
    alive: set[int] = set()
    for chunk in _chunks(sorted(story_ids)):
        q = select(EntryRow.story_id, EntryRow.id).where(
            EntryRow.pruned_at.is_(None), EntryRow.story_id.in_(chunk)
        )
        alive |= {story for story, entry in s.execute(q).all() if entry not in gone}
    hidden = sorted(story_ids - alive)
    counts.stories_hidden = len(hidden)
    if not dry_run:
        for chunk in _chunks(doomed):
            s.execute(delete(EntryTagRow).where(EntryTagRow.entry_id.in_(chunk)))
            s.execute(
                update(EntryRow)
                .where(EntryRow.id.in_(chunk))
                .values(
                    title="",
                    summary_html="",
                    content_html="",
                    text="",
                    authors=[],
                    categories=[],
                    enclosures=[],
                    pruned_at=now,
                )
            )
        for chunk in _chunks(hidden):
            s.execute(update(StoryRow).where(StoryRow.id.in_(chunk)).values(pruned=True))
    counts.tombstones_expired = _expire(s, now - timedelta(days=tombstone_days), dry_run)
    counts.tombstones = int(
        s.scalar(select(func.count()).select_from(EntryRow).where(EntryRow.pruned_at.is_not(None)))
        or 0
    )
    return counts


def _expired_ids(s: Session, feed_id: int, rule: Rule, now: datetime) -> list[int]:
    live = (EntryRow.feed_id == feed_id, EntryRow.pruned_at.is_(None))
    ids: set[int] = set()
    if rule.days is not None:
        cutoff = now - timedelta(days=rule.days)
        ids |= set(s.scalars(select(EntryRow.id).where(*live, EntryRow.published < cutoff)))
    if rule.max_items is not None:
        # Newest first by date, then by arrival: the same order the feeds show.
        past = (
            select(EntryRow.id)
            .where(*live)
            .order_by(EntryRow.published.desc(), EntryRow.id.desc())
            .offset(rule.max_items)
        )
        ids |= set(s.scalars(past))
    return sorted(ids)


def _expire(s: Session, before: datetime, dry_run: bool) -> int:
    newest = s.scalar(select(func.max(EntryRow.id)))
    q = select(EntryRow.id).where(
        EntryRow.pruned_at.is_not(None),
        EntryRow.pruned_at < before,
        EntryRow.last_seen_at < before,
        EntryRow.id != newest,
    )
    ids = list(s.scalars(q))
    if dry_run or not ids:
        return len(ids)
    for chunk in _chunks(ids):
        # Children first: SQLite enforces no ON DELETE CASCADE unless told to.
        s.execute(delete(EntryTagRow).where(EntryTagRow.entry_id.in_(chunk)))
        s.execute(delete(TagCorrectionRow).where(TagCorrectionRow.entry_id.in_(chunk)))
        s.execute(delete(EntrySignatureRow).where(EntrySignatureRow.entry_id.in_(chunk)))
        s.execute(delete(EntryRow).where(EntryRow.id.in_(chunk)))
    return len(ids)


def revive_stories(s: Session, story_ids: Sequence[int]) -> None:
    """A new entry joined these stories: publish them again if pruning had hidden them."""
    for chunk in _chunks(sorted(set(story_ids))):
        s.execute(
            update(StoryRow)
            .where(StoryRow.id.in_(chunk), StoryRow.pruned.is_(True))
            .values(pruned=False)
        )


def _chunks(values: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    return [values[i : i + size] for i in range(0, len(values), size)]
