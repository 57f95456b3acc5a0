"""What the pages chart: stories a day per topic, each topic's newest arrival, recent polls.

Read-only queries for the HTML pages (aggregator/pages.py, aggregator/admin_page.py); the
feeds never use them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aggregator.types import PollMark, TopicActivity

from .models import EntryRow, EntryTagRow, FeedRow, PollRow, StoryRow


def topic_activity(s: Session, since: datetime) -> TopicActivity:
    """Stories per UTC day (by their publication time) since ``since``, per topic."""
    rows = s.execute(
        select(EntryTagRow.topic, StoryRow.id, StoryRow.published)
        .join(EntryRow, EntryTagRow.entry_id == EntryRow.id)
        .join(StoryRow, EntryRow.story_id == StoryRow.id)
        .where(StoryRow.published >= since, StoryRow.pruned.is_(False))
        .distinct()
    ).all()
    per_day: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for topic, _story, published in rows:
        per_day[topic][_utc(published).date()] += 1
    last = s.execute(
        select(EntryTagRow.topic, func.max(EntryRow.first_seen_at))
        .join(EntryRow, EntryTagRow.entry_id == EntryRow.id)
        .group_by(EntryTagRow.topic)
    ).all()
    return TopicActivity(
        per_day={t: dict(days) for t, days in per_day.items()},
        last_update={t: _utc(at) for t, at in last if at is not None},
    )


def recent_polls(s: Session, per_feed: int, since: datetime) -> dict[str, list[PollMark]]:
    """Each feed's last ``per_feed`` polls since ``since``, oldest first.

    ``since`` bounds the rows ranked: the polls table keeps every poll ever made.
    """
    rank = (
        func.row_number()
        .over(partition_by=PollRow.feed_id, order_by=(PollRow.started_at.desc(), PollRow.id.desc()))
        .label("rank")
    )
    recent = (
        select(PollRow.feed_id, PollRow.started_at, PollRow.status, PollRow.http_status, rank)
        .where(PollRow.started_at >= since)
        .subquery()
    )
    rows = s.execute(
        select(FeedRow.url, recent.c.started_at, recent.c.status, recent.c.http_status)
        .join(recent, recent.c.feed_id == FeedRow.id)
        .where(recent.c.rank <= per_feed)
        .order_by(FeedRow.url, recent.c.started_at)
    ).all()
    out: dict[str, list[PollMark]] = defaultdict(list)
    for url, started, status, http in rows:
        out[url].append(PollMark(_utc(started), status, http))
    return dict(out)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
