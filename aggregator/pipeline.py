"""Ingest one feed: fetch -> parse -> dedup -> tag -> store, saved in one transaction.

The whole flow, in order::

    state   = repo.feed_state(url)                        # etag, last-modified, moved URL
                                                          # (batched with other polls')
    with host slot (per-host limit), then a global slot:
    fetched = await fetch(state.moved_to or url, ...)     # network (async)
    # the host slot is given back here; the global one at the end
        304   -> save_not_modified(...)                   # nothing else changes; batched
                                                          # with other polls' 304s
        410   -> save_poll(error, disabled_reason)        # not polled again
        error -> save_poll(error, backed-off next poll)   # the feed's entries are kept
                                                          # (429/503: not before Retry-After)
    # off the event loop, in an ingest worker process (ParsePool; parse_processes: 0
    # runs the same in worker threads of this process):
    parsed, planned = prepare(fetched, repo.entry_hashes) # parse; identities, hashes,
                                                          # fingerprints of the entries
                                                          # not stored unchanged
    intents = dedup.decide(planned, repo.entry_hashes(...))   # new / updated / unchanged
    intents = tag_intents(tagger, intents, feed)           # topics, places, language
    counts  = repo.save_poll(url, PollSave(intents, etag, ...))   # one transaction,
                                                          # through the worker's connections
    # back in the poller: log the parser's warnings, count the tags (report)

Every outcome is recorded as a poll (status, HTTP status, error text, new/updated counts)
and logged as one line. Nothing a feed does can raise out of ``poll_feed``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, ClassVar, NamedTuple, ParamSpec, TypeVar

import httpx

from storage import Repository

from . import dedup, metrics, schedule
from .batch import Batcher
from .exceptions import (
    AggregatorError,
    FetchError,
    Gone,
    NotModified,
    ParseError,
    StorageError,
)
from .fetch import FetchLimits, HostLimiter, fetch, host_key
from .language import detect_language
from .neardup import fingerprint
from .parse import parse
from .parsepool import ParsePool
from .schedule import next_poll_at
from .tag import Tagger, tag_intents
from .types import (
    EntryIntent,
    FeedContext,
    FeedState,
    Fetched,
    ParsedFeed,
    PollCounts,
    PollResult,
    PollSave,
)

if TYPE_CHECKING:
    from .subscriber import Subscriber

log = logging.getLogger("aggregator.pipeline")

P = ParamSpec("P")
T = TypeVar("T")


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
    timing: schedule.Policy = schedule.DEFAULT_POLICY
    subscriber: Subscriber | None = None  # WebSub: subscribe to the hubs feeds advertise
    # Ingest worker processes (parse, dedup, tag, save); None: in threads of this process.
    parsers: ParsePool | None = None
    _semaphore: asyncio.Semaphore | None = None
    _hosts: HostLimiter | None = None
    _states: Batcher[str, FeedState | None] | None = None
    _not_modified: Batcher[tuple[str, PollSave], PollCounts] | None = None
    _tagger_ref: tuple[Tagger, TaggerRef] | None = None
    in_pool: int = 0  # bodies in the ingest processes right now
    ingesting_here: int = 0  # bodies parsed or ingested in threads of this process now
    parsed_here: int = 0  # bodies parsed here and saved by an ingest process, so far
    _placing: asyncio.Condition | None = None  # notified when either count goes down

    @property
    def states(self) -> Batcher[str, FeedState | None]:
        """``await ctx.states(url)``: the feed's state, read with other polls' in one query."""
        if self._states is None:
            self._states = Batcher(self.repo.feed_states_for)
        return self._states

    @property
    def not_modified(self) -> Batcher[tuple[str, PollSave], PollCounts]:
        """``await ctx.not_modified((url, save))``: a 304 recorded with others' at once."""
        if self._not_modified is None:
            self._not_modified = Batcher(self.repo.save_not_modified)
        return self._not_modified

    @property
    def tagger_ref(self) -> TaggerRef:
        """``tagger`` for ingest workers, pickled again only when a reload replaced it."""
        if self._tagger_ref is None or self._tagger_ref[0] is not self.tagger:
            self._tagger_ref = (self.tagger, tagger_ref(self.tagger))
        return self._tagger_ref[1]

    async def in_pool_run(
        self, pool: ParsePool, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``pool.run``, counted in ``in_pool`` while it runs."""
        self.in_pool += 1
        try:
            return await pool.run(fn, *args, **kwargs)
        finally:
            self.in_pool -= 1
            await self._freed()

    async def here(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in a thread of this process, counted in ``ingesting_here`` while it runs."""
        self.ingesting_here += 1
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            self.ingesting_here -= 1
            await self._freed()

    async def parse_here(self, pool: ParsePool) -> bool:
        """Wait until an ingest process has room (False: send it the whole body) or this
        process's thread is free (True: parse the body here first); see ``_ingest``.

        Room: a job running in each process and one more waiting, so none ever idles
        while bodies wait. The caller must start its job before its next ``await``, so
        the next waiter sees it counted.
        """
        placing = self.placing
        async with placing:
            await placing.wait_for(
                lambda: self.in_pool <= pool.processes or self.ingesting_here == 0
            )
            return self.in_pool > pool.processes

    @property
    def placing(self) -> asyncio.Condition:
        if self._placing is None:
            self._placing = asyncio.Condition()
        return self._placing

    async def _freed(self) -> None:
        if self._placing is not None:
            async with self._placing:
                self._placing.notify_all()

    @property
    def hosts(self) -> HostLimiter:
        if self._hosts is None:
            self._hosts = HostLimiter(self.limits.per_host)
        return self._hosts

    @property
    def semaphore(self) -> asyncio.Semaphore:
        # Made lazily: a semaphore belongs to the event loop that first awaits it.
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._semaphore


def prepare(
    fetched: Fetched,
    feed_url: str,
    started_at: datetime,
    tracking: dedup.Tracking,
    *,
    language: bool = False,
    stored: Callable[[list[str]], Mapping[str, str]] | None = None,
) -> tuple[ParsedFeed, list[EntryIntent]]:
    """The part of ingesting that needs no store: parse, and plan every entry as new.

    ``stored``: where the store is at hand (a thread of the poller, an ingest process),
    the content hashes of the feed's stored entries by identity; entries stored
    unchanged are then planned as such and not fingerprinted (a feed of 20 items with 2
    new ones: 2 fingerprints, not 20). ``save_body`` fingerprints any that the store no
    longer has by the time it saves.

    Pure CPU, picklable in and out: it runs in an ingest process (``ParsePool``) or a
    thread. Identities, content hashes, canonical URLs, near-duplicate fingerprints and,
    with ``language``, each item's language (the costliest part of tagging) are made
    here; ``dedup.decide`` then marks what the store already has. Without it the tagger
    detects the language of the entries it stores, where it runs: not of the unchanged
    ones, most of a feed polled again without validators.
    """
    parsed = parse(fetched.content, fetched.final_url, fetched.headers, started_at)
    entries = parsed.entries
    if language:
        entries = [
            replace(
                e, language=detect_language(e.title, e.text, parsed.language), language_known=True
            )
            for e in entries
        ]
        parsed = parsed._replace(entries=entries)
    hashes = stored(dedup.identities(entries, feed_url)) if stored is not None and entries else {}
    return parsed, dedup.plan(entries, feed_url, hashes, tracking=tracking)


def ingest(
    repo: Repository,
    tagger: Tagger,
    feed_url: str,
    feed_tags: Sequence[str],
    fetched: Fetched,
    started_at: datetime,
    interval: timedelta,
    policy: dedup.Policy = dedup.DEFAULT_POLICY,
    timing: schedule.Policy = schedule.DEFAULT_POLICY,
) -> PollResult:
    """Parse, dedup, tag and store one fetched body (synchronous: runs in a worker thread)."""
    body = Body(feed_url, tuple(feed_tags), fetched, started_at, interval, policy, timing)
    try:
        stored = save_body(repo, tagger, body)
    except ParseError as e:
        return _record_error(
            repo, feed_url, started_at, interval, str(e), fetched.status, 0, timing=timing
        )
    report(stored)
    return stored.result


class Body(NamedTuple):
    """A fetched body to ingest, with what its poll knows of the feed; picklable."""

    feed_url: str
    feed_tags: tuple[str, ...]
    fetched: Fetched
    started_at: datetime
    interval: timedelta
    policy: dedup.Policy
    timing: schedule.Policy


class Stored(NamedTuple):
    """What saving one fetched body gave, and what the poller reports of it (``report``)."""

    result: PollResult
    tag_counts: dict[str, int]  # entries saved per topic (the tags metric)
    warnings: tuple[str, ...]  # the parser's, logged once


def save_body(
    repo: Repository,
    tagger: Tagger,
    body: Body,
    prepared: tuple[ParsedFeed, list[EntryIntent]] | None = None,
) -> Stored:
    """Parse (ParseError; unless ``prepare`` ran elsewhere), dedup against the store, tag
    and save one body; synchronous, in a worker thread or an ingest process. What to log
    and count comes back in ``Stored`` for ``report`` in the poller's process."""
    feed_url, feed_tags, fetched, started_at, interval, policy, timing = body
    parsed, planned = prepared or prepare(
        fetched, feed_url, started_at, policy.tracking, stored=partial(repo.entry_hashes, feed_url)
    )
    body_hints = _body_hints(parsed, started_at)
    stored = repo.entry_hashes(feed_url, [i.identity for i in planned])
    intents = [_fingerprinted(i) for i in dedup.decide(planned, stored)]
    tag_started = time.monotonic()
    intents = tag_intents(
        tagger, intents, FeedContext(feed_tags, parsed.title, parsed.language, feed_url)
    )
    tag_ms = _ms(tag_started)
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
        hub=parsed.hints.hub,
        topic=parsed.hints.self_url,
        tag_ms=tag_ms,
    )
    saving = tuple(i for i in intents if i.action != "unchanged")
    counts = repo.save_poll(
        feed_url,
        PollSave(
            result=result,
            started_at=started_at,
            intents=saving,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            feed_title=parsed.title or None,
            site_url=parsed.link,
            next_poll_at=next_poll_at(
                started_at,
                interval,
                hints=_with_headers(body_hints, fetched.headers, started_at),
                policy=timing,
            ),
            feed_language=parsed.language,
            moved_to=fetched.moved_to,
            hints=schedule.to_json(body_hints),
            matcher=policy.story_matcher,
            events=policy.event_matcher,
        ),
    )
    return Stored(
        result._replace(new=counts.new, updated=counts.updated, merged=counts.merged),
        metrics.tag_counts(saving),
        tuple(parsed.warnings),
    )


