"""Every query the rest of the aggregator needs, named after what the caller wants.

Callers pass and receive the plain values of ``aggregator.types``; ORM rows never leave
this module. Every SQLAlchemy error is wrapped in ``StorageError``.

On SQLite the store runs in WAL mode with a busy timeout, so readers (the web process)
never wait for a poll being saved, and write transactions start with ``BEGIN IMMEDIATE``
so two writers queue on the lock instead of failing on an upgrade deadlock.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from aggregator.dedup import lead_index
from aggregator.exceptions import StorageError
from aggregator.filters import StoryPage, StoryQuery
from aggregator.types import (
    Enclosure,
    EntryIntent,
    EventDecider,
    EventMember,
    EventSignature,
    FeedHealth,
    FeedSpec,
    FeedState,
    Lease,
    NearCandidate,
    ParsedEntry,
    PollCounts,
    PollMark,
    PollSave,
    StoreCheck,
    StoredEntry,
    StoryCluster,
    StoryItem,
    StoryMatcher,
    StorySource,
    TopicActivity,
    with_corrections,
)

from . import activity, integrity, leases, retention, tagging
from . import clusters as clusters_store
from . import events as events_store
from . import neardup as neardup_store
from .models import (
    ContentVersionRow,
    EntryRow,
    EntryTagRow,
    FeedRow,
    PollRow,
    StoryRow,
    TagCorrectionRow,
)
from .stories import story_page

SQLITE_BUSY_TIMEOUT_MS = 30_000
# SQLite's own checkpoints copy back only the pages no reader still sees, and the WAL
# starts over only when no reader is using it: with readers that overlap without a gap
# (a web process under load, other pollers) it never does, and the file grows by every
# write (a gigabyte in three minutes of bench/soak.py). Past this size a writer checkpoints
# it in full and truncates it, waiting at most WAL_CHECKPOINT_WAIT_MS for readers.
WAL_RESTART_BYTES = 64 << 20
WAL_CHECKPOINT_WAIT_MS = 200
PG_CONNECT_TIMEOUT_S = 10
MIGRATION_LOCK = 0x61676772  # any constant; the same in every process (b'aggr')


def story_uid(feed_url: str, identity: str) -> str:
    """The story uid made by an entry: deterministic, so a doubled save cannot make two."""
    return hashlib.sha256(f"{feed_url}\0{identity}".encode()).hexdigest()[:32]


# What a FeedState reads, as columns: the poller reads the states of every feed it polls,
# and a loaded FeedRow (every column, tracked by the session) cost more than its poll's
# 304 (bench/poll.py).
_STATE_COLUMNS = (
    FeedRow.url,
    FeedRow.title,
    FeedRow.tags,
    FeedRow.etag,
    FeedRow.last_modified,
    FeedRow.consecutive_errors,
    FeedRow.next_poll_at,
    FeedRow.moved_to,
    FeedRow.disabled_reason,
    FeedRow.schedule_hints,
)


def _state(row: Any) -> FeedState:
    """The FeedState of a FeedRow, or of a row of ``_STATE_COLUMNS``."""
    return FeedState(
        url=row.url,
        title=row.title,
        tags=tuple(row.tags or ()),
        etag=row.etag,
        last_modified=row.last_modified,
        consecutive_errors=row.consecutive_errors,
        next_poll_at=row.next_poll_at,
        moved_to=row.moved_to,
        disabled_reason=row.disabled_reason,
        hints=dict(row.schedule_hints) if row.schedule_hints else None,
    )


log = logging.getLogger(__name__)


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_file(url: str) -> Path | None:
    if not _is_sqlite(url) or "///" not in url or ":memory:" in url:
        return None
    return Path(url.split("///", 1)[1].split("?", 1)[0])


def make_engine(url: str, *, immediate: bool = False) -> Engine:
    """An engine for ``url``; on SQLite, WAL + busy timeout (+ BEGIN IMMEDIATE for writers)."""
    if not _is_sqlite(url):
        # pre_ping: a connection the server dropped (a restart) is replaced, not handed out.
        # connect_timeout: an unreachable server fails a request, it does not hang it.
        args = {"connect_timeout": PG_CONNECT_TIMEOUT_S} if url.startswith("postgresql") else {}
        return create_engine(url, pool_pre_ping=True, connect_args=args)
    file = _sqlite_file(url)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def migrate(url: str) -> None:
    """Bring the schema up to date with Alembic (storage/migrations)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = make_engine(url, immediate=True)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several processes starting at once on a new database: one migrates, the
                # others wait for its commit and then find nothing to do. (On SQLite,
                # BEGIN IMMEDIATE already makes them take turns.)
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as e:
        raise StorageError(f"migrating the database failed: {e}") from e
    finally:
        engine.dispose()


def open_repository(url: str, *, run_migrations: bool = True) -> Repository:
    if run_migrations:
        migrate(url)
    return Repository(url)


