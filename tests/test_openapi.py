"""/openapi.json describes every public route; CORS on feeds and JSON endpoints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from builders import config_yaml
from live import live_server
from starlette.routing import Mount, Route

from aggregator import openapi
from aggregator.service import Aggregator
from aggregator.web import create_app

# Admin routes are described by the admin modules once they contribute OPENAPI_PATHS.
PRIVATE = re.compile(r"^/(admin(/|$)|login$|logout$)")


@pytest.fixture
def agg(tmp_path: Path) -> Iterator[Aggregator]:
    path = tmp_path / "feeds.yaml"
    path.write_text(config_yaml([], database_url=f"sqlite:///{tmp_path / 'store.db'}"))
    a = Aggregator.from_file(path)
    yield a
    a.close()


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    for r in routes:
        if isinstance(r, Mount):
            yield from _routes(list(r.routes), prefix + r.path)
        elif isinstance(r, Route):
            yield prefix + r.path, {m.lower() for m in (r.methods or ())} - {"head"}


def _public_routes(agg: Aggregator) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path, methods in _routes(list(create_app(agg, poll=False).routes)):
        if not PRIVATE.match(path):
            found.setdefault(path, set()).update(methods)
    return found


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_every_public_route_is_described(agg: Aggregator) -> None:
    with live_server(agg) as base:
        r = httpx.get(f"{base}/openapi.json")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": base}]
    paths: dict[str, dict[str, Any]] = doc["paths"]
    routes = _public_routes(agg)
    assert "/topics/{slug}.{fmt}" in routes  # the walk over the app's routes found them
    for path, methods in routes.items():
        assert path in paths, f"{path} is not in /openapi.json: describe it (aggregator/openapi.py)"
        missing = methods - set(paths[path])
        assert not missing, f"{path}: {sorted(missing)} not described"
    stale = {p for p in paths if p not in routes and not PRIVATE.match(p)}
    assert not stale, f"described but not routed: {sorted(stale)}"
    # Every path parameter is declared, every reference resolves.
    for path, item in paths.items():
        for method, op in item.items():
            declared = set()
            for p in op.get("parameters", []):
                if "$ref" in p:
                    p = doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
                if p["in"] == "path":
                    declared.add(p["name"])
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
            assert op["responses"], (method, path)
    for ref in _refs(doc):
        _, components, kind, name = ref.split("/")
        assert name in doc[components][kind], f"dangling {ref}"


def test_document_refuses_a_method_described_twice() -> None:
    twice = {"/topics": {"get": {"responses": {}}}}
    with pytest.raises(ValueError, match="GET /topics described twice"):
        openapi.document("", [openapi.OPENAPI_PATHS, twice])
    # Another method on the same path is another module's to add.
    more = {"/topics": {"post": {"responses": {"201": {"description": "made"}}}}}
    doc = openapi.document("http://x", [openapi.OPENAPI_PATHS, more])
    assert set(doc["paths"]["/topics"]) == {"get", "post"}


def test_cors_on_feeds_and_json_not_admin(agg: Aggregator) -> None:
    origin = {"Origin": "https://downstream.example"}
    with live_server(agg) as base:
        for path in ("/topics/world.json", "/topics/world.atom", "/topics", "/openapi.json"):
            r = httpx.get(base + path, headers=origin)
            assert r.status_code == 200, path
            assert r.headers["access-control-allow-origin"] == "*", path
        feed = httpx.get(base + "/topics/world.rss", headers=origin)
        assert "ETag" in feed.headers["access-control-expose-headers"]
        bad = httpx.get(base + "/topics/world.rss?since=yesterday", headers=origin)
        assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == "*"
        # A script that sends its own validators triggers a preflight first.
        pre = httpx.options(
            base + "/topics/world.json",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "if-none-match",
            },
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "*"
        assert "If-None-Match" in pre.headers["access-control-allow-headers"]
        # The admin area is never readable from other origins.
        admin = httpx.options(
            base + "/admin/config", headers={**origin, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in admin.headers
        assert "access-control-allow-origin" not in httpx.get(base + "/admin/config").headers