def _fingerprinted(intent: EntryIntent) -> EntryIntent:
    """An entry to save with its fingerprint: ``prepare`` leaves it out of entries it
    found stored unchanged, which the store may have lost since (a tombstone expired)."""
    if intent.action == "unchanged" or intent.fingerprint is not None:
        return intent
    return replace(intent, fingerprint=fingerprint(intent.entry, intent.canonical_url))


def report(stored: Stored) -> None:
    """Log the parser's warnings and count the tags of one stored body, in this process."""
    for warning in stored.warnings:
        log.info("parse warning feed=%s warning=%r", stored.result.feed_url, warning)
    metrics.record_tags(stored.tag_counts)


class TaggerRef(NamedTuple):
    """A tagger as ingest workers get it: pickled once per tagger, unpickled once per
    worker (``token`` says whether the worker's copy is still the poller's)."""

    token: int
    blob: bytes


_tagger_tokens = itertools.count(1)


def tagger_ref(tagger: Tagger) -> TaggerRef:
    return TaggerRef(next(_tagger_tokens), pickle.dumps(tagger, pickle.HIGHEST_PROTOCOL))


class IngestJob(NamedTuple):
    """A body for an ingest process, with the store and the tagger to use; picklable.
    With ``prepared`` (``prepare`` ran in the poller), the body's bytes are left out."""

    database_url: str
    tagger: TaggerRef
    body: Body
    prepared: tuple[ParsedFeed, list[EntryIntent]] | None = None


