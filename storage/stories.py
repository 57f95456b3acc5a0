"""The story query behind every published feed: filters, full-text search, keyset pages.

One function, :func:`story_page`, serves topic feeds, place feeds and filtered views:
a :class:`~aggregator.filters.StoryQuery` names tag keys (``politics``, ``place:co``),
sources, languages, a time window and a text query. Pages are keyset pages over
``(published, id)`` newest first, so a page boundary stays where it was while new
stories arrive: a reader walking ``next`` links sees every story once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, Integer, Select, and_, func, or_, select, text
from sqlalchemy.orm import Session, selectinload

from aggregator.filters import Cursor, StoryPage, StoryQuery, TextQuery, TextTerm
from aggregator.types import StoryItem

from .models import EntryRow, EntryTagRow, FeedRow, StoryRow


def story_page(s: Session, q: StoryQuery, to_item: Callable[[StoryRow], StoryItem]) -> StoryPage:
    """One page of the stories ``q`` selects, newest first, with the cursors around it."""
    conds = _conditions(s, q)
    if conds is None:
        return StoryPage([], None, None)
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
    return StoryPage([to_item(r) for r in rows], next_, prev)


def _conditions(s: Session, q: StoryQuery) -> list[ColumnElement[bool]] | None:
    """WHERE clauses on stories for ``q``; None when nothing can match."""
    conds: list[ColumnElement[bool]] = []
    for key in q.all_of:
        conds.append(StoryRow.id.in_(_tagged((key,))))
    if q.any_of:
        conds.append(StoryRow.id.in_(_tagged(q.any_of)))
    if q.none_of:
        conds.append(StoryRow.id.not_in(_tagged(q.none_of)))
    if q.feed_urls or q.hosts:
        feed_ids = _source_feed_ids(s, q.feed_urls, q.hosts)
        if not feed_ids:
            return None
        conds.append(
            StoryRow.id.in_(select(EntryRow.story_id).where(EntryRow.feed_id.in_(feed_ids)))
        )
    if q.langs:
        # The language detected from the entry's words; the feed's declared one if unknown.
        language = func.coalesce(EntryRow.language, FeedRow.language)
        lang = or_(*(or_(language == tag, language.like(tag + "-%")) for tag in q.langs))
        conds.append(
            StoryRow.id.in_(
                select(EntryRow.story_id).join(FeedRow, EntryRow.feed_id == FeedRow.id).where(lang)
            )
        )
    if q.since is not None:
        conds.append(StoryRow.published >= q.since)
    if q.until is not None:
        conds.append(StoryRow.published < q.until)
    if q.text is not None:
        conds.append(StoryRow.id.in_(_text_match(s, q.text)))
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
