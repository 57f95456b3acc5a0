"""The running aggregator: configuration, store, poller and scheduler wired together.

``Aggregator`` is what serve.py, the CLI and the web app share. It holds no request or
feed logic of its own: it builds the stages from feeds.yaml and starts or stops them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from storage import Repository, open_repository
from storage.push_subscriptions import PushStore

from . import USER_AGENT, dedup, schedule
from .classify import Example
from .config import Config, FeedConfig, database_url, load_config
from .fetch import FetchLimits, host_key, make_client
from .learn import learned_examples
from .parsepool import ParsePool
from .pipeline import PollContext, ingest, log_poll, poll_feed, slower
from .reload import ConfigChange, ConfigWatcher, Reloader
from .retention import Pruner
from .schedule import PollScheduler
from .subscriber import PushSettings, Subscriber
from .tag import Tagger
from .types import FeedSpec, FeedState, Fetched, PollResult
from .worker import ClaimLoop

log = logging.getLogger("aggregator.service")

# poll_all: polls started at a time, per unit of settings.max_concurrency.
POLL_ALL_FANOUT = 4


def _round_robin(urls: list[str]) -> list[int]:
    """The indexes of ``urls``, one host after another: each host's first feed, then each
    host's second, and so on."""
    seen: dict[str, int] = {}
    turns = []
    for i, url in enumerate(urls):
        host = host_key(url)
        turns.append((seen.get(host, 0), i))
        seen[host] = turns[-1][0] + 1
    return [i for _, i in sorted(turns)]