class _Worker:
    """What an ingest worker process keeps between jobs: its store connections, its
    copy of the tagger."""

    repos: ClassVar[dict[str, Repository]] = {}
    tagger: ClassVar[tuple[int, Tagger] | None] = None


def ingest_job(job: IngestJob) -> Stored:
    """Parse, dedup, tag and save one body in an ingest worker process (``ParsePool``).

    The worker writes to the store itself, through its own connections, so the poller
    process is left with the network: storing costs more than parsing (bench/poll.py),
    and done in the poller it held one core busy while the others waited. ParseError
    and StorageError reach the poller, which records them as it does its own.
    """
    repo = _Worker.repos.get(job.database_url)
    if repo is None:
        repo = _Worker.repos[job.database_url] = Repository(job.database_url)
    if _Worker.tagger is None or _Worker.tagger[0] != job.tagger.token:
        _Worker.tagger = (job.tagger.token, pickle.loads(job.tagger.blob))
    return save_body(repo, _Worker.tagger[1], job.body, job.prepared)


def _body_hints(parsed: ParsedFeed, now: datetime) -> schedule.Hints:
    """What the feed body says about polling: its own hints and how often it publishes."""
    h = parsed.hints
    dated = [e.published for e in parsed.entries if not e.date_from_fetch]
    return schedule.Hints(
        ttl=h.ttl,
        update_period=h.update_period,
        skip_hours=frozenset(h.skip_hours),
        skip_days=frozenset(h.skip_days),
        item_gap=schedule.item_gap(dated, now),
    )


