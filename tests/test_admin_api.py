"""The admin JSON API: feeds and topics edited live through feeds.yaml, health, previews."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from builders import Item, news_items, rss
from conftest import FeedServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from aggregator import feeds_file
from aggregator.service import Aggregator
from aggregator.web import create_app

SCRIPT = Path(sys.executable).parent / "aggregator"

FEEDS_YAML = """\
# Admin test feeds: every comment here must survive edits made through the API.
settings:
  database_url: sqlite:///store.db   # next to this file
  fetch_timeout: 5s

polling:
  allow_private_addresses: true  # the test servers listen on 127.0.0.1

tagging:
  classifier: false

feeds:
  # World news
  - url: {world}
    title: World Desk
    tags: [world]
  # Science
  - url: {science}
    title: Science Daily
    tags: [science]
    interval: 1h

topics:
  # Money matters
  - name: Business
    slug: business
    description: Markets, companies and the economy
    rules:
      keywords: [central bank, interest rates]  # the usual suspects
      categories: [business]

  - name: Sport
    slug: sport
    rules:
      categories: [sport]
"""


def write_config(path: Path, srv: FeedServer) -> None:
    world = srv.serve("/world.rss", rss(news_items(30, "https://world.example.com")))
    science = srv.serve(
        "/science.rss",
        rss(
            [
                Item(
                    title=f"Telescope spots a comet &amp; its tail ({i})",
                    link=f"https://science.example.org/comet-{i}",
                    guid=f"comet-{i}",
                    description="&lt;p&gt;Seen from &lt;b&gt;Chile&lt;/b&gt;&lt;/p&gt;",
                    categories=["Science", "Space"],
                )
                for i in range(8)
            ],
            title="Science Daily",
        ),
    )
    path.write_text(FEEDS_YAML.format(world=world, science=science))


@pytest.fixture
def agg(
    tmp_path: Path, feed_server: FeedServer, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Aggregator]:
    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", db_url)
    path = tmp_path / "feeds.yaml"
    write_config(path, feed_server)
    a = Aggregator.from_file(path)
    yield a
    a.close()


@pytest.fixture
def client(agg: Aggregator, admin_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(agg, poll=False), headers=admin_headers) as c:
        yield c


def wait_for(client: TestClient, path: str, done: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"{path} did not settle: {body}"
        time.sleep(0.05)


def feeds_by_url(client: TestClient) -> dict[str, dict[str, Any]]:
    r = client.get("/admin/feeds")
    assert r.status_code == 200
    return {f["url"]: f for f in r.json()["feeds"]}


def test_feed_health_add_update_remove(
    agg: Aggregator, client: TestClient, feed_server: FeedServer
) -> None:
    path = agg.config_path
    world, science = feed_server.url("/world.rss"), feed_server.url("/science.rss")
    feeds = feeds_by_url(client)
    assert list(feeds) == [world, science]
    assert feeds[science]["interval"] == 3600 and feeds[world]["interval"] == 1800
    assert feeds[world]["last_attempt"] is None and not feeds[world]["failing"]

    # Poll now: health follows.
    r = client.post(f"/admin/feeds/{feeds[world]['id']}/poll")
    assert r.status_code == 200
    assert r.json()["poll"]["status"] == "ok" and r.json()["poll"]["new"] == 30
    health = r.json()["feed"]
    assert health["last_success"] and health["last_status"] == "ok"
    assert health["entries"] == 30 and health["consecutive_errors"] == 0
    assert health["next_poll"] and health["items_per_day"] >= 0

    # Add a failing feed: it is polled at once and marked failing.
    broken = feed_server.serve("/broken.rss", b"", status=500)
    r = client.post("/admin/feeds", json={"url": broken, "tags": ["misc"], "interval": "45m"})
    assert r.status_code == 201, r.text
    assert r.json()["interval"] == 45 * 60 and r.json()["tags"] == ["misc"]
    broken_id = r.json()["id"]
    failing = wait_for(client, f"/admin/feeds/{broken_id}", lambda f: f["last_attempt"])
    assert failing["failing"] and failing["consecutive_errors"] == 1
    assert "500" in failing["last_error"]
    assert agg.config.feed(broken) is not None  # the running process follows at once
    assert client.post("/admin/feeds", json={"url": broken}).status_code == 409

    # Update: interval, tags, disable.
    r = client.patch(
        f"/admin/feeds/{broken_id}", json={"interval": "2h", "tags": [], "enabled": False}
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False and r.json()["polling"] is False
    assert r.json()["interval"] == 7200 and r.json()["tags"] == []
    text = path.read_text()
    assert f"  - url: {broken}\n    interval: 2h\n    enabled: false\n" in text
    assert not agg.polls_feed(broken)
    assert client.patch(f"/admin/feeds/{broken_id}", json={"enabled": True}).status_code == 200
    assert "enabled:" not in path.read_text()  # enabled is the default: the key goes
    assert agg.polls_feed(broken)

    # Refused edits: 422 with the validation lines, the file untouched.
    before = path.read_text()
    r = client.patch(f"/admin/feeds/{broken_id}", json={"interval": "soon"})
    assert r.status_code == 422
    assert r.json()["errors"] == [
        f"{path}:23:5: feeds[2].interval: invalid duration 'soon' (expected e.g. 90s, 30m, 2h, 1d)"
    ]
    r = client.post("/admin/feeds", json={"url": "ftp://x.example/feed"})
    assert r.status_code == 422 and "not an http(s) URL" in r.json()["errors"][0]
    assert client.post("/admin/feeds", json={"url": 7}).status_code == 422
    assert client.post("/admin/feeds", content=b"{not json").status_code == 400
    assert client.patch(f"/admin/feeds/{broken_id}", json={"colour": "red"}).status_code == 422
    assert client.get("/admin/feeds/999999").status_code == 404
    assert client.get("/admin/feeds/x").status_code == 404
    assert path.read_text() == before

    # Remove: gone from feeds.yaml and from the running config; stored items stay.
    r = client.delete(f"/admin/feeds/{feeds[world]['id']}")
    assert r.status_code == 200 and r.json() == {"removed": world}
    assert agg.config.feed(world) is None and world not in feeds_by_url(client)
    assert agg.repo.count_entries(world) == 30
    assert client.delete(f"/admin/feeds/{feeds[world]['id']}").status_code == 404

    # Comments and layout kept through it all.
    text = path.read_text()
    for comment in (
        "# Admin test feeds: every comment here",
        "database_url: sqlite:///store.db   # next to this file",
        "  # Science\n",
        "      keywords: [central bank, interest rates]  # the usual suspects\n",
        "  # Money matters\n",
    ):
        assert comment in text, comment
    assert text.index("# Science") < text.index(science) < text.index(broken)


def validate_lines(path: Path) -> list[str]:
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    r = subprocess.run(
        [str(SCRIPT), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 1, r.stdout
    return r.stderr.splitlines()[:-1]  # the last line counts them


def test_topics_preview_edit_and_retag(
    agg: Aggregator, client: TestClient, feed_server: FeedServer
) -> None:
    path = agg.config_path
    feeds = feeds_by_url(client)
    for f in feeds.values():
        assert client.post(f"/admin/feeds/{f['id']}/poll").json()["poll"]["status"] == "ok"
    topics = client.get("/admin/topics").json()["topics"]
    assert [t["slug"] for t in topics] == ["business", "sport"]
    assert topics[1] == {"name": "Sport", "slug": "sport", "description": "",
                         "rules": {"categories": ["sport"]}, "stories": 5}  # fmt: skip

    # Preview a new topic: which of the recent items it would match; nothing saved.
    before = path.read_text()
    tech = {"name": "Tech", "slug": "tech", "rules": {"categories": ["technology"]}}
    r = client.post("/admin/topics/preview", json={"topic": tech, "limit": 100})
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["checked"] == 38 and preview["matched"] == 5
    assert all("Chipmaker" in i["title"] and not i["tagged_now"] for i in preview["items"])
    assert all(i["reason"] for i in preview["items"])
    # Previewing a change to an existing topic shows what it would drop too.
    narrower = {"name": "Sport", "slug": "sport", "rules": {"keywords": ["striker"]},
                "description": ""}  # fmt: skip
    r = client.post("/admin/topics/preview", json={"topic": narrower, "limit": 10})
    assert r.json()["checked"] == 10
    space = {"name": "Space", "slug": "space", "rules": {"keywords": ["comet"]}}
    r = client.post("/admin/topics/preview", json={"topic": space, "limit": 8})
    assert r.json()["matched"] == 8  # the science items came last: the 8 most recent
    assert path.read_text() == before and agg.config.topic("tech") is None

    # A bad rule: 422 with exactly what `aggregator validate` prints for that file.
    bad = {"name": "Tech", "slug": "tech", "rules": {"regex": ["(unbalanced", "ok"]}}
    r = client.post("/admin/topics/preview", json={"topic": bad})
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert len(errors) == 1 and 'topics[2].rules.regex[0] (topic "Tech"): invalid' in errors[0]
    r = client.post("/admin/topics", json=bad)
    assert r.status_code == 422 and r.json()["errors"] == errors
    assert path.read_text() == before
    _, doc = feeds_file.load_doc(before)
    feeds_file.add_topic(doc, bad)
    yaml, _ = feeds_file.load_doc(before)
    path.write_text(feeds_file.dump_doc(yaml, doc))
    try:
        assert validate_lines(path) == errors
    finally:
        path.write_text(before)

    # Add it for real: saved, live, items re-tagged in the background.
    r = client.post("/admin/topics", json=tech)
    assert r.status_code == 201, r.text
    job = r.json()["retag"]
    assert job["state"] in ("running", "done") and job["topics"] == ["tech"]
    done = wait_for(client, f"/admin/jobs/{job['id']}", lambda j: j["state"] != "running")
    assert done["state"] == "done" and done["result"]["changed"] == 5
    assert client.get("/admin/topics/tech").json()["stories"] == 5
    assert agg.config.topic("tech") is not None
    assert client.get("/topics/tech.json").status_code == 200
    assert client.post("/admin/topics", json=tech).status_code == 409

    # Change its rules; then remove it: its tags go.
    r = client.patch("/admin/topics/tech", json={"rules": {"keywords": ["accelerator"]},
                                                 "description": "Chips"})  # fmt: skip
    assert r.status_code == 200 and r.json()["description"] == "Chips"
    wait_for(client, f"/admin/jobs/{r.json()['retag']['id']}", lambda j: j["state"] == "done")
    r = client.delete("/admin/topics/tech")
    assert r.status_code == 200
    wait_for(client, f"/admin/jobs/{r.json()['retag']['id']}", lambda j: j["state"] == "done")
    assert "tech" not in agg.repo.topic_counts()
    assert client.get("/admin/topics/tech").status_code == 404
    assert path.read_text() == before  # added and removed: the file is as it was

    # Retag everything: 202 at once, the job reports progress and the result.
    r = client.post("/admin/retag")
    assert r.status_code == 202
    done = wait_for(client, f"/admin/jobs/{r.json()['id']}", lambda j: j["state"] != "running")
    assert done["state"] == "done" and done["done"] == done["total"] == 38
    assert client.post("/admin/retag", json={"topics": ["nope"]}).status_code == 404
    assert client.get("/admin/jobs/424242").status_code == 404


# -- every admin route: refused without the token, working with it ------------------------


def admin_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path template) of every route under /admin, however it was registered."""

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, str]]:
        for r in routes:
            if isinstance(r, Mount):
                yield from walk(list(r.routes), prefix + r.path)
            elif isinstance(r, Route):
                path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", prefix + r.path)
                if path == "/admin" or path.startswith("/admin/"):
                    yield from ((m, path) for m in (r.methods or {"GET"}) - {"HEAD"})

    return set(walk(list(app.routes), ""))


