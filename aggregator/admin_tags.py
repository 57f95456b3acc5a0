"""Admin routes of tagging (issue 5); the /admin guard (admin_guard.py) protects them.

    GET    /admin/items/{item}/explain        JSON: an item's stored tags with their reasons,
                                              and every topic's verdict with feeds.yaml now
    PUT    /admin/items/{item}/tags/{topic}   correct: the item's story is in the topic
    DELETE /admin/items/{item}/tags/{topic}   correct: the item's story is not in it
    DELETE /admin/items/{item}/corrections/{topic}   forget the correction: rules decide
    GET    /admin/corrections?limit=100       the latest corrections, newest first

A correction is stored and wins over rules and the classifier (corrections.py); after one,
the classifier is trained again in the background with every stored correction.

``item`` is an entry id, a story uid or a published item id (``urn:aggregator:story:...``,
URL-escaped); see aggregator/explain.py. 404 when it names no stored entry. The guard
adds the admin security headers (no-store, CSP).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .corrections import CorrectionError, correct
from .explain import STORY_URN, explain
from .service import Aggregator

log = logging.getLogger("aggregator.admin")

_ITEM = {
    "name": "item",
    "in": "path",
    "required": True,
    "description": "An entry id, a story uid or a published item id",
    "schema": {"type": "string"},
}
_TOPIC = {
    "name": "topic",
    "in": "path",
    "required": True,
    "description": "A topic slug of feeds.yaml",
    "schema": {"type": "string"},
}
_CORRECTED = {
    "200": {
        "description": "The correction is stored and the story re-tagged",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "404": {"description": "No stored item by that id, or no such topic"},
    "401": {"description": "No or wrong admin token (see the /admin guard)"},
}
MAX_LIMIT = 1000

OPENAPI_PATHS = {
    "/admin/items/{item}/tags/{topic}": {
        "put": {
            "tags": ["admin"],
            "summary": "Correct a tag: the item's story is in the topic, whatever rules say",
            "parameters": [_ITEM, _TOPIC],
            "responses": _CORRECTED,
        },
        "delete": {
            "tags": ["admin"],
            "summary": "Correct a tag: the item's story is not in the topic",
            "parameters": [_ITEM, _TOPIC],
            "responses": _CORRECTED,
        },
    },
    "/admin/items/{item}/corrections/{topic}": {
        "delete": {
            "tags": ["admin"],
            "summary": "Forget a correction: rules and the classifier decide again",
            "parameters": [_ITEM, _TOPIC],
            "responses": _CORRECTED,
        }
    },
    "/admin/corrections": {
        "get": {
            "tags": ["admin"],
            "summary": "The latest tag corrections, newest first",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                }
            ],
            "responses": {
                "200": {
                    "description": "The corrections",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {"description": "A limit that is not a number from 1 to 1000"},
            },
        }
    },
    "/admin/items/{item}/explain": {
        "get": {
            "tags": ["admin"],
            "summary": "An item's stored tags with their reasons, and each topic's verdict now",
            "parameters": [
                {
                    "name": "item",
                    "in": "path",
                    "required": True,
                    "description": "An entry id, a story uid or a published item id",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {
                    "description": "The item's entries and verdicts",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "404": {"description": "No stored item by that id"},
                "401": {"description": "No or wrong admin token (see the /admin guard)"},
            },
        }
    },
}


def routes(agg: Aggregator) -> list[BaseRoute]:
    async def explain_item(request: Request) -> Response:
        item = request.path_params["item"]
        # No stored id holds a NUL, and PostgreSQL refuses one in a query parameter.
        found = (
            await asyncio.to_thread(explain, agg.repo, agg.tagger, item)
            if "\x00" not in item
            else []
        )
        if not found:
            return JSONResponse(
                {"error": f"no stored item {item!r} (an entry id or a story id)"},
                status_code=404,
            )
        body = {"item": item, "entries": [e.as_json() for e in found]}
        return JSONResponse(body)

    retraining: set[asyncio.Task[bool]] = set()

    async def apply(request: Request, inside: bool | None) -> Response:
        item, topic = request.path_params["item"], request.path_params["topic"]
        if "\x00" in item:
            return JSONResponse({"error": f"no stored item {item!r}"}, status_code=404)
        try:
            done = await asyncio.to_thread(correct, agg.repo, agg.tagger, item, topic, inside)
        except CorrectionError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        log.info(
            "tag correction item=%s topic=%s in=%s entries=%d",
            item,
            topic,
            "forget" if inside is None else inside,
            len(done.entries),
        )
        task = asyncio.get_running_loop().create_task(agg.reloader.retrain(agg))
        retraining.add(task)
        task.add_done_callback(retraining.discard)
        return JSONResponse(
            {
                "story": done.story,
                "entries": list(done.entries),
                "topic": done.topic,
                "in": done.inside,
                "feeds_changed": sorted(done.feeds),
            }
        )

    async def put_tag(request: Request) -> Response:
        return await apply(request, True)

    async def delete_tag(request: Request) -> Response:
        return await apply(request, False)

    async def forget(request: Request) -> Response:
        return await apply(request, None)

    async def list_corrections(request: Request) -> Response:
        raw = request.query_params.get("limit", "100")
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
            return JSONResponse(
                {"error": f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw!r}"},
                status_code=400,
            )
        rows = await asyncio.to_thread(agg.repo.tag_corrections, int(raw))
        return JSONResponse(
            {
                "corrections": [
                    {
                        "entry_id": c.entry_id,
                        "story": STORY_URN + c.story_uid,
                        "title": c.title,
                        "topic": c.topic,
                        "in": c.inside,
                        "made_at": c.made_at.isoformat(),
                    }
                    for c in rows
                ]
            }
        )

    return [
        Route("/admin/items/{item:path}/explain", explain_item, methods=["GET"]),
        Route("/admin/items/{item:path}/tags/{topic}", put_tag, methods=["PUT"]),
        Route("/admin/items/{item:path}/tags/{topic}", delete_tag, methods=["DELETE"]),
        Route("/admin/items/{item:path}/corrections/{topic}", forget, methods=["DELETE"]),
        Route("/admin/corrections", list_corrections, methods=["GET"]),
    ]
