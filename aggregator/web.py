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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import admin_web, feeds, filters, publish
from .admin_guard import AdminGuard
from .config import TopicConfig
from .exceptions import StorageError
from .places import country_name
from .service import Aggregator
from .tag import PLACE_PREFIX

log = logging.getLogger("aggregator.web")

# Downstream sites read feeds and the JSON endpoints from their own pages.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "ETag, Last-Modified, Link",
}


def _base_url(agg: Aggregator, request: Request) -> str:
    return agg.config.settings.base_url or str(request.base_url).rstrip("/")


def _feed_urls(base: str, slug: str) -> dict[str, str]:
    return {fmt: f"{base}/topics/{slug}.{fmt}" for fmt in publish.FORMATS}


def _not_modified(request: Request, etags: set[str], last_modified: datetime) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return bool(etags & tags) or "*" in tags
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return last_modified.replace(microsecond=0) <= since
    return False


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            return not (params and q.replace("0", "").replace(".", "") == "")
    return False


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

    def topic_view(topic: TopicConfig) -> feeds.FeedView:
        return feeds.FeedView(
            path=f"/topics/{topic.slug}",
            feed_id=f"urn:aggregator:topic:{topic.slug}",
            title=topic.name,
            description=topic.description or f"{topic.name}: stories from many sources",
            html_path=f"/#{topic.slug}",
            tag=topic.slug,
        )

    def known_tag(key: str) -> bool:
        # Namespaced keys (place:co) belong to other tag families; topics are checked.
        return ":" in key or agg.config.topic(key) is not None

    async def serve_view(request: Request, view: feeds.FeedView, fmt: str) -> Response:
        """Any feed view in any format, with filters, paging and conditional GET."""
        if fmt not in publish.FORMATS:
            raise HTTPException(404, f"unknown format {fmt!r}; use .rss, .atom or .json")
        query = filters.parse_query(
            request.query_params.multi_items(),
            now=datetime.now(UTC),
            default_limit=agg.config.settings.items_per_feed,
            is_known_tag=known_tag,
        )
        base = _base_url(agg, request)
        version = await versions.current()
        rendered = await cache.get(
            (view, fmt, base, query.cache_key),
            version,
            functools.partial(feeds.render_view, agg.repo, view, fmt, base, query, version),
        )
        gz = _accepts_gzip(request)
        headers = {
            "ETag": rendered.etag_for(gz),
            "Last-Modified": format_datetime(rendered.last_modified, usegmt=True),
            "Cache-Control": f"public, max-age={rendered.max_age}",
            "Vary": "Accept-Encoding",
            **CORS,
        }
        etags = {rendered.etag_for(False), rendered.etag_for(True)}
        if _not_modified(request, etags, rendered.last_modified):
            return Response(status_code=304, headers=headers)
        if gz:
            headers["Content-Encoding"] = "gzip"
            return Response(rendered.gzipped, media_type=rendered.media_type, headers=headers)
        return Response(rendered.body, media_type=rendered.media_type, headers=headers)

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
        middleware=[Middleware(AdminGuard)],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
