"""Topic feeds served over HTTP: formats round-trip, tags route items, 304s work."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest
import uvicorn
from conftest import FeedServer
from test_cli import free_port
from test_pipeline import make_agg, poll_all

from aggregator.service import Aggregator
from aggregator.web import create_app

COLOMBIA_TITLE_WORDS = ("Colombia", "intelligence")


@pytest.fixture
def agg(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Iterator[Aggregator]:
    feeds = [
        {"url": feed_server.serve_file("/colombia.rss", "colombia_usa.rss")},
        {"url": feed_server.serve_file("/bbc.rss", "bbc_world.rss"), "tags": ["world"]},
        {
            "url": feed_server.serve_file(
                "/verge.atom", "verge_tech.atom", content_type="application/atom+xml"
            ),
            "tags": ["technology"],
        },
        {
            "url": feed_server.serve_file(
                "/npr.json", "npr_news.json", content_type="application/feed+json"
            )
        },
    ]
    a = make_agg(tmp_path, db_url, feeds)
    poll_all(a)
    yield a
    a.close()


def get(agg: Aggregator, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(agg, poll=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
            return await c.get(path, headers=headers)

    return asyncio.run(run())


def _is_colombia_item(title: str) -> bool:
    return all(w.lower() in title.lower() for w in COLOMBIA_TITLE_WORDS)


def test_colombia_item_routed_by_its_categories(agg: Aggregator) -> None:
    atom = feedparser.parse(get(agg, "/topics/foreign-relations.atom").content)
    assert atom.version == "atom10" and not atom.bozo
    assert any(_is_colombia_item(e.title) for e in atom.entries)

    rss = feedparser.parse(get(agg, "/topics/politics.rss").content)
    assert rss.version == "rss20" and not rss.bozo
    assert any(_is_colombia_item(e.title) for e in rss.entries)

    sport = json.loads(get(agg, "/topics/sport.json").content)
    assert sport["items"], "the sport topic should have items of its own"
    assert not any(_is_colombia_item(i["title"]) for i in sport["items"])


@pytest.mark.parametrize("fmt", ["rss", "atom", "json"])
def test_every_format_round_trips_the_same_items(agg: Aggregator, fmt: str) -> None:
    expected = agg.repo.topic_items("world", agg.config.settings.items_per_feed)
    assert len(expected) >= 20
    r = get(agg, f"/topics/world.{fmt}")
    assert r.status_code == 200
    if fmt == "json":
        doc = json.loads(r.content)
        got = [(i["title"], i.get("url"), i["date_published"]) for i in doc["items"]]
        want = [
            (s.title, s.link, s.published.strftime("%Y-%m-%dT%H:%M:%S+00:00")) for s in expected
        ]
        assert [g[:2] for g in got] == [w[:2] for w in want]
        assert [g[2][:19] for g in got] == [w[2][:19] for w in want]
        ids = [i["id"] for i in doc["items"]]
    else:
        parsed = feedparser.parse(r.content)
        assert not parsed.bozo, parsed.bozo_exception
        assert [e.title for e in parsed.entries] == [s.title for s in expected]
        assert [e.get("link") for e in parsed.entries] == [s.link for s in expected]
        assert [e.published_parsed[:6] for e in parsed.entries] == [
            s.published.utctimetuple()[:6] for s in expected
        ]
        ids = [e.id for e in parsed.entries]
    assert len(set(ids)) == len(ids)
    # Stable: a second render (and a re-render after a cache drop) gives the same ids.
    assert get(agg, f"/topics/world.{fmt}").content == r.content


def test_conditional_get_answers_304(agg: Aggregator) -> None:
    r = get(agg, "/topics/world.atom")
    etag, lm = r.headers["etag"], r.headers["last-modified"]
    assert get(agg, "/topics/world.atom", {"If-None-Match": etag}).status_code == 304
    assert get(agg, "/topics/world.atom", {"If-Modified-Since": lm}).status_code == 304
    assert get(agg, "/topics/world.atom", {"If-None-Match": '"other"'}).status_code == 200


def test_topics_list_and_errors(agg: Aggregator) -> None:
    doc = get(agg, "/topics").json()
    slugs = {t["slug"]: t for t in doc["topics"]}
    assert {"foreign-relations", "politics", "world", "business", "technology", "sport"} <= set(
        slugs
    )
    assert slugs["world"]["feeds"]["atom"] == "http://agg.test/topics/world.atom"
    assert slugs["world"]["stories"] >= 20
    assert get(agg, "/topics/nope.rss").status_code == 404
    assert get(agg, "/topics/world.xml").status_code == 404
    assert get(agg, "/healthz").json()["status"] == "ok"
    home = get(agg, "/")
    assert "text/html" in home.headers["content-type"]
    assert 'rel="alternate"' in home.text and "/topics/politics.rss" in home.text


def test_served_over_a_real_socket(agg: Aggregator) -> None:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(agg, poll=False), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        r = httpx.get(f"http://127.0.0.1:{port}/topics/foreign-relations.rss")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/rss+xml")
        parsed = feedparser.parse(r.content)
        assert any(_is_colombia_item(e.title) for e in parsed.entries)
        again = httpx.get(r.url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    finally:
        server.should_exit = True
        thread.join(10)


def test_repeat_requests_are_answered_before_routing_with_the_same_bytes(
    agg: Aggregator,
) -> None:
    """A URL's second GET is answered from the hot table; it must match the routed answer."""
    variants: list[dict[str, str]] = [{"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip"}]
    first = get(agg, "/topics/world.atom", variants[0])
    gz = get(agg, "/topics/world.atom", variants[1])
    etag, gz_etag, lm = first.headers["etag"], gz.headers["etag"], first.headers["last-modified"]
    assert etag != gz_etag
    variants += [
        {"If-None-Match": etag, "Accept-Encoding": "identity"},
        {"If-None-Match": gz_etag, "Accept-Encoding": "gzip"},
        {"If-None-Match": etag, "Accept-Encoding": "gzip"},  # the same content, other coding
        {"If-None-Match": f'"other", W/{etag}', "Accept-Encoding": "identity"},
        {"If-Modified-Since": lm, "Accept-Encoding": "identity"},
        {"If-None-Match": "*"},
    ]

    def comparable(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [(k, v) for k, v in r.headers.multi_items() if k not in ("date", "server")]
        return r.status_code, headers, r.content

    async def warm_answers() -> list[httpx.Response]:
        app = create_app(agg, poll=False)
        now = time.time()
        app.hot.clock = lambda: now  # a minute boundary here would make the warm answer stale
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
            (await c.get("/topics/world.atom")).raise_for_status()
            # With no routes left, only the hot path can answer.
            app.router.routes.clear()
            assert (await c.get("/topics/politics.atom")).status_code == 404
            return [await c.get("/topics/world.atom", headers=h) for h in variants]

    routed = [get(agg, "/topics/world.atom", h) for h in variants]
    hot = asyncio.run(warm_answers())
    assert [r.status_code for r in routed] == [200, 200, 304, 304, 304, 304, 304, 304]
    assert [comparable(r) for r in hot] == [comparable(r) for r in routed]
    # A 304 repeats the validators and caching headers, not the representation's metadata.
    not_modified = routed[2].headers
    assert not_modified["etag"] == etag and "cache-control" in not_modified
    assert "last-modified" not in not_modified and "link" not in not_modified
    assert "link" in first.headers


def test_feeds_and_opml_are_never_sniffed(agg: Aggregator) -> None:
    """Issue 22.12: feed and OPML responses lacked X-Content-Type-Options: nosniff."""
    from live import live_server

    with live_server(agg) as base:
        paths = [
            "/topics/foreign-relations.rss",
            "/topics/foreign-relations.atom",
            "/topics/foreign-relations.json",
            "/stories.json?q=police&limit=7",
            "/places/co.atom",
            "/topics.opml",
            "/",
        ]
        for path in paths:
            for _ in range(2):  # the first through the app, the repeat from the hot table
                r = httpx.get(base + path, timeout=5)
                assert r.status_code == 200, path
                assert r.headers.get_list("x-content-type-options") == ["nosniff"], path
            again = httpx.get(base + path, headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304
            assert again.headers["x-content-type-options"] == "nosniff", path


def test_self_links_echo_the_url_asked_and_ids_are_encoded_once(agg: Aggregator) -> None:
    """Issue 22.11: /places/fr.rss got the self link of ?limit=50 fetched first; filters
    were re-written in self links; a filtered view's Atom id was percent-encoded twice."""
    from live import live_server

    def self_link(r: httpx.Response, fmt: str) -> str:
        if fmt == "json":
            return str(r.json()["feed_url"])
        return next(
            link.href for link in feedparser.parse(r.content).feed.links if link.rel == "self"
        )

    with live_server(agg) as base:
        for fmt in ("rss", "atom", "json"):
            for path in (
                f"/places/fr.{fmt}?limit=50",
                f"/places/fr.{fmt}",
                f"/stories.{fmt}?any=sport,business&not=politics",
                f"/stories.{fmt}?any=business+sport&not=politics",
                f"/stories.{fmt}?limit=7&q=police",
            ):
                for _ in range(2):  # the app, then the hot table
                    r = httpx.get(base + path, timeout=5)
                    assert r.status_code == 200, path
                    assert self_link(r, fmt) == base + path, (path, self_link(r, fmt))
                    assert f'<{base + path}>; rel="self"' in r.headers["link"]
        atom = feedparser.parse(httpx.get(base + '/stories.atom?q="prime+minister"').content)
        assert atom.feed.id == "urn:aggregator:stories:q=%22prime+minister%22", atom.feed.id
