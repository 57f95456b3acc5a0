"""Admin routes of tagging (issue 5); the /admin guard (admin_guard.py) protects them.

    GET /admin/items/{item}/explain   JSON: an item's stored tags with their reasons, and
                                      every topic's verdict with the current feeds.yaml

``item`` is an entry id, a story uid or a published item id (``urn:aggregator:story:...``,
URL-escaped); see aggregator/explain.py. 404 when it names no stored entry. The guard
adds the admin security headers (no-store, CSP).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .explain import explain
from .service import Aggregator

OPENAPI_PATHS = {
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
    }
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

    return [Route("/admin/items/{item:path}/explain", explain_item, methods=["GET"])]
