"""Every page in headless Chromium at a desktop and a phone width: nothing scrolls sideways,
the charts are there with their text alternatives, forms are labelled, headings go in
order, text has contrast; a full-page screenshot of each is kept in the test's tmp dir."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser import live_app
from builders import Item, rss
from conftest import FeedServer
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from test_pipeline import make_agg, poll_all

from aggregator.service import Aggregator
from aggregator.web import create_app

WIDTHS = (1280, 390)

# One pass over the rendered page; the answers are plain values for the assertions.
CHECKS = (Path(__file__).parent / "page_checks.js").read_text()


@pytest.fixture
def site(tmp_path: Path, feed_server: FeedServer) -> Iterator[Aggregator]:
    """Two weeks of world news and a feed that fails, polled a few times."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    items = [
        Item(
            title=f"Envoys meet in Geneva for round {i} of ceasefire talks on the border dispute",
            link=f"https://world.example.org/2026/12/envoys-meet-in-geneva-round-{i}-ceasefire",
            guid=f"envoys-{i}",
            description="Diplomats from both sides met for another round of talks.",
            categories=["World", "Europe"],
            published=now - timedelta(days=i // 3, hours=i % 3),
        )
        for i in range(40)
    ]
    world = feed_server.serve(
        "/very/long/path/to/the/international/world-news-section/feed.rss",
        rss(items, title="World Desk"),
    )
    down = feed_server.serve("/down.rss", b"", status=503)
    agg = make_agg(
        tmp_path,
        f"sqlite:///{tmp_path / 'store.db'}",
        [
            {"url": world, "tags": ["world"], "title": "World Desk"},
            {"url": down, "title": "Regional Wire"},
        ],
    )
    for _ in range(3):
        poll_all(agg)
    yield agg
    agg.close()


def set_width(driver: webdriver.Chrome, width: int, height: int = 900) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page, not only the viewport."""
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def check_page(driver: webdriver.Chrome, url: str, width: int, shot: Path) -> dict[str, Any]:
    driver.get(url)
    found: dict[str, Any] = driver.execute_script(CHECKS, width)
    where = f"{url} at {found['vw']} px"
    assert found["scrollWidth"] <= found["vw"], f"{where} scrolls sideways: {found['wide'][:5]}"
    assert found["wide"] == [], f"{where}: wider than the viewport: {found['wide'][:5]}"
    assert found["unlabelled"] == [], f"{where}: unlabelled fields {found['unlabelled']}"
    assert found["unnamedImages"] == [], f"{where}: charts without text {found['unnamedImages']}"
    levels = found["headings"]
    assert levels.count(1) == 1 and levels[0] == 1, f"{where}: headings {levels}"
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False)), where
    assert found["lowContrast"] == [], f"{where}: low contrast {found['lowContrast'][:5]}"
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    screenshot(driver, shot)
    return found


def test_pages_fit_phone_and_desktop_with_accessible_charts(
    site: Aggregator, chromium: webdriver.Chrome, tmp_path: Path, admin_token: str
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with live_app(create_app(site, poll=False)) as base:
        d = chromium
        d.get(base + "/login")
        d.find_element(By.NAME, "token").send_keys(admin_token)
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # The session cookie is set by the login's answer: wait for it before moving on.
        WebDriverWait(d, 20).until(lambda _: d.current_url == base + "/admin")
        pages = {
            "home": "/",
            "topic": "/topics/world",
            "topic-filtered": "/topics/world?q=Geneva&since=30d&limit=5",
            "admin": "/admin",
        }
        for width in WIDTHS:
            set_width(d, width)
            for name, path in pages.items():
                check_page(d, base + path, width, shots / f"{name}-{width}.png")
                if name == "home":
                    sparks = d.find_elements(By.CSS_SELECTOR, "ul.topics svg.spark")
                    assert len(sparks) == len(site.config.topics)
                    assert (sparks[0].get_attribute("aria-label") or "").startswith(
                        site.config.topics[0].name
                    )
                elif name.startswith("topic"):
                    chart = d.find_element(By.CSS_SELECTOR, "figure svg.chart")
                    assert chart.size["width"] <= width and chart.size["height"] > 40
                    caption = d.find_element(By.TAG_NAME, "figcaption").text
                    assert caption.startswith("40 stories in the last 30 days"), caption
                    assert len(chart.find_elements(By.TAG_NAME, "rect")) == 30
                    if name == "topic-filtered":
                        assert d.find_element(By.CSS_SELECTOR, "a[rel=next]")
                        assert d.find_element(By.NAME, "q").get_attribute("value") == "Geneva"
                else:
                    strips = d.find_elements(By.CSS_SELECTOR, "tbody svg.polls")
                    labels = [s.get_attribute("aria-label") or "" for s in strips]
                    assert any("3 error" in x for x in labels), labels
                    assert any("ok" in x for x in labels), labels
    for width in WIDTHS:
        for name in pages:
            assert (shots / f"{name}-{width}.png").stat().st_size > 5000