def _with_headers(
    hints: schedule.Hints, headers: Mapping[str, str], now: datetime
) -> schedule.Hints:
    max_age, expires = schedule.header_hints(headers, now)
    return replace(hints, max_age=max_age, expires=expires)


def _record_error(
    repo: Repository,
    feed_url: str,
    started_at: datetime,
    interval: timedelta,
    error: str,
    http_status: int | None,
    elapsed_ms: int,
    *,
    retry_after: timedelta | None = None,
    disabled_reason: str | None = None,
    timing: schedule.Policy = schedule.DEFAULT_POLICY,
) -> PollResult:
    state = repo.feed_state(feed_url)
    errors = (state.consecutive_errors if state else 0) + 1
    result = PollResult(feed_url, "error", http_status, error, 0, 0, 0, elapsed_ms)
    hints = schedule.from_json(state.hints if state else None)
    next_at = next_poll_at(started_at, interval, errors, hints=hints, policy=timing)
    if retry_after is not None:
        # The server said when it can take us again, counted from its answer (which a slow
        # server gives well after started_at); never sooner than that.
        answered_at = started_at + timedelta(milliseconds=elapsed_ms)
        next_at = max(next_at, answered_at + retry_after)
    repo.save_poll(
        feed_url,
        PollSave(
            result=result,
            started_at=started_at,
            next_poll_at=next_at,
            disabled_reason=disabled_reason,
        ),
    )
    return result


def slower(
    interval: timedelta, timing: schedule.Policy, fallback: timedelta | None
) -> tuple[timedelta, schedule.Policy]:
    """The interval and bounds for a feed pushed to us: polled no more than ``fallback``."""
    if fallback is None:
        return interval, timing
    return max(interval, fallback), replace(
        timing,
        min_interval=max(timing.min_interval, fallback),
        max_interval=max(timing.max_interval, fallback),
    )


async def poll_feed(
    ctx: PollContext,
    feed_url: str,
    feed_tags: Sequence[str],
    interval: timedelta,
    fallback: timedelta | None = None,
) -> PollResult:
    """Poll one feed now and record the outcome. Never raises (but for cancellation).

    ``fallback``: the feed is pushed to us (WebSub), so it is polled at least that far apart.
    """
    t0 = time.monotonic()
    interval, timing = slower(interval, ctx.timing, fallback)
    try:
        state = await ctx.states(feed_url)
    except StorageError:
        state = None  # the poll goes on; saving its outcome will say what is wrong
    target = state.fetch_url if state else feed_url
    host = host_key(target)
    # The host's turn first, then a global slot: a host with hundreds of feeds waits for
    # its own slots without holding global ones that other hosts could use. The host's
    # slot is given back as soon as the fetch ends: parsing and storing a body is our
    # business, not the host's, and must not hold up the host's next feed.
    async with AsyncExitStack() as host_slot:
        await host_slot.enter_async_context(ctx.hosts.slot(host))
        async with ctx.semaphore:
            started_at = ctx.clock()
            result = await _poll(
                ctx,
                feed_url,
                state,
                target,
                host,
                feed_tags,
                interval,
                started_at,
                host_slot,
                timing,
            )
    if ctx.subscriber is not None and result.status in ("ok", "not_modified"):
        await ctx.subscriber.after_poll(feed_url, result.status == "ok", result.hub, result.topic)
    log_poll(result, time.monotonic() - t0)
    return result


def log_poll(result: PollResult, seconds: float, *, pushed: bool = False) -> None:
    """The one line (and the metrics) for one poll or push: ``poll feed=... status=...``.

    key=value pairs in a fixed order, values without spaces but ``error``, which is quoted.
    """
    metrics.record_poll(result, seconds, pushed=pushed)
    log.info(
        "%s feed=%s status=%s http=%s new=%d updated=%d unchanged=%d merged=%d ms=%d tag_ms=%d%s",
        "push" if pushed else "poll",
        result.feed_url,
        result.status,
        result.http_status,
        result.new,
        result.updated,
        result.unchanged,
        result.merged,
        int(seconds * 1000),
        result.tag_ms,
        f" error={result.error!r}" if result.error else "",
    )


