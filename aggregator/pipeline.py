"""Ingest one feed: fetch -> parse -> dedup -> tag -> store, saved in one transaction.

The whole flow, in order::

    state   = repo.feed_state(url)                        # etag, last-modified, errors
    fetched = await fetch(url, state.etag, ...)           # network (async)
        304   -> save_poll(not_modified)                  # nothing else changes
        error -> save_poll(error, backed-off next poll)   # the feed's entries are kept
    # from here on in a worker thread, off the event loop:
    parsed  = parse(fetched.content, ...)
    intents = dedup.plan(parsed.entries, repo.entry_hashes(...))
    intents = tag_intents(tagger, intents, feed)           # topics, places, language
    counts  = repo.save_poll(url, PollSave(intents, etag, ...))   # one transaction

Every outcome is recorded as a poll (status, HTTP status, error text, new/updated counts)
and logged as one line. Nothing a feed does can raise out of ``poll_feed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from storage import Repository

from . import dedup
from .exceptions import AggregatorError, FetchError, NotModified, ParseError, StorageError
from .fetch import FetchLimits, fetch
from .parse import parse
from .schedule import next_poll_at
from .tag import Tagger, tag_intents
from .types import FeedContext, Fetched, PollResult, PollSave

log = logging.getLogger("aggregator.pipeline")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PollContext:
    """Everything a poll needs, built once per process."""

    repo: Repository
    client: httpx.AsyncClient
    tagger: Tagger
    limits: FetchLimits = field(default_factory=FetchLimits)
    concurrency: int = 16
    clock: Callable[[], datetime] = utcnow
    policy: dedup.Policy = dedup.DEFAULT_POLICY
    _semaphore: asyncio.Semaphore | None = None

    @property
    def semaphore(self) -> asyncio.Semaphore:
        # Made lazily: a semaphore belongs to the event loop that first awaits it.
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._semaphore


def ingest(
    repo: Repository,
    tagger: Tagger,
    feed_url: str,
    feed_tags: Sequence[str],
    fetched: Fetched,
    started_at: datetime,
    interval: timedelta,
    policy: dedup.Policy = dedup.DEFAULT_POLICY,
) -> PollResult:
    """Parse, dedup, tag and store one fetched body (synchronous: runs in a worker thread)."""
    try:
        parsed = parse(fetched.content, fetched.final_url, fetched.headers, started_at)
    except ParseError as e:
        return _record_error(repo, feed_url, started_at, interval, str(e), fetched.status, 0)
    stored = repo.entry_hashes(feed_url, dedup.identities(parsed.entries, feed_url))
    intents = dedup.plan(
        parsed.entries,
        feed_url,
        stored,
        tracking=policy.tracking,
    )
    intents = tag_intents(
        tagger, intents, FeedContext(tuple(feed_tags), parsed.title, parsed.language)
    )
    new = sum(i.action == "new" for i in intents)
    updated = sum(i.action == "updated" for i in intents)
    result = PollResult(
        feed_url=feed_url,
        status="ok",
        http_status=fetched.status,
        error=None,
        new=new,
        updated=updated,
        unchanged=len(intents) - new - updated,
        elapsed_ms=fetched.elapsed_ms,
    )
    for warning in parsed.warnings:
        log.info("parse warning feed=%s warning=%r", feed_url, warning)
    counts = repo.save_poll(
        feed_url,
        PollSave(
            result=result,
            started_at=started_at,
            intents=tuple(i for i in intents if i.action != "unchanged"),
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            feed_title=parsed.title or None,
            site_url=parsed.link,
            next_poll_at=next_poll_at(started_at, interval),
            feed_language=parsed.language,
        ),
    )
    return result._replace(new=counts.new, updated=counts.updated)


def _record_error(
    repo: Repository,
    feed_url: str,
    started_at: datetime,
    interval: timedelta,
    error: str,
    http_status: int | None,
    elapsed_ms: int,
) -> PollResult:
    state = repo.feed_state(feed_url)
    errors = (state.consecutive_errors if state else 0) + 1
    result = PollResult(feed_url, "error", http_status, error, 0, 0, 0, elapsed_ms)
    repo.save_poll(
        feed_url,
        PollSave(
            result=result,
            started_at=started_at,
            next_poll_at=next_poll_at(started_at, interval, errors),
        ),
    )
    return result


async def poll_feed(
    ctx: PollContext, feed_url: str, feed_tags: Sequence[str], interval: timedelta
) -> PollResult:
    """Poll one feed now and record the outcome. Never raises (but for cancellation)."""
    async with ctx.semaphore:
        started_at = ctx.clock()
        t0 = time.monotonic()
        result = await _poll(ctx, feed_url, feed_tags, interval, started_at)
    log.info(
        "poll feed=%s status=%s http=%s new=%d updated=%d unchanged=%d ms=%d%s",
        feed_url,
        result.status,
        result.http_status,
        result.new,
        result.updated,
        result.unchanged,
        int((time.monotonic() - t0) * 1000),
        f" error={result.error!r}" if result.error else "",
    )
    return result


async def _poll(
    ctx: PollContext,
    feed_url: str,
    feed_tags: Sequence[str],
    interval: timedelta,
    started_at: datetime,
) -> PollResult:
    repo = ctx.repo
    t0 = time.monotonic()
    try:
        state = await asyncio.to_thread(repo.feed_state, feed_url)
        try:
            fetched = await fetch(
                ctx.client,
                feed_url,
                etag=state.etag if state else None,
                last_modified=state.last_modified if state else None,
                limits=ctx.limits,
            )
        except NotModified:
            result = PollResult(feed_url, "not_modified", 304, None, 0, 0, 0, _ms(t0))
            save = PollSave(result, started_at, next_poll_at=next_poll_at(started_at, interval))
            await asyncio.to_thread(repo.save_poll, feed_url, save)
            return result
        except FetchError as e:
            return await asyncio.to_thread(
                _record_error, repo, feed_url, started_at, interval, str(e), e.status, _ms(t0)
            )
        tagger = ctx.tagger
        return await asyncio.to_thread(
            ingest, repo, tagger, feed_url, feed_tags, fetched, started_at, interval, ctx.policy
        )
    except asyncio.CancelledError:
        raise
    except StorageError as e:
        # The store is down: nothing can be recorded, so say it here and try again later.
        log.error("poll not saved feed=%s error=%s", feed_url, e)
        return PollResult(feed_url, "error", None, f"storage: {e}", 0, 0, 0, _ms(t0))
    except (AggregatorError, Exception) as e:
        # A bug in a stage must cost one poll of one feed, not the poller.
        log.exception("poll failed feed=%s", feed_url)
        message = f"internal error: {type(e).__name__}: {e}"
        try:
            return await asyncio.to_thread(
                _record_error, repo, feed_url, started_at, interval, message, None, _ms(t0)
            )
        except StorageError:
            return PollResult(feed_url, "error", None, message, 0, 0, 0, _ms(t0))


def _ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)
