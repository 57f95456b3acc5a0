"""Feed discovery from a site's page, against real local servers, and `feeds add` using it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from test_cli import run

from aggregator.config import load_config
from aggregator.discover import FoundFeed, choose, discover, page_links
from aggregator.exceptions import FetchError
from aggregator.fetch import FetchLimits

LIMITS = FetchLimits(allow_private=True, timeout=5)
HTML = "text/html; charset=utf-8"
JSON_FEED = (
    b'{"version": "https://jsonfeed.org/version/1.1", "title": "Example JSON",'
    b' "items": [{"id": "1", "url": "https://news.example.com/1", "content_text": "Hi"}]}'
)


def page(*links: str, base: str = "") -> str:
    head = "".join(links)
    if base:
        head = f'<base href="{base}">' + head
    return (
        f"<!doctype html><html><head><title>Example</title>{head}"
        '<link rel="stylesheet" href="/s.css"></head><body><p>Hello</p></body></html>'
    )


def found(url: str, limits: FetchLimits = LIMITS) -> list[FoundFeed]:
    return asyncio.run(discover(url, limits))


def test_page_links_in_order_with_titles(feed_server: FeedServer) -> None:
    url = feed_server.serve(
        "/blog/",
        page(
            '<link rel="alternate" type="application/rss+xml" title="All  posts" href="all.rss">',
            '<link rel="Alternate" type="application/atom+xml" href="/atom.xml">',
            '<link rel="alternate" type="application/feed+json" href="/feed.json">',
            '<link rel="alternate" type="text/html" hreflang="fr" href="/fr/">',
            '<link rel="alternate" type="application/rss+xml" href="all.rss">',  # repeated
        ),
        content_type=HTML,
    )
    assert found(url) == [
        FoundFeed(feed_server.url("/blog/all.rss"), "All posts", "rss", "link"),
        FoundFeed(feed_server.url("/atom.xml"), "", "atom", "link"),
        FoundFeed(feed_server.url("/feed.json"), "", "json", "link"),
    ]
    # Only the page was fetched: the site's own links are taken as listed.
    assert [p for p, _ in feed_server.requests] == ["/blog/"]


def test_base_href_and_odd_markup() -> None:
    markup = page(
        "<LINK REL='alternate feed' TYPE='application/rss+xml; charset=utf-8' HREF='f.xml'>",
        '<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">',
        base="https://cdn.example/news/",
    ).encode()
    assert page_links(markup, "https://www.example/") == [
        FoundFeed("https://cdn.example/news/f.xml", "", "rss", "link")
    ]
    assert page_links(b"<html><head><link rel=", "https://www.example/") == []


def test_a_feed_url_is_found_as_itself(feed_server: FeedServer) -> None:
    url = feed_server.serve("/news.rss", rss(news_items(3)))
    assert found(url) == [FoundFeed(url, "Example News", "rss", "given")]


def test_common_paths_when_the_page_links_none(feed_server: FeedServer) -> None:
    url = feed_server.serve("/about", page(), content_type=HTML)
    feed_server.serve("/feed", rss(news_items(3)))
    feed_server.serve("/rss", rss(news_items(3)))  # the same feed again: listed once
    feed_server.serve("/feed.json", JSON_FEED, content_type="application/feed+json")
    feed_server.serve("/index.xml", page(), content_type=HTML)  # 200, but not a feed
    assert found(url) == [
        FoundFeed(feed_server.url("/feed"), "Example News", "rss", "path"),
        FoundFeed(feed_server.url("/feed.json"), "Example JSON", "json", "path"),
    ]
    asked = {p for p, _ in feed_server.requests}
    assert asked == {"/about", "/feed", "/rss.xml", "/atom.xml", "/index.xml", "/feed.xml",
                     "/feed.json", "/rss"}  # fmt: skip
    # Nothing anywhere: an empty answer, not an error.
    bare = FeedServer()
    bare.thread.start()
    try:
        assert found(bare.serve("/", page(), content_type=HTML)) == []
    finally:
        bare.httpd.shutdown()
        bare.httpd.server_close()


def test_discovery_fetches_through_the_guard_and_limits(feed_server: FeedServer) -> None:
    url = feed_server.serve("/", page(), content_type=HTML)
    with pytest.raises(FetchError, match="refused: 127.0.0.1 resolves to 127.0.0.1, a loopback"):
        found(url, FetchLimits(timeout=5))
    assert feed_server.requests == []
    big = feed_server.serve("/big", "<html>" + "x" * 200_000, content_type=HTML)
    with pytest.raises(FetchError, match="body too large"):
        found(big, FetchLimits(allow_private=True, timeout=5, max_body_bytes=100_000))


def test_choose() -> None:
    a, b = FoundFeed("https://a/", "", "rss", "link"), FoundFeed("https://b/", "", "atom", "link")
    assert choose([a], None) == a
    assert choose([a, b], None) is None
    assert choose([a, b], "2") == b
    assert choose([a, b], "https://a/") == a
    assert choose([a, b], "3") is None


# ----------------------------------------------------------------------------- feeds add


def _workdir(tmp_path: Path) -> Path:
    (tmp_path / "feeds.yaml").write_text(config_yaml([]))
    return tmp_path


def _feed_urls(workdir: Path) -> list[str]:
    return [f.url for f in load_config(workdir / "feeds.yaml").feeds]


def test_feeds_add_a_page_adds_its_feed(tmp_path: Path, feed_server: FeedServer) -> None:
    workdir = _workdir(tmp_path)
    one = feed_server.serve(
        "/one", page('<link rel="alternate" type="application/rss+xml" href="/one.rss">'),
        content_type=HTML,
    )  # fmt: skip
    feed_server.serve("/one.rss", rss(news_items(3)))
    r = run("feeds", "add", one, "-t", "world", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert f"found {feed_server.url('/one.rss')} (rss)" in r.stdout
    assert _feed_urls(workdir) == [feed_server.url("/one.rss")]

    two = feed_server.serve(
        "/two",
        page(
            '<link rel="alternate" type="application/rss+xml" title="Posts" href="/p.rss">',
            '<link rel="alternate" type="application/atom+xml" title="Notes" href="/n.atom">',
        ),
        content_type=HTML,
    )
    r = run("feeds", "add", two, cwd=workdir)
    assert r.returncode == 1
    assert "2 feeds found on" in r.stderr
    assert f"1. {feed_server.url('/p.rss')}  (rss) Posts" in r.stderr
    assert f"2. {feed_server.url('/n.atom')}  (atom) Notes" in r.stderr
    assert "--pick" in r.stderr
    assert _feed_urls(workdir) == [feed_server.url("/one.rss")]
    r = run("feeds", "add", two, "--pick", "2", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert _feed_urls(workdir) == [feed_server.url("/one.rss"), feed_server.url("/n.atom")]

    # A feed URL is added as given; a page without feeds is refused unless told otherwise.
    direct = feed_server.serve("/direct.rss", rss(news_items(2)))
    assert run("feeds", "add", direct, cwd=workdir).returncode == 0
    empty = feed_server.serve("/empty", page(), content_type=HTML)
    r = run("feeds", "add", empty, cwd=workdir)
    assert r.returncode == 1
    assert f"no feed found on {empty}" in r.stderr and "--no-discover" in r.stderr
    assert run("feeds", "add", empty, "--no-discover", cwd=workdir).returncode == 0
    assert _feed_urls(workdir)[-2:] == [direct, empty]


def test_feeds_add_an_unreachable_url_as_given(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    r = run("feeds", "add", "https://no-such-host.invalid/feed", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "warning: could not check https://no-such-host.invalid/feed" in r.stderr
    assert "adding it as given" in r.stderr
    assert _feed_urls(workdir) == ["https://no-such-host.invalid/feed"]
