"""The home page in a real browser: headless Chromium lists every topic with its feed links."""

from __future__ import annotations

from pathlib import Path

from browser import live_app
from conftest import FeedServer
from selenium import webdriver
from selenium.webdriver.common.by import By
from test_pipeline import make_agg, poll_all

from aggregator.web import create_app


def test_home_page_lists_topics_and_subscribe_links(
    tmp_path: Path, feed_server: FeedServer, chromium: webdriver.Chrome
) -> None:
    url = feed_server.serve_file("/bbc.rss", "bbc_world.rss")
    agg = make_agg(
        tmp_path, f"sqlite:///{tmp_path / 'store.db'}", [{"url": url, "tags": ["world"]}]
    )
    try:
        poll_all(agg)
        with live_app(create_app(agg, poll=False)) as base:
            chromium.get(base + "/")
            hrefs = {a.get_attribute("href") for a in chromium.find_elements(By.TAG_NAME, "a")}
            for slug in ("world", "politics", "foreign-relations"):
                for fmt in ("rss", "atom", "json"):
                    assert f"{base}/topics/{slug}.{fmt}" in hrefs, (slug, fmt, sorted(hrefs))
            alternates = chromium.find_elements(By.CSS_SELECTOR, 'link[rel="alternate"]')
            assert alternates, "no feed autodiscovery links in <head>"
            # Following a topic page link renders that topic's stories.
            chromium.get(f"{base}/topics/world")
            assert "world" in chromium.title.lower()
            assert chromium.find_elements(By.CSS_SELECTOR, "article, li")
    finally:
        agg.close()
