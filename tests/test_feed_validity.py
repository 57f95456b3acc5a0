"""Every published format parses back and agrees: JSON Feed 1.1 against its JSON Schema,
RSS and Atom through feedparser without errors; ids, dates, self, hub and paging links."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import feedparser
import httpx
import jsonschema
import pytest
from conftest import FeedServer
from live import live_server
from test_pipeline import make_agg, poll_all

from aggregator.feeds import MAX_MAX_AGE
from aggregator.service import Aggregator

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "schemas" / "jsonfeed-1.1.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# Topic, place, all stories, filtered, paged, empty: what downstream sites subscribe to.
VIEWS = [
    "/topics/world",
    "/topics/technology",
    "/places/co",
    "/stories",
    "/stories{fmt}?lang=en&since=2000-01-01",
    "/stories{fmt}?limit=7",
    "/topics/world{fmt}?q=zzzznothingmatches",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Aggregator, str]]:
    """Real feeds polled into a SQLite store (the format checks do not depend on the engine)."""
    tmp = tmp_path_factory.mktemp("validity")
    srv = FeedServer()
    srv.thread.start()
    feeds = [
        {"url": srv.serve_file("/colombia.rss", "colombia_usa.rss")},
        {"url": srv.serve_file("/bbc.rss", "bbc_world.rss"), "tags": ["world"]},
        {
            "url": srv.serve_file(
                "/verge.atom", "verge_tech.atom", content_type="application/atom+xml"
            ),
            "tags": ["technology"],
        },
        {"url": srv.serve_file("/npr.json", "npr_news.json", content_type="application/feed+json")},
        {"url": srv.serve_file("/guardian.rss", "guardian_politics.rss")},
    ]
    agg = make_agg(tmp, f"sqlite:///{tmp / 'store.db'}", feeds)
    poll_all(agg)
    try:
        with live_server(agg) as base:
            yield agg, base
    finally:
        agg.close()
        srv.httpd.shutdown()
        srv.httpd.server_close()


def _url(base: str, view: str, fmt: str) -> str:
    return base + (view.format(fmt=f".{fmt}") if "{fmt}" in view else f"{view}.{fmt}")


def _walk(url: str) -> list[dict[str, Any]]:
    """Every page of a JSON feed, following next_url, each checked against the schema."""
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        r = httpx.get(next_url)
        assert r.status_code == 200, (next_url, r.text)
        assert r.headers["content-type"] == "application/feed+json; charset=utf-8"
        doc = r.json()
        errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{next_url}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5]
        )
        assert doc["feed_url"] == next_url
        pages.append(doc)
        next_url = doc.get("next_url")
        assert len(pages) < 50
    return pages


@pytest.mark.parametrize("view", VIEWS)
def test_every_format_is_valid_and_they_agree(served: tuple[Aggregator, str], view: str) -> None:
    _, base = served
    hub = f"{base}/websub/hub"
    json_pages = _walk(_url(base, view, "json"))
    items = [i for p in json_pages for i in p["items"]]
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("urn:aggregator:story:") for i in ids)
    for p in json_pages:
        assert p["hubs"] == [{"type": "WebSub", "url": hub}]
    if "nothingmatches" in view:
        assert items == []
    else:
        assert items, view
    for fmt in ("atom", "rss"):
        url: str | None = _url(base, view, fmt)
        xml_ids: list[str] = []
        pages = 0
        while url:
            r = httpx.get(url)
            assert r.status_code == 200
            doc = feedparser.parse(r.content)
            assert not doc.bozo, (url, doc.get("bozo_exception"))
            assert doc.version == ("atom10" if fmt == "atom" else "rss20")
            links = {link.rel: link.href for link in doc.feed.get("links", [])}
            assert links["self"] == url and links["hub"] == hub
            assert links.get("first") == _url(base, view, fmt)
            if pages:
                assert "previous" in links
            # The JSON page at the same position has the same items, in the same order, with
            # the same dates (whole seconds, UTC), and a next page exactly when this one does.
            jp = json_pages[pages]
            assert ("next" in links) == ("next_url" in jp)
            assert [e.id for e in doc.entries] == [i["id"] for i in jp["items"]]
            for e, i in zip(doc.entries, jp["items"], strict=True):
                assert e.published_parsed is not None and e.title
                published = parsedate_to_datetime(e.published) if fmt == "rss" else None
                if published is not None:
                    assert published.isoformat() == i["date_published"]
                if fmt == "atom":
                    assert e.updated == i["date_modified"]
                    assert e.published == i["date_published"]
            xml_ids.extend(e.id for e in doc.entries)
            url = links.get("next")
            pages += 1
        assert xml_ids == ids
        assert pages == len(json_pages)


def test_quiet_topics_may_be_cached_longer(served: tuple[Aggregator, str]) -> None:
    """max-age follows how often a topic gains stories: a quiet one is cached longest."""
    _, base = served
    ages = {}
    for view in ("/topics/world.atom", "/topics/world.atom?q=zzzznothingmatches"):
        cc = httpx.get(base + view).headers["cache-control"]
        assert cc.startswith("public, max-age=")
        ages[view] = int(cc.rsplit("=", 1)[1])
    assert 60 <= ages["/topics/world.atom"] <= MAX_MAX_AGE
    assert ages["/topics/world.atom?q=zzzznothingmatches"] == MAX_MAX_AGE


def test_the_schema_rejects_what_json_feed_forbids() -> None:
    """The schema is strict enough to fail: a test of the test."""
    good = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "t",
        "items": [
            {"id": "1", "content_html": "<p>x</p>", "date_published": "2026-11-25T10:00:00+00:00"}
        ],
    }
    assert VALIDATOR.is_valid(good)
    bad_items: list[dict[str, Any]] = [
        {"id": "1"},  # no content
        {"id": "1", "content_text": "x", "date_published": "Tue, 25 Nov 2026 10:00:00 GMT"},
        {"id": "1", "content_text": "x", "attachments": [{"url": "http://x/a.mp3"}]},
        {"id": "1", "content_text": "x", "author": {"name": "old 1.0 key"}},
        {"id": 1, "content_text": "x"},
    ]
    for item in bad_items:
        assert not VALIDATOR.is_valid({**good, "items": [item]}), item
    assert not VALIDATOR.is_valid({**good, "version": "https://jsonfeed.org/version/1"})
    assert not VALIDATOR.is_valid({**good, "hubs": [{"url": "http://h/"}]})
    assert VALIDATOR.is_valid({**good, "_aggregator": {"anything": 1}})
