"""Routes only: topic feeds, the topic list, a home page and health.

URL scheme::

    /                         HTML: every topic with its subscribe links
    /topics                   JSON: every topic with item counts and feed URLs
    /topics/{slug}.rss        RSS 2.0
    /topics/{slug}.atom       Atom 1.0
    /topics/{slug}.json       JSON Feed 1.1
    /healthz                  200 when the store answers, 503 when it does not
    /login, /logout           admin session cookie (admin_web.py)
    /admin, /admin/...        admin page and JSON API: token required (admin_guard.py)

Rendered feeds are cached per (topic, format, base URL) and reused while the topic's
version (a cheap indexed query) is unchanged; ETag is a hash of the bytes, so a 304
answers any conditional request whose validator still holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import admin_web, publish
from .admin_guard import AdminGuard
from .config import TopicConfig
from .exceptions import StorageError
from .service import Aggregator

log = logging.getLogger("aggregator.web")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Rendered:
    version: Any
    body: bytes
    etag: str
    last_modified: datetime


def _base_url(agg: Aggregator, request: Request) -> str:
    return agg.config.settings.base_url or str(request.base_url).rstrip("/")


def _feed_urls(base: str, slug: str) -> dict[str, str]:
    return {fmt: f"{base}/topics/{slug}.{fmt}" for fmt in publish.FORMATS}


def _not_modified(request: Request, etag: str, last_modified: datetime) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return etag in tags or "*" in tags
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


async def _db(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def create_app(agg: Aggregator, *, poll: bool = True) -> Starlette:
    """The ASGI app; with ``poll`` its lifespan also runs the feed scheduler."""
    cache: dict[tuple[str, str, str], _Rendered] = {}

    def topic_or_404(slug: str) -> TopicConfig:
        topic = agg.config.topic(slug)
        if topic is None:
            raise HTTPException(404, f"no topic {slug!r}; see /topics")
        return topic

    async def topic_feed(request: Request) -> Response:
        slug, fmt = request.path_params["slug"], request.path_params["fmt"]
        if fmt not in publish.FORMATS:
            raise HTTPException(404, f"unknown format {fmt!r}; use .rss, .atom or .json")
        topic = topic_or_404(slug)
        base = _base_url(agg, request)
        version = await _db(agg.repo.topic_version, slug)
        key = (slug, fmt, base)
        cached = cache.get(key)
        if cached is None or cached.version != version:
            limit = agg.config.settings.items_per_feed
            items = await _db(agg.repo.topic_items, slug, limit)
            updated = max((i.updated for i in items), default=EPOCH)
            meta = publish.FeedMeta(
                id=f"urn:aggregator:topic:{slug}",
                title=topic.name,
                description=topic.description or f"{topic.name}: stories from many sources",
                self_url=f"{base}/topics/{slug}.{fmt}",
                html_url=f"{base}/#{slug}",
                updated=updated,
            )
            body = publish.render(fmt, meta, items)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            cached = _Rendered(version, body, etag, updated)
            cache[key] = cached
        headers = {
            "ETag": cached.etag,
            "Last-Modified": format_datetime(cached.last_modified, usegmt=True),
            "Cache-Control": "public, max-age=300",
            "Access-Control-Allow-Origin": "*",
        }
        if _not_modified(request, cached.etag, cached.last_modified):
            return Response(status_code=304, headers=headers)
        return Response(cached.body, media_type=publish.MEDIA_TYPES[fmt], headers=headers)

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
            headers={"Access-Control-Allow-Origin": "*"},
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
    }
    return Starlette(
        routes=[
            Route("/", home),
            Route("/topics", topics),
            Route("/topics/{slug}.{fmt}", topic_feed),
            Route("/healthz", healthz),
            *admin_web.routes(agg),
        ],
        # Outermost, so every path under /admin, whoever registers it, needs the admin token.
        middleware=[Middleware(AdminGuard)],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
