"""Events in the store: which stories are coverage of one event, and admins' corrections.

An event is named by its lead story: ``stories.event_id`` is the lead's id, NULL on the
lead itself (and on every story that is its own event). The decision is the caller's
``EventDecider`` (aggregator/events.py); this module finds its candidates (the entries
published within the window of a new story, with their event), records its choice with
the reason, and carries out admins' joins and splits, recorded in ``story_corrections``.

Matching only ever places a *new* story; a stored story changes event only through an
admin, so a join or split stays done across polls and workers.

On PostgreSQL a poll that starts stories takes one transaction-level advisory lock before
it reads candidates: two workers saving coverage of one event at the same instant then
decide one after the other, and the second sees the first's story.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, func, insert, or_, select, text, union, update
from sqlalchemy.orm import Session, aliased, selectinload

from aggregator.events import lookup_keys
from aggregator.exceptions import StoryError
from aggregator.types import ClusterEntry, EventCandidate, EventMember, EventSignature

from .models import EntryRow, EventKeyRow, EventSignatureRow, StoryCorrectionRow, StoryRow

EVENT_LOCK = 0x5E7E47  # pg_advisory_xact_lock key of event decisions
# Entries read per key of a lookup, the newest first: a crowded key (a name in every
# story of the week) cannot make one lookup expensive.
KEY_ROWS = 50


def lock(s: Session) -> None:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_LOCK})


def save(s: Session, signatures: Sequence[tuple[int, EventSignature]]) -> None:
    """Store new entries' signatures and their lookup keys."""
    if signatures:
        keys = [
            {"key": k, "entry_id": eid, "published": sig.published}
            for eid, sig in signatures
            for k in lookup_keys(sig)
        ]
        if keys:
            s.execute(insert(cast(Table, EventKeyRow.__table__)), keys)
        s.add_all(
            EventSignatureRow(
                entry_id=eid,
                published=sig.published,
                vector=sig.vector,
                terms=" ".join(sig.terms),
                title=" ".join(sig.title),
            )
            for eid, sig in signatures
        )
        s.flush()


def candidates(s: Session, new: EventSignature, window: timedelta) -> list[EventCandidate]:
    """Stored entries published within ``window`` of ``new`` that share a lookup key with
    it (at most ``KEY_ROWS`` a key, the newest), with their events."""
    # Clamped: an item dated in year 1 or 9999 (feeds do that) minus the window is no date.
    published = new.published
    lo = published - window if published - datetime.min.replace(tzinfo=UTC) > window else None
    hi = published + window if datetime.max.replace(tzinfo=UTC) - published > window else None
    lo = lo or datetime.min.replace(tzinfo=UTC)
    hi = hi or datetime.max.replace(tzinfo=UTC)
    keys = lookup_keys(new)
    if not keys:
        return []
    per_key = [
        select(EventKeyRow.entry_id)
        .where(EventKeyRow.key == k, EventKeyRow.published.between(lo, hi))
        .order_by(EventKeyRow.published.desc())
        .limit(KEY_ROWS)
        .subquery()
        for k in keys
    ]
    found = union(*(select(sub.c.entry_id) for sub in per_key))
    ids = [eid for (eid,) in s.execute(found).all()]
    if not ids:
        return []
    # An event's first date is its lead's (the lead is its earliest story: matching
    # places only new stories, and a join keeps the earlier lead).
    lead = aliased(StoryRow)
    rows = s.execute(
        select(
            EventSignatureRow.entry_id,
            EntryRow.story_id,
            EntryRow.feed_id,
            lead.id.label("lead"),
            lead.published.label("first"),
            EventSignatureRow.published,
            EventSignatureRow.vector,
            EventSignatureRow.terms,
            EventSignatureRow.title,
        )
        .join(EntryRow, EntryRow.id == EventSignatureRow.entry_id)
        .join(StoryRow, StoryRow.id == EntryRow.story_id)
        .join(lead, lead.id == func.coalesce(StoryRow.event_id, StoryRow.id))
        .where(EventSignatureRow.entry_id.in_(ids), EntryRow.pruned_at.is_(None))
    ).all()
    return [
        EventCandidate(
            entry_id=r.entry_id,
            story_id=r.story_id,
            feed_id=r.feed_id,
            event_id=r.lead,
            event_first=r.first,
            signature=EventSignature(
                published=r.published,
                vector=r.vector,
                terms=tuple(r.terms.split()),
                title=tuple(r.title.split()),
            ),
        )
        for r in rows
    ]


