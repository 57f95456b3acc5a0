"""Routes only: topic feeds, the topic list, a home page and health.

URL scheme::

    /                         HTML: every topic with its subscribe links
    /topics                   JSON: every topic with item counts and feed URLs
    /topics/{slug}.rss        RSS 2.0
    /topics/{slug}.atom       Atom 1.0
    /topics/{slug}.json       JSON Feed 1.1
    /stories.{fmt}            every story (to narrow with filters)
    /places/{code}.{fmt}      stories mentioning a country (lower-case ISO code: co)
    /healthz                  200 when the store answers, 503 when it does not
    /login, /logout           admin session cookie (admin_web.py)
    /admin, /admin/...        admin page and JSON API: token required (admin_guard.py)

Every feed takes filters and page cursors as query parameters (aggregator/filters.py,
docs/feeds-api.md); a malformed one is a 400. Rendering, caching by content version and
validators live in aggregator/feeds.py; this module only maps requests to responses.
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import admin_web, feed_http, feeds, filters, publish
from .admin_guard import AdminGuard
from .config import TopicConfig
from .exceptions import StorageError
from .places import country_name
from .service import Aggregator
from .tag import PLACE_PREFIX

log = logging.getLogger("aggregator.web")

CORS = feed_http.CORS


class _RawResponse(Response):
    """A feed answer whose headers are already final (the hot path sends the same)."""

    def __init__(self, a: feed_http.Answer) -> None:
        self.status_code = a.status
        self.body = a.body
        self.raw_headers = list(a.headers)
        self.background = None


def _base_url(agg: Aggregator, request: Request) -> str:
    configured = agg.config.settings.base_url
    if configured:
        return configured
    # What request.base_url gives, without building a URL object on every feed request.
    scope = request.scope
    host = request.headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}".rstrip("/")


def _feed_urls(base: str, slug: str) -> dict[str, str]:
    return {fmt: f"{base}/topics/{slug}.{fmt}" for fmt in publish.FORMATS}


async def _db(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def create_app(agg: Aggregator, *, poll: bool = True) -> Starlette:
    """The ASGI app; with ``poll`` its lifespan also runs the feed scheduler."""

    def topic_or_404(slug: str) -> TopicConfig:
        topic = agg.config.topic(slug)
        if topic is None:
            raise HTTPException(404, f"no topic {slug!r}; see /topics")
        return topic

    versions = feeds.ContentVersion(agg.repo.content_version, lambda: agg.repo.local_changes)
    cache = feeds.FeedCache()
    hot = feed_http.HotTable(versions, lambda: id(agg.config))

    views: dict[str, tuple[TopicConfig, feeds.FeedView]] = {}

    def topic_view(topic: TopicConfig) -> feeds.FeedView:
        known = views.get(topic.slug)
        if known is not None and known[0] is topic:
            return known[1]
        view = feeds.FeedView(
            path=f"/topics/{topic.slug}",
            feed_id=f"urn:aggregator:topic:{topic.slug}",
            title=topic.name,
            description=topic.description or f"{topic.name}: stories from many sources",
            html_path=f"/#{topic.slug}",
            tag=topic.slug,
        )
        views[topic.slug] = (topic, view)
        return view

    @functools.lru_cache(maxsize=1024)
    def parse_query(raw: bytes, minute: int, config_id: int) -> filters.StoryQuery:
        # Feed readers repeat the same few query strings; relative times resolve to the
        # minute, so a parse is reusable for that minute (and that configuration).
        def known_tag(key: str) -> bool:
            # Namespaced keys (place:co) belong to other tag families; topics are checked.
            return ":" in key or agg.config.topic(key) is not None

        return filters.parse_query(
            parse_qsl(raw.decode("latin-1"), keep_blank_values=True),
            now=datetime.fromtimestamp(minute * 60, UTC),
            default_limit=agg.config.settings.items_per_feed,
            is_known_tag=known_tag,
        )

    async def serve_view(request: Request, view: feeds.FeedView, fmt: str) -> Response:
        """Any feed view in any format, with filters, paging and conditional GET."""
        if fmt not in publish.FORMATS:
            raise HTTPException(404, f"unknown format {fmt!r}; use .rss, .atom or .json")
        minute = int(time.time() // 60)
        query = parse_query(request.scope["query_string"], minute, id(agg.config))
        base = _base_url(agg, request)
        version = await versions.current()
        rendered = await cache.get(
            (view, fmt, base, query.cache_key),
            version,
            functools.partial(feeds.render_view, agg.repo, view, fmt, base, query, version),
        )
        hot.remember(request.scope, rendered, minute)
        a = feed_http.answer(
            rendered,
            feed_http.accepts_gzip(request.headers.get("accept-encoding", "")),
            request.headers.get("if-none-match"),
            request.headers.get("if-modified-since"),
        )
        return _RawResponse(a)

    async def topic_feed(request: Request) -> Response:
        topic = topic_or_404(request.path_params["slug"])
        return await serve_view(request, topic_view(topic), request.path_params["fmt"])

    async def place_feed(request: Request) -> Response:
        # Place feeds are topic feeds over the place:xx tags the tagger stores.
        code = request.path_params["slug"]
        name = country_name(code) if code.isalpha() and code.islower() else None
        if name is None:
            raise HTTPException(404, f"no place {code!r}; use a lower-case ISO code, e.g. co")
        view = feeds.FeedView(
            path=f"/places/{code}",
            feed_id=f"urn:aggregator:place:{code}",
            title=name,
            description=f"Stories that mention {name}",
            html_path="/",
            tag=PLACE_PREFIX + code,
        )
        return await serve_view(request, view, request.path_params["fmt"])

    async def stories_feed(request: Request) -> Response:
        view = feeds.FeedView(
            path="/stories",
            feed_id="urn:aggregator:stories",
            title="All stories",
            description="Every story the aggregator holds, newest first",
            html_path="/",
            tag=None,
        )
        return await serve_view(request, view, request.path_params["fmt"])

    async def topics(request: Request) -> Response:
        base = _base_url(agg, request)
        counts = await _db(agg.repo.topic_counts)
        return JSONResponse(
            {
                "topics": [
                    {
                        "name": t.name,
                        "slug": t.slug,
                        "description": t.description,
                        "stories": counts.get(t.slug, 0),
                        "feeds": _feed_urls(base, t.slug),
                    }
                    for t in agg.config.topics
                ]
            },
            headers=CORS,
        )

    async def home(request: Request) -> Response:
        base = _base_url(agg, request)
        counts = await _db(agg.repo.topic_counts)
        rows = []
        alternates = []
        for t in agg.config.topics:
            urls = _feed_urls(base, t.slug)
            links = " · ".join(
                f'<a href="{html.escape(u)}">{fmt.upper()}</a>' for fmt, u in urls.items()
            )
            alternates.append(
                f'<link rel="alternate" type="application/atom+xml" '
                f'title="{html.escape(t.name)}" href="{html.escape(urls["atom"])}">'
            )
            rows.append(
                f'<li id="{html.escape(t.slug)}"><strong>{html.escape(t.name)}</strong> '
                f"({counts.get(t.slug, 0)} stories) — {links}"
                f"<br><small>{html.escape(t.description)}</small></li>"
            )
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>Topic feeds</title>" + "".join(alternates) + "</head><body>"
            "<h1>Topic feeds</h1><ul>" + "".join(rows) + "</ul>"
            '<p><a href="/topics">JSON list of topics</a></p></body></html>'
        )
        return HTMLResponse(page)

    async def healthz(request: Request) -> Response:
        try:
            await _db(agg.repo.ping)
        except StorageError as e:
            return JSONResponse({"status": "unhealthy", "database": str(e)}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def storage_error(request: Request, exc: Exception) -> Response:
        log.error("storage unavailable path=%s error=%s", request.url.path, exc)
        return JSONResponse(
            {"error": "the store is unavailable; try again shortly"},
            status_code=503,
            headers={"Retry-After": "30"},
        )

    async def filter_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400, headers=CORS)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if poll:
            agg.start_polling()
        try:
            yield
        finally:
            await agg.stop()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        StorageError: storage_error,
        HTTPException: http_error,
        filters.FilterError: filter_error,
    }
    return Starlette(
        routes=[
            Route("/", home),
            Route("/topics", topics),
            Route("/topics/{slug}.{fmt}", topic_feed),
            Route("/stories.{fmt}", stories_feed),
            Route("/places/{slug}.{fmt}", place_feed),
            Route("/healthz", healthz),
            *admin_web.routes(agg),
        ],
        # Outermost, so every path under /admin, whoever registers it, needs the admin token.
        # Repeat feed GETs are answered from memory before routing (feed_http.py).
        middleware=[Middleware(AdminGuard), Middleware(feed_http.HotFeeds, table=hot)],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
