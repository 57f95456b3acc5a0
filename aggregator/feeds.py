"""Feed views: a URL's stories rendered once, then served from memory until content changes.

    request ──> ContentVersion.current()     one primary-key read at most once a second
                                             (at once after this process ingests)
            ──> FeedCache.get(key, version)  hit: the cached bytes, gzip and validators
                └─ miss: render_view()       story query, render, gzip (in a thread)

Validators come from the content: the ETag is a hash of the bytes and Last-Modified is
the newest item's update, so a re-render of unchanged content answers 304 to the same
conditional request. ``Cache-Control: max-age`` follows how often the feed gains items.
Nothing here knows about HTTP frameworks; web.py turns a :class:`Rendered` into a response.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from storage import Repository

from . import publish
from .filters import StoryQuery
from .sanitize import safe_url
from .types import StoryItem

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MAX_AGE = 60
MAX_MAX_AGE = 900
CACHE_ENTRIES = 512
VERSION_TTL = 1.0  # seconds another process's ingest may take to show


@dataclass(frozen=True)
class FeedView:
    """What a feed URL shows, before filters: a topic, a place, or every story."""

    path: str  # e.g. "/topics/world"; the feed is at path + ".atom"
    feed_id: str  # stable: "urn:aggregator:topic:world"
    title: str
    description: str
    html_path: str  # the page for people
    tag: str | None  # the tag key every story carries, or None for all stories
    language: str | None = None


@dataclass(frozen=True)
class Rendered:
    version: int
    body: bytes
    gzipped: bytes
    etag: str  # strong, of ``body``; the gzip variant's differs (see etag_for)
    last_modified: datetime
    max_age: int
    media_type: str
    link: str = ""  # the HTTP Link header (WebSub: rel="hub" and rel="self"), if any

    @functools.cached_property
    def last_modified_http(self) -> str:
        return format_datetime(self.last_modified, usegmt=True)

    def etag_for(self, gzipped: bool) -> str:
        # A strong ETag names one exact representation, so the gzip bytes get their own.
        return self.etag[:-1] + '-gz"' if gzipped else self.etag


def feed_url(base: str, view: FeedView, fmt: str, query: StoryQuery, page: str = "") -> str:
    qs = query.query_string()
    if page:
        qs = f"{qs}&{page}" if qs else page
    return f"{base}{view.path}.{fmt}" + (f"?{qs}" if qs else "")


def render_view(
    repo: Repository,
    view: FeedView,
    fmt: str,
    base: str,
    query: StoryQuery,
    version: int,
    hub_url: str | None = None,
    asked: str | None = None,
) -> Rendered:
    """Query and render one page of ``view``; blocking (database and CPU).

    ``asked``: the query string of the URL requested. The document's self link is that URL
    as asked (a reader or validator checks self against where it fetched the feed from;
    ``?limit=50`` and no query select the same items but are two documents); its id and its
    first/next/previous links use the canonical filter.
    """
    q = query.with_tag(view.tag) if view.tag else query
    page = repo.stories(q)
    if query.after is not None:
        page_param = f"after={query.after.token()}"
    elif query.before is not None:
        page_param = f"before={query.before.token()}"
    else:
        page_param = ""
    first = feed_url(base, view, fmt, query)
    updated = max((i.updated for i in page.items), default=EPOCH)
    qs = query.query_string()
    if asked is None:
        self_url = feed_url(base, view, fmt, query, page_param)
    else:
        self_url = f"{base}{view.path}.{fmt}" + (f"?{safe_url(asked)}" if asked else "")
    meta = publish.FeedMeta(
        # One id for every page and the same filter: RFC 5005 pages are one logical feed.
        # The query string is percent-encoded already: quoting it again garbled it.
        id=view.feed_id + (":" + qs.replace("~", "%7E") if qs else ""),
        title=view.title,
        description=view.description,
        self_url=self_url,
        html_url=base + view.html_path,
        updated=updated,
        language=view.language,
        first_url=first,
        next_url=(
            feed_url(base, view, fmt, query, f"after={page.next.token()}") if page.next else None
        ),
        prev_url=(
            feed_url(base, view, fmt, query, f"before={page.prev.token()}") if page.prev else None
        ),
        hub_url=hub_url,
    )
    body = publish.render(fmt, meta, page.items)
    # WebSub discovery works from the headers too, whatever the format (and for a 304).
    link = f'<{hub_url}>; rel="hub", <{meta.self_url}>; rel="self"' if hub_url else ""
    return make_rendered(
        body, publish.MEDIA_TYPES[fmt], version, updated, max_age(page.items), link=link
    )


def make_rendered(
    body: bytes,
    media_type: str,
    version: int,
    last_modified: datetime,
    max_age: int,
    link: str = "",
) -> Rendered:
    """Bytes ready to serve: gzip and the strong ETag computed once."""
    return Rendered(
        version=version,
        body=body,
        # mtime=0: the same bytes give the same gzip bytes, so the gzip ETag holds too.
        gzipped=gzip.compress(body, compresslevel=6, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        last_modified=last_modified,
        max_age=max_age,
        media_type=media_type,
        link=link,
    )


def max_age(items: Sequence[StoryItem]) -> int:
    """Seconds a client may reuse the feed: a quarter of its typical gap between items.

    A busy topic (an item a minute) gets the 60 s floor; a quiet one up to 15 minutes.
    """
    times = sorted((i.published for i in items[:11]), reverse=True)
    gaps = [(a - b).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    gaps = [g for g in gaps if g > 0]
    if not gaps:
        return MAX_MAX_AGE
    return int(min(MAX_MAX_AGE, max(MIN_MAX_AGE, statistics.median(gaps) / 4)))


class ContentVersion:
    """The store's content version, read at most once per ``ttl`` seconds.

    A change committed by this process (``repo.local_changes``) is seen at once; one
    committed by another process (a separate poller) within ``ttl``. Concurrent callers
    share one read.
    """

    def __init__(
        self,
        read: Callable[[], int],
        local_changes: Callable[[], int],
        ttl: float = VERSION_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._local = local_changes
        self._ttl = ttl
        self._clock = clock
        self._value = -1
        self._checked = float("-inf")
        self._seen_local = -1
        self._pending: asyncio.Future[int] | None = None

    def peek(self) -> int | None:
        """The version if it is known to be current, without reading; else None."""
        if self._local() == self._seen_local and self._clock() - self._checked < self._ttl:
            return self._value
        return None

    async def current(self) -> int:
        local = self._local()
        if local == self._seen_local and self._clock() - self._checked < self._ttl:
            return self._value
        if self._pending is not None:
            return await asyncio.shield(self._pending)
        self._pending = asyncio.get_running_loop().create_future()
        try:
            value = await asyncio.to_thread(self._read)
        except BaseException as e:
            self._pending.set_exception(e)
            self._pending.exception()  # retrieved: the waiters re-raise it
            raise
        finally:
            pending, self._pending = self._pending, None
        self._value, self._checked, self._seen_local = value, self._clock(), local
        pending.set_result(value)
        return value


class FeedCache:
    """Rendered feeds by key, least recently used dropped first; one render per key at once."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, Rendered] = OrderedDict()
        self._rendering: dict[Hashable, asyncio.Future[Rendered]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    async def get(self, key: Hashable, version: int, render: Callable[[], Rendered]) -> Rendered:
        hit = self._entries.get(key)
        if hit is not None and hit.version == version:
            self._entries.move_to_end(key)
            return hit
        inflight = self._rendering.get(key)
        if inflight is not None:
            got = await asyncio.shield(inflight)
            if got.version == version:
                return got
        future: asyncio.Future[Rendered] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            rendered = await asyncio.to_thread(render)
        except BaseException as e:
            future.set_exception(e)
            future.exception()
            raise
        finally:
            if self._rendering.get(key) is future:
                del self._rendering[key]
        future.set_result(rendered)
        self._entries[key] = rendered
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return rendered
