"""The story query behind every published feed: filters, full-text search, keyset pages.

One function, :func:`story_page`, serves topic feeds, place feeds and filtered views:
a :class:`~aggregator.filters.StoryQuery` names tag keys (``politics``, ``place:co``),
sources, languages, a time window and a text query. Pages are keyset pages over
``(published, id)`` newest first, so a page boundary stays where it was while new
stories arrive: a reader walking ``next`` links sees every story once.

At the ``events`` level (the default) an item is an event: its lead story, with the
sources of every story of the event (storage/events.py); an event is selected when any
of its stories is. At the ``copies`` level an item is one story.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, Integer, Select, and_, func, or_, select, text
from sqlalchemy.orm import Session, aliased, selectinload

from aggregator.filters import Cursor, StoryPage, StoryQuery, TextQuery, TextTerm
from aggregator.types import StoryItem

from .models import EntryRow, EntryTagRow, FeedRow, StoryRow


def story_page(s: Session, q: StoryQuery, to_item: Callable[[StoryRow], StoryItem]) -> StoryPage:
    """One page of the stories ``q`` selects, newest first, with the cursors around it."""
    conds = _conditions(s, q)
    if conds is None:
        return StoryPage([], None, None)
    events = q.level == "events"
    if events:
        conds = [*conds, StoryRow.event_id.is_(None)]
    # Stories whose every entry retention pruned are kept (uid, URL) but not published.
    stmt = select(StoryRow).where(StoryRow.pruned.is_(False), *conds)
    newer_first = q.before is None
    if q.after is not None:
        c = q.after
        stmt = stmt.where(
            or_(
                StoryRow.published < c.published,
                and_(StoryRow.published == c.published, StoryRow.id < c.story_id),
            )
        )
    if q.before is not None:
        c = q.before
        stmt = stmt.where(
            or_(
                StoryRow.published > c.published,
                and_(StoryRow.published == c.published, StoryRow.id > c.story_id),
            )
        )
    if newer_first:
        stmt = stmt.order_by(StoryRow.published.desc(), StoryRow.id.desc())
    else:
        stmt = stmt.order_by(StoryRow.published.asc(), StoryRow.id.asc())
    stmt = stmt.limit(q.limit + 1).options(
        selectinload(StoryRow.entries).selectinload(EntryRow.tags),
        selectinload(StoryRow.entries).selectinload(EntryRow.feed),
    )
    rows = list(s.scalars(stmt))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    if not newer_first:
        rows.reverse()
    keys = [Cursor(r.published, r.id) for r in rows]
    if newer_first:
        next_ = keys[-1] if more and keys else None
        # Reached through a cursor: there are newer stories (at least the ones we came from).
        prev = (keys[0] if keys else q.after) if q.after is not None else None
    else:
        next_ = keys[-1] if keys else None
        prev = keys[0] if more and keys else None
    if not events:
        return StoryPage([to_item(r) for r in rows], next_, prev)
    return StoryPage(_event_items(s, rows, to_item), next_, prev)


def _event_items(
    s: Session, leads: Sequence[StoryRow], to_item: Callable[[StoryRow], StoryItem]
) -> list[StoryItem]:
    """Each lead story as its event's item: every outlet's story named and linked."""
    members: dict[int, list[StoryRow]] = {}
    ids = [r.id for r in leads]
    if ids:
        q = (
            select(StoryRow)
            .where(StoryRow.event_id.in_(ids), StoryRow.pruned.is_(False))
            .order_by(StoryRow.published, StoryRow.id)
            .options(
                selectinload(StoryRow.entries).selectinload(EntryRow.tags),
                selectinload(StoryRow.entries).selectinload(EntryRow.feed),
            )
        )
        for row in s.scalars(q):
            members.setdefault(row.event_id or 0, []).append(row)
    out = []
    for lead in leads:
        item = to_item(lead)
        others = [to_item(m) for m in members.get(lead.id, [])]
        if others:
            sources = list(item.sources)
            for o in others:
                sources.extend(src for src in o.sources if src not in sources)
            item = replace(
                item,
                updated=max([item.updated, *(o.updated for o in others)]),
                topics=tuple(dict.fromkeys([*item.topics, *(t for o in others for t in o.topics)])),
                categories=tuple(
                    dict.fromkeys([*item.categories, *(c for o in others for c in o.categories)])
                ),
                sources=tuple(sources),
            )
        out.append(item)
    return out


def _conditions(s: Session, q: StoryQuery) -> list[ColumnElement[bool]] | None:
    """WHERE clauses on stories for ``q``; None when nothing can match.

    At the events level an event is selected by what any of its stories has: each set of
    story ids becomes the set of their events' leads.
    """
    member = aliased(StoryRow)

    def ids(sub: Select[Any]) -> Select[Any]:
        if q.level != "events":
            return sub
        return select(func.coalesce(member.event_id, member.id)).where(member.id.in_(sub))

    def within(sub: Select[Any]) -> ColumnElement[bool]:
        return StoryRow.id.in_(ids(sub))

    def outside(sub: Select[Any]) -> ColumnElement[bool]:
        return StoryRow.id.not_in(ids(sub))

    conds: list[ColumnElement[bool]] = []
    for key in q.all_of:
        conds.append(within(_tagged((key,))))
    if q.any_of:
        conds.append(within(_tagged(q.any_of)))
    if q.none_of:
        conds.append(outside(_tagged(q.none_of)))
    if q.feed_urls or q.hosts:
        feed_ids = _source_feed_ids(s, q.feed_urls, q.hosts)
        if not feed_ids:
            return None
        conds.append(within(select(EntryRow.story_id).where(EntryRow.feed_id.in_(feed_ids))))
    if q.langs:
        # The language detected from the entry's words; the feed's declared one if unknown.
        language = func.coalesce(EntryRow.language, FeedRow.language)
        lang = or_(*(or_(language == tag, language.like(tag + "-%")) for tag in q.langs))
        conds.append(
            within(
                select(EntryRow.story_id).join(FeedRow, EntryRow.feed_id == FeedRow.id).where(lang)
            )
        )
    if q.since is not None:
        conds.append(StoryRow.published >= q.since)
    if q.until is not None:
        conds.append(StoryRow.published < q.until)
    if q.text is not None:
        conds.append(within(_text_match(s, q.text)))
    return conds


def _tagged(keys: Sequence[str]) -> Select[int]:
    return (
        select(EntryRow.story_id)
        .join(EntryTagRow, EntryTagRow.entry_id == EntryRow.id)
        .where(EntryTagRow.topic.in_(keys))
    )


def _source_feed_ids(s: Session, urls: Sequence[str], hosts: Sequence[str]) -> list[int]:
    """Feeds given by URL, or on a given host or one of its subdomains ("www." ignored)."""
    out: list[int] = []
    wanted = set(urls)
    for feed_id, url in s.execute(select(FeedRow.id, FeedRow.url)).all():
        if url in wanted:
            out.append(feed_id)
            continue
        host = (urlsplit(url).hostname or "").removeprefix("www.")
        if any(host == h or host.endswith("." + h) for h in hosts):
            out.append(feed_id)
    return out


def _text_match(s: Session, q: TextQuery) -> Select[int]:
    if s.get_bind().dialect.name == "postgresql":
        # websearch_to_tsquery reads the same syntax we parse, and never raises on input.
        match = text("entries.search @@ websearch_to_tsquery('simple', :q)").bindparams(q=q.raw)
        return select(EntryRow.story_id).where(match)
    fts = (
        text("SELECT rowid FROM entries_fts WHERE entries_fts MATCH :m")
        .bindparams(m=fts5_match(q))
        .columns(rowid=Integer)
    )
    return select(EntryRow.story_id).where(EntryRow.id.in_(fts))


def fts5_match(q: TextQuery) -> str:
    """An SQLite FTS5 MATCH expression for ``q``; every term quoted, so none is syntax."""

    def quoted(term: TextTerm) -> str:
        return '"' + term.text.replace('"', '""') + '"'

    expr = " AND ".join(
        "(" + " OR ".join(quoted(t) for t in group) + ")" if len(group) > 1 else quoted(group[0])
        for group in q.groups
    )
    for term in q.excluded:
        expr = f"({expr}) NOT {quoted(term)}"
    return expr
