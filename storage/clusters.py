"""Story queries for admins: the largest clusters, and splitting a story.

A split moves the chosen entries of a story into a new story and records it in
``story_splits``. Matching never moves a stored entry between stories (an edited entry
keeps its story), so a split stays done: later polls add new entries to one side or the
other, never merge the two back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from aggregator.exceptions import StoryError
from aggregator.types import ClusterEntry, StoryCluster

from .models import EntryRow, FeedRow, StoryRow, StorySplitRow


def clusters(s: Session, since: datetime, limit: int) -> list[StoryCluster]:
    """Stories first published since ``since``, the most entries first."""
    n = func.count(EntryRow.id).label("n")
    ids = [
        sid
        for sid, _ in s.execute(
            select(EntryRow.story_id, n)
            .join(StoryRow, StoryRow.id == EntryRow.story_id)
            .where(StoryRow.published >= since)
            .group_by(EntryRow.story_id)
            .order_by(n.desc(), EntryRow.story_id.desc())
            .limit(limit)
        ).all()
    ]
    return [c for c in (_cluster(s, sid) for sid in ids) if c is not None]


def story(s: Session, uid: str) -> StoryCluster | None:
    sid = s.scalar(select(StoryRow.id).where(StoryRow.uid == uid))
    return _cluster(s, sid) if sid is not None else None


def _cluster(s: Session, story_id: int) -> StoryCluster | None:
    row = s.scalar(
        select(StoryRow)
        .where(StoryRow.id == story_id)
        .options(selectinload(StoryRow.entries).selectinload(EntryRow.feed))
    )
    if row is None:
        return None
    parent = s.scalar(
        select(StoryRow.uid)
        .join(StorySplitRow, StorySplitRow.story_id == StoryRow.id)
        .where(StorySplitRow.new_story_id == story_id)
    )
    entries = sorted(row.entries, key=lambda e: (e.first_seen_at, e.id))
    return StoryCluster(
        uid=row.uid,
        published=row.published,
        entries=tuple(
            ClusterEntry(
                entry_id=e.id,
                feed_url=e.feed.url,
                feed_title=e.feed.title or e.feed.url,
                title=e.title,
                link=e.link,
                published=e.published,
            )
            for e in entries
        ),
        split_from=parent,
    )


def split_uid(uid: str, entry_ids: Sequence[int]) -> str:
    """The new story's uid: the same split asked twice makes one story, not two."""
    key = uid + "\0" + ",".join(str(i) for i in sorted(set(entry_ids)))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def split(s: Session, uid: str, entry_ids: Sequence[int], now: datetime) -> str:
    """Move ``entry_ids`` off story ``uid`` into a new story; return the new story's uid."""
    row = s.scalar(select(StoryRow).where(StoryRow.uid == uid).with_for_update())
    if row is None:
        raise StoryError(f"no story {uid!r}")
    wanted = set(entry_ids)
    if not wanted:
        raise StoryError("name at least one entry to split off")
    members = {e.id: e for e in s.scalars(select(EntryRow).where(EntryRow.story_id == row.id))}
    unknown = sorted(wanted - set(members))
    if unknown:
        raise StoryError(f"entries {unknown} are not in story {uid!r}")
    if wanted == set(members):
        raise StoryError("a split must leave at least one entry in the story")
    moving = sorted((members[i] for i in wanted), key=lambda e: (e.first_seen_at, e.id))
    new_uid = split_uid(uid, list(wanted))
    # The story's URL goes with the entry that has it, so later copies follow that entry.
    url = row.canonical_url
    moved_url = url if url and any(e.canonical_url == url for e in moving) else None
    if moved_url:
        row.canonical_url = None
        s.flush()
    new = StoryRow(
        uid=new_uid,
        canonical_url=moved_url,
        published=moving[0].published,
        updated=max(e.updated for e in moving),
        created_at=now,
    )
    s.add(new)
    s.flush()
    s.execute(
        update(EntryRow)
        .where(EntryRow.id.in_([e.id for e in moving]))
        .values(story_id=new.id)
        .execution_options(synchronize_session=False)
    )
    s.add(
        StorySplitRow(story_id=row.id, new_story_id=new.id, entry_ids=sorted(wanted), split_at=now)
    )
    return new_uid


def entry_stories(s: Session) -> list[tuple[str, str, str | None, str]]:
    """(feed URL, entry identity, link, story uid) of every entry: for evaluations."""
    q = (
        select(EntryRow.identity, EntryRow.link, StoryRow.uid, EntryRow.feed_id)
        .join(StoryRow, StoryRow.id == EntryRow.story_id)
        .order_by(EntryRow.id)
    )
    feeds = dict(s.execute(select(FeedRow.id, FeedRow.url)).all())
    return [(feeds[fid], ident, link, uid) for ident, link, uid, fid in s.execute(q).all()]