async def _poll(
    ctx: PollContext,
    feed_url: str,
    state: FeedState | None,
    target: str,
    host: str,
    feed_tags: Sequence[str],
    interval: timedelta,
    started_at: datetime,
    host_slot: AsyncExitStack,
    timing: schedule.Policy,
) -> PollResult:
    repo = ctx.repo
    t0 = time.monotonic()

    async def failed(
        error: str,
        http_status: int | None,
        *,
        retry_after: timedelta | None = None,
        disabled_reason: str | None = None,
    ) -> PollResult:
        return await asyncio.to_thread(
            partial(
                _record_error,
                repo,
                feed_url,
                started_at,
                interval,
                error,
                http_status,
                _ms(t0),
                retry_after=retry_after,
                disabled_reason=disabled_reason,
                timing=timing,
            )
        )

    try:
        try:
            try:
                fetched = await fetch(
                    ctx.client,
                    target,
                    etag=state.etag if state else None,
                    last_modified=state.last_modified if state else None,
                    limits=ctx.limits,
                    hosts=ctx.hosts,
                    held_host=host,
                )
            finally:
                await host_slot.aclose()
        except NotModified as e:
            _log_moved(feed_url, state, e.moved_to)
            result = PollResult(feed_url, "not_modified", 304, None, 0, 0, 0, _ms(t0))
            hints = _with_headers(
                schedule.from_json(state.hints if state else None), e.headers, started_at
            )
            save = PollSave(
                result,
                started_at,
                next_poll_at=next_poll_at(started_at, interval, hints=hints, policy=timing),
                moved_to=e.moved_to,
            )
            await ctx.not_modified((feed_url, save))
            return result
        except Gone as e:
            log.warning("feed gone, disabled feed=%s reason=%r", feed_url, str(e))
            return await failed(
                str(e), e.status, disabled_reason=f"{e} ({started_at:%Y-%m-%d %H:%M} UTC)"
            )
        except FetchError as e:
            return await failed(str(e), e.status, retry_after=e.retry_after)
        _log_moved(feed_url, state, fetched.moved_to)
        body = Body(feed_url, tuple(feed_tags), fetched, started_at, interval, ctx.policy, timing)
        try:
            stored = await _ingest(ctx, body)
        except ParseError as e:
            return await failed(str(e), fetched.status)
        report(stored)
        return stored.result
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
            return await failed(message, None)
        except StorageError:
            return PollResult(feed_url, "error", None, message, 0, 0, 0, _ms(t0))


async def _ingest(ctx: PollContext, body: Body) -> Stored:
    """Parse, dedup, tag and save one fetched body, off the event loop.

    Bodies go to the ingest processes while they have room. When they have none (a first
    fetch), a body waits for room there or for this process's thread, whichever comes
    first: the thread parses it and hands it to an ingest process to save. So every core
    works, the ingest processes (the slower stage: on 2 cores they are the bottleneck)
    spend their time saving, and only they hold what saving needs (the near-duplicate
    index, about 400 bytes per recent entry, and the language model, 74 MB), once per
    machine, not once more here (docs/polling.md).
    """
    repo, pool = ctx.repo, ctx.parsers
    if pool is None or pool.processes <= 0:
        return await ctx.here(save_body, repo, ctx.tagger, body)
    fetched, tracking = body.fetched, ctx.policy.tracking
    if ctx.tagger.classifier is not None:
        # The classifier's model is hundreds of MB: it stays in this process, which
        # saves, and the ingest processes only parse.
        if ctx.in_pool >= pool.processes and ctx.ingesting_here == 0:
            return await ctx.here(save_body, repo, ctx.tagger, body)
        prepared = await ctx.in_pool_run(
            pool, prepare, fetched, body.feed_url, body.started_at, tracking, language=True
        )
        return await asyncio.to_thread(save_body, repo, ctx.tagger, body, prepared)
    job = IngestJob(repo.url, ctx.tagger_ref, body)
    if await ctx.parse_here(pool):
        job = job._replace(
            body=body._replace(fetched=fetched._replace(content=b"")),
            prepared=await ctx.here(
                prepare,
                fetched,
                body.feed_url,
                body.started_at,
                tracking,
                stored=partial(repo.entry_hashes, body.feed_url),
            ),
        )
        ctx.parsed_here += 1
    stored = await ctx.in_pool_run(pool, ingest_job, job)
    if stored.result.new or stored.result.updated:
        repo.local_changes += 1  # the worker committed: this process's pages see it
    return stored


def _log_moved(feed_url: str, state: FeedState | None, moved_to: str | None) -> None:
    if moved_to and moved_to != (state.moved_to if state else None):
        log.warning("feed moved permanently feed=%s to=%s", feed_url, moved_to)


def _ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)