class Repository:
    def __init__(self, url: str) -> None:
        self.url = url
        self._read = make_engine(url)
        self._write = make_engine(url, immediate=True) if _is_sqlite(url) else self._read
        self._read_session = sessionmaker(self._read, expire_on_commit=False)
        self._write_session = sessionmaker(self._write, expire_on_commit=False)
        # SQLite has one writer; queueing in-process is cheaper than spinning on the lock.
        self._write_lock = threading.Lock() if _is_sqlite(url) else None
        file = _sqlite_file(url)
        self._wal = file.with_name(file.name + "-wal") if file is not None else None
        # Bumped after this process commits a change to published content: the web layer
        # of the same process then re-reads the content version at once, not after its TTL.
        self.local_changes = 0
        # feeds.yaml dedup.preferred_sources: whose headline a story shows (set by the app).
        self.preferred_sources: tuple[str, ...] = ()
        # The near-duplicate lookup's buckets, in memory (storage/neardup.py); on
        # PostgreSQL, other processes' commits can show entry ids out of order.
        self._buckets = neardup_store.BucketIndex(gaps=not _is_sqlite(url))

    def close(self) -> None:
        self._read.dispose()
        if self._write is not self._read:
            self._write.dispose()

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        try:
            with self._read_session() as s:
                yield s
        except SQLAlchemyError as e:
            raise StorageError(f"database read failed: {e}") from e

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        lock = self._write_lock
        if lock:
            lock.acquire()
        try:
            with self._write_session.begin() as s:
                yield s
            self._restart_wal()
        except SQLAlchemyError as e:
            raise StorageError(f"database write failed: {e}") from e
        finally:
            if lock:
                lock.release()

    def _restart_wal(self) -> None:
        """Checkpoint and truncate the WAL once it is past ``WAL_RESTART_BYTES``."""
        try:
            if self._wal is None or self._wal.stat().st_size <= WAL_RESTART_BYTES:
                return
        except OSError:
            return
        raw = self._write.raw_connection()
        cur = raw.cursor()
        try:
            # It holds the write lock while it waits for readers: a short wait, then give
            # way and let a later save try again, rather than stall every writer.
            cur.execute(f"PRAGMA busy_timeout={WAL_CHECKPOINT_WAIT_MS}")
            busy, _, _ = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if busy:
                # Another process was checkpointing (its automatic one after a commit), or
                # a reader outlasted the busy timeout: the next save past the limit retries.
                log.debug("WAL checkpoint incomplete; retried on a later save")
        except sqlite3.Error as e:
            # The save is committed; a missed checkpoint is retried by the next one.
            log.warning("WAL checkpoint failed (retried on a later save): %s", e)
            raw.invalidate()  # its busy timeout may be the short one
        finally:
            raw.close()

    # -- health ---------------------------------------------------------------------------

    def ping(self) -> None:
        with self._reading() as s:
            s.execute(select(1))

    def check(self) -> StoreCheck:
        """Entries, stories, tags and signatures agree (storage/integrity.py)."""
        with self._reading() as s:
            return integrity.check(s)

    # -- feeds ----------------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[FeedSpec]) -> None:
        """Make the feeds table follow feeds.yaml; feeds no longer listed are disabled, kept."""
        wanted = {f.url: f for f in feeds}
        with self._writing() as s:
            rows = {r.url: r for r in s.scalars(select(FeedRow))}
            fresh = [
                {"url": u, "title": f.title or "", "tags": [], "enabled": True}
                for u, f in wanted.items()
                if u not in rows
            ]
            if fresh:
                # Several workers starting at once insert the same feeds: first one wins.
                for chunk in _chunks(fresh, 200):
                    s.execute(self._insert(s, FeedRow).values(consecutive_errors=0), chunk)
                rows = {r.url: r for r in s.scalars(select(FeedRow))}
            for url, spec in wanted.items():
                row = rows[url]
                if spec.title:
                    row.title = spec.title
                row.tags = list(spec.tags)
                row.enabled = spec.enabled
                if not spec.enabled:
                    # An admin who disables a feed has seen why it was disabled: enabling
                    # it again later polls it again.
                    row.disabled_reason = None
            for url, row in rows.items():
                if url not in wanted:
                    row.enabled = False

    def feed_state(self, url: str) -> FeedState | None:
        with self._reading() as s:
            row = s.execute(select(*_STATE_COLUMNS).where(FeedRow.url == url)).first()
            return None if row is None else _state(row)

    def feed_states_for(self, urls: Sequence[str]) -> list[FeedState | None]:
        """``feed_state`` of many feeds in one query (the poller batches its reads)."""
        found: dict[str, FeedState] = {}
        with self._reading() as s:
            for chunk in _chunks(list(dict.fromkeys(urls))):
                q = select(*_STATE_COLUMNS).where(FeedRow.url.in_(chunk))
                found.update({r.url: _state(r) for r in s.execute(q)})
        return [found.get(u) for u in urls]

    def feed_states(self) -> dict[str, FeedState]:
        with self._reading() as s:
            return {r.url: _state(r) for r in s.execute(select(*_STATE_COLUMNS))}

    def feed_url_by_id(self, feed_id: int) -> str | None:
        """The URL of the feed with this row id (the admin API's name for it), or None."""
        with self._reading() as s:
            return s.scalar(select(FeedRow.url).where(FeedRow.id == feed_id))

    def disabled_feeds(self) -> dict[str, str]:
        """url -> reason, for feeds the poller disabled (410 Gone)."""
        with self._reading() as s:
            q = select(FeedRow.url, FeedRow.disabled_reason).where(
                FeedRow.disabled_reason.is_not(None)
            )
            return {url: reason or "" for url, reason in s.execute(q).all()}

    def feed_health(self, now: datetime | None = None) -> list[FeedHealth]:
        now = now or datetime.now(UTC)
        week_ago = now - timedelta(days=7)
        with self._reading() as s:
            # Feeds first: on PostgreSQL each statement sees its own snapshot, so a poll
            # read here as done has its entries in the counts read after it.
            feeds = list(s.scalars(select(FeedRow).order_by(FeedRow.id)))
            totals = dict(
                s.execute(
                    select(EntryRow.feed_id, func.count())
                    .where(EntryRow.pruned_at.is_(None))
                    .group_by(EntryRow.feed_id)
                ).all()
            )
            recent = dict(
                s.execute(
                    select(EntryRow.feed_id, func.count())
                    .where(EntryRow.first_seen_at >= week_ago)
                    .group_by(EntryRow.feed_id)
                ).all()
            )
            return [
                FeedHealth(
                    url=r.url,
                    title=r.title,
                    enabled=r.enabled,
                    last_attempt_at=r.last_attempt_at,
                    last_success_at=r.last_success_at,
                    last_status=r.last_status,
                    last_http_status=r.last_http_status,
                    last_error=r.last_error,
                    consecutive_errors=r.consecutive_errors,
                    next_poll_at=r.next_poll_at,
                    entries=int(totals.get(r.id, 0)),
                    items_per_day=round(int(recent.get(r.id, 0)) / 7, 2),
                    moved_to=r.moved_to,
                    disabled_reason=r.disabled_reason,
                    id=r.id,
                )
                for r in feeds
            ]

    # -- leases (several workers) ---------------------------------------------------------

    def claim_due_feeds(self, owner: str, now: datetime, lease: timedelta, limit: int) -> list[str]:
        """Lease up to ``limit`` due feeds to ``owner`` (see storage/leases.py)."""
        with self._writing() as s:
            return leases.claim(s, owner, now, lease, limit)

    def release_leases(self, owner: str, urls: Sequence[str]) -> None:
        with self._writing() as s:
            leases.release(s, owner, list(urls))

    def renew_leases(self, owner: str, urls: Sequence[str], until: datetime) -> int:
        with self._writing() as s:
            return leases.renew(s, owner, list(urls), until)

    def leases(self) -> list[Lease]:
        """The feeds claimed by workers and not saved yet, soonest to expire first."""
        with self._reading() as s:
            return leases.held(s)

    def queue_lag(self, now: datetime) -> timedelta:
        """now minus the due time of the most overdue feed (zero when none is overdue)."""
        with self._reading() as s:
            oldest = leases.oldest_overdue(s, now)
        if oldest is None:
            return timedelta(0)
        if oldest.tzinfo is None:  # min() over SQLite text bypasses the column type
            oldest = datetime.fromisoformat(str(oldest)).replace(tzinfo=UTC)
        return max(now - oldest, timedelta(0))

    # -- entries --------------------------------------------------------------------------

    def entry_hashes(self, feed_url: str, identities: Sequence[str]) -> dict[str, str]:
        """identity -> content hash, for the given identities already stored for the feed."""
        out: dict[str, str] = {}
        with self._reading() as s:
            feed_id = s.scalar(select(FeedRow.id).where(FeedRow.url == feed_url))
            if feed_id is None:
                return out
            ids = list(dict.fromkeys(identities))
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = select(EntryRow.identity, EntryRow.content_hash).where(
                    EntryRow.feed_id == feed_id, EntryRow.identity.in_(chunk)
                )
                out.update({k: v for k, v in s.execute(q).all()})
        return out

    def count_entries(self, feed_url: str | None = None) -> int:
        with self._reading() as s:
            # Live entries: retention's tombstones are not items any more.
            q = select(func.count()).select_from(EntryRow).where(EntryRow.pruned_at.is_(None))
            if feed_url is not None:
                q = q.join(FeedRow).where(FeedRow.url == feed_url)
            return int(s.scalar(q) or 0)

    def prune(
        self,
        rules: Mapping[str, retention.Rule],
        default: retention.Rule,
        tombstone_days: int,
        now: datetime,
        *,
        dry_run: bool = False,
    ) -> retention.PruneCounts:
        """Prune entries past their feed's rule to tombstones; expire old tombstones.

        ``dry_run`` counts and changes nothing (storage/retention.py).
        """
        with self._reading() if dry_run else self._writing() as s:
            counts = retention.prune(s, rules, default, tombstone_days, now, dry_run=dry_run)
            if not dry_run and (counts.entries or counts.stories_hidden):
                self._bump_content_version(s)
        if not dry_run and (counts.entries or counts.stories_hidden):
            self.local_changes += 1
        return counts

    def count_stories(self) -> int:
        with self._reading() as s:
            return int(s.scalar(select(func.count()).select_from(StoryRow)) or 0)

    # -- story clusters (storage/clusters.py) -----------------------------------------------------

    def story_clusters(self, since: datetime, limit: int = 20) -> list[StoryCluster]:
        """Stories first published since ``since``, the most entries first."""
        with self._reading() as s:
            return clusters_store.clusters(s, since, limit)

    def story_cluster(self, uid: str) -> StoryCluster | None:
        with self._reading() as s:
            return clusters_store.story(s, uid)

    def split_story(self, uid: str, entry_ids: Sequence[int], now: datetime) -> str:
        """Move entries off a story into a new one (StoryError if refused); the new uid."""
        with self._writing() as s:
            new_uid = clusters_store.split(s, uid, entry_ids, now)
            self._bump_content_version(s)
        self.local_changes += 1
        return new_uid

    def join_events(self, uid_a: str, uid_b: str, now: datetime) -> str:
        """Make two stories' events one (StoryError if refused); the event lead's uid."""
        with self._writing() as s:
            lead = events_store.join(s, uid_a, uid_b, now)
            self._bump_content_version(s)
        self.local_changes += 1
        return lead

    def split_event(self, uid: str, now: datetime) -> str:
        """Take a story out of its event (StoryError if refused); the uid of the event left."""
        with self._writing() as s:
            left = events_store.split_off(s, uid, now)
            self._bump_content_version(s)
        self.local_changes += 1
        return left

    def event_explained(self, uid: str) -> list[EventMember]:
        """The stories of a story's event, the lead first, each with why it joined."""
        with self._reading() as s:
            return events_store.explained(s, uid)

    def entry_stories(self) -> list[tuple[str, str, str | None, str]]:
        """(feed URL, identity, link, story uid) of every entry."""
        with self._reading() as s:
            return clusters_store.entry_stories(s)

    def entry_events(self) -> list[tuple[str | None, str]]:
        """(link, uid of the event's lead story) of every entry: for evaluations."""
        with self._reading() as s:
            return events_store.entry_events(s)

    # -- polls ----------------------------------------------------------------------------

    def save_poll(self, feed_url: str, save: PollSave) -> PollCounts:
        """Record one poll and everything it found, in one transaction."""
        result = save.result
        with self._writing() as s:
            feed = s.scalar(select(FeedRow).where(FeedRow.url == feed_url))
            if feed is None:
                feed = FeedRow(url=feed_url, title="", tags=[], enabled=True, consecutive_errors=0)
                s.add(feed)
                s.flush()
            counts = self._save_intents(
                s, feed, save.intents, save.started_at, save.matcher, save.events
            )
            feed.last_attempt_at = save.started_at
            feed.last_status = result.status
            feed.last_http_status = result.http_status
            feed.next_poll_at = save.next_poll_at
            leases.release_in(feed)
            if result.status == "error":
                feed.last_error = result.error
                feed.consecutive_errors = (feed.consecutive_errors or 0) + 1
            else:
                feed.last_error = None
                feed.consecutive_errors = 0
                feed.last_success_at = save.started_at
            if result.status == "ok":
                feed.etag = save.etag
                feed.last_modified = save.last_modified
            if save.moved_to:
                feed.moved_to = save.moved_to
            if save.disabled_reason:
                feed.disabled_reason = save.disabled_reason
            if save.hints is not None:
                feed.schedule_hints = save.hints
            if save.feed_title and not feed.title:
                feed.title = save.feed_title
            if save.site_url:
                feed.site_url = save.site_url
            if save.feed_language:
                feed.language = save.feed_language.strip().lower().replace("_", "-")[:35]
            s.add(
                PollRow(
                    feed_id=feed.id,
                    started_at=save.started_at,
                    status=result.status,
                    http_status=result.http_status,
                    error=result.error,
                    new=counts.new,
                    updated=counts.updated,
                    unchanged=counts.unchanged,
                    elapsed_ms=result.elapsed_ms,
                )
            )
            if counts.new or counts.updated:
                self._bump_content_version(s)
        if counts.new or counts.updated:
            self.local_changes += 1
        return counts

    def save_not_modified(self, saves: Sequence[tuple[str, PollSave]]) -> list[PollCounts]:
        """Record many 304 polls in one transaction (the poller batches them).

        What ``save_poll`` does for a 304, in three statements for the whole batch
        instead of an ORM load and flush per feed: the feed's poll fields (lease
        released, errors cleared), its poll row, and ``moved_to`` where a 301 led.
        """
        for _, save in saves:
            if save.result.status != "not_modified" or save.intents or save.disabled_reason:
                raise ValueError("save_not_modified records 304 polls only")
        feeds = cast(Table, FeedRow.__table__)
        with self._writing() as s:
            ids: dict[str, int] = {}
            for chunk in _chunks(list({url for url, _ in saves})):
                q = select(FeedRow.url, FeedRow.id).where(FeedRow.url.in_(chunk))
                ids.update({url: fid for url, fid in s.execute(q).all()})
            known = [(url, save) for url, save in saves if url in ids]
            if known:
                s.execute(
                    update(feeds)
                    .where(feeds.c.id == bindparam("b_id"))
                    .values(
                        last_attempt_at=bindparam("b_at"),
                        last_success_at=bindparam("b_at"),
                        last_status="not_modified",
                        last_http_status=bindparam("b_http"),
                        next_poll_at=bindparam("b_next"),
                        last_error=None,
                        consecutive_errors=0,
                        lease_owner=None,
                        lease_until=None,
                    ),
                    [
                        {
                            "b_id": ids[url],
                            "b_at": save.started_at,
                            "b_http": save.result.http_status,
                            "b_next": save.next_poll_at,
                        }
                        for url, save in known
                    ],
                )
                moved = [(url, save.moved_to) for url, save in known if save.moved_to]
                if moved:
                    s.execute(
                        update(feeds)
                        .where(feeds.c.id == bindparam("b_id"))
                        .values(moved_to=bindparam("b_moved")),
                        [{"b_id": ids[url], "b_moved": to} for url, to in moved],
                    )
                s.execute(
                    insert(cast(Table, PollRow.__table__)),
                    [
                        {
                            "feed_id": ids[url],
                            "started_at": save.started_at,
                            "status": "not_modified",
                            "http_status": save.result.http_status,
                            "error": None,
                            "new": 0,
                            "updated": 0,
                            "unchanged": 0,
                            "elapsed_ms": save.result.elapsed_ms,
                        }
                        for url, save in known
                    ],
                )
        # A feed not in the store yet (removed while polled) gets save_poll's handling.
        return [
            PollCounts(0, 0, 0) if url in ids else self.save_poll(url, save) for url, save in saves
        ]

    @staticmethod
    def _bump_content_version(s: Session) -> None:
        """Mark published content changed; call in the transaction that changes it.

        Last in the transaction on purpose: on PostgreSQL the row lock is then held only
        until the commit, so concurrent pollers barely wait on each other.
        """
        s.execute(
            update(ContentVersionRow)
            .where(ContentVersionRow.id == 1)
            .values(version=ContentVersionRow.version + 1)
        )

    def _save_intents(
        self,
        s: Session,
        feed: FeedRow,
        intents: Sequence[EntryIntent],
        now: datetime,
        matcher: StoryMatcher | None = None,
        events: EventDecider | None = None,
    ) -> PollCounts:
        rows: dict[str, EntryRow] = {}
        idents = [i.identity for i in intents]
        for chunk in _chunks(idents):
            q = select(EntryRow).where(EntryRow.feed_id == feed.id, EntryRow.identity.in_(chunk))
            rows.update({r.identity: r for r in s.scalars(q)})
        fresh = [i for i in intents if i.identity not in rows]
        updated = unchanged = 0
        for intent in intents:
            row = rows.get(intent.identity)
            if row is None:
                continue
            if row.content_hash != intent.content_hash and row.pruned_at is None:
                self._update_entry(s, row, intent, now)
                updated += 1
            else:
                # A pruned item sent again (even edited) stays a tombstone: not news again.
                # last_seen_at keeps the tombstone while the feed still carries the item.
                row.last_seen_at = now
                unchanged += 1
        s.flush()
        new, merged = (
            self._insert_entries(s, feed, fresh, now, matcher, events) if fresh else (0, 0)
        )
        return PollCounts(new, updated, unchanged, merged)

    def _insert(self, s: Session, table: Any) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING, so a doubled or racing save is a no-op."""
        dialect = s.get_bind().dialect.name
        if dialect == "postgresql":
            return pg_insert(table).on_conflict_do_nothing()
        if dialect == "sqlite":
            return sqlite_insert(table).on_conflict_do_nothing()
        raise StorageError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")

    def _insert_entries(
        self,
        s: Session,
        feed: FeedRow,
        intents: Sequence[EntryIntent],
        now: datetime,
        matcher: StoryMatcher | None = None,
        events: EventDecider | None = None,
    ) -> tuple[int, int]:
        """Insert new entries in bulk, each in the story it joins (``_stories_for``).

        Returns (entries inserted, of those the ones that joined a story another entry
        started: the dedup merges).
        """
        story_ids, started = self._stories_for(s, feed, intents, now, matcher)
        # Plain rows and Core inserts of the tables: no ORM object (instrumented attributes,
        # the ORM's bulk path) for rows that are only written.
        values = [
            {
                "feed_id": feed.id,
                "story_id": story_ids[intent.identity],
                "identity": intent.identity,
                "first_seen_at": now,
                "pruned_at": None,
                **self._entry_values(intent, now),
            }
            for intent in intents
        ]
        entries = cast(Table, EntryRow.__table__)
        inserted: dict[str, int] = {}
        for chunk in _chunks(values, 200):
            stmt = self._insert(s, entries).returning(entries.c.id, entries.c.identity)
            inserted.update({ident: eid for eid, ident in s.execute(stmt, chunk).all()})
        # A copy joining a story an admin corrected carries the story's corrections.
        fixes = tagging.story_corrections(
            s, [story_ids[i.identity] for i in intents if i.identity in inserted]
        )
        tags = [
            {"entry_id": inserted[i.identity], "topic": t.topic, "reason": t.reason}
            for i in intents
            if i.identity in inserted
            for t in with_corrections(i.tags, fixes.get(story_ids[i.identity], {}))
        ]
        if tags:
            s.execute(self._insert(s, EntryTagRow.__table__), tags)
        if fixes:
            s.execute(
                insert(TagCorrectionRow),
                [
                    {"entry_id": inserted[i.identity], "topic": t, "inside": v, "made_at": now}
                    for i in intents
                    if i.identity in inserted
                    for t, v in fixes.get(story_ids[i.identity], {}).items()
                ],
            )
        neardup_store.save(
            s,
            [
                (inserted[i.identity], i.fingerprint)
                for i in intents
                if i.identity in inserted and i.fingerprint is not None
            ],
        )
        if events is not None:
            self._events_for(s, feed.id, intents, inserted, story_ids, started, events)
        retention.revive_stories(s, [story_ids[i] for i in inserted])
        # Stories that an entry of this poll joined are updated when it is newer: one
        # executemany for the poll, not one ORM statement per entry.
        stories = cast(Table, StoryRow.__table__)
        bumps = [
            {"b_id": story_ids[i.identity], "b_updated": i.entry.updated}
            for i in intents
            if i.identity in inserted
        ]
        if bumps:
            s.execute(
                update(stories)
                .where(
                    stories.c.id == bindparam("b_id"),
                    stories.c.updated < bindparam("b_updated"),
                )
                .values(updated=bindparam("b_updated")),
                bumps,
            )
        joined = {story_ids[ident] for ident in inserted} & started
        return len(inserted), len(inserted) - len(joined)

    @staticmethod
    def _events_for(
        s: Session,
        feed_id: int,
        intents: Sequence[EntryIntent],
        inserted: dict[str, int],
        story_ids: dict[str, int],
        started: set[int],
        events: EventDecider,
    ) -> None:
        """Store the event signature of each new entry, and place each story this poll
        started in the event of its best match (storage/events.py), or none."""
        new = [i for i in intents if i.identity in inserted and i.fingerprint is not None]
        if not new:
            return
        sigs = events.signatures([i.entry for i in new])
        firsts: dict[int, tuple[int, EventSignature]] = {}
        for intent, sig in zip(new, sigs, strict=True):
            sid = story_ids[intent.identity]
            if sid in started and sid not in firsts:
                firsts[sid] = (inserted[intent.identity], sig)
        if firsts:
            events_store.lock(s)
        # Stored first: this poll's own entries are candidates of its later stories.
        events_store.save(
            s, [(inserted[i.identity], sig) for i, sig in zip(new, sigs, strict=True)]
        )
        for sid, (_eid, sig) in firsts.items():
            found = events_store.candidates(s, sig, events.window)
            chosen = events.choose(sig, sid, feed_id, found)
            if chosen is not None:
                event_id, reason = chosen
                events_store.place(s, sid, event_id, str(reason))

    def _stories_for(
        self,
        s: Session,
        feed: FeedRow,
        intents: Sequence[EntryIntent],
        now: datetime,
        matcher: StoryMatcher | None,
    ) -> tuple[dict[str, int], set[int]]:
        """identity -> story id, for the new entries of one poll, in order; and the ids of
        the stories this poll started.

        An entry joins the story of its canonical URL (a story's own or any of its
        entries'), else the story of its closest near-duplicate (stored, or earlier in this
        poll) when ``matcher`` is given, else starts a story of its own.
        """
        urls = list({i.canonical_url for i in intents if i.canonical_url})
        by_url = self._story_ids_by_url(s, urls)
        for chunk in _chunks([u for u in urls if u not in by_url]):
            q = (
                select(EntryRow.canonical_url, func.min(EntryRow.story_id))
                .where(EntryRow.canonical_url.in_(chunk))
                .group_by(EntryRow.canonical_url)
            )
            by_url.update({u: sid for u, sid in s.execute(q).all() if u})
        # A target is a stored story id (int) or the identity of the entry of this poll
        # that starts a new story (str).
        url_target: dict[str, int | str] = dict(by_url)
        targets: dict[str, int | str] = {}
        roots: dict[str, EntryIntent] = {}
        batch = neardup_store.PollBatch()  # this poll's entries, under pseudo story ids < 0
        pseudo: dict[int, str] = {}
        # The stored candidates of every entry that may need them, in two queries: entries
        # of this poll are not stored yet, so the loop below cannot change them.
        stored: dict[str, list[NearCandidate]] = {}
        if matcher is not None:
            asking = [
                i
                for i in intents
                if i.fingerprint is not None and not (i.canonical_url and i.canonical_url in by_url)
            ]
            fps = [i.fingerprint for i in asking if i.fingerprint is not None]
            found_all = self._buckets.candidates_many(s, fps, matcher.window)
            stored = {i.identity: c for i, c in zip(asking, found_all, strict=True)}
        for n, intent in enumerate(intents):
            url, fp = intent.canonical_url, intent.fingerprint
            target: int | str | None = url_target.get(url) if url else None
            if target is None and matcher is not None and fp is not None:
                found = stored.get(intent.identity, []) + batch.candidates(fp)
                chosen = matcher.choose(fp, feed.id, found)
                if chosen is not None:
                    target = pseudo.get(chosen, chosen)
            if target is None:
                target = intent.identity
                roots[intent.identity] = intent
                pseudo[-len(roots)] = intent.identity
            targets[intent.identity] = target
            if url and url not in url_target:
                url_target[url] = target
            if fp is not None:
                story_key = target if isinstance(target, int) else -list(roots).index(target) - 1
                batch.add(NearCandidate(-n - 1, story_key, feed.id, fp))
        creating = {
            story_uid(feed.url, i.identity): {
                "uid": story_uid(feed.url, i.identity),
                "canonical_url": i.canonical_url,
                "published": i.entry.published,
                "updated": i.entry.updated,
                "created_at": now,
            }
            for i in roots.values()
        }
        if creating:
            # Racing another process for a URL or a uid loses quietly; the lookups below
            # then find the winner's story.
            s.execute(self._insert(s, StoryRow.__table__), list(creating.values()))
        by_url.update(
            self._story_ids_by_url(s, [i.canonical_url for i in roots.values() if i.canonical_url])
        )
        by_uid: dict[str, int] = {}
        for chunk in _chunks(list(creating)):
            q = select(StoryRow.uid, StoryRow.id).where(StoryRow.uid.in_(chunk))
            by_uid.update(dict(s.execute(q).all()))
        root_story = {
            ident: by_url[i.canonical_url]
            if i.canonical_url
            else by_uid[story_uid(feed.url, ident)]
            for ident, i in roots.items()
        }
        ids = {ident: t if isinstance(t, int) else root_story[t] for ident, t in targets.items()}
        # A root that lost a race joined the winner's story: started by another process.
        started = {root_story[ident] for ident in roots if story_uid(feed.url, ident) in by_uid}
        return ids, started

    @staticmethod
    def _story_ids_by_url(s: Session, urls: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(list(urls)):
            q = select(StoryRow.canonical_url, StoryRow.id).where(StoryRow.canonical_url.in_(chunk))
            out.update({u: sid for u, sid in s.execute(q).all() if u})
        return out

    def _update_entry(self, s: Session, row: EntryRow, intent: EntryIntent, now: datetime) -> None:
        first_published, last_updated = row.published, row.updated
        self._fill_entry(row, intent, now)
        # An edit is not a new article: keep the date it was first published under.
        row.published = first_published
        # The edited text is what later items are compared with; the story stays.
        fp = intent.fingerprint
        neardup_store.replace(s, row.id, fp._replace(published=first_published) if fp else None)
        # The feed's own update time when it moved forward; else the edit is dated when seen.
        given = intent.entry.updated
        row.updated = given if not intent.entry.date_from_fetch and given > last_updated else now
        old = {t.topic: t for t in row.tags}
        fixed = with_corrections(intent.tags, {c.topic: c.inside for c in row.corrections})
        wanted = {t.topic: t.reason for t in fixed}
        for topic, tag in old.items():
            if topic not in wanted:
                row.tags.remove(tag)
            else:
                tag.reason = wanted[topic]
        for topic, reason in wanted.items():
            if topic not in old:
                row.tags.append(EntryTagRow(topic=topic, reason=reason))
        s.execute(
            update(StoryRow)
            .where(StoryRow.id == row.story_id, StoryRow.updated < row.updated)
            .values(updated=row.updated)
        )

    @classmethod
    def _fill_entry(cls, row: EntryRow, intent: EntryIntent, now: datetime) -> None:
        for key, value in cls._entry_values(intent, now).items():
            setattr(row, key, value)

    @staticmethod
    def _entry_values(intent: EntryIntent, now: datetime) -> dict[str, Any]:
        """The columns an entry's content decides (an insert adds its identity and ids)."""
        e = intent.entry
        return {
            "content_hash": intent.content_hash,
            "guid": e.guid,
            "link": e.link,
            "canonical_url": intent.canonical_url,
            "title": e.title,
            "summary_html": e.summary_html,
            "content_html": e.content_html,
            "text": e.text,
            "authors": list(e.authors),
            "categories": list(e.categories),
            "enclosures": [enc._asdict() for enc in e.enclosures],
            "published": e.published,
            "updated": e.updated,
            "date_from_fetch": e.date_from_fetch,
            "last_seen_at": now,
            "language": intent.language,
        }

    # -- stored tags (storage/tagging.py) ---------------------------------------------------

    def stored_entries(self, ids: Sequence[int]) -> list[StoredEntry]:
        """Entries by id, with their feed and tags (explanations); unknown ids left out."""
        with self._reading() as s:
            return tagging.stored_entries(s, ids)

    def story_entry_ids(self, uid: str) -> list[int]:
        with self._reading() as s:
            return tagging.story_entry_ids(s, uid)

    def entry_batch(self, after_id: int, limit: int) -> list[StoredEntry]:
        """The next ``limit`` entries by id after ``after_id`` (re-tagging walks them all)."""
        with self._reading() as s:
            return tagging.entry_batch(s, after_id, limit)

    def recent_entries(self, limit: int) -> list[StoredEntry]:
        """The ``limit`` entries stored last, newest first (topic rule previews)."""
        with self._reading() as s:
            return tagging.recent_entries(s, limit)

    def correct_tags(self, entry_ids: Sequence[int], topic: str, inside: bool | None) -> int:
        """Record (``inside`` True/False) or forget (None) an admin's correction of the
        entries in ``topic``; the caller re-tags them (``replace_tags`` applies it)."""
        with self._writing() as s:
            return tagging.correct(s, entry_ids, topic, inside, datetime.now(UTC))

    def tag_corrections(self, limit: int = 100) -> list[tagging.TagCorrection]:
        """The latest corrections, newest first."""
        with self._reading() as s:
            return tagging.corrections(s, limit)

    def corrected_entries(self, limit: int = 2000) -> list[tuple[ParsedEntry, Mapping[str, bool]]]:
        """Corrected entries and their corrections (the classifier's learned examples)."""
        with self._reading() as s:
            return tagging.corrected_entries(s, limit)

    def latest_tagged(self, limit: int, chars: int) -> list[tagging.TaggedText]:
        """The newest entries with their tags' reasons (what the classifier learns from)."""
        with self._reading() as s:
            return tagging.latest_tagged(s, limit, chars)

    def replace_tags(self, changes: Sequence[tagging.TagChange]) -> set[str]:
        """Store re-computed tags in one transaction; returns the tag keys that changed.

        Bumps the content version when any did, so every feed is published anew.
        """
        if not changes:
            return set()
        with self._writing() as s:
            changed = tagging.replace_tags(s, changes)
            if changed:
                self._bump_content_version(s)
        if changed:
            self.local_changes += 1
        return changed

    # -- topics ---------------------------------------------------------------------------

    def topic_items(self, topic: str, limit: int) -> list[StoryItem]:
        """The newest ``limit`` stories with an entry tagged ``topic``, newest first."""
        return self.stories(StoryQuery(all_of=(topic,), limit=limit)).items

    def stories(self, query: StoryQuery) -> StoryPage:
        """One page of the stories a feed query selects (storage/stories.py)."""
        with self._reading() as s:
            return story_page(
                s, query, functools.partial(_story_item, preferred=self.preferred_sources)
            )

    def content_version(self) -> int:
        """A counter that moves whenever published content may have changed: one PK read."""
        with self._reading() as s:
            return int(
                s.scalar(select(ContentVersionRow.version).where(ContentVersionRow.id == 1)) or 0
            )

    def topic_version(self, topic: str) -> tuple[int, datetime | None]:
        """(number of tagged entries, newest change): cheap, changes when the topic does."""
        q = (
            select(func.count(), func.max(EntryRow.last_seen_at), func.max(EntryRow.updated))
            .select_from(EntryTagRow)
            .join(EntryRow, EntryTagRow.entry_id == EntryRow.id)
            .where(EntryTagRow.topic == topic)
        )
        with self._reading() as s:
            count, _seen, newest = s.execute(q).one()
            return int(count or 0), newest

    def topic_activity(self, since: datetime) -> TopicActivity:
        """Stories a day per topic since ``since``, and each topic's newest arrival."""
        with self._reading() as s:
            return activity.topic_activity(s, since)

    def recent_polls(self, per_feed: int, since: datetime) -> dict[str, list[PollMark]]:
        """Each feed URL's last ``per_feed`` polls since ``since``, oldest first (/admin)."""
        with self._reading() as s:
            return activity.recent_polls(s, per_feed, since)

    def topic_counts(self) -> dict[str, int]:
        """topic slug -> number of stories carrying it."""
        q = (
            select(EntryTagRow.topic, func.count(func.distinct(EntryRow.story_id)))
            .join(EntryRow, EntryTagRow.entry_id == EntryRow.id)
            .group_by(EntryTagRow.topic)
        )
        with self._reading() as s:
            return {t: int(n) for t, n in s.execute(q).all()}