class Aggregator:
    def __init__(self, config: Config, config_path: str | os.PathLike[str], repo: Repository):
        self.config = config
        self.config_path = Path(config_path)
        self.repo = repo
        self.tagger = Tagger.from_config(config, learned=self.learned())
        self._ctx: PollContext | None = None
        self._scheduler: PollScheduler | None = None
        # The errors of the last feeds.yaml edit that was refused (None: the file is in use).
        self.last_config_error: list[str] | None = None
        self.worker: ClaimLoop | None = None
        self.reloader = Reloader()
        self.watcher: ConfigWatcher | None = None
        self.pruner: Pruner | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self.repo.sync_feeds([_spec(f) for f in config.feeds])
        self.repo.preferred_sources = config.dedup.preferred_sources

    def learned(self, config: Config | None = None) -> list[Example]:
        """What the classifier learns from the store (learn.py; nothing when the classifier
        is off, so rules-only start-ups read nothing more)."""
        config = config or self.config
        if not config.tagging.classifier:
            return []
        return learned_examples(self.repo, config.topics)

    @classmethod
    def from_file(cls, config_path: str | os.PathLike[str]) -> Aggregator:
        """Load and validate feeds.yaml (ConfigError if bad), open and migrate the store."""
        config = load_config(config_path)
        repo = open_repository(database_url(config, config_path))
        return cls(config, config_path, repo)

    @property
    def limits(self) -> FetchLimits:
        return fetch_limits(self.config)

    def _context(self) -> PollContext:
        if self._ctx is None:
            s = self.config.settings
            self._ctx = PollContext(
                repo=self.repo,
                client=make_client(self.limits, max_connections=s.max_concurrency * 2),
                tagger=self.tagger,
                limits=self.limits,
                concurrency=s.max_concurrency,
                parsers=ParsePool(s.parse_processes),
                policy=dedup.Policy.from_settings(self.config.dedup),
                timing=timing(self.config),
            )
            w = self.config.websub
            self._ctx.subscriber = Subscriber(
                PushStore(self.repo),
                self._ctx.client,
                self.limits,
                PushSettings(
                    base_url=s.base_url,
                    enabled=w.subscribe,
                    lease=w.lease,
                    fallback_interval=w.fallback_interval,
                ),
            )
        return self._ctx

    def refresh_context(self, tagger: Tagger, *, rebuild: bool) -> None:
        """After a reload: polls use ``tagger``; ``rebuild`` makes a new context from config.

        Polls in flight keep the old context; its HTTP client and parser processes are
        closed once they are done (at most one fetch timeout later).
        """
        old = self._ctx
        if old is None:
            return
        if not rebuild:
            old.tagger = tagger
            return
        self._ctx = None
        grace = max(old.limits.timeout, 1.0) + 5

        async def close_later() -> None:
            try:
                await asyncio.sleep(grace)
            finally:
                await old.client.aclose()
                if old.parsers is not None:
                    # The new context starts its own parser processes when it needs them.
                    await asyncio.to_thread(old.parsers.shutdown)

        task = asyncio.get_running_loop().create_task(close_later())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    @property
    def scheduler(self) -> PollScheduler | None:
        """The feed scheduler when this process polls on schedule (serve, poll)."""
        return self._scheduler

    @staticmethod
    def spec(feed: FeedConfig) -> FeedSpec:
        return _spec(feed)

    async def reload(self, new_config: Config, *, retag: bool = True) -> ConfigChange:
        """Apply an already validated feeds.yaml to the running process (aggregator/reload.py).

        New feeds are synced and scheduled, removed ones stopped (their items kept), changed
        settings applied, and changed topics re-tagged in the background (``retag=False``:
        the caller re-tags). Clears ``last_config_error``. Returns what changed.
        """
        return await self.reloader.apply(self, new_config, retag=retag)

    def start_watching(self, *, retag: bool = True) -> ConfigWatcher:
        """Watch feeds.yaml and reload on every valid edit; ``retag`` after topic edits."""
        self.reloader.retag = retag
        self.watcher = ConfigWatcher(self)
        self.watcher.start()
        return self.watcher

    @property
    def subscriber(self) -> Subscriber:
        """The WebSub subscriber (its callback routes are in websub_subscriber.py)."""
        subscriber = self._context().subscriber
        assert subscriber is not None
        return subscriber

    def enabled_feeds(self) -> list[FeedConfig]:
        """Feeds enabled in feeds.yaml and not disabled by the poller (410 Gone)."""
        disabled = self.repo.disabled_feeds()
        return [f for f in self.config.feeds if f.enabled and f.url not in disabled]

    def polls_feed(self, url: str) -> bool:
        """Whether ``url`` is a feed this aggregator follows (listed, enabled, not gone)."""
        feed = self.config.feed(url)
        return feed is not None and feed.enabled and url not in self.repo.disabled_feeds()

    async def poll(self, url: str) -> PollResult:
        feed = self.config.feed(url)
        tags = feed.tags if feed else ()
        interval = self.config.interval_for(feed) if feed else self.config.settings.default_interval
        fallback = await self.subscriber.fallback(url)
        return await poll_feed(self._context(), url, tags, interval, fallback)

    async def ingest_pushed(
        self, feed_url: str, content: bytes, headers: dict[str, str]
    ) -> PollResult:
        """Ingest a body a WebSub hub pushed for ``feed_url``, as a poll would (at once)."""
        t0 = time.monotonic()
        ctx = self._context()
        feed = self.config.feed(feed_url)
        interval = self.config.interval_for(feed) if feed else self.config.settings.default_interval
        interval, timing = slower(interval, ctx.timing, self.config.websub.fallback_interval)
        state = await asyncio.to_thread(self.repo.feed_state, feed_url)
        fetched = Fetched(
            url=feed_url,
            final_url=state.fetch_url if state else feed_url,
            status=200,
            content=content,
            headers=headers,
            # The validators of the last poll stay: a push is not a response to our GET.
            etag=state.etag if state else None,
            last_modified=state.last_modified if state else None,
            elapsed_ms=0,
        )
        result = await asyncio.to_thread(
            ingest,
            self.repo,
            self.tagger,
            feed_url,
            feed.tags if feed else (),
            fetched,
            ctx.clock(),
            interval,
            ctx.policy,
            timing,
        )
        log_poll(result, time.monotonic() - t0, pushed=True)
        return result

    async def _scheduled_poll(self, url: str) -> datetime | None:
        """Poll; the next poll time, or None when the feed is no longer to be polled."""
        await self.poll(url)
        state = await asyncio.to_thread(self.repo.feed_state, url)
        if state is None or state.disabled_reason:
            return None
        return state.next_poll_at

    async def poll_all(
        self,
        urls: list[str] | None = None,
        on_done: Callable[[PollResult], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> list[PollResult]:
        """Poll the given (default: every enabled) feed now, concurrently; the results in
        the order of the feeds.

        At most ``POLL_ALL_FANOUT`` x ``max_concurrency`` polls are started at a time, and
        the feeds are taken one host after another (round robin): a poll waiting for its
        turn held about 3.5 KB, so polling 10,000 feeds at once held 35 MB of waiting
        polls, and taking one host's feeds in a row would make them wait for its slots.
        Once ``stop`` is set no poll is started; those in progress finish and are saved.
        """
        targets = urls if urls is not None else [f.url for f in self.enabled_feeds()]
        results: list[PollResult | None] = [None] * len(targets)
        todo = iter(_round_robin(targets))

        async def runner() -> None:
            for i in todo:  # one iterator, shared by the runners
                if stop is not None and stop.is_set():
                    return
                results[i] = result = await self.poll(targets[i])
                if on_done:
                    on_done(result)

        runners = min(len(targets), POLL_ALL_FANOUT * self.config.settings.max_concurrency)
        await asyncio.gather(*(runner() for _ in range(runners)))
        return [r for r in results if r is not None]

    def start_polling(self) -> None:
        """Schedule every enabled feed (resuming stored next-poll times) and start."""
        self._scheduler = PollScheduler(self._scheduled_poll)
        states = self.repo.feed_states()
        self._scheduler.schedule(
            [
                (
                    f.url,
                    self.config.interval_for(f),
                    states[f.url].next_poll_at if f.url in states else None,
                )
                for f in self.enabled_feeds()
            ],
            now=datetime.now(UTC),
        )
        self._scheduler.start()
        self.start_pruning()
        log.info("polling feeds=%d", len(self.enabled_feeds()))

    def start_pruning(self) -> Pruner:
        """Prune by ``retention:`` every ``retention.every`` (a no-op while it is unset)."""
        if self.pruner is None:
            self.pruner = Pruner(self.repo, lambda: self.config)
            self.pruner.start()
        return self.pruner

    def start_worker(
        self, owner: str | None = None, clock: Callable[[], datetime] | None = None
    ) -> ClaimLoop:
        """Poll due feeds claimed with leases, sharing the store with other workers.

        ``clock``: what "now" is for claims, leases and next-poll times (bench/soak.py
        drives one that runs faster than real time); default the real UTC time.
        """
        w = self.config.workers
        if clock is not None:
            self._context().clock = clock
        self.worker = ClaimLoop(
            self.repo,
            self.poll,
            lease=w.lease,
            claim_every=w.claim_every,
            capacity=w.batch or self.config.settings.max_concurrency,
            owner=owner,
            **({"clock": clock} if clock is not None else {}),
        )
        self.worker.start()
        self.start_pruning()
        return self.worker

    async def stop(self) -> None:
        # The watcher runs on the loop of the server that started it; a stop from another
        # loop (a one-off poll from another thread in tests) leaves it to that server.
        if self.watcher is not None and self.watcher.owned_here():
            await self.watcher.stop()
            self.watcher = None
        await self.reloader.stop()
        if self.pruner is not None and self.pruner.owned_here():
            await self.pruner.stop()
            self.pruner = None
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        if self._scheduler is not None:
            self._scheduler.shutdown()
            self._scheduler = None
        if self._ctx is not None:
            await self._ctx.client.aclose()
            if self._ctx.parsers is not None:
                await asyncio.to_thread(self._ctx.parsers.shutdown)
            self._ctx = None
        for task in list(self._retired):
            task.cancel()
        await asyncio.gather(*self._retired, return_exceptions=True)

    def close(self) -> None:
        self.repo.close()


def timing(config: Config) -> schedule.Policy:
    """The admin's bounds on adaptive polling (``polling:`` in feeds.yaml)."""
    p = config.polling
    return schedule.Policy(
        min_interval=p.min_interval, max_interval=p.max_interval, adaptive=p.adaptive
    )


def next_interval(
    config: Config, feed: FeedConfig, state: FeedState | None, now: datetime
) -> schedule.Effective:
    """The delay the scheduler uses after the feed's next poll, and why (feeds list, /admin).

    From the stored hints and error count; a WebSub subscription's slower fallback and the
    response headers of the next poll are not known here.
    """
    return schedule.effective_interval(
        config.interval_for(feed),
        state.consecutive_errors if state else 0,
        schedule.from_json(state.hints if state else None),
        timing(config),
        now,
    )


def fetch_limits(config: Config) -> FetchLimits:
    """The fetch limits and SSRF guard settings feeds.yaml asks for."""
    s, p = config.settings, config.polling
    return FetchLimits(
        timeout=s.fetch_timeout.total_seconds(),
        connect_timeout=p.connect_timeout.total_seconds(),
        read_timeout=p.read_timeout.total_seconds(),
        max_body_bytes=s.max_body_bytes,
        max_redirects=p.max_redirects,
        user_agent=s.user_agent or USER_AGENT,
        allow_private=p.allow_private_addresses,
        allowed_networks=tuple(ipaddress.ip_network(n, strict=False) for n in p.allowed_networks),
        per_host=p.per_host_concurrency,
    )


def _spec(f: FeedConfig) -> FeedSpec:
    return FeedSpec(url=f.url, title=f.title, tags=f.tags, enabled=f.enabled)