def place(s: Session, story_id: int, event_id: int, reason: str) -> None:
    """Story ``story_id`` (new, its own event so far) is coverage of event ``event_id``.

    Stories of this poll placed in ``story_id``'s event before follow it: every story
    names its event's lead, never a story that is itself a member.
    """
    s.execute(
        update(StoryRow)
        .where(StoryRow.event_id == story_id)
        .values(event_id=event_id)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(StoryRow)
        .where(StoryRow.id == story_id)
        .values(event_id=event_id, event_reason=reason)
        .execution_options(synchronize_session=False)
    )


def _story(s: Session, uid: str) -> StoryRow:
    row = s.scalar(select(StoryRow).where(StoryRow.uid == uid).with_for_update())
    if row is None:
        raise StoryError(f"no story {uid!r}")
    return row


def join(s: Session, uid_a: str, uid_b: str, now: datetime) -> str:
    """Make the events of stories ``uid_a`` and ``uid_b`` one; return the lead's uid.

    The earlier lead stays lead (its uid is the published item id of the event).
    """
    lock(s)
    a, b = _story(s, uid_a), _story(s, uid_b)
    lead_a = s.get(StoryRow, a.event_id or a.id)
    lead_b = s.get(StoryRow, b.event_id or b.id)
    assert lead_a is not None and lead_b is not None
    if lead_a.id == lead_b.id:
        raise StoryError(f"stories {uid_a!r} and {uid_b!r} are one event already")
    lead, other = sorted((lead_a, lead_b), key=lambda r: (r.published, r.id))
    s.execute(
        update(StoryRow)
        .where(or_(StoryRow.event_id == other.id, StoryRow.id == other.id))
        .values(event_id=lead.id)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(StoryRow)
        .where(StoryRow.id == other.id)
        .values(event_reason=f"joined by an admin to {lead.uid}")
    )
    s.add(StoryCorrectionRow(kind="join", story_id=a.id, other_id=b.id, made_at=now))
    return lead.uid


def split_off(s: Session, uid: str, now: datetime) -> str:
    """Take story ``uid`` out of its event: it becomes an event of its own. Returns the
    uid of the event it left."""
    lock(s)
    row = _story(s, uid)
    members = list(
        s.scalars(
            select(StoryRow)
            .where(or_(StoryRow.event_id == (row.event_id or row.id), StoryRow.id == row.event_id))
            .order_by(StoryRow.published, StoryRow.id)
        )
    )
    others = [m for m in members if m.id != row.id]
    if not others:
        raise StoryError(f"story {uid!r} is an event of its own")
    if row.event_id is None:
        # The lead leaves: the next story leads what remains.
        new_lead = others[0]
        s.execute(
            update(StoryRow)
            .where(StoryRow.id.in_([m.id for m in others[1:]]))
            .values(event_id=new_lead.id)
            .execution_options(synchronize_session=False)
        )
        new_lead.event_id = None
        left = new_lead
    else:
        left = s.get(StoryRow, row.event_id)  # type: ignore[assignment]
        row.event_id = None
    row.event_reason = "split off by an admin"
    s.add(StoryCorrectionRow(kind="split", story_id=left.id, other_id=row.id, made_at=now))
    s.flush()
    return left.uid


def explained(s: Session, uid: str) -> list[EventMember]:
    """The stories of story ``uid``'s event, the lead first, then by date, with reasons."""
    row = s.scalar(select(StoryRow).where(StoryRow.uid == uid))
    if row is None:
        raise StoryError(f"no story {uid!r}")
    lead = row.event_id or row.id
    q = (
        select(StoryRow)
        .where(or_(StoryRow.id == lead, StoryRow.event_id == lead))
        .order_by(StoryRow.event_id.is_not(None), StoryRow.published, StoryRow.id)
        .options(selectinload(StoryRow.entries).selectinload(EntryRow.feed))
    )
    return [
        EventMember(
            uid=m.uid,
            published=m.published,
            reason=m.event_reason if m.event_id is not None else None,
            entries=tuple(
                ClusterEntry(
                    entry_id=e.id,
                    feed_url=e.feed.url,
                    feed_title=e.feed.title or e.feed.url,
                    title=e.title,
                    link=e.link,
                    published=e.published,
                )
                for e in sorted(m.entries, key=lambda e: (e.first_seen_at, e.id))
            ),
        )
        for m in s.scalars(q)
    ]


def entry_events(s: Session) -> list[tuple[str | None, str]]:
    """(link, event lead's uid) of every entry."""
    lead = aliased(StoryRow)
    q = (
        select(EntryRow.link, lead.uid)
        .join(StoryRow, StoryRow.id == EntryRow.story_id)
        .join(lead, lead.id == func.coalesce(StoryRow.event_id, StoryRow.id))
        .order_by(EntryRow.id)
    )
    return [(link, uid) for link, uid in s.execute(q).all()]
