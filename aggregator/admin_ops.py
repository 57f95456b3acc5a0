"""What the admin API and the admin page do, without HTTP: edit, apply, retag, preview.

    edit(change)   feeds_file.edit (validated, atomic, comments kept)   ConfigError: nothing
                   └─ apply_config(new config) in this process          changes, 422 upstream
                   └─ topics changed: retag them in the background (a Job)
    preview(topic) which of the N most recent stored items a topic would match; saves nothing
    feeds()        every feed in feeds.yaml with its health (Repository.feed_health)

Edits are serialised by one asyncio lock, so two admins' edits are applied to the running
process in the order they were written to the file. The web modules (admin_api.py for JSON,
admin_page.py for HTML) only turn requests into these calls and results into responses.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from ruamel.yaml.comments import CommentedMap

from . import feeds_file
from .config import Config, FeedConfig, TopicConfig
from .exceptions import ConfigEditError
from .retag import RetagResult, retag, tagger_for
from .schedule import Effective
from .service import Aggregator, next_interval
from .types import FeedHealth, StoredEntry

log = logging.getLogger("aggregator.admin")

T = TypeVar("T")
JobState = Literal["running", "done", "failed"]
MAX_JOBS = 50  # finished jobs remembered for GET /admin/jobs/{id}
PREVIEW_DEFAULT = 200
PREVIEW_MAX = 2000


@dataclass
class Job:
    """A background task an admin started (a retag); polled through the API."""

    id: str
    kind: str
    topics: tuple[str, ...] | None  # None: every topic
    state: JobState = "running"
    done: int = 0
    total: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "topics": list(self.topics) if self.topics is not None else None,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True)
class FeedRow:
    """One feeds.yaml entry and its health (None until the store knows the feed)."""

    config: FeedConfig
    interval_seconds: float
    health: FeedHealth | None
    next_interval: Effective | None = None  # what the scheduler will wait, and why

    @property
    def id(self) -> int | None:
        return self.health.id if self.health else None

    @property
    def failing(self) -> bool:
        h = self.health
        return h is not None and (h.consecutive_errors > 0 or h.disabled_reason is not None)

    def as_json(self) -> dict[str, Any]:
        h, f = self.health, self.config
        return {
            "id": self.id,
            "url": f.url,
            "title": f.title or (h.title if h else None) or None,
            "tags": list(f.tags),
            "interval": self.interval_seconds,
            "next_interval": self.next_interval.delay.total_seconds()
            if self.next_interval
            else None,
            "next_interval_reason": self.next_interval.reason if self.next_interval else None,
            "enabled": f.enabled,
            "polling": f.enabled and not (h and h.disabled_reason),
            "failing": self.failing,
            "disabled_reason": h.disabled_reason if h else None,
            "last_attempt": _iso(h.last_attempt_at if h else None),
            "last_success": _iso(h.last_success_at if h else None),
            "last_status": h.last_status if h else None,
            "last_http_status": h.last_http_status if h else None,
            "consecutive_errors": h.consecutive_errors if h else 0,
            "last_error": h.last_error if h else None,
            "next_poll": _iso(h.next_poll_at if h else None),
            "items_per_day": h.items_per_day if h else 0.0,
            "entries": h.entries if h else 0,
            "moved_to": h.moved_to if h else None,
        }


@dataclass(frozen=True)
class PreviewItem:
    entry_id: int
    title: str
    link: str | None
    feed_url: str
    feed_title: str
    published: datetime
    reason: str | None  # why the proposed topic matches; None when it does not
    tagged_now: bool  # whether the item carries the topic's tag today

    def as_json(self) -> dict[str, Any]:
        return {
            "entry": self.entry_id,
            "title": self.title,
            "url": self.link,
            "feed_url": self.feed_url,
            "feed_title": self.feed_title,
            "published": self.published.isoformat(),
            "reason": self.reason,
            "tagged_now": self.tagged_now,
        }


@dataclass(frozen=True)
class Preview:
    slug: str
    checked: int  # recent items looked at
    matches: tuple[PreviewItem, ...]  # items the topic would tag
    dropped: tuple[PreviewItem, ...]  # items tagged now that it would no longer tag

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.slug,
            "checked": self.checked,
            "matched": len(self.matches),
            "items": [i.as_json() for i in self.matches],
            "dropped": [i.as_json() for i in self.dropped],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def topic_json(t: TopicConfig, stories: int | None = None) -> dict[str, Any]:
    """A topic as feeds.yaml keys (defaults left out), so it can be sent back as an edit."""
    body: dict[str, Any] = t.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    body.setdefault("description", t.description)
    if stories is not None:
        body["stories"] = stories
    return body


def full_topic(topic: Mapping[str, Any]) -> dict[str, Any]:
    """A topic edit that replaces the whole topic: keys not given go back to their default."""
    return {k: topic.get(k) for k in feeds_file.TOPIC_KEYS}


def check_text(value: Any) -> None:
    """ConfigEditError if a string in ``value`` cannot be written as UTF-8 (lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ConfigEditError(f"text is not valid Unicode: {value!r}") from e
    elif isinstance(value, Mapping):
        for k, v in value.items():
            check_text(k)
            check_text(v)
    elif isinstance(value, list | tuple):
        for v in value:
            check_text(v)


class AdminOps:
    """The admin operations of one running aggregator (shared by the API and the page)."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self._lock: asyncio.Lock | None = None
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- feeds.yaml edits -----------------------------------------------------------------

    async def edit(
        self, change: Callable[[CommentedMap], T], retag_topics: Sequence[str] = ()
    ) -> tuple[Config, T, Job | None]:
        """Write the change to feeds.yaml (ConfigError: refused, file unchanged), apply it.

        ``retag_topics``: topics the change added, changed or removed; their tags are
        recomputed in the background (the returned job).
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            config, result = await asyncio.to_thread(feeds_file.edit, self.agg.config_path, change)
            await self.apply_config(config)
        job = self.start_retag(config, retag_topics) if retag_topics else None
        return config, result, job

    async def apply_config(self, config: Config) -> None:
        """Make this process follow ``config``, just written to feeds.yaml (hot reload).

        The re-tagging is left to this module's jobs (with progress), not to the reload.
        """
        change = await self.agg.reload(config, retag=False)
        log.info("admin edit applied %s", change.summary())

    # -- feeds ----------------------------------------------------------------------------

    async def feeds(self) -> list[FeedRow]:
        config = self.agg.config
        health = {h.url: h for h in await asyncio.to_thread(self.agg.repo.feed_health)}
        states = await asyncio.to_thread(self.agg.repo.feed_states)
        now = datetime.now(UTC)
        return [
            FeedRow(
                f,
                config.interval_for(f).total_seconds(),
                health.get(f.url),
                next_interval(config, f, states.get(f.url), now),
            )
            for f in config.feeds
        ]

    async def feed(self, feed_id: int) -> FeedRow | None:
        url = await asyncio.to_thread(self.agg.repo.feed_url_by_id, feed_id)
        if url is None:
            return None
        return next((r for r in await self.feeds() if r.config.url == url), None)

    def poll_soon(self, url: str) -> None:
        """Poll ``url`` now in the background (a feed just added: does it work?)."""

        async def run() -> None:
            try:
                await self.agg.poll(url)
            except Exception:
                # The pipeline records a poll's own errors; this is the last line.
                log.exception("admin poll crashed feed=%s", url)

        self._spawn(run())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Tasks are kept until done: the loop holds only weak references to them.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- topics ---------------------------------------------------------------------------

    async def topic_counts(self) -> dict[str, int]:
        counts: dict[str, int] = await asyncio.to_thread(self.agg.repo.topic_counts)
        return counts

    async def preview(self, topic: Mapping[str, Any], limit: int = PREVIEW_DEFAULT) -> Preview:
        """Which of the ``limit`` most recent stored items ``topic`` would tag; nothing saved.

        ``topic`` is a whole topic as feeds.yaml has it; one with the slug of an existing
        topic previews replacing it. ConfigError (the lines `aggregator validate` prints)
        if feeds.yaml with this topic would not validate.
        """
        check_text(topic)
        slug = topic.get("slug")
        existing = isinstance(slug, str) and self.agg.config.topic(slug) is not None

        def change(doc: CommentedMap) -> None:
            if existing:
                assert isinstance(slug, str)
                feeds_file.update_topic(doc, slug, full_topic(topic))
            else:
                feeds_file.add_topic(doc, topic)

        try:
            proposed = TopicConfig.model_validate(topic)
        except ValueError:
            # Refused: the whole file with the topic in it gives the errors `aggregator
            # validate` would print, with their lines.
            path = self.agg.config_path
            config, _ = await asyncio.to_thread(feeds_file.edit, path, change, write=False)
        else:
            # Valid alone is valid in the file (its slug replaces or is new): skip the YAML
            # round trip of the whole file, which takes seconds for thousands of feeds.
            current = self.agg.config
            topics = [proposed if t.slug == proposed.slug else t for t in current.topics]
            if not existing:
                topics.append(proposed)
            config = current.model_copy(update={"topics": tuple(topics)})
        assert isinstance(slug, str)  # the config validated: the topic has a slug
        limit = max(1, min(limit, PREVIEW_MAX))
        return await asyncio.to_thread(self._preview, config, slug, limit)

    def _preview(self, config: Config, slug: str, limit: int) -> Preview:
        tagger = tagger_for(config, [slug])
        entries = self.agg.repo.recent_entries(limit)
        tagged = tagger.analyse_each([(e.entry, e.feed) for e in entries])
        matches, dropped = [], []
        for stored, new in zip(entries, tagged, strict=True):
            reason = next((t.reason for t in new.tags if t.topic == slug), None)
            now = any(t.topic == slug for t in stored.tags)
            if reason is not None:
                matches.append(_preview_item(stored, reason, now))
            elif now:
                dropped.append(_preview_item(stored, None, now))
        return Preview(slug, len(entries), tuple(matches), tuple(dropped))

    # -- background jobs ------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def running_retag(self) -> Job | None:
        return next((j for j in self._jobs.values() if j.state == "running"), None)

    def start_retag(self, config: Config, topics: Sequence[str] | None = None) -> Job:
        """Re-tag stored items with ``config``'s topics (all, or ``topics``) in a thread."""
        job = Job(
            id=str(next(self._ids)),
            kind="retag",
            topics=tuple(dict.fromkeys(topics)) if topics is not None else None,
        )
        self._jobs[job.id] = job
        while len(self._jobs) > MAX_JOBS:
            oldest = next(iter(self._jobs.values()))
            if oldest.state == "running":
                break
            self._jobs.popitem(last=False)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        async def run() -> None:
            try:
                result: RetagResult = await asyncio.to_thread(
                    retag, self.agg.repo, config, job.topics, progress
                )
            except Exception as e:
                # A failed retag leaves the old tags; the admin sees why and may retry.
                log.exception("retag job=%s failed", job.id)
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            else:
                job.state = "done"
                job.result = {
                    "entries": result.entries,
                    "changed": result.changed,
                    "tags": sorted(result.topics),
                }
            finally:
                job.finished_at = datetime.now(UTC)

        self._spawn(run())
        return job


def _preview_item(stored: StoredEntry, reason: str | None, tagged_now: bool) -> PreviewItem:
    e = stored.entry
    return PreviewItem(
        entry_id=stored.id,
        title=e.title,
        link=e.link,
        feed_url=stored.feed_url,
        feed_title=stored.feed.title or stored.feed_url,
        published=e.published,
        reason=reason,
        tagged_now=tagged_now,
    )
