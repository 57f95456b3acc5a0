"""The real pipeline against a real local HTTP server and a real SQLite file."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from builders import Item, config_yaml, news_items, rss
from conftest import FeedServer
from live import poll_all
from sqlalchemy import func, select

import aggregator.tag as tag_module
from aggregator import dedup, neardup
from aggregator.service import Aggregator
from storage.models import EntrySignatureRow


def make_agg(tmp_path: Path, db_url: str, feeds: list[dict[str, object]]) -> Aggregator:
    path = tmp_path / "feeds.yaml"
    path.write_text(config_yaml(feeds, database_url=db_url))
    return Aggregator.from_file(path)


REAL_FEEDS = [
    ("/bbc.rss", "bbc_world.rss", "application/rss+xml"),
    ("/guardian.rss", "guardian_politics.rss", "application/rss+xml; charset=utf-8"),
    ("/verge.atom", "verge_tech.atom", "application/atom+xml"),
    ("/dw.rdf", "dw_rdf.rdf", "application/rdf+xml"),
    ("/npr.json", "npr_news.json", "application/feed+json"),
    ("/colombia.rss", "colombia_usa.rss", "application/rss+xml"),
]


@pytest.fixture
def served(feed_server: FeedServer) -> dict[str, str]:
    urls = {
        name: feed_server.serve_file(path, name, content_type=ctype)
        for path, name, ctype in REAL_FEEDS
    }
    urls["500"] = feed_server.serve("/error.rss", b"", status=500)
    urls["garbage"] = feed_server.serve_file(
        "/garbage.rss", "garbage.bin", content_type="application/rss+xml"
    )
    urls["html"] = feed_server.serve_file("/page", "not_a_feed.html", content_type="text/html")
    return urls


def test_poll_stores_every_feed_and_records_failures(
    tmp_path: Path, db_url: str, served: dict[str, str]
) -> None:
    agg = make_agg(tmp_path, db_url, [{"url": u} for u in served.values()])
    results = poll_all(agg)

    for _, name, _ in REAL_FEEDS:
        r = results[served[name]]
        assert r.status == "ok", (name, r)
        assert r.new >= 20, (name, r)
        assert agg.repo.count_entries(served[name]) == r.new
    for bad in ("500", "garbage", "html"):
        assert results[served[bad]].status == "error"
        assert results[served[bad]].error
    assert results[served["500"]].http_status == 500
    assert "500" in (results[served["500"]].error or "")

    health = {h.url: h for h in agg.repo.feed_health()}
    assert health[served["500"]].consecutive_errors == 1
    assert health[served["500"]].last_error
    assert health[served["bbc_world.rss"]].last_success_at is not None
    assert health[served["bbc_world.rss"]].next_poll_at is not None
    agg.close()


def test_repeated_polls_store_nothing_twice(
    tmp_path: Path, db_url: str, served: dict[str, str], feed_server: FeedServer
) -> None:
    agg = make_agg(tmp_path, db_url, [{"url": served[name]} for _, name, _ in REAL_FEEDS])
    poll_all(agg)
    total = agg.repo.count_entries()
    stories = agg.repo.count_stories()

    second = poll_all(agg)
    # The server honours If-None-Match: every feed answers 304 and nothing is stored.
    assert {r.status for r in second.values()} == {"not_modified"}
    assert agg.repo.count_entries() == total
    assert agg.repo.count_stories() == stories
    _path, headers = feed_server.requests[-1]
    assert headers.get("If-None-Match", "").startswith('"')
    agg.close()


def test_server_without_validators_gets_unchanged_not_duplicates(
    tmp_path: Path, db_url: str, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = feed_server.serve("/plain.rss", rss(news_items(25)), conditional=False)
    agg = make_agg(tmp_path, db_url, [{"url": url}])
    detected: list[str] = []
    detect = tag_module.detect_language
    monkeypatch.setattr(
        tag_module,
        "detect_language",
        lambda title, *rest: detected.append(title) or detect(title, *rest),
    )
    first = poll_all(agg)[url]
    assert (first.status, first.new) == ("ok", 25)
    assert len(detected) == 25
    again = poll_all(agg)[url]
    assert (again.status, again.new, again.updated, again.unchanged) == ("ok", 0, 0, 25)
    assert agg.repo.count_entries() == 25
    # The language (the costliest part of tagging) is worked out for what is stored only.
    assert len(detected) == 25
    agg.close()


@pytest.mark.parametrize("parse_processes", [0, 1])
def test_a_feed_with_two_new_items_fingerprints_those_two(
    tmp_path: Path,
    db_url: str,
    feed_server: FeedServer,
    monkeypatch: pytest.MonkeyPatch,
    parse_processes: int,
) -> None:
    """A feed polled again with 2 new items of 20: the 18 stored unchanged are not
    fingerprinted again (the near-duplicate fingerprint is the costliest part of planning
    an entry), the 2 new ones are, and are matched as near-duplicates as before."""
    url = feed_server.serve("/news.rss", rss(news_items(20, start=2)))
    path = tmp_path / "feeds.yaml"
    path.write_text(
        config_yaml([{"url": url}], database_url=db_url, parse_processes=parse_processes)
    )
    agg = Aggregator.from_file(path)
    made: list[str] = []
    real = neardup.fingerprint
    monkeypatch.setattr(dedup, "fingerprint", lambda e, u: made.append(e.title) or real(e, u))
    assert poll_all(agg)[url].new == 20
    first = len(made)
    feed_server.serve("/news.rss", rss(news_items(20)))
    r = poll_all(agg)[url]
    assert (r.status, r.new, r.unchanged) == ("ok", 2, 18)
    if parse_processes == 0:  # in a thread here: the calls are seen
        assert first == 20
        assert len(made) - first == 2
        assert {t.split(" (")[-1] for t in made[first:]} == {"0)", "1)"}
    # Each new entry has its signature row, as every stored entry does.
    with agg.repo._reading() as s:
        assert s.scalar(select(func.count()).select_from(EntrySignatureRow)) == 22
    agg.close()


def test_changed_item_is_updated_not_duplicated(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    items = news_items(22)
    url = feed_server.serve("/news.rss", rss(items))
    agg = make_agg(tmp_path, db_url, [{"url": url}])
    poll_all(agg)
    before = {i.uid: i for i in agg.repo.topic_items("business", 50)}

    items[0].title = "Markets rally as central bank holds rates (updated)"
    items[0].description = "&lt;p&gt;Corrected figures.&lt;/p&gt;"
    feed_server.serve("/news.rss", rss(items))
    r = poll_all(agg)[url]
    assert (r.status, r.new, r.updated, r.unchanged) == ("ok", 0, 1, 21)
    assert agg.repo.count_entries() == 22

    after = {i.uid: i for i in agg.repo.topic_items("business", 50)}
    assert after.keys() == before.keys()  # the story keeps its id
    changed = [i for i in after.values() if "(updated)" in i.title]
    assert len(changed) == 1
    assert "Corrected figures" in changed[0].content_html
    assert changed[0].updated > before[changed[0].uid].updated
    agg.close()


def test_same_canonical_url_in_two_feeds_is_one_story(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    shared = Item(
        title="Leaders agree ceasefire talks in Geneva",
        link="https://wire.example.org/world/geneva-talks?utm_source=a",
        guid="a-1",
        categories=["World"],
    )
    other = Item(
        title="Ceasefire talks agreed for Geneva",
        link="http://www.wire.example.org/world/geneva-talks/?utm_campaign=b#top",
        guid="b-77",
        categories=["Diplomacy"],
    )
    a = feed_server.serve("/a.rss", rss([shared, *news_items(3)], title="Feed A"))
    b = feed_server.serve("/b.rss", rss([other], title="Feed B"))
    agg = make_agg(tmp_path, db_url, [{"url": a}, {"url": b}])
    poll_all(agg)
    assert agg.repo.count_entries() == 5
    assert agg.repo.count_stories() == 4

    [story] = [s for s in agg.repo.topic_items("foreign-relations", 50) if "Geneva" in s.title]
    assert {s.feed_title for s in story.sources} == {"Feed A", "Feed B"}
    # Topics are the union of the entries' tags: "World" came from feed A only.
    assert {"world", "foreign-relations"} <= set(story.topics)
    agg.close()


def test_same_guid_for_every_item_falls_back_to_links(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    items = news_items(20)
    for it in items:
        it.guid = "https://news.example.com/feed"
    url = feed_server.serve("/same.rss", rss(items))
    agg = make_agg(tmp_path, db_url, [{"url": url}])
    assert poll_all(agg)[url].new == 20
    agg.close()


def test_failing_feed_keeps_its_entries(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    url = feed_server.serve("/flaky.rss", rss(news_items(21)))
    agg = make_agg(tmp_path, db_url, [{"url": url}])
    poll_all(agg)
    feed_server.serve("/flaky.rss", b"<rss><channel><item><title>broken", conditional=False)
    r = poll_all(agg)[url]
    assert r.status == "error"
    feed_server.serve("/flaky.rss", b"", status=503)
    assert poll_all(agg)[url].http_status == 503
    assert agg.repo.count_entries() == 21
    [health] = agg.repo.feed_health()
    assert health.consecutive_errors == 2
    agg.close()


def test_json_feed_items_with_a_null_id_fall_back_or_are_skipped(
    tmp_path: Path, db_url: str, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 22.10: {"id": null} was stored as an empty entry."""
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Daily Notes",
        "home_page_url": "https://notes.example.org/",
        "items": [
            {"id": None},
            {"id": None, "url": "/2026/11/24/harbour", "title": "Harbour reopens after storm"},
            {"id": "", "content_text": "The ferry timetable changes on Monday."},
            {"id": "n-3", "title": "Library extends its opening hours"},
        ],
    }
    url = feed_server.serve("/notes.json", json.dumps(doc), content_type="application/feed+json")
    caplog.set_level(logging.INFO, "aggregator.pipeline")
    agg = make_agg(tmp_path, db_url, [{"url": url}])
    try:
        result = poll_all(agg)[url]
        assert result.status == "ok" and result.new == 3, result
        assert agg.repo.count_entries(url) == 3
        assert any("entry 0 skipped" in r.getMessage() for r in caplog.records)
        titles = sorted(e.entry.title for e in agg.repo.recent_entries(10))
        assert titles == ["", "Harbour reopens after storm", "Library extends its opening hours"]
        # Polled again: the item without an id keeps its identity (url, then content).
        feed_server.serve(
            "/notes.json",
            json.dumps({**doc, "title": "Daily Notes (evening)"}),
            content_type="application/feed+json",
        )
        again = poll_all(agg)[url]
        assert again.new == 0 and again.unchanged == 3
    finally:
        agg.close()


def test_deeply_nested_html_is_bounded_and_the_feed_kept(
    tmp_path: Path, db_url: str, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 22.8: '&lt;div&gt;' * 100,000 took the cleaner 75 s (0.47 s at 10,000)."""
    items = news_items(3)
    items[1].description = "&lt;div&gt;" * 60_000 + "deep water rescue"
    url = feed_server.serve("/deep.rss", rss(items))
    caplog.set_level(logging.INFO, "aggregator.pipeline")
    agg = make_agg(tmp_path, db_url, [{"url": url}])
    try:
        started = time.monotonic()
        result = poll_all(agg)[url]
        assert time.monotonic() - started < 5, "the cleaner ran unbounded"
        assert result.status == "ok" and result.new == 3, result
        assert any(
            "nested deeper than 256 elements was kept as text" in r.getMessage()
            for r in caplog.records
        )
        texts = {e.entry.guid: e.entry.text for e in agg.repo.recent_entries(10)}
        assert len(texts) == 3
        assert texts[items[1].guid].endswith("deep water rescue")
        assert "<div>" not in texts[items[1].guid]
    finally:
        agg.close()
