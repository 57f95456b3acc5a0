"""Leases: several worker processes share the feeds without polling one twice at once.

A worker claims due feeds in one short transaction::

    SELECT id FROM feeds
     WHERE enabled AND (next_poll_at IS NULL OR next_poll_at <= :now)
       AND (lease_until IS NULL OR lease_until < :now)
     ORDER BY next_poll_at LIMIT :n
       FOR UPDATE SKIP LOCKED                      -- PostgreSQL: skip rows another claim holds
    UPDATE feeds SET lease_owner = :me, lease_until = :now + :lease WHERE id IN (...)

On SQLite ``FOR UPDATE`` renders as nothing; the claim runs in a ``BEGIN IMMEDIATE``
transaction, so claims are one at a time anyway. The poll's own save sets the next due
time and clears the lease in the same transaction as the entries (``release_in``), so a
feed is never both saved and still leased. A worker that dies keeps its leases until they
expire; then any worker takes the feeds over. A live worker renews the leases of the polls it
still has in flight (queued behind the per-host limit, or slow), so a lease only ever lapses
when its worker is gone, not when it is merely busy.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from aggregator.types import Lease

from .models import FeedRow


def _free(now: datetime) -> list[ColumnElement[bool]]:
    return [
        FeedRow.enabled.is_(True),
        # A 410 Gone disabled it (storage keeps why); feeds.yaml cannot re-enable it by itself.
        FeedRow.disabled_reason.is_(None),
        or_(FeedRow.next_poll_at.is_(None), FeedRow.next_poll_at <= now),
        or_(FeedRow.lease_until.is_(None), FeedRow.lease_until < now),
    ]


def claim(s: Session, owner: str, now: datetime, lease: timedelta, limit: int) -> list[str]:
    """Lease up to ``limit`` due, unleased feeds to ``owner``; their URLs, most overdue first."""
    if limit <= 0:
        return []
    # NULLs (never polled) first on both engines, without dialect-specific NULLS FIRST.
    never = FeedRow.next_poll_at.is_(None).desc()
    q = (
        select(FeedRow.id, FeedRow.url)
        .where(*_free(now))
        .order_by(never, FeedRow.next_poll_at, FeedRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = s.execute(q).all()
    if not rows:
        return []
    s.execute(
        update(FeedRow)
        .where(FeedRow.id.in_([r.id for r in rows]))
        .values(lease_owner=owner, lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return [r.url for r in rows]


def release_in(feed: FeedRow) -> None:
    """Clear the feed's lease as part of the transaction that saves its poll."""
    feed.lease_owner = None
    feed.lease_until = None


def release(s: Session, owner: str, urls: list[str]) -> None:
    """Give back leases ``owner`` holds but will not poll (shutting down)."""
    if urls:
        s.execute(
            update(FeedRow)
            .where(FeedRow.url.in_(urls), FeedRow.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )


def renew(s: Session, owner: str, urls: list[str], until: datetime) -> int:
    """Extend the leases ``owner`` still holds on ``urls``; how many it still held."""
    if not urls:
        return 0
    result = s.execute(
        update(FeedRow)
        .where(FeedRow.url.in_(urls), FeedRow.lease_owner == owner)
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def held(s: Session) -> list[Lease]:
    """Every lease taken and not given back (expired ones too: a dead worker's show here)."""
    q = (
        select(FeedRow.url, FeedRow.lease_owner, FeedRow.lease_until)
        .where(FeedRow.lease_owner.is_not(None), FeedRow.lease_until.is_not(None))
        .order_by(FeedRow.lease_until, FeedRow.id)
    )
    return [Lease(url, owner or "", until) for url, owner, until in s.execute(q).all() if until]


def oldest_overdue(s: Session, now: datetime) -> datetime | None:
    """The due time of the most overdue enabled feed (None when none is overdue)."""
    q = select(func.min(FeedRow.next_poll_at)).where(
        FeedRow.enabled.is_(True),
        FeedRow.disabled_reason.is_(None),
        FeedRow.next_poll_at <= now,
    )
    return s.scalar(q)


def due_count(s: Session, now: datetime) -> int:
    """Enabled feeds that are due (or never polled) and not leased."""
    return int(s.scalar(select(func.count()).select_from(FeedRow).where(*_free(now))) or 0)
