"""Admin JSON API (issue 7): feeds and topics edited live, feed health, poll now, retag.

    GET    /admin/feeds                 every feed in feeds.yaml with its health
    POST   /admin/feeds                 add {url, title?, tags?, interval?, enabled?}; 201
    GET    /admin/feeds/{id}            one feed and its health
    PATCH  /admin/feeds/{id}            set title / tags / interval / enabled (null: default)
    DELETE /admin/feeds/{id}            remove it from feeds.yaml (stored items are kept)
    POST   /admin/feeds/{id}/poll       poll it now: the outcome and the feed's health
    GET    /admin/topics                every topic (feeds.yaml keys) with its story count
    POST   /admin/topics                add a topic; its items are re-tagged in the background
    GET    /admin/topics/{slug}         one topic
    PATCH  /admin/topics/{slug}         set keys (null removes one); re-tags in the background
    DELETE /admin/topics/{slug}         remove it; its tags are dropped in the background
    POST   /admin/topics/preview        {topic, limit?}: the recent items it would match, unsaved
    POST   /admin/retag                 {topics?}: re-tag stored items; 202 with the job
    GET    /admin/jobs/{job}            a background job's state and progress

Feeds are named by ``id``, their number in the store (in every listing). Each edit goes
through feeds_file.edit (validated exactly as ``aggregator validate`` does, written
atomically, comments kept) and is then applied to the running process (admin_ops.py). A
refused edit answers 422 with ``errors``: the lines ``aggregator validate`` prints; 404 and
409 name a missing or an already listed feed or topic. The /admin guard checks the token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import feeds_file
from .admin_ops import PREVIEW_DEFAULT, PREVIEW_MAX, AdminOps, check_text, topic_json
from .config import TopicConfig
from .exceptions import ConfigEditError, ConfigError

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors


# -- request bodies ----------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeedIn(_Body):
    """A feed to add: the feeds.yaml keys of a feed."""

    url: str = Field(description="http(s) URL of the feed")
    title: str | None = None
    tags: list[str] = Field(default_factory=list)
    interval: str | int | None = Field(
        default=None, description="a duration (90s, 30m, 2h, 1d) or seconds; default: settings"
    )
    enabled: bool = True


class FeedPatch(_Body):
    """Keys of a feed to change; a key set to null goes back to its default."""

    title: str | None = None
    tags: list[str] | None = None
    interval: str | int | None = None
    enabled: bool | None = None


class PreviewIn(_Body):
    topic: dict[str, Any] = Field(description="a whole topic, as in feeds.yaml (TopicConfig)")
    limit: int = Field(default=PREVIEW_DEFAULT, ge=1, le=PREVIEW_MAX)


class RetagIn(_Body):
    topics: list[str] | None = Field(default=None, description="topic slugs; null: every topic")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


async def _body(request: Request) -> Any:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body must be JSON: {e}") from e
    try:
        check_text(body)
    except ConfigEditError as e:
        raise ApiError(400, str(e)) from e
    return body


async def _object(request: Request) -> dict[str, Any]:
    body = await _body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


async def _model(request: Request, model: type[BaseModel]) -> Any:
    body = await _object(request)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        errors = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        ]
        raise ApiError(422, "; ".join(errors), errors) from e


def _api(fn: Handler) -> Handler:
    """Turn refusals into JSON answers: {"error": ..., "errors": [...]}."""

    @functools.wraps(fn)
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as e:
            body: dict[str, Any] = {"error": str(e)}
            if e.errors is not None:
                body["errors"] = e.errors
            return JSONResponse(body, status_code=e.status)
        except ConfigEditError as e:
            return JSONResponse({"error": e.errors[0], "errors": e.errors}, status_code=e.status)
        except ConfigError as e:
            return JSONResponse(
                {
                    "error": f"refused; feeds.yaml is unchanged: {len(e.errors)} error(s)",
                    "errors": e.errors,
                },
                status_code=422,
            )

    return wrapped


def _feed_id(request: Request) -> int:
    raw = request.path_params["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(404, f"no feed {raw!r}: feeds are named by their id (GET /admin/feeds)")
    return int(raw)


def routes(ops: AdminOps) -> list[BaseRoute]:
    agg = ops.agg

    async def feed_or_404(request: Request) -> Any:
        row = await ops.feed(_feed_id(request))
        if row is None:
            raise ApiError(404, f"no feed {request.path_params['id']!r} in feeds.yaml")
        return row

    @_api
    async def list_feeds(request: Request) -> Response:
        rows = await ops.feeds()
        return JSONResponse(
            {
                "feeds": [r.as_json() for r in rows],
                "config": {"path": str(agg.config_path), "last_error": agg.last_config_error},
            }
        )

    @_api
    async def add_feed(request: Request) -> Response:
        feed: FeedIn = await _model(request, FeedIn)
        url = feed.url.strip()
        await ops.edit(
            lambda doc: feeds_file.add_feed(
                doc,
                url,
                title=feed.title,
                tags=feed.tags,
                interval=None if feed.interval is None else str(feed.interval),
                enabled=feed.enabled,
            )
        )
        row = next((r for r in await ops.feeds() if r.config.url == url), None)
        assert row is not None
        if feed.enabled:
            # An admin adding a feed wants to know at once whether it works.
            ops.poll_soon(url)
        return JSONResponse(row.as_json(), status_code=201)

    @_api
    async def show_feed(request: Request) -> Response:
        return JSONResponse((await feed_or_404(request)).as_json())

    @_api
    async def update_feed(request: Request) -> Response:
        row = await feed_or_404(request)
        patch: FeedPatch = await _model(request, FeedPatch)
        changes: dict[str, Any] = {}
        for key in patch.model_fields_set:
            value = getattr(patch, key)
            if key == "enabled":
                value = None if value in (None, True) else False
            elif key == "tags":
                value = value or None
            changes[key] = value
        url = row.config.url
        await ops.edit(lambda doc: feeds_file.update_feed(doc, url, changes))
        return JSONResponse((await feed_or_404(request)).as_json())

    @_api
    async def remove_feed(request: Request) -> Response:
        row = await feed_or_404(request)
        url = row.config.url
        await ops.edit(lambda doc: feeds_file.remove_feed(doc, url))
        return JSONResponse({"removed": url})

    @_api
    async def poll_feed(request: Request) -> Response:
        row = await feed_or_404(request)
        result = await agg.poll(row.config.url)
        fresh = await feed_or_404(request)
        return JSONResponse({"poll": result._asdict(), "feed": fresh.as_json()})

    def topic_or_404(slug: str) -> TopicConfig:
        topic = agg.config.topic(slug)
        if topic is None:
            raise ApiError(404, f"no topic {slug!r} in feeds.yaml")
        return topic

    @_api
    async def list_topics(request: Request) -> Response:
        counts = await ops.topic_counts()
        return JSONResponse(
            {"topics": [topic_json(t, counts.get(t.slug, 0)) for t in agg.config.topics]}
        )

    @_api
    async def add_topic(request: Request) -> Response:
        topic = await _object(request)
        slug = topic.get("slug")
        _, _, job = await ops.edit(
            lambda doc: feeds_file.add_topic(doc, topic),
            retag_topics=[slug] if isinstance(slug, str) else (),
        )
        body = topic_json(topic_or_404(str(slug)), 0)
        return JSONResponse({**body, "retag": job.as_json() if job else None}, status_code=201)

    @_api
    async def show_topic(request: Request) -> Response:
        topic = topic_or_404(request.path_params["slug"])
        counts = await ops.topic_counts()
        return JSONResponse(topic_json(topic, counts.get(topic.slug, 0)))

    @_api
    async def update_topic(request: Request) -> Response:
        slug = topic_or_404(request.path_params["slug"]).slug
        changes = await _object(request)
        new_slug = changes.get("slug") or slug
        _, _, job = await ops.edit(
            lambda doc: feeds_file.update_topic(doc, slug, changes),
            retag_topics=[slug, str(new_slug)],
        )
        counts = await ops.topic_counts()
        topic = topic_or_404(str(new_slug))
        body = topic_json(topic, counts.get(topic.slug, 0))
        return JSONResponse({**body, "retag": job.as_json() if job else None})

    @_api
    async def remove_topic(request: Request) -> Response:
        slug = topic_or_404(request.path_params["slug"]).slug
        _, _, job = await ops.edit(
            lambda doc: feeds_file.remove_topic(doc, slug), retag_topics=[slug]
        )
        return JSONResponse({"removed": slug, "retag": job.as_json() if job else None})

    @_api
    async def preview_topic(request: Request) -> Response:
        body: PreviewIn = await _model(request, PreviewIn)
        preview = await ops.preview(body.topic, body.limit)
        return JSONResponse(preview.as_json())

    @_api
    async def start_retag(request: Request) -> Response:
        raw = await request.body()
        body = await _model(request, RetagIn) if raw.strip() else RetagIn()
        running = ops.running_retag()
        if running is not None:
            return JSONResponse(
                {"error": "a retag is already running", "job": running.as_json()},
                status_code=409,
            )
        if body.topics is not None:
            for slug in body.topics:
                topic_or_404(slug)
        job = ops.start_retag(agg.config, body.topics)
        return JSONResponse(job.as_json(), status_code=202)

    @_api
    async def show_job(request: Request) -> Response:
        job = ops.job(request.path_params["job"])
        if job is None:
            raise ApiError(404, f"no job {request.path_params['job']!r}")
        return JSONResponse(job.as_json())

    return [
        Route("/admin/feeds", list_feeds, methods=["GET"]),
        Route("/admin/feeds", add_feed, methods=["POST"]),
        Route("/admin/feeds/{id}", show_feed, methods=["GET"]),
        Route("/admin/feeds/{id}", update_feed, methods=["PATCH"]),
        Route("/admin/feeds/{id}", remove_feed, methods=["DELETE"]),
        Route("/admin/feeds/{id}/poll", poll_feed, methods=["POST"]),
        Route("/admin/topics", list_topics, methods=["GET"]),
        Route("/admin/topics", add_topic, methods=["POST"]),
        # Before /admin/topics/{slug}: "preview" is not a slug here.
        Route("/admin/topics/preview", preview_topic, methods=["POST"]),
        Route("/admin/topics/{slug}", show_topic, methods=["GET"]),
        Route("/admin/topics/{slug}", update_topic, methods=["PATCH"]),
        Route("/admin/topics/{slug}", remove_topic, methods=["DELETE"]),
        Route("/admin/retag", start_retag, methods=["POST"]),
        Route("/admin/jobs/{job}", show_job, methods=["GET"]),
    ]


# -- OpenAPI -----------------------------------------------------------------------------

_TOPIC_SCHEMA = TopicConfig.model_json_schema(
    by_alias=True, ref_template="#/components/schemas/{model}"
)


def _components() -> dict[str, dict[str, Any]]:
    topic = dict(_TOPIC_SCHEMA)
    schemas: dict[str, Any] = {**topic.pop("$defs", {}), "TopicConfig": topic}
    for model_cls in (FeedIn, FeedPatch, RetagIn):
        schemas["Admin" + model_cls.__name__] = _schema(model_cls)
    preview = _schema(PreviewIn)
    preview["properties"]["topic"] = {
        "$ref": "#/components/schemas/TopicConfig",
        "description": preview["properties"]["topic"].get("description", ""),
    }
    schemas["AdminPreviewIn"] = preview
    nullable_str = {"type": ["string", "null"]}
    schemas["AdminFeed"] = {
        "type": "object",
        "properties": {
            "id": {"type": ["integer", "null"]},
            "url": {"type": "string"},
            "title": nullable_str,
            "tags": {"type": "array", "items": {"type": "string"}},
            "interval": {"type": "number", "description": "seconds between polls"},
            "next_interval": {
                "type": ["number", "null"],
                "description": "seconds the scheduler waits after the next poll (hints, "
                "adaptive rate, backoff), before jitter",
            },
            "next_interval_reason": {
                **nullable_str,
                "description": "configured, adaptive rate, feed hint (ttl), backoff (2 errors)",
            },
            "enabled": {"type": "boolean", "description": "as feeds.yaml says"},
            "polling": {"type": "boolean", "description": "enabled and not disabled by a 410"},
            "failing": {"type": "boolean"},
            "disabled_reason": nullable_str,
            "last_attempt": {**nullable_str, "format": "date-time"},
            "last_success": {**nullable_str, "format": "date-time"},
            "last_status": nullable_str,
            "last_http_status": {"type": ["integer", "null"]},
            "consecutive_errors": {"type": "integer"},
            "last_error": nullable_str,
            "next_poll": {**nullable_str, "format": "date-time"},
            "items_per_day": {"type": "number", "description": "new items a day, last 7 days"},
            "entries": {"type": "integer"},
            "moved_to": nullable_str,
        },
    }
    schemas["AdminJob"] = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "topics": {"type": ["array", "null"], "items": {"type": "string"}},
            "state": {"enum": ["running", "done", "failed"]},
            "done": {"type": "integer"},
            "total": {"type": "integer"},
            "started_at": {"type": "string", "format": "date-time"},
            "finished_at": {**nullable_str, "format": "date-time"},
            "result": {"type": ["object", "null"]},
            "error": nullable_str,
        },
    }
    item = {
        "type": "object",
        "properties": {
            "entry": {"type": "integer"},
            "title": {"type": "string"},
            "url": nullable_str,
            "feed_url": {"type": "string"},
            "feed_title": {"type": "string"},
            "published": {"type": "string", "format": "date-time"},
            "reason": nullable_str,
            "tagged_now": {"type": "boolean"},
        },
    }
    schemas["AdminPreview"] = {
        "type": "object",
        "properties": {
            "topic": {"type": "string"},
            "checked": {"type": "integer"},
            "matched": {"type": "integer"},
            "items": {"type": "array", "items": item},
            "dropped": {"type": "array", "items": item},
        },
    }
    schemas["AdminError"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {"type": "string"},
                "description": "every problem, as `aggregator validate` prints them",
            },
        },
    }
    return {"schemas": schemas}


OPENAPI_COMPONENTS = _components()


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str | dict[str, Any], description: str) -> dict[str, Any]:
    schema = _ref(name) if isinstance(name, str) else name
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_TOKEN = {"401": {"description": "No or wrong admin token (see the /admin guard)"}}
_ERR = _ref("AdminError")
_REFUSED = {
    "400": _json(_ERR, "The body is not JSON, or not an object"),
    "422": _json(_ERR, "Refused: feeds.yaml would not validate (it is unchanged)"),
}
_FEED_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The feed's id (GET /admin/feeds)",
    "schema": {"type": "string"},
}
_SLUG = {
    "name": "slug",
    "in": "path",
    "required": True,
    "description": "A topic slug",
    "schema": {"type": "string"},
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"tags": ["admin"], "summary": summary, "responses": {**responses, **_TOKEN}, **extra}


def _body_of(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


_NOT_FOUND = {"404": _json(_ERR, "No such feed")}
_TOPIC_OUT = _json(
    {"allOf": [_ref("TopicConfig")], "type": "object"}, "The topic (and its retag job)"
)
OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/admin/feeds": {
        "get": _op(
            "Every feed in feeds.yaml with its health",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "feeds": {"type": "array", "items": _ref("AdminFeed")},
                            "config": {"type": "object"},
                        },
                    },
                    "The feeds",
                )
            },
        ),
        "post": _op(
            "Add a feed to feeds.yaml and poll it at once",
            {
                "201": _json("AdminFeed", "The new feed"),
                "409": _json(_ERR, "The feed is already listed"),
                **_REFUSED,
            },
            requestBody=_body_of("AdminFeedIn"),
        ),
    },
    "/admin/feeds/{id}": {
        "get": _op(
            "One feed and its health",
            {"200": _json("AdminFeed", "The feed"), **_NOT_FOUND},
            parameters=[_FEED_ID],
        ),
        "patch": _op(
            "Change a feed's title, tags, interval or enabled (null: the default)",
            {"200": _json("AdminFeed", "The feed"), **_NOT_FOUND, **_REFUSED},
            parameters=[_FEED_ID],
            requestBody=_body_of("AdminFeedPatch"),
        ),
        "delete": _op(
            "Remove a feed from feeds.yaml (its stored items are kept)",
            {"200": _json({"type": "object"}, "Removed"), **_NOT_FOUND, **_REFUSED},
            parameters=[_FEED_ID],
        ),
    },
    "/admin/feeds/{id}/poll": {
        "post": _op(
            "Poll a feed now",
            {"200": _json({"type": "object"}, "The poll's outcome and the feed"), **_NOT_FOUND},
            parameters=[_FEED_ID],
        ),
    },
    "/admin/topics": {
        "get": _op(
            "Every topic with its story count",
            {"200": _json({"type": "object"}, "The topics")},
        ),
        "post": _op(
            "Add a topic; its items are re-tagged in the background",
            {
                "201": _TOPIC_OUT,
                "409": _json(_ERR, "The slug is taken"),
                **_REFUSED,
            },
            requestBody=_body_of("TopicConfig"),
        ),
    },
    "/admin/topics/preview": {
        "post": _op(
            "Which recent stored items a topic would match; nothing is saved",
            {"200": _json("AdminPreview", "The matches"), **_REFUSED},
            requestBody=_body_of("AdminPreviewIn"),
        ),
    },
    "/admin/topics/{slug}": {
        "get": _op(
            "One topic",
            {"200": _TOPIC_OUT, "404": _json(_ERR, "No such topic")},
            parameters=[_SLUG],
        ),
        "patch": _op(
            "Change a topic's keys (rules replace the rules); re-tags in the background",
            {"200": _TOPIC_OUT, "404": _json(_ERR, "No such topic"), **_REFUSED},
            parameters=[_SLUG],
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        ),
        "delete": _op(
            "Remove a topic; its tags are dropped in the background",
            {"200": _json({"type": "object"}, "Removed"), "404": _json(_ERR, "No such topic")},
            parameters=[_SLUG],
        ),
    },
    "/admin/retag": {
        "post": _op(
            "Re-tag stored items with the current topics, in the background",
            {
                "202": _json("AdminJob", "The job (GET /admin/jobs/{job})"),
                "404": _json(_ERR, "No such topic"),
                "409": _json({"type": "object"}, "A retag is running: its job"),
                **_REFUSED,
            },
            requestBody={
                "required": False,
                "content": {"application/json": {"schema": _ref("AdminRetagIn")}},
            },
        ),
    },
    "/admin/jobs/{job}": {
        "get": _op(
            "A background job's state and progress",
            {"200": _json("AdminJob", "The job"), "404": _json(_ERR, "No such job")},
            parameters=[
                {
                    "name": "job",
                    "in": "path",
                    "required": True,
                    "description": "The job id",
                    "schema": {"type": "string"},
                }
            ],
        ),
    },
}
