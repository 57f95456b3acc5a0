"""The OpenAPI 3.1 description served at ``/openapi.json``, kept by hand beside the routes.

Each module that registers routes describes them in a module-level ``OPENAPI_PATHS``
(OpenAPI path item objects by path, ``{name}`` for path parameters, as in the Starlette
route) and web.py hands every such dict to :func:`document`. Shared schemas, parameters
and responses go in :data:`COMPONENTS` (or a module's own ``OPENAPI_COMPONENTS``) and are
referred to as ``#/components/...``. tests/test_openapi.py fails when a public route is
not described, when a description names no route, or when a reference is dangling.

A hand-kept dict rather than Starlette's ``SchemaGenerator``: the feed routes are answered
before routing too (feed_http.HotTable), parameters are shared by many paths, and the
docstrings stay prose.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from . import __version__

Spec = dict[str, Any]

TITLE = "aggregator"
DESCRIPTION = (
    "Topic feeds built from many RSS/Atom/JSON feeds: RSS 2.0, Atom 1.0 and JSON Feed 1.1 "
    "with filters, RFC 5005 paging, conditional GET and gzip. Feeds and JSON endpoints send "
    "`Access-Control-Allow-Origin: *`."
)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


_FEED_FORMAT = {
    "name": "fmt",
    "in": "path",
    "required": True,
    "description": "rss (RSS 2.0), atom (Atom 1.0) or json (JSON Feed 1.1)",
    "schema": {"type": "string", "enum": ["rss", "atom", "json"]},
}

_FILTERS: list[tuple[str, str, str]] = [
    ("topics", "Carries all of these topic slugs (`+`, `,` or repeated).", "world+business"),
    ("any", "Carries at least one of these topic slugs.", "sport,business"),
    ("not", "Carries none of these topic slugs.", "sport"),
    ("source", "Came from this feed URL or a feed on this host (or a subdomain).", "bbc.co.uk"),
    ("lang", "Language of the item; `en` matches `en-gb` too.", "es"),
    ("since", "Published at or after: a date, a date and time, or `90m`/`12h`/`7d`.", "7d"),
    ("until", "Published before (same forms as since).", "2026-03-08"),
    ("q", 'Full-text search: words, "phrases", `or`, `-word`.', '"peace talks" -rumour'),
    ("after", "Page cursor from a feed's `next` link (older stories).", ""),
    ("before", "Page cursor from a feed's `previous` link (newer stories).", ""),
]

_FEED_HEADERS = {
    "ETag": {"description": "Strong; changes only with the bytes", "schema": {"type": "string"}},
    "Last-Modified": {"description": "Newest item's update time", "schema": {"type": "string"}},
    "Cache-Control": {
        "description": "public, max-age from how often the feed gains items (60-900 s)",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'WebSub discovery: <…/websub/hub>; rel="hub", <this feed>; rel="self"',
        "schema": {"type": "string"},
    },
}

_FEED_CONTENT = {
    "application/rss+xml": {"schema": {"type": "string"}},
    "application/atom+xml": {"schema": {"type": "string"}},
    "application/feed+json": {"schema": _ref("schemas", "JSONFeed")},
}

COMPONENTS: Spec = {
    "parameters": {
        "fmt": _FEED_FORMAT,
        **{
            name: {
                "name": name,
                "in": "query",
                "required": False,
                "description": text,
                "schema": {"type": "string"},
                **({"example": example} if example else {}),
            }
            for name, text, example in _FILTERS
        },
        "limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Items per page (default settings.items_per_feed).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
        },
        "stories": {
            "name": "stories",
            "in": "query",
            "required": False,
            "description": "events (default): one item per news event naming every outlet; "
            "copies: one item per story (one text under several URLs).",
            "schema": {"type": "string", "enum": ["events", "copies"], "default": "events"},
        },
        "If-None-Match": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
        },
        "If-Modified-Since": {
            "name": "If-Modified-Since",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
        },
    },
    "responses": {
        "Feed": {
            "description": "The feed page (gzip when accepted)",
            "headers": _FEED_HEADERS,
            "content": _FEED_CONTENT,
        },
        "NotModified": {"description": "Unchanged since the validator given"},
        "BadFilter": {
            "description": "A malformed or unknown filter; the message names the parameter",
            "content": {"application/json": {"schema": _ref("schemas", "Error")}},
        },
        "NotFound": {
            "description": "No such topic, place or format",
            "content": {"application/json": {"schema": _ref("schemas", "Error")}},
        },
        "Unavailable": {
            "description": "The store is unavailable (Retry-After given)",
            "content": {"application/json": {"schema": _ref("schemas", "Error")}},
        },
    },
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "JSONFeed": {
            "description": "JSON Feed 1.1 (https://jsonfeed.org/version/1.1) with an "
            "`_aggregator` extension naming sources, topics and paging links",
            "type": "object",
            "required": ["version", "title", "items"],
        },
        "TopicList": {
            "type": "object",
            "required": ["topics"],
            "properties": {
                "topics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "slug", "stories", "feeds", "page"],
                        "properties": {
                            "name": {"type": "string"},
                            "slug": {"type": "string"},
                            "description": {"type": "string"},
                            "stories": {"type": "integer"},
                            "feeds": {
                                "type": "object",
                                "properties": {
                                    f: {"type": "string", "format": "uri"}
                                    for f in ("rss", "atom", "json")
                                },
                            },
                            "page": {"type": "string", "format": "uri"},
                        },
                    },
                }
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "database"],
            "properties": {"status": {"type": "string"}, "database": {"type": "string"}},
        },
    },
}


def _feed_get(summary: str, path_params: list[dict[str, Any]]) -> Spec:
    names = ["topics", "any", "not", "source", "lang", "since", "until", "q", "limit", "stories"]
    return {
        "get": {
            "tags": ["feeds"],
            "summary": summary,
            "parameters": [
                *path_params,
                _ref("parameters", "fmt"),
                *(_ref("parameters", n) for n in [*names, "after", "before"]),
                _ref("parameters", "If-None-Match"),
                _ref("parameters", "If-Modified-Since"),
            ],
            "responses": {
                "200": _ref("responses", "Feed"),
                "304": _ref("responses", "NotModified"),
                "400": _ref("responses", "BadFilter"),
                "404": _ref("responses", "NotFound"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    }


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _page(summary: str, media_type: str, params: list[dict[str, Any]] | None = None) -> Spec:
    op: Spec = {
        "tags": ["pages"],
        "summary": summary,
        "responses": {
            "200": {
                "description": summary,
                "content": {media_type: {"schema": {"type": "string"}}},
            },
            "304": _ref("responses", "NotModified"),
        },
    }
    if params:
        op["parameters"] = params
        op["responses"]["404"] = _ref("responses", "NotFound")
    return {"get": op}


_SLUG = _path_param("slug", "Topic slug (see /topics)")

# The public routes registered by web.py.
OPENAPI_PATHS: Spec = {
    "/": _page("Home page: every topic with its subscribe links", "text/html"),
    "/topics": {
        "get": {
            "tags": ["feeds"],
            "summary": "Every topic with its story count, feed URLs and page",
            "responses": {
                "200": {
                    "description": "The topics",
                    "content": {"application/json": {"schema": _ref("schemas", "TopicList")}},
                }
            },
        }
    },
    "/topics.opml": _page("OPML 2.0 of every topic's feed", "text/x-opml"),
    "/topics/{slug}": _page("A topic's latest stories, for people", "text/html", [_SLUG]),
    "/topics/{slug}.{fmt}": _feed_get("A topic's stories as a feed", [_SLUG]),
    "/stories.{fmt}": _feed_get("Every story, to narrow with filters", []),
    "/places/{slug}.{fmt}": _feed_get(
        "Stories mentioning a country",
        [_path_param("slug", "Lower-case ISO 3166-1 alpha-2 code, e.g. co")],
    ),
    "/healthz": {
        "get": {
            "tags": ["operations"],
            "summary": "Whether the store answers",
            "responses": {
                "200": {
                    "description": "Healthy",
                    "content": {"application/json": {"schema": _ref("schemas", "Health")}},
                },
                "503": {
                    "description": "The store does not answer",
                    "content": {"application/json": {"schema": _ref("schemas", "Health")}},
                },
            },
        }
    },
    "/metrics": {
        "get": {
            "tags": ["operations"],
            "summary": "Prometheus metrics: polls, items, merges, tags, request latency, queue lag",
            "description": "Prometheus text format; see docs/observability.md for each metric.",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["operations"],
            "summary": "This description",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}


def document(
    server_url: str,
    path_groups: Sequence[Mapping[str, Mapping[str, Any]]],
    component_groups: Sequence[Mapping[str, Mapping[str, Any]]] = (COMPONENTS,),
) -> Spec:
    """One OpenAPI 3.1 document from the modules' path and component dicts.

    The same path may come from two modules with different methods (an admin GET and
    POST on one URL); the same method twice, or a component name twice, is an error.
    """
    merged: Spec = {}
    for group in path_groups:
        for path, item in group.items():
            target = merged.setdefault(path, {})
            for method, op in item.items():
                if method in target:
                    raise ValueError(f"OpenAPI: {method.upper()} {path} described twice")
                target[method] = copy.deepcopy(op)
    comps: Spec = {}
    for group in component_groups:
        for kind, named in group.items():
            bucket = comps.setdefault(kind, {})
            for name, value in named.items():
                if name in bucket:
                    raise ValueError(f"OpenAPI: components/{kind}/{name} defined twice")
                bucket[name] = copy.deepcopy(value)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": __version__, "description": DESCRIPTION},
        "servers": [{"url": server_url or "/"}],
        "paths": dict(sorted(merged.items())),
        "components": comps,
    }
