"""Pages for people: topic list, topic pages, OPML; escaped, script-free, autodiscoverable."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
    # A plain-text title that reads like markup is shown as those words, escaped (issue 22.7).
    assert (
        "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt; Markets &amp; &quot;quotes&quot;"
        in r.text
    )


@pytest.fixture
def recent(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Iterator[Aggregator]:
    """A world feed with a dozen stories over the last eleven days."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    items = [
        Item(
            title=f"{'Ceasefire talks resume in Geneva' if i % 2 else 'Aid convoy reaches Nairobi'}"
            f" as envoys meet, day {i}",
            link=f"https://world.example.org/2026/envoys-{i}",
            guid=f"envoys-{i}",
            description="Diplomats from both sides met for a second round of talks.",
            categories=["World"],
            published=now - timedelta(days=max(i - 1, 0), hours=1),
        )
        for i in range(12)
    ]
    url = feed_server.serve("/world.rss", rss(items, title="World Desk"))
    a = make_agg(tmp_path, db_url, [{"url": url, "tags": ["world"]}])
    poll_all(a)
    yield a
    a.close()


def test_topic_page_pages_with_rel_next_and_shows_topic_names(recent: Aggregator) -> None:
    seen: list[str] = []
    path = "/topics/world?limit=5"
    for expected in (5, 5, 2):
        r = get(recent, path)
        assert r.status_code == 200, r.text
        page = Page(r.text)
        titles = re.findall(r'<h3><a href="[^"]+">([^<]+)</a></h3>', r.text)
        assert len(titles) == expected and not set(titles) & set(seen)
        seen += titles
        nexts = [a["href"] for a in page.anchors if a.get("rel") == "next"]
        heads = [link["href"] for link in page.links if link.get("rel") == "next"]
        assert nexts == heads
        if expected == 2:
            assert nexts == []
            break
        assert nexts and "limit=5" in nexts[0] and "after=" in nexts[0]
        path = nexts[0].replace("http://agg.test", "")
    assert any(a.get("rel") == "prev" for a in page.anchors)
    assert len(seen) == 12
    # Tags show topic names ("World"), linking to their slugs.
    assert re.search(r'<a href="http://agg.test/topics/world">World</a>', r.text)
    assert ">world</a>" not in r.text


def test_topic_page_filters_like_the_feeds(recent: Aggregator) -> None:
    r = get(recent, "/topics/world?q=Nairobi&source=&lang=&since=30d&topics=")
    assert r.status_code == 200, r.text
    titles = re.findall(r'<h3><a href="[^"]+">([^<]+)</a></h3>', r.text)
    assert len(titles) == 6 and all("Nairobi" in t for t in titles)
    assert 'name="q" size="20" value="Nairobi"' in r.text
    assert '<option value="30d" selected>' in r.text
    assert "Stories (filtered)" in r.text
    none = get(recent, "/topics/world?source=elsewhere.example")
    assert "No stories match these filters." in none.text
    assert get(recent, "/topics/world?since=tomorrowish").status_code == 400


def test_topic_page_charts_30_days_with_a_text_alternative(recent: Aggregator) -> None:
    r = get(recent, "/topics/world")
    chart = re.search(r'<svg class="chart".*?</svg>', r.text, re.S)
    assert chart and 'role="img"' in chart[0] and chart[0].count("<rect") == 30
    desc = re.search(r'<desc id="volume-d">([^<]+)</desc>', chart[0])
    assert desc and desc[1].startswith("12 stories in the last 30 days, 0.4 a day on average")
    assert "(2 stories)" in desc[1]  # the two stories of the newest day
    assert f"<figcaption>{desc[1]}</figcaption>" in r.text
    assert "updated <time" in r.text


def test_home_shows_last_update_and_a_sparkline(recent: Aggregator) -> None:
    r = get(recent, "/")
    world = re.search(r'<li id="world">.*?</li>', r.text, re.S)
    assert world and "12 stories · updated <time" in world[0]
    newest = recent.repo.topic_activity(datetime.now(UTC) - timedelta(days=1)).last_update["world"]
    assert f'<time datetime="{newest.isoformat()}">{newest:%d %b %Y, %H:%M} UTC</time>' in world[0]
    spark = re.search(r'<svg class="spark"[^>]*aria-label="([^"]+)"', world[0])
    assert spark and spark[1].startswith("World: 12 stories in the last 30 days")
    sport = re.search(r'<li id="sport">.*?</li>', r.text, re.S)
    assert sport and "never updated" in sport[0]
    assert 'aria-label="Sport: No stories in the last 30 days."' in sport[0]


def test_place_codes_in_either_case(agg: Aggregator) -> None:  # noqa: F811
    lower, upper = get(agg, "/places/co.json"), get(agg, "/places/CO.json")
    assert upper.status_code == 200 and upper.content == lower.content
    assert get(agg, "/places/Co.atom").status_code == 200
    assert get(agg, "/places/zz.json").status_code == 404
