"""Pages for people in headless Chromium: the topic list with counts and subscribe links,
a topic page reached by clicking, autodiscovery, and the feeds fetched cross-origin (CORS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from browser import live_app
from conftest import FeedServer
from selenium import webdriver
from selenium.webdriver.common.by import By
from test_pipeline import make_agg, poll_all

from aggregator.web import create_app

FEED_TYPES = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}

# Runs in a page of another origin (a downstream site), so every fetch needs CORS; the
# custom If-None-Match makes it a preflighted one.
FETCH = """
const done = arguments[arguments.length - 1];
Promise.all(arguments[0].map(u => fetch(u, {headers: {"If-None-Match": '"nope"'}}).then(
    async r => [u, r.status, r.headers.get("content-type"), r.headers.get("etag"),
                (await r.text()).length],
    e => [u, 0, String(e), null, 0]))).then(done);
"""


def test_topic_list_subscribe_links_and_topic_page(
    tmp_path: Path, feed_server: FeedServer, chromium: webdriver.Chrome
) -> None:
    feeds = [
        {"url": feed_server.serve_file("/bbc.rss", "bbc_world.rss"), "tags": ["world"]},
        {"url": feed_server.serve_file("/colombia.rss", "colombia_usa.rss")},
    ]
    agg = make_agg(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", feeds)
    try:
        poll_all(agg)
        with live_app(create_app(agg, poll=False)) as base:
            listed = {t["slug"]: t for t in httpx.get(base + "/topics").json()["topics"]}
            chromium.get(base + "/")
            assert chromium.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
            assert len(chromium.find_elements(By.TAG_NAME, "h1")) == 1
            rows = chromium.find_elements(By.CSS_SELECTOR, "ul.topics > li")
            # Every configured topic, in feeds.yaml order, with its name, count and links.
            assert [r.get_attribute("id") for r in rows] == [t.slug for t in agg.config.topics]
            feed_urls: list[str] = []
            for row in rows:
                topic = listed[row.get_attribute("id") or ""]
                heading = row.find_element(By.CSS_SELECTOR, "h2 a")
                assert heading.text == topic["name"]
                assert heading.get_attribute("href") == topic["page"]
                meta = row.find_element(By.CSS_SELECTOR, "p.meta").text
                assert meta.startswith(f"{topic['stories']} stor"), meta
                subscribe = {
                    a.get_attribute("type"): a.get_attribute("href")
                    for a in row.find_elements(By.CSS_SELECTOR, "p.meta a")
                }
                assert subscribe == {FEED_TYPES[f]: topic["feeds"][f] for f in FEED_TYPES}
                feed_urls.extend(topic["feeds"].values())
            assert listed["world"]["stories"] > 0 and listed["foreign-relations"]["stories"] > 0
            opml = chromium.find_element(By.CSS_SELECTOR, 'a[type="text/x-opml"]')
            assert opml.get_attribute("href") == base + "/topics.opml"
            # Readers and browsers discover every feed from <head>.
            alternates = chromium.find_elements(By.CSS_SELECTOR, 'head link[rel="alternate"]')
            assert sorted(a.get_attribute("href") or "" for a in alternates) == sorted(feed_urls)

            # Every subscribe link answers, readable from another origin (CORS). The other
            # origin is on loopback too: Chromium blocks pages of a less private address
            # space (about:blank, data:) from fetching loopback at all.
            chromium.get(
                feed_server.serve(
                    "/downstream.html", "<!doctype html><title>x</title>", content_type="text/html"
                )
            )
            answers: list[list[Any]] = chromium.execute_async_script(
                FETCH, feed_urls + [base + "/topics.opml"]
            )
            for url, status, ctype, etag, length in answers:
                assert status == 200, (url, ctype)
                assert etag and length > 0, url
                if not url.endswith(".opml"):
                    assert ctype.split(";")[0] == FEED_TYPES[url.rsplit(".", 1)[1]]

            # Click through to a topic page: its stories with when, sources and topics.
            chromium.get(base + "/")
            chromium.find_element(By.CSS_SELECTOR, "#foreign-relations h2 a").click()
            assert chromium.current_url == base + "/topics/foreign-relations"
            assert chromium.find_element(By.TAG_NAME, "h1").text == "Foreign relations"
            stories = chromium.find_elements(By.CSS_SELECTOR, "ul.stories article")
            expected = httpx.get(base + "/topics/foreign-relations.json").json()["items"]
            assert [s.find_element(By.TAG_NAME, "h3").text for s in stories] == [
                i["title"] for i in expected
            ]
            first = stories[0]
            assert first.find_element(By.TAG_NAME, "time").get_attribute("datetime")
            assert " · from " in first.find_element(By.CSS_SELECTOR, "p.meta").text
            tags = [a.text for a in first.find_elements(By.CSS_SELECTOR, "p.tags a")]
            assert "Foreign relations" in tags  # names, not slugs
            page_alternates = chromium.find_elements(By.CSS_SELECTOR, 'link[rel="alternate"]')
            assert {a.get_attribute("href") for a in page_alternates} == set(
                listed["foreign-relations"]["feeds"].values()
            )
            chromium.find_element(By.LINK_TEXT, "All topics").click()
            assert chromium.current_url == base + "/"
    finally:
        agg.close()