def test_every_admin_route_needs_the_token_and_works_with_it(
    agg: Aggregator, client: TestClient, admin_token: str
) -> None:
    world = feeds_by_url(client)[agg.config.feeds[0].url]
    assert client.post(f"/admin/feeds/{world['id']}/poll").status_code == 200
    story = client.get("/admin/stories?since=3650d&limit=1").json()["stories"][0]
    entry = story["entries"][0]["entry"]
    job = client.post("/admin/retag").json()["id"]
    extra = agg.config.feeds[1].url.replace("science", "extra")
    topic = {"name": "Extra", "slug": "extra", "rules": {"keywords": ["comet"]}}
    # One request per route, in an order where each finds what it needs.
    examples: list[tuple[str, str, str, dict[str, Any], set[int]]] = [
        ("GET", "/admin", "/admin", {}, {200}),
        ("POST", "/admin", "/admin", {"data": {"do": "poll-feed", "id": world["id"]}}, {200}),
        ("GET", "/admin/config", "/admin/config", {}, {200}),
        ("GET", "/admin/stories", "/admin/stories?since=30d", {}, {200}),
        ("GET", "/admin/stories/x", f"/admin/stories/{story['story']}", {}, {200}),
        ("POST", "/admin/stories/x/split", f"/admin/stories/{story['story']}/split",
         {"json": {"entries": [entry]}}, {422}),  # its only entry: refused, but reached
        ("GET", "/admin/items/x/explain", f"/admin/items/{entry}/explain", {}, {200}),
        ("PUT", "/admin/items/x/tags/x", f"/admin/items/{entry}/tags/sport", {}, {200}),
        ("DELETE", "/admin/items/x/tags/x", f"/admin/items/{entry}/tags/sport", {}, {200}),
        ("DELETE", "/admin/items/x/corrections/x", f"/admin/items/{entry}/corrections/sport",
         {}, {200}),
        ("GET", "/admin/corrections", "/admin/corrections", {}, {200}),
        ("GET", "/admin/feeds", "/admin/feeds", {}, {200}),
        ("POST", "/admin/feeds", "/admin/feeds", {"json": {"url": extra}}, {201}),
        ("GET", "/admin/feeds/x", f"/admin/feeds/{world['id']}", {}, {200}),
        ("PATCH", "/admin/feeds/x", f"/admin/feeds/{world['id']}",
         {"json": {"interval": "1h"}}, {200}),
        ("POST", "/admin/feeds/x/poll", f"/admin/feeds/{world['id']}/poll", {}, {200}),
        ("DELETE", "/admin/feeds/x", f"/admin/feeds/{world['id']}", {}, {200}),
        ("GET", "/admin/topics", "/admin/topics", {}, {200}),
        ("POST", "/admin/topics/preview", "/admin/topics/preview",
         {"json": {"topic": topic}}, {200}),
        ("POST", "/admin/topics", "/admin/topics", {"json": topic}, {201}),
        ("GET", "/admin/topics/x", "/admin/topics/extra", {}, {200}),
        ("PATCH", "/admin/topics/x", "/admin/topics/extra", {"json": {"description": "d"}},
         {200}),
        ("DELETE", "/admin/topics/x", "/admin/topics/extra", {}, {200}),
        ("GET", "/admin/jobs/x", f"/admin/jobs/{job}", {}, {200}),
        ("POST", "/admin/retag", "/admin/retag", {}, {202, 409}),
    ]  # fmt: skip
    app = client.app
    # Every probe from one address: more wrong tokens than the login throttle lets through.
    app.state.login_failures.throttle.limit = 10_000  # type: ignore[attr-defined]
    routes = {(m, re.sub(r"\{[^}]+\}", "x", p)) for m, p in admin_routes(app)}
    covered = {(m, p) for m, p, _, _, _ in examples}
    assert routes - covered == set(), "a new /admin route: add an example request here"
    assert covered - routes == set()
    # Not entered: the guard answers before the app, whose lifespan runs in ``client``.
    anonymous = TestClient(app)
    for method, _, url, kw, expected in examples:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}):
            r = anonymous.request(method, url, headers=headers, **kw)
            assert r.status_code == 401, (method, url, headers)
        r = client.request(method, url, **kw)
        assert r.status_code in expected, (method, url, r.status_code, r.text)


