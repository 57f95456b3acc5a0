"""Admin API for stories: see what merged, split a wrong merge (issue 4).

    GET  /admin/stories?since=1d&limit=20   the largest stories first published since then
    GET  /admin/stories/{story}             one story and its entries
    POST /admin/stories/{story}/split       {"entries": [entry ids]}: move them into a new story

``{story}`` is a story uid or the id of its item in the published feeds
(``urn:aggregator:story:<uid>``). The /admin guard (admin_guard.py) checks the token before
any of these run. A split is stored (storage/clusters.py): later polls never merge the two
stories back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .config import parse_duration
from .exceptions import StoryError
from .service import Aggregator
from .types import StoryCluster

ITEM_ID_PREFIX = "urn:aggregator:story:"
MAX_LIMIT = 500

_STORY = {
    "name": "story",
    "in": "path",
    "required": True,
    "description": "A story uid, or its item id in the feeds (urn:aggregator:story:<uid>)",
    "schema": {"type": "string"},
}
_CLUSTER = {
    "type": "object",
    "properties": {
        "story": {"type": "string"},
        "id": {"type": "string"},
        "published": {"type": "string", "format": "date-time"},
        "split_from": {"type": ["string", "null"]},
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "entry": {"type": "integer"},
                    "feed_url": {"type": "string"},
                    "feed_title": {"type": "string"},
                    "title": {"type": "string"},
                    "url": {"type": ["string", "null"]},
                    "published": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}
_JSON_CLUSTER = {"application/json": {"schema": _CLUSTER}}
_TOKEN = {"401": {"description": "No or wrong admin token (see the /admin guard)"}}
OPENAPI_PATHS = {
    "/admin/stories": {
        "get": {
            "tags": ["admin"],
            "summary": "The largest stories first published since a time, with their entries",
            "parameters": [
                {"name": n, "in": "query", "required": False, "schema": s, "description": d}
                for n, s, d in (
                    ("since", {"type": "string", "default": "1d"}, "a duration: 90m, 2h, 1d"),
                    ("limit", {"type": "integer", "default": 20, "maximum": MAX_LIMIT}, ""),
                )
            ],
            "responses": {
                "200": {
                    "description": "Stories, the most entries first",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"stories": {"type": "array", "items": _CLUSTER}},
                            }
                        }
                    },
                },
                "400": {"description": "Malformed since or limit"},
                **_TOKEN,
            },
        }
    },
    "/admin/stories/{story}": {
        "get": {
            "tags": ["admin"],
            "summary": "One story and its entries",
            "parameters": [_STORY],
            "responses": {
                "200": {"description": "The story", "content": _JSON_CLUSTER},
                "404": {"description": "No such story"},
                **_TOKEN,
            },
        }
    },
    "/admin/stories/{story}/split": {
        "post": {
            "tags": ["admin"],
            "summary": "Move entries off a story into a new one (remembered by later polls)",
            "parameters": [_STORY],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["entries"],
                            "properties": {
                                "entries": {
                                    "type": "array",
                                    "items": {"type": "integer"},
                                    "minItems": 1,
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": {"description": "The new story", "content": _JSON_CLUSTER},
                "400": {"description": "Not JSON, or entries not a list of entry ids"},
                "404": {"description": "No such story"},
                "422": {"description": "Entries not all in the story, or it would be left empty"},
                **_TOKEN,
            },
        }
    },
}


def story_uid(ref: str) -> str:
    """A story uid from a uid or a published item id."""
    # No uid holds a NUL, and PostgreSQL refuses one in a query parameter: drop it (404).
    ref = ref.strip().replace("\x00", "")
    return ref.removeprefix(ITEM_ID_PREFIX)


def cluster_json(c: StoryCluster) -> dict[str, Any]:
    return {
        "story": c.uid,
        "id": ITEM_ID_PREFIX + c.uid,
        "published": c.published.isoformat(),
        "split_from": c.split_from,
        "entries": [
            {
                "entry": e.entry_id,
                "feed_url": e.feed_url,
                "feed_title": e.feed_title,
                "title": e.title,
                "url": e.link,
                "published": e.published.isoformat(),
            }
            for e in c.entries
        ],
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def routes(agg: Aggregator) -> list[BaseRoute]:
    async def list_stories(request: Request) -> Response:
        try:
            since = parse_duration(request.query_params.get("since", "1d"))
            limit = int(request.query_params.get("limit", "20"))
        except ValueError as e:
            return _error(400, str(e))
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit must be between 1 and {MAX_LIMIT}")
        found = await asyncio.to_thread(agg.repo.story_clusters, datetime.now(UTC) - since, limit)
        return JSONResponse({"stories": [cluster_json(c) for c in found]})

    async def show_story(request: Request) -> Response:
        uid = story_uid(request.path_params["story"])
        found = await asyncio.to_thread(agg.repo.story_cluster, uid)
        if found is None:
            return _error(404, f"no story {uid!r}")
        return JSONResponse(cluster_json(found))

    async def split_story(request: Request) -> Response:
        uid = story_uid(request.path_params["story"])
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'send JSON: {"entries": [entry ids]}')
        entries = body.get("entries") if isinstance(body, dict) else None
        if (
            not isinstance(entries, list)
            or not entries
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in entries)
        ):
            return _error(400, '"entries" must be a non-empty list of entry ids (integers)')
        if await asyncio.to_thread(agg.repo.story_cluster, uid) is None:
            return _error(404, f"no story {uid!r}")
        try:
            new_uid = await asyncio.to_thread(agg.repo.split_story, uid, entries, datetime.now(UTC))
        except StoryError as e:
            return _error(422, str(e))
        new = await asyncio.to_thread(agg.repo.story_cluster, new_uid)
        body = cluster_json(new) if new is not None else {"story": new_uid}
        return JSONResponse(body, status_code=201)

    return [
        Route("/admin/stories", list_stories, methods=["GET"]),
        Route("/admin/stories/{story}", show_story, methods=["GET"]),
        Route("/admin/stories/{story}/split", split_story, methods=["POST"]),
    ]
