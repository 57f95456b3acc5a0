"""Retention: which entries to prune (``retention:`` in feeds.yaml), now or on a timer.

    rule(feed) = feed.retention.days or retention.days, feed.retention.max_items or ...
    every retention.every, in each process that polls:
        repo.prune(rules, default, tombstone_days, now)     # storage/retention.py

Pruning turns old entries into tombstones (content gone, identity and dedup signature
kept), so the feed that re-sends an old item does not get it published as new again; the
tombstones themselves go once the feed has not sent the item for ``tombstone_days``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from storage import Repository
from storage.retention import PruneCounts, Rule

from .config import Config

log = logging.getLogger("aggregator.retention")


def rules(config: Config) -> tuple[dict[str, Rule], Rule]:
    """(per-feed rules, the default rule) of ``config``; a feed's keys override the default."""
    r = config.retention
    default = Rule(days=r.days, max_items=r.max_items)
    per_feed = {
        f.url: Rule(
            days=f.retention.days if f.retention.days is not None else r.days,
            max_items=f.retention.max_items if f.retention.max_items is not None else r.max_items,
        )
        for f in config.feeds
        if f.retention is not None
    }
    return per_feed, default


def enabled(config: Config) -> bool:
    """Whether anything is to be pruned at all (the default keeps everything)."""
    per_feed, default = rules(config)
    return any(x.days is not None or x.max_items is not None for x in [default, *per_feed.values()])


def prune(
    repo: Repository, config: Config, now: datetime | None = None, *, dry_run: bool = False
) -> PruneCounts:
    """Prune the store by ``config``'s retention rules (counts only with ``dry_run``)."""
    per_feed, default = rules(config)
    counts = repo.prune(
        per_feed,
        default,
        config.retention.tombstone_days,
        now or datetime.now(UTC),
        dry_run=dry_run,
    )
    log.info(
        "prune%s entries=%d stories_hidden=%d tombstones_expired=%d tombstones=%d",
        " dry_run" if dry_run else "",
        counts.entries,
        counts.stories_hidden,
        counts.tombstones_expired,
        counts.tombstones,
    )
    return counts


class Pruner:
    """Prunes every ``retention.every`` while the process runs (the config of the moment)."""

    def __init__(self, repo: Repository, config: Callable[[], Config]) -> None:
        self.repo = repo
        self.config = config
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prune")

    def owned_here(self) -> bool:
        """Whether the running event loop runs the pruning (only it can stop it)."""
        return self._task is None or self._task.get_loop() is asyncio.get_running_loop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            config = self.config()
            if enabled(config):
                try:
                    await asyncio.to_thread(prune, self.repo, config)
                except Exception:
                    # E.g. the store is down: try again next time, keep serving.
                    log.exception("prune failed; retrying in %s", config.retention.every)
                self.runs += 1
            await asyncio.sleep(config.retention.every.total_seconds())