def _story_item(story: StoryRow, preferred: Sequence[str] = ()) -> StoryItem:
    # A story can mix live entries and tombstones; only the live ones are shown.
    live = [e for e in story.entries if e.pruned_at is None] or story.entries
    entries = sorted(live, key=lambda e: (e.first_seen_at, e.id))
    if preferred:
        # The lead goes first; the others keep the order they were seen in.
        entries.insert(
            0, entries.pop(lead_index([(e.feed.url, e.link) for e in entries], preferred))
        )
    lead = entries[0]
    topics = list(dict.fromkeys(t.topic for e in entries for t in sorted(e.tags, key=_tag_key)))
    categories = list(dict.fromkeys(c for e in entries for c in e.categories))
    return StoryItem(
        uid=story.uid,
        title=lead.title,
        link=lead.link,
        summary_html=lead.summary_html,
        content_html=lead.content_html,
        text=lead.text,
        authors=tuple(lead.authors),
        published=story.published,
        updated=max(story.updated, story.published),
        topics=tuple(topics),
        categories=tuple(categories),
        enclosures=tuple(
            Enclosure(d.get("url", ""), d.get("type"), d.get("length"))
            for d in lead.enclosures
            if d.get("url")
        ),
        sources=tuple(
            StorySource(
                feed_title=e.feed.title or e.feed.url,
                feed_url=e.feed.url,
                title=e.title,
                link=e.link,
            )
            for e in entries
        ),
    )


def _tag_key(tag: EntryTagRow) -> str:
    return tag.topic


def _chunks(values: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    # Bounded IN lists and VALUES batches: SQLite caps bound parameters per statement.
    for i in range(0, len(values), size):
        yield values[i : i + size]
