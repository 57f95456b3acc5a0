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
    /metrics                  Prometheus text: polls, items, merges, tags, latency, queue lag
    /openapi.json             OpenAPI 3.1 description of the public endpoints (openapi.py)
    /websub/hub               POST: WebSub subscriptions to our feeds (hub.py)
    /login, /logout           admin session cookie (admin_web.py)
    /websub/callback/{id}     WebSub subscriber: hubs verify and push here (websub_subscriber.py)
    /admin, /admin/...        admin page and JSON API: token required (admin_guard.py)
    /admin/stories/...        what merged, and splitting a story (admin_stories.py)
    /admin/items/{id}/explain why an item has its tags (admin_tags.py)
    /admin/feeds, /admin/topics, /admin/retag, /admin/jobs/...
                              feeds.yaml edited live, feed health, previews (admin_api.py)
    /admin                    the admin page: health, feed and topic editors (admin_page.py)

Every feed takes filters and page cursors as query parameters (aggregator/filters.py,
docs/feeds-api.md); a malformed one is a 400. Rendering, caching by content version and
validators live in aggregator/feeds.py; this module only maps requests to responses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from storage import HubStore

from . import (
    admin_api,
    admin_page,
    admin_stories,
    admin_tags,
    admin_web,
    charts,
    feed_http,
    feeds,
    filters,
    hub,
    metrics,
    openapi,
    pages,
    publish,
    websub_subscriber,
)
from .admin_guard import AdminGuard, LoginFailures
from .admin_ops import AdminOps
from .body_limit import BodyLimit
from .config import TopicConfig
from .exceptions import StorageError
from .places import country_name
from .service import Aggregator
from .tag import PLACE_PREFIX

log = logging.getLogger("aggregator.web")

CORS = feed_http.CORS
HTML = "text/html; charset=utf-8"
_FEED_PATH = re.compile(
    r"^/(?:(?P<kind>topics|places)/(?P<slug>[^/]+)|(?P<all>stories))\.(?P<fmt>[a-z]+)$"
)
STORIES_VIEW = feeds.FeedView(
    path="/stories",
    feed_id="urn:aggregator:stories",
    title="All stories",
    description="Every story the aggregator holds, newest first",
    html_path="/",
    tag=None,
)


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


class _App(Starlette):
    """Starlette, with repeat feed GETs answered before its middleware and routing.

    A reader's poll of an unchanged feed is most of the traffic; answering it from the
    :class:`~aggregator.feed_http.HotTable` here, timed into the same request metric,
    skips four middleware layers and the router (bench/serve.py: 304s per second).
    Only URLs the feed handler remembered are answered, so no admin or private path is.
    """

    hot: feed_http.HotTable

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            t0 = time.perf_counter()
            a = self.hot.answer(scope)
            if a is not None:
                await send(
                    {"type": "http.response.start", "status": a.status, "headers": a.headers}
                )
                await send({"type": "http.response.body", "body": a.body})
                metrics.observe_request(scope["path"], "GET", a.status, time.perf_counter() - t0)
                return
        await super().__call__(scope, receive, send)


