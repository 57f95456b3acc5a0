"""Pages for people: topic list, topic pages, OPML; escaped, script-free, autodiscoverable."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import feedparser
import pytest
from builders import Item, rss
from conftest import FeedServer
from test_pipeline import make_agg, poll_all
from test_web import agg, get  # noqa: F401 - the fixture is used by name

from aggregator.service import Aggregator


class Page(HTMLParser):
    """Collects the tags a test looks at; fails on unbalanced elements."""

    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []
        self.anchors: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.stack: list[str] = []
        self.feed(text)
        assert self.stack == [], f"unclosed elements: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "link":
            self.links.append(a)
        if tag == "a":
            self.anchors.append(a)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def test_home_lists_topics_with_counts_and_subscribe_links(agg: Aggregator) -> None:  # noqa: F811
    r = get(agg, "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    page = Page(r.text)
    assert "script" not in page.tags
    counts = agg.repo.topic_counts()
    for t in agg.config.topics:
        for fmt, mime in (
            ("rss", "application/rss+xml"),
            ("atom", "application/atom+xml"),
            ("json", "application/feed+json"),
        ):
            url = f"http://agg.test/topics/{t.slug}.{fmt}"
            assert {"rel": "alternate", "type": mime}.items() <= next(
                link for link in page.links if link.get("href") == url
            ).items()
            assert any(a["href"] == url for a in page.anchors)
        assert any(a["href"] == f"http://agg.test/topics/{t.slug}" for a in page.anchors)
        n = counts.get(t.slug, 0)
        assert f"{n} {'story' if n == 1 else 'stories'}" in r.text
    assert any(a["href"] == "http://agg.test/topics.opml" for a in page.anchors)
    # Cached and conditional like the feeds.
    again = get(agg, "/", {"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_topic_page_shows_latest_stories_with_sources_and_tags(agg: Aggregator) -> None:  # noqa: F811
    r = get(agg, "/topics/world")
    assert r.status_code == 200 and "content-security-policy" in r.headers
    page = Page(r.text)
    items = agg.repo.topic_items("world", agg.config.settings.items_per_feed)
    assert items
    for item in items[:5]:
        if item.link:
            assert any(a["href"] == item.link for a in page.anchors)
        assert item.sources[0].feed_title in r.text.replace("&amp;", "&")
    assert r.text.count("<article>") == len(items)
    assert any(a["href"] == "http://agg.test/topics/world" for a in page.anchors)  # a tag link
    alternates = [link["href"] for link in page.links if link.get("rel") == "alternate"]
    assert "http://agg.test/topics/world.atom" in alternates
    # The feeds point people at this page.
    feed = feedparser.parse(get(agg, "/topics/world.atom").content)
    assert any(
        link.rel == "alternate" and link.href == "http://agg.test/topics/world"
        for link in feed.feed.links
    )
    assert get(agg, "/topics/nope").status_code == 404


def test_opml_lists_every_topic_feed(agg: Aggregator) -> None:  # noqa: F811
    r = get(agg, "/topics.opml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/x-opml")
    root = ET.fromstring(r.content)
    assert root.tag == "opml" and root.get("version") == "2.0"
    outlines = root.findall("./body/outline")
    assert [o.get("xmlUrl") for o in outlines] == [
        f"http://agg.test/topics/{t.slug}.atom" for t in agg.config.topics
    ]
    assert all(o.get("type") == "rss" and o.get("text") for o in outlines)


@pytest.fixture
def hostile(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Iterator[Aggregator]:
    items = [
        Item(
            title="&lt;script&gt;alert('title')&lt;/script&gt; Markets &amp; \"quotes\"",
            link="javascript:alert(1)",
            guid="evil-1",
            description="&lt;img src=x onerror=alert(2)&gt; Markets story",
            categories=["Business"],
        ),
    ]
    url = feed_server.serve("/evil.rss", rss(items, title="<Evil> & Co"))
    a = make_agg(tmp_path, db_url, [{"url": url, "tags": ["business"]}])
    poll_all(a)
    yield a
    a.close()


def test_everything_from_feeds_is_escaped(hostile: Aggregator) -> None:
    r = get(hostile, "/topics/business")
    assert r.status_code == 200
    Page(r.text)
    assert "<script" not in r.text and "<img" not in r.text and "onerror=alert" not in r.text
    assert "javascript:" not in r.text
    # Markup in a title is dropped, not shown (sanitize.py); the rest is escaped.
    assert "alert(&#x27;title&#x27;)" not in r.text
    assert "Markets &amp; &quot;quotes&quot;" in r.text
