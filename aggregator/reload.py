"""Hot reload: a valid edit of feeds.yaml takes effect in the running process; a bad one never.

The watcher, in the process that serves or polls::

    watch the DIRECTORY of feeds.yaml (editors save by writing a new file and renaming it
    over the old one: a new inode, which a watch on the file itself would lose)
    on changes to that name, once QUIET seconds pass without another (a save in pieces):
        text = read(feeds.yaml); config = parse_config(text)     # every error, with lines
        invalid (or half-written, or missing) -> log the errors, agg.last_config_error = them;
                                                  the last good config keeps running
        removes most feeds or every topic     -> the same: refused as a likely truncated
                                                  save (drop_refusal); a restart applies it
        same as running                       -> agg.last_config_error = None
        else                                  -> agg.reload(config)

``agg.reload(config)`` (also what the admin API calls after it writes feeds.yaml) applies
``plan(old, new)``::

    sync the feeds table (new feeds inserted; removed ones disabled, their items kept)
    swap config and tagger; drop the poll context if fetch/dedup/websub settings changed
        (polls in flight finish on the old one; its HTTP client is closed after them)
    scheduler: add new and re-enabled feeds, re-add those whose interval changed, drop the
        removed and disabled ones; every other feed keeps its next poll time
    topics, synonyms, tagging or feed tags changed -> re-tag stored items in the background,
        only the topics that changed where that is enough (aggregator/retag.py)

Settings that a running process cannot change (database, listen address, worker leases)
are logged as needing a restart; the rest of the edit still applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import watchfiles

from .config import Config, FeedConfig, load_config
from .exceptions import ConfigError
from .retag import RetagResult, retag
from .tag import Tagger

if TYPE_CHECKING:
    from .service import Aggregator

log = logging.getLogger("aggregator.reload")

# A save is taken as finished after this long without another change to the file.
QUIET = 0.3
# The longest changes are gathered before a look, even if the file keeps changing.
MAX_GATHER = 2.0

# Keys a running process cannot take over; a change to them waits for a restart.
RESTART_KEYS = ("settings.database_url", "settings.host", "settings.port", "workers")
# Keys the poll context is built from (HTTP client, limits, dedup policy, WebSub).
CONTEXT_KEYS = ("settings", "polling", "dedup", "websub")


@dataclass(frozen=True)
class ConfigChange:
    """What an edit of feeds.yaml changes (``plan``), and so what a reload does."""

    feeds_added: tuple[str, ...] = ()
    feeds_removed: tuple[str, ...] = ()
    feeds_changed: tuple[str, ...] = ()  # title, tags, interval or enabled differ
    topics_changed: tuple[str, ...] = ()  # slugs added, removed or edited
    retag_all: bool = False  # synonyms, tagging settings or feed tags/titles changed
    context: bool = False  # settings/polling/dedup/websub changed: a new poll context
    restart: tuple[str, ...] = ()  # changed keys that only a restart applies

    @property
    def retag_topics(self) -> tuple[str, ...] | None:
        """Slugs to re-tag: None for all, () for none."""
        return None if self.retag_all else self.topics_changed

    @property
    def needs_retag(self) -> bool:
        return self.retag_all or bool(self.topics_changed)

    @property
    def tagger(self) -> bool:
        return self.needs_retag

    def summary(self) -> str:
        parts = [
            f"{name}={','.join(values)}"
            for name, values in (
                ("added", self.feeds_added),
                ("removed", self.feeds_removed),
                ("changed", self.feeds_changed),
                ("topics", self.topics_changed),
                ("restart_needed", self.restart),
            )
            if values
        ]
        if self.retag_all:
            parts.append("retag=all")
        if self.context:
            parts.append("settings=changed")
        return " ".join(parts) or "nothing"


def plan(old: Config, new: Config) -> ConfigChange:
    """What going from ``old`` to ``new`` changes (pure: no store, no scheduler)."""
    before = {f.url: f for f in old.feeds}
    after = {f.url: f for f in new.feeds}
    changed = tuple(
        u for u in after if u in before and _feed_differs(before[u], after[u], old, new)
    )
    old_topics = {t.slug: t for t in old.topics}
    new_topics = {t.slug: t for t in new.topics}
    topics = tuple(
        s
        for s in dict.fromkeys([*old_topics, *new_topics])
        if old_topics.get(s) != new_topics.get(s)
    )
    # Rules may test a feed's tags or title (rules.feed_tags, expressions over feed and
    # feed_tags), so those edits re-tag every topic, as a synonym or tagging edit does.
    feed_labels = any(
        (before[u].tags, before[u].title) != (after[u].tags, after[u].title) for u in changed
    )
    restart = tuple(k for k in RESTART_KEYS if _get(old, k) != _get(new, k))
    return ConfigChange(
        feeds_added=tuple(u for u in after if u not in before),
        feeds_removed=tuple(u for u in before if u not in after),
        feeds_changed=changed,
        topics_changed=topics,
        retag_all=feed_labels
        or old.category_synonyms != new.category_synonyms
        or old.tagging != new.tagging,
        context=any(_get(old, k) != _get(new, k) for k in CONTEXT_KEYS),
        restart=restart,
    )


# A live edit may not remove more than this share of the feeds (of at least two)...
MAX_DROPPED_SHARE = 0.5


def drop_refusal(old: Config, new: Config, path: object) -> list[str]:
    """Why a live edit from ``old`` to ``new`` is refused as a likely accident, or [].

    A save cut short or an editor that truncated the file looks valid but keeps only the
    first feeds and no topics; applying it would stop most feeds and drop every stored tag
    (re-tagging). Such an edit waits for a restart, which applies whatever the file says.
    """
    reasons = []
    removed = [f.url for f in old.feeds if new.feed(f.url) is None]
    if len(removed) >= 2 and len(removed) > MAX_DROPPED_SHARE * len(old.feeds):
        reasons.append(
            f"{path}: the edit removes {len(removed)} of {len(old.feeds)} feeds at once; "
            "refused as a likely truncated save (remove feeds with `aggregator feeds remove` "
            "or the admin page, or restart the server to apply the file as it is)"
        )
    if old.topics and not new.topics:
        reasons.append(
            f"{path}: the edit removes every topic ({len(old.topics)}); refused as a likely "
            "truncated save (restart the server to apply the file as it is)"
        )
    return reasons


def _feed_differs(a: FeedConfig, b: FeedConfig, old: Config, new: Config) -> bool:
    # An unset interval follows settings.default_interval, so compare what is in force.
    return (a.title, a.tags, a.enabled, old.interval_for(a)) != (
        b.title,
        b.tags,
        b.enabled,
        new.interval_for(b),
    )


def _get(config: Config, key: str) -> object:
    value: object = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


@dataclass
class Reloader:
    """The reload state of one Aggregator: a lock, and the background re-tagging."""

    retag: bool = True  # web-only processes leave re-tagging to the pollers
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _retag_task: asyncio.Task[RetagResult | None] | None = None
    _stopping: bool = False
    retags: int = 0  # re-tag runs finished (tests and logs)
    last_retag: RetagResult | None = None

    async def apply(self, agg: Aggregator, new: Config, *, retag: bool = True) -> ConfigChange:
        async with self._lock:
            old = agg.config
            change = plan(old, new)
            tagger = agg.tagger
            if change.tagger:
                # Loading the classifier takes seconds: not on the event loop.
                learned = await asyncio.to_thread(agg.learned, new)
                tagger = await asyncio.to_thread(Tagger.from_config, new, learned=learned)
            await asyncio.to_thread(agg.repo.sync_feeds, [agg.spec(f) for f in new.feeds])
            # The error goes with the config it was about, before the next await: no one
            # sees the new config beside the old error (tests/test_reload.py caught that).
            agg.config, agg.tagger, agg.last_config_error = new, tagger, None
            agg.repo.preferred_sources = new.dedup.preferred_sources
            agg.refresh_context(tagger, rebuild=change.context)
            await self._reschedule(agg)
            if change.restart:
                log.warning(
                    "feeds.yaml: %s changed; that takes effect at the next restart",
                    ", ".join(change.restart),
                )
            log.info("reloaded %s: %s", agg.config_path, change.summary())
            if retag and self.retag and change.needs_retag:
                self._start_retag(agg, new, change.retag_topics)
            return change

    async def retrain(self, agg: Aggregator) -> bool:
        """Train the classifier again with the store's corrections, then tag with it.

        After admins' corrections through the admin API; one training at a time, and a
        reload in between (which trains anew) wins. False when the classifier is off.
        """
        async with self._lock:
            config = agg.config
            if not config.tagging.classifier:
                return False
            learned = await asyncio.to_thread(agg.learned, config)
            tagger = await asyncio.to_thread(Tagger.from_config, config, learned=learned)
            if agg.config is not config:
                return False
            agg.tagger = tagger
            agg.refresh_context(tagger, rebuild=False)
            log.info("classifier trained again with %d examples from the store", len(learned))
            return True

    async def _reschedule(self, agg: Aggregator) -> None:
        scheduler = agg.scheduler
        if scheduler is None:
            return  # a worker (claims from the store) or web-only process: nothing to move
        enabled = await asyncio.to_thread(agg.enabled_feeds)
        wanted = {f.url: agg.config.interval_for(f) for f in enabled}
        current = scheduler.feed_urls
        states = await asyncio.to_thread(agg.repo.feed_states)
        add = [
            (url, interval, states[url].next_poll_at if url in states else None)
            for url, interval in wanted.items()
            if url not in current or scheduler.interval(url) != interval
        ]
        scheduler.update(add, current - set(wanted), now=datetime.now(UTC))

    def _start_retag(self, agg: Aggregator, config: Config, topics: Sequence[str] | None) -> None:
        previous = self._retag_task

        def check_stop(done: int, total: int) -> None:
            # Called between batches (each its own transaction): a clean place to stop.
            if self._stopping:
                raise _Stopped

        async def run() -> RetagResult | None:
            if previous is not None:
                # One re-tag at a time, in the order of the edits.
                await asyncio.gather(previous, return_exceptions=True)
            if self._stopping:
                return None
            try:
                result = await asyncio.to_thread(retag, agg.repo, config, topics, check_stop)
            except _Stopped:
                log.info(
                    "retag stopped by shutdown; the next reload or `aggregator retag` redoes it"
                )
                return None
            except Exception:
                # The edit is applied either way; a failed re-tag must not stop the process.
                log.exception("retag after reload failed; run `aggregator retag`")
                return None
            self.retags += 1
            self.last_retag = result
            return result

        self._retag_task = asyncio.get_running_loop().create_task(run(), name="retag")

    async def wait_retag(self) -> RetagResult | None:
        """Wait for the re-tagging in progress, if any (tests, shutdown)."""
        task = self._retag_task
        if task is None:
            return None
        return await task

    async def stop(self) -> None:
        task = self._retag_task
        if task is not None and task.get_loop() is not asyncio.get_running_loop():
            return  # started by another event loop (another thread): its owner stops it
        self._stopping = True
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
            self._retag_task = None
        self._stopping = False


class _Stopped(Exception):
    pass


class ConfigWatcher:
    """Watches feeds.yaml for a running Aggregator and reloads it (see the module docstring)."""

    def __init__(self, agg: Aggregator, *, quiet: float = QUIET) -> None:
        self.agg = agg
        self.path = Path(agg.config_path).absolute()
        self.quiet = quiet
        self.checks = 0  # edits looked at (tests wait on it)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="watch feeds.yaml")

    async def ready(self) -> None:
        """Wait until the watch is in place (edits from then on are seen)."""
        await self._ready.wait()

    def owned_here(self) -> bool:
        """Whether the running event loop is the one watching (only it can stop the watch)."""
        return self._task is None or self._task.get_loop() is asyncio.get_running_loop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        name = self.path.name

        def ours(_change: watchfiles.Change, path: str) -> bool:
            return Path(path).name == name

        log.info("watching %s for edits", self.path)
        try:
            watch = watchfiles.awatch(
                self.path.parent,
                watch_filter=ours,
                recursive=False,
                stop_event=self._stop,
                step=int(self.quiet * 1000),
                debounce=int(MAX_GATHER * 1000),
                # Wake up now and then even without events, to notice stop_event.
                rust_timeout=1000,
                yield_on_timeout=True,
            )
            first = True
            async for changes in watch:
                if first:
                    # The watch is in place: catch an edit made since the file was loaded.
                    first = False
                    self._ready.set()
                    await self._check_logged()
                    continue
                if changes:
                    await self._check_logged()
        except Exception:
            # No watching (e.g. inotify limits) is worth a loud log, not a dead server.
            log.exception("cannot watch %s; edits take effect at the next restart", self.path)
        finally:
            self._ready.set()

    async def _check_logged(self) -> None:
        try:
            await self.check()
        except Exception:
            # A bug in one look must not end the watch: the next edit gets another look.
            log.exception("checking %s failed; still watching", self.path)

    async def check(self) -> ConfigChange | None:
        """Look at feeds.yaml now: reload it if valid and different, else record why not."""
        self.checks += 1
        try:
            config = await asyncio.to_thread(load_config, self.agg.config_path)
            refusal = drop_refusal(self.agg.config, config, self.agg.config_path)
            if refusal:
                raise ConfigError(refusal)
        except Exception as e:
            # Whatever reading or validating raises is a refused edit, never a dead watcher.
            errors = (
                e.errors
                if isinstance(e, ConfigError)
                else [f"{self.agg.config_path}: cannot load: {type(e).__name__}: {e}"]
            )
            self.agg.last_config_error = errors
            log.error(
                "feeds.yaml edit refused (%d error(s)); still running the last good version:\n%s",
                len(errors),
                "\n".join(f"  {line}" for line in errors),
            )
            return None
        if config == self.agg.config:
            self.agg.last_config_error = None
            return None
        try:
            return await self.agg.reload(config)
        except Exception as e:
            # E.g. the store is down while syncing the feeds: keep running, say so.
            self.agg.last_config_error = [f"{self.agg.config_path}: reload failed: {e}"]
            log.exception("reload of %s failed", self.agg.config_path)
            return None
