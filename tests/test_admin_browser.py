"""The admin page in headless Chromium: log in, add a feed, see it polled and healthy,
preview a topic rule, disable the feed; feeds.yaml follows with its comments kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from browser import live_app
from builders import news_items, rss
from conftest import FeedServer
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from test_admin_api import write_config
from test_pipeline import poll_all

from aggregator.config import load_config
from aggregator.service import Aggregator
from aggregator.web import create_app


def eventually(
    check: Callable[[], bool], refresh: Callable[[], object], timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the page never showed it"
        time.sleep(0.3)
        refresh()


def click(driver: webdriver.Chrome, button: WebElement) -> None:
    """Click a form's button and wait until the answer has replaced the page."""
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, 20).until(lambda _: replaced(page))


def replaced(page: WebElement) -> bool:
    """Whether ``page`` (an element) belongs to a document the browser has left.

    Asked in the middle of the navigation, chromedriver may answer "Node with given id
    does not belong to the document" instead of a stale element: that is gone too
    (``expected_conditions.staleness_of`` raised it, 1 run in a CI's 556 tests).
    """
    try:
        page.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        if "does not belong to the document" in str(e):
            return True
        raise
    return False


def row_for(driver: webdriver.Chrome, url: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-url="{url}"]')


def test_admin_page_add_poll_preview_disable(
    tmp_path: Path, feed_server: FeedServer, chromium: webdriver.Chrome, admin_token: str
) -> None:
    path = tmp_path / "feeds.yaml"
    write_config(path, feed_server)
    # A third outlet, served locally, that the admin adds through the page.
    markets = feed_server.serve(
        "/markets.rss", rss(news_items(12, "https://markets.example.net"), title="Markets Wire")
    )
    agg = Aggregator.from_file(path)
    try:
        # Polled before the server starts, so its scheduler resumes their plan: no poll of
        # these two while the test counts items.
        poll_all(agg)
        with live_app(create_app(agg, poll=True)) as base:
            d = chromium
            d.get(base + "/admin")
            assert d.current_url == base + "/login"  # no session: sent to the login form
            d.find_element(By.NAME, "token").send_keys(admin_token)
            click(d, d.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            assert d.current_url == base + "/admin"
            assert d.find_element(By.TAG_NAME, "h1").text == "Admin"
            assert len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2

            # Add the feed: the page says so, and the row turns healthy once polled.
            form = d.find_element(By.ID, "add-feed")
            form.find_element(By.NAME, "url").send_keys(markets)
            form.find_element(By.NAME, "tags").send_keys("business, markets")
            form.find_element(By.NAME, "interval").send_keys("20m")
            click(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            assert f"Added {markets}" in d.find_element(By.CSS_SELECTOR, "[role=status]").text
            eventually(
                lambda: "ok" in row_for(d, markets).find_element(By.CLASS_NAME, "state").text,
                d.refresh,
            )
            row = row_for(d, markets)
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            assert cells[1] == "business, markets" and cells[2].startswith("20m")
            assert "ago" in cells[3] and cells[4] == "0"  # last success, no errors
            assert "in " in cells[6]  # next poll is planned
            assert "failing" not in (row.get_attribute("class") or "")
            assert agg.repo.count_entries(markets) == 12

            # A failing feed is marked as such.
            bad_url = feed_server.serve("/gone.rss", b"", status=500)
            form = d.find_element(By.ID, "add-feed")
            form.find_element(By.NAME, "url").send_keys(bad_url)
            click(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            eventually(
                lambda: "failing" in (row_for(d, bad_url).get_attribute("class") or ""), d.refresh
            )
            assert "500" in row_for(d, bad_url).find_element(By.CLASS_NAME, "state").text

            # A refused add shows the validation error and keeps what was typed.
            form = d.find_element(By.ID, "add-feed")
            form.find_element(By.NAME, "url").send_keys(base + "/x.rss")
            form.find_element(By.NAME, "interval").send_keys("soon")
            click(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            alert = d.find_element(By.CSS_SELECTOR, "[role=alert]").text
            assert "invalid duration 'soon'" in alert
            assert d.find_element(By.NAME, "interval").get_attribute("value") == "soon"

            # Preview a topic rule: the matching recent items are listed, nothing is saved.
            before = path.read_text()
            editor = d.find_element(By.ID, "topic-yaml")
            editor.clear()
            editor.send_keys("name: Chips\nslug: chips\nrules:\n  keywords: [accelerator]\n")
            click(d, d.find_element(By.CSS_SELECTOR, "button[value=preview-topic]"))
            heading = d.find_element(By.ID, "preview-h").text
            assert heading.startswith("Preview: 7 of the 50 most recent items match"), heading
            titles = [
                td.text for td in d.find_elements(By.CSS_SELECTOR, "#preview tbody td:first-child")
            ]
            assert len(titles) == 7 and all("Chipmaker" in t for t in titles)
            assert path.read_text() == before
            # The editor keeps the rule; Save then writes it and re-tags.
            click(d, d.find_element(By.CSS_SELECTOR, "button[value=save-topic]"))
            assert "Saved topic chips" in d.find_element(By.CSS_SELECTOR, "[role=status]").text
            assert load_config(path).topic("chips") is not None

            # Disable the feed: the row says so, feeds.yaml too, and polling stops.
            click(d, row_for(d, markets).find_element(By.XPATH, ".//button[text()='Disable']"))
            assert f"Disabled {markets}" in d.find_element(By.CSS_SELECTOR, "[role=status]").text
            assert row_for(d, markets).find_element(By.CLASS_NAME, "state").text == "disabled"
            assert row_for(d, markets).find_elements(By.XPATH, ".//button[text()='Enable']")
            assert load_config(path).feed(markets).enabled is False  # type: ignore[union-attr]
            assert not agg.polls_feed(markets)
            text = path.read_text()
            assert "# Admin test feeds: every comment here" in text and "  # Science\n" in text
    except Exception:
        Path("/tmp/admin_page.html").write_text(chromium.page_source)
        raise
    finally:
        agg.close()