async def _db(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def create_app(agg: Aggregator, *, poll: bool = True, watch: bool = True) -> Starlette:
    """The ASGI app; its lifespan runs the feed scheduler (``poll``) and the feeds.yaml
    watcher (``watch``: valid edits apply live, aggregator/reload.py)."""

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
            html_path=f"/topics/{topic.slug}",
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
        minute = hot.minute()
        query = parse_query(request.scope["query_string"], minute, id(agg.config))
        base = _base_url(agg, request)
        version = await versions.current()
        asked = request.scope["query_string"].decode("latin-1")
        rendered = await cache.get(
            # The query as asked: the self link echoes it, so two spellings never share one.
            (view, fmt, base, query.cache_key, asked),
            version,
            functools.partial(
                feeds.render_view,
                agg.repo,
                view,
                fmt,
                base,
                query,
                version,
                base + hub.HUB_PATH,
                asked,
            ),
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

    def place_view(code: str) -> feeds.FeedView:
        # Place feeds are topic feeds over the place:xx tags the tagger stores.
        # ISO codes in either case (/places/CO.json); the feed's own URLs are lower case.
        code = code.lower()
        name = country_name(code) if code.isalpha() else None
        if name is None:
            raise HTTPException(404, f"no place {code!r}; use an ISO country code, e.g. co")
        return feeds.FeedView(
            path=f"/places/{code}",
            feed_id=f"urn:aggregator:place:{code}",
            title=name,
            description=f"Stories that mention {name}",
            html_path="/",
            tag=PLACE_PREFIX + code,
        )

    async def place_feed(request: Request) -> Response:
        view = place_view(request.path_params["slug"])
        return await serve_view(request, view, request.path_params["fmt"])

    async def stories_feed(request: Request) -> Response:
        return await serve_view(request, STORIES_VIEW, request.path_params["fmt"])

    def view_at(path: str) -> tuple[feeds.FeedView, str]:
        """The feed view and format a feed URL's path names (HTTPException 404 if none)."""
        m = _FEED_PATH.match(path)
        if m is None:
            raise HTTPException(404, "not a feed URL: /topics/{slug}.{fmt}, /places/…, /stories.…")
        kind, slug, fmt = m.group("kind"), m.group("slug") or "", m.group("fmt")
        if fmt not in publish.FORMATS:
            raise HTTPException(404, f"unknown format {fmt!r}; use .rss, .atom or .json")
        if kind == "topics":
            return topic_view(topic_or_404(slug)), fmt
        if kind == "places":
            return place_view(slug), fmt
        return STORIES_VIEW, fmt

    async def render_url(url: str) -> feeds.Rendered | None:
        """A feed URL's current rendering, through the same cache as its GETs (the hub)."""
        parts = urlsplit(url)
        try:
            view, fmt = view_at(parts.path)
            query = parse_query(parts.query.encode("latin-1"), hot.minute(), id(agg.config))
        except (HTTPException, filters.FilterError, UnicodeEncodeError):
            return None  # the topic was removed from feeds.yaml: nothing to push
        base = f"{parts.scheme}://{parts.netloc}"
        version = await versions.current()
        return await cache.get(
            (view, fmt, base, query.cache_key, parts.query),
            version,
            functools.partial(
                feeds.render_view,
                agg.repo,
                view,
                fmt,
                base,
                query,
                version,
                base + hub.HUB_PATH,
                parts.query,
            ),
        )

    def topic_problem(url: str, base: str) -> str | None:
        """Why ``url`` is not one of this server's feeds (first pages only), or None."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != base:
            return f"feeds of this hub are under {base}/"
        try:
            view_at(parts.path)
            query = filters.parse_query(
                parse_qsl(parts.query, keep_blank_values=True),
                now=datetime.now(UTC),
                default_limit=agg.config.settings.items_per_feed,
                is_known_tag=lambda key: ":" in key or agg.config.topic(key) is not None,
            )
        except HTTPException as e:
            return str(e.detail)
        except filters.FilterError as e:
            return str(e)
        if query.after is not None or query.before is not None:
            return "subscribe to the feed's first page, without after= or before="
        return None

    admin_ops = AdminOps(agg)
    login_failures = LoginFailures()
    hub_store = HubStore(agg.repo)
    websub = hub.Hub(hub_store, render_url, versions.current, agg.limits)

    async def hub_endpoint(request: Request) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        base = _base_url(agg, request)
        try:
            req = hub.parse_request(fields, lambda url: topic_problem(url, base))
        except hub.HubError as e:
            return PlainTextResponse(str(e), status_code=400)
        client = request.client.host if request.client else "unknown"
        refused = await websub.admit(req, client)
        if refused is not None:
            log.info("hub request refused client=%s callback=%s: %s", client, req.callback, refused)
            return PlainTextResponse(refused + "\n", status_code=429, headers={"Retry-After": "60"})
        # WebSub 5.2: 202, then verify intent asynchronously (after the response is sent).
        return PlainTextResponse(
            "accepted; verifying intent with the callback\n",
            status_code=202,
            background=BackgroundTask(websub.verify_and_apply, req),
        )

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
                        "feeds": pages.feed_urls(base, t.slug),
                        "page": f"{base}/topics/{t.slug}",
                    }
                    for t in agg.config.topics
                ]
            },
            headers=CORS,
        )

    def summaries(counts: dict[str, int], now: datetime | None = None) -> list[pages.TopicSummary]:
        """Every topic with its count; with ``now``, its last 30 days too (the pages)."""
        activity = None
        if now is not None:
            start = now.astimezone(UTC).date() - timedelta(days=charts.DAYS - 1)
            activity = agg.repo.topic_activity(datetime.combine(start, datetime.min.time(), UTC))
        return [
            pages.TopicSummary(
                t.slug,
                t.name,
                t.description,
                counts.get(t.slug, 0),
                activity.per_day.get(t.slug, {}) if activity else {},
                activity.last_update.get(t.slug) if activity else None,
            )
            for t in agg.config.topics
        ]

    async def serve_page(
        request: Request, key: tuple[object, ...], build: Callable[[int], feeds.Rendered]
    ) -> Response:
        """An HTML/OPML page, cached like the feeds by content version, with validators."""
        version = await versions.current()
        rendered = await cache.get(
            (*key, id(agg.config), _base_url(agg, request)),
            version,
            functools.partial(build, version),
        )
        a = feed_http.answer(
            rendered,
            feed_http.accepts_gzip(request.headers.get("accept-encoding", "")),
            request.headers.get("if-none-match"),
            request.headers.get("if-modified-since"),
        )
        if rendered.media_type.startswith("text/html"):
            present = {k for k, _ in a.headers}
            a.headers.extend(
                (k.lower().encode(), v.encode())
                for k, v in pages.HTML_HEADERS.items()
                if k.lower().encode() not in present
            )
        return _RawResponse(a)

    async def home(request: Request) -> Response:
        base = _base_url(agg, request)

        def build(version: int) -> feeds.Rendered:
            now = datetime.now(UTC)
            body = pages.home_page(base, summaries(agg.repo.topic_counts(), now), now)
            return feeds.make_rendered(body, HTML, version, datetime.now(UTC), 60)

        return await serve_page(request, ("home",), build)

    async def topics_opml(request: Request) -> Response:
        base = _base_url(agg, request)

        def build(version: int) -> feeds.Rendered:
            body = pages.opml(base, summaries(agg.repo.topic_counts()))
            return feeds.make_rendered(
                body, pages.OPML_MEDIA_TYPE, version, datetime.now(UTC), 3600
            )

        return await serve_page(request, ("opml",), build)

    async def topic_html(request: Request) -> Response:
        topic = topic_or_404(request.path_params["slug"])
        base = _base_url(agg, request)
        # The page's filter form submits every field; an empty one means "no filter".
        pairs = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if v]
        query = parse_query(urlencode(pairs).encode(), hot.minute(), id(agg.config))

        def build(version: int) -> feeds.Rendered:
            now = datetime.now(UTC)
            page = agg.repo.stories(query.with_tag(topic.slug))
            summary = next(
                s for s in summaries(agg.repo.topic_counts(), now) if s.slug == topic.slug
            )
            names = {t.slug: t.name for t in agg.config.topics}
            body = pages.topic_page(base, summary, page, query, names, now)
            updated = max((i.updated for i in page.items), default=feeds.EPOCH)
            return feeds.make_rendered(body, HTML, version, updated, feeds.max_age(page.items))

        return await serve_page(request, ("topic-page", topic.slug, query.cache_key), build)

    async def healthz(request: Request) -> Response:
        try:
            await _db(agg.repo.ping)
        except StorageError as e:
            return JSONResponse({"status": "unhealthy", "database": str(e)}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def metrics_text(request: Request) -> Response:
        try:
            lag: timedelta | None = await _db(agg.repo.queue_lag, datetime.now(UTC))
        except StorageError:
            lag = None  # reported as aggregator_store_up 0; the counters still answer
        body = await asyncio.to_thread(metrics.exposition, lag)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def openapi_json(request: Request) -> Response:
        # Every module's OPENAPI_PATHS (and OPENAPI_COMPONENTS) is listed here.
        doc = openapi.document(
            _base_url(agg, request),
            [
                openapi.OPENAPI_PATHS,
                hub.OPENAPI_PATHS,
                websub_subscriber.OPENAPI_PATHS,
                admin_stories.OPENAPI_PATHS,
                admin_api.OPENAPI_PATHS,
                admin_web.OPENAPI_PATHS,
                admin_tags.OPENAPI_PATHS,
                admin_page.OPENAPI_PATHS,
            ],
            [openapi.COMPONENTS, admin_api.OPENAPI_COMPONENTS],
        )
        return JSONResponse(doc, headers=CORS)

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
        if watch:
            # A web-only process follows topic edits but leaves re-tagging to the pollers.
            agg.start_watching(retag=poll)
        websub.start()
        try:
            yield
        finally:
            await websub.stop()
            await agg.stop()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        StorageError: storage_error,
        HTTPException: http_error,
        filters.FilterError: filter_error,
    }
    app = _App(
        routes=[
            Route("/", home),
            Route("/topics", topics),
            Route("/topics.opml", topics_opml),
            Route("/topics/{slug}.{fmt}", topic_feed),
            Route("/topics/{slug}", topic_html),
            Route("/stories.{fmt}", stories_feed),
            Route("/places/{slug}.{fmt}", place_feed),
            Route("/healthz", healthz),
            Route("/metrics", metrics_text),
            Route("/openapi.json", openapi_json),
            Route(hub.HUB_PATH, hub_endpoint, methods=["POST"]),
            *admin_web.routes(agg, login_failures),
            *websub_subscriber.routes(agg),
            *admin_stories.routes(agg),
            *admin_tags.routes(agg),
            *admin_api.routes(admin_ops),
            *admin_page.routes(admin_ops),
        ],
        # Timing outermost, so refusals are measured too (the hot path in _App times its
        # own). Then the guard, so every path under /admin, whoever registers it, needs
        # the admin token; body caps before any handler reads a body.
        middleware=[
            Middleware(metrics.RequestMetrics),
            Middleware(AdminGuard, failures=login_failures),
            Middleware(BodyLimit),
            Middleware(feed_http.Preflight),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.hot = hot
    app.state.hub = websub
    app.state.login_failures = login_failures
    return app