def test_every_admin_route_is_described_in_openapi(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    described = {
        (m.upper(), p)
        for p, item in doc["paths"].items()
        if p == "/admin" or p.startswith("/admin/")
        for m in item
    }
    assert admin_routes(client.app) == described


# -- property test: generated requests from /openapi.json never get a 500 ------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_SHALLOW = (
    _SCALARS
    | st.lists(_SCALARS, max_size=3)
    | st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3)
)
JSON_VALUES = (
    _SHALLOW
    | st.lists(_SHALLOW, max_size=3)
    | st.dictionaries(st.text(max_size=8), _SHALLOW, max_size=3)
)
# Strings worth trying besides random text: durations, URLs, regexes, slugs.
INTERESTING = st.sampled_from(
    ["30m", "0s", "soon", "http://127.0.0.1:9/feed", "ftp://x", "(", "[a-", "business", "", "1d"]
)


def from_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A Hypothesis strategy for the JSON Schema subset our OpenAPI document uses.

    (hypothesis-jsonschema does this in general, but does not run on current Hypothesis.)
    """
    if "$ref" in schema:
        if depth > 4:
            return st.just({"keywords": ["deep"]})
        name = schema["$ref"].rsplit("/", 1)[1]
        return from_schema(components["schemas"][name], components, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, components, depth + 1) for s in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], components, depth + 1)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, components, depth) for k in kind])
    if kind == "string":
        return st.text(max_size=30) | INTERESTING
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "number":
        return st.floats(-1, 1, exclude_min=True, exclude_max=True) | st.integers(-5, 5)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, depth + 1), max_size=3)
    if kind == "object" and "properties" in schema:
        props = {k: from_schema(v, components, depth + 1) for k, v in schema["properties"].items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    return JSON_VALUES


def test_generated_admin_requests_never_get_a_500(agg: Aggregator, client: TestClient) -> None:
    for f in feeds_by_url(client).values():
        client.post(f"/admin/feeds/{f['id']}/poll")
    doc = client.get("/openapi.json").json()
    components = doc["components"]
    ops = [
        (path, method, op)
        for path, item in doc["paths"].items()
        if path == "/admin" or path.startswith("/admin/")
        for method, op in item.items()
    ]
    assert len(ops) >= 19
    ids = [str(f["id"]) for f in feeds_by_url(client).values()]
    names = st.sampled_from([*ids, "business", "sport", "1", "0"]) | st.text(max_size=12)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )
    @given(data=st.data())
    def check(path: str, method: str, op: dict[str, Any], data: st.DataObject) -> None:
        url = path
        query = {}
        for p in op.get("parameters", []):
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(data.draw(names), safe=""))
            elif p["in"] == "query" and data.draw(st.booleans()):
                value = data.draw(from_schema(p["schema"], components))
                query[p["name"]] = str(value)
        kw: dict[str, Any] = {"params": query}
        body = op.get("requestBody")
        if body is not None:
            content = body["content"]
            if "application/json" in content:
                schema = content["application/json"]["schema"]
                kw["json"] = data.draw(from_schema(schema, components) | JSON_VALUES)
            else:
                form = content["application/x-www-form-urlencoded"]["schema"]
                kw["data"] = data.draw(from_schema(form, components))
        r = client.request(method.upper(), url, **kw)
        assert r.status_code < 500, (method, url, kw, r.status_code, r.text)

    for path, method, op in ops:
        check(path, method, op)


def test_admin_page_forms_without_a_browser(agg: Aggregator, client: TestClient) -> None:
    path = agg.config_path
    before = path.read_text()
    page = client.get("/admin")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text and 'id="config-error"' not in page.text
    # A topic loaded into the editor and saved unchanged leaves feeds.yaml as it was.
    page = client.get("/admin?topic=business")
    text = html.unescape(re.search(r'name="topic" rows="12">(.*?)</textarea>', page.text, re.S)[1])
    assert "slug: business" in text and "central bank" in text
    r = client.post("/admin", data={"do": "save-topic", "topic": text}, follow_redirects=False)
    assert r.status_code == 303 and "Saved+topic+business" in r.headers["location"]
    assert path.read_text() == before
    # Refusals show the errors and keep the input.
    r = client.post("/admin", data={"do": "preview-topic", "topic": "name: [unclosed"})
    assert r.status_code == 422 and "not valid YAML" in r.text and "[unclosed" in r.text
    bad_rule = "name: X\nslug: x\nrules:\n  regex: ['(']\n"
    r = client.post("/admin", data={"do": "save-topic", "topic": bad_rule})
    assert r.status_code == 422 and "invalid regular expression" in html.unescape(r.text)
    r = client.post("/admin", data={"do": "remove-feed", "id": "424242"})
    assert r.status_code == 404
    assert client.post("/admin", data={"do": "explode"}).status_code == 422
    assert path.read_text() == before
    # The last refused hand edit of feeds.yaml is on the page.
    agg.last_config_error = ["feeds.yaml:3:5: feeds[0].interval: invalid duration 'soon'"]
    page = client.get("/admin")
    assert 'id="config-error"' in page.text and "invalid duration &#x27;soon&#x27;" in page.text


def test_feeds_show_the_next_interval_and_why(
    agg: Aggregator, client: TestClient, feed_server: FeedServer
) -> None:
    world = feed_server.url("/world.rss")
    slow = feed_server.serve(
        "/slow.rss", rss(news_items(3)).replace(b"<language>", b"<ttl>240</ttl><language>")
    )
    broken = feed_server.serve("/down.rss", b"", status=503)
    for url in (slow, broken):
        r = client.post("/admin/feeds", json={"url": url, "interval": "1h"})
        assert r.status_code == 201, r.text
        wait_for(client, f"/admin/feeds/{r.json()['id']}", lambda f: f["last_attempt"])
    feeds = feeds_by_url(client)
    assert feeds[world]["next_interval"] == 1800  # not polled: as configured
    assert feeds[world]["next_interval_reason"] == "configured"
    assert feeds[slow]["next_interval"] == 4 * 3600
    assert feeds[slow]["next_interval_reason"] == "feed hint (ttl)"
    assert feeds[broken]["next_interval"] == 2 * 3600
    assert feeds[broken]["next_interval_reason"] == "backoff (1 error)"
    page = client.get("/admin").text
    row = re.search(rf'<tr[^>]*data-url="{re.escape(slow)}".*?</tr>', page, re.S)
    assert row and "1h" in row[0] and "next: 4h (feed hint (ttl))" in row[0]
    row = re.search(rf'<tr[^>]*data-url="{re.escape(broken)}".*?</tr>', page, re.S)
    assert row and "next: 2h (backoff (1 error))" in row[0]
    # The add form suggests the file's own default interval.
    assert re.search(r'name="interval" size="6"\s+placeholder="30m"', page)
    settings = agg.config.settings.model_copy(update={"default_interval": timedelta(minutes=20)})
    agg.config = agg.config.model_copy(update={"settings": settings})
    assert 'placeholder="20m"' in client.get("/admin").text
