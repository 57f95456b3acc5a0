"""Filtered and paged feeds over HTTP, on SQLite and PostgreSQL, from real polled feeds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from test_pipeline import poll_all

from aggregator.service import Aggregator
from aggregator.web import create_app

SITE_A = "https://news.example.com"
SITE_B = "https://www.diario.example.es"
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture
def two_sites(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> Iterator[tuple[Aggregator, FeedServer]]:
    """An English business feed (tagged world) and a Spanish one, 12 stories each."""
    feed_server.serve("/a.rss", rss(news_items(12, site=SITE_A), title="Example News", site=SITE_A))
    spanish = rss(news_items(12, site=SITE_B), title="Diario", site=SITE_B)
    spanish = spanish.replace(b"<language>en-gb</language>", b"<language>es-ES</language>")
    spanish = spanish.replace(b"Markets rally", b"Mercados suben: markets rally")
    feed_server.serve("/b.rss", spanish)
    feeds = [
        {"url": feed_server.url("/a.rss"), "tags": ["world"]},
        {"url": feed_server.url("/b.rss"), "tags": ["world"]},
    ]
    # The "Spanish" feed's items are in English: trust its <language> here, not detection
    # (test_language.py covers detection overriding a feed that says the wrong language).
    path = tmp_path / "feeds.yaml"
    # Both sites carry the same 12 texts under their own links: here they stay 24 items
    # (these tests count and page items; test_stories.py covers near-duplicate merging).
    path.write_text(
        config_yaml(feeds, database_url=db_url).replace("tagging: {classifier: false}\n", "")
        + "tagging:\n  classifier: false\n  detect_language: false\n"
        + "dedup:\n  near_duplicates: false\n"
    )
    agg = Aggregator.from_file(path)
    poll_all(agg)
    yield agg, feed_server
    agg.close()


class Client:
    """One app for the whole test, as one server process would be."""

    def __init__(self, agg: Aggregator) -> None:
        self.app = create_app(agg, poll=False)

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
                return await c.get(path, headers=headers)

        return asyncio.run(run())

    def items(self, path: str) -> list[dict[str, object]]:
        r = self.get(path)
        assert r.status_code == 200, r.text
        return list(json.loads(r.content)["items"])


def titles(items: list[dict[str, object]]) -> list[str]:
    return [str(i["title"]) for i in items]


def test_filters_select_stories(two_sites: tuple[Aggregator, FeedServer]) -> None:
    agg, server = two_sites
    c = Client(agg)
    assert len(c.items("/topics/world.json")) == 24
    # Topic expressions: business AND world; business but NOT sport; ANY of two topics.
    business = c.items("/topics/world.json?topics=business")
    assert business and all("markets" in t.lower() for t in titles(business))
    assert c.items("/stories.json?topics=world+business") == business
    assert c.items("/stories.json?topics=business&not=world") == []
    either = c.items("/stories.json?any=business,sport")
    assert len(either) == len(business) + len(c.items("/stories.json?topics=sport"))
    # Source by feed URL and by host (www. and subdomains do not matter).
    from_a = c.items("/topics/world.json?source=" + server.url("/a.rss"))
    assert len(from_a) == 12 and all(SITE_A in str(i["url"]) for i in from_a)
    # Language from the feed's <language>: "es" matches "es-ES".
    spanish = c.items("/topics/world.json?lang=es")
    assert len(spanish) == 12 and all(SITE_B in str(i["url"]) for i in spanish)
    assert len(c.items("/topics/world.json?lang=en,es")) == 24
    # Time window on the published date.
    newest = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    since = (newest - timedelta(minutes=17 * 3)).isoformat().replace("+00:00", "Z")
    recent = c.items(f"/topics/world.json?since={since}")
    assert len(recent) == 8  # stories 0..3 from both feeds
    older = c.items(f"/topics/world.json?until={since}")
    assert len(older) == 16
    # Full text: words, phrases, or, exclusion; accents and case do not matter on SQLite.
    assert len(c.items("/topics/world.json?q=mercados")) == 2
    assert len(c.items("/topics/world.json?q=%22markets%20rally%22%20-mercados")) == 2
    assert len(c.items("/topics/world.json?q=bronzes%20or%20chipmaker")) == 8
    # Limit.
    assert len(c.items("/topics/world.json?limit=5")) == 5


def test_source_host_filter(two_sites: tuple[Aggregator, FeedServer]) -> None:
    agg, _ = two_sites
    c = Client(agg)
    # The test feeds are served from 127.0.0.1: an IP literal is a host too.
    assert len(c.items("/topics/world.json?source=127.0.0.1")) == 24
    assert c.items("/topics/world.json?source=elsewhere.example") == []
    assert c.items("/topics/world.json?source=https://elsewhere.example/feed") == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("topics=nope", "no topic 'nope'"),
        ("since=tomorrowish", "since:"),
        ("limit=-3", "limit:"),
        ("q=-", "q:"),
        ("after=zzz", "after:"),
        ("lang=%3Cscript%3E", "lang:"),
        ("colour=red", "unknown parameter"),
    ],
)
def test_malformed_filter_is_400(
    two_sites: tuple[Aggregator, FeedServer], query: str, message: str
) -> None:
    agg, _ = two_sites
    r = Client(agg).get(f"/topics/world.atom?{query}")
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert r.headers["access-control-allow-origin"] == "*"


def test_paging_sees_every_item_once_while_items_arrive(
    two_sites: tuple[Aggregator, FeedServer],
) -> None:
    agg, server = two_sites
    c = Client(agg)
    seen: list[str] = []
    url: str | None = "/topics/world.atom?limit=5"
    pages = 0
    while url:
        r = c.get(url)
        assert r.status_code == 200
        doc = feedparser.parse(r.content)
        assert not doc.bozo, doc.bozo_exception
        links = {link.rel: link.href for link in doc.feed.links}
        assert links["self"].endswith(url)
        assert links["first"] == "http://agg.test/topics/world.atom?limit=5"
        if pages:
            assert "previous" in links
        seen.extend(e.id for e in doc.entries)
        pages += 1
        if pages == 2:
            # Newer stories arrive between two page fetches (a poll finds 3 more).
            server.serve(
                "/a.rss", rss(news_items(15, site=SITE_A, start=-3), title="Example", site=SITE_A)
            )
            poll_all(agg)
        url = links.get("next", "").removeprefix("http://agg.test") or None
    assert pages == 5
    assert len(seen) == len(set(seen)) == 24
    # The first page now starts with the new stories; walking back with "previous" from
    # the last page reaches every story too.
    assert len(c.items("/topics/world.json?limit=50")) == 27
    back: list[str] = []
    url = "/topics/world.json?limit=7"
    while url:
        doc = json.loads(c.get(url).content)
        back.extend(i["id"] for i in doc["items"])
        url = (doc.get("next_url") or "").removeprefix("http://agg.test") or None
    assert len(back) == len(set(back)) == 27
    last = json.loads(c.get("/topics/world.json?limit=7&after=" + "0.0").content)
    assert last["items"] == []


def test_prev_links_walk_to_the_newest(two_sites: tuple[Aggregator, FeedServer]) -> None:
    agg, _ = two_sites
    c = Client(agg)
    url: str | None = "/topics/world.json?limit=10"
    last = None
    while url:
        last = json.loads(c.get(url).content)
        url = (last.get("next_url") or "").removeprefix("http://agg.test") or None
    assert last is not None
    got: list[str] = [i["id"] for i in last["items"]]
    url = last["_aggregator"]["prev_url"].removeprefix("http://agg.test")
    while url:
        doc = json.loads(c.get(url).content)
        got = [i["id"] for i in doc["items"]] + got
        url = (doc.get("_aggregator", {}).get("prev_url") or "").removeprefix("http://agg.test")
    top = [i["id"] for i in c.items("/topics/world.json?limit=50")]
    assert got == top


def test_cheap_to_poll(two_sites: tuple[Aggregator, FeedServer]) -> None:
    agg, server = two_sites
    c = Client(agg)
    r = c.get("/topics/world.rss", {"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.headers["vary"] == "Accept-Encoding"
    plain = c.get("/topics/world.rss", IDENTITY)
    assert "content-encoding" not in plain.headers
    assert r.content == plain.content  # httpx decoded the gzip body
    # Strong validators, one per representation; either answers a conditional GET.
    assert r.headers["etag"] != plain.headers["etag"]
    for etag in (r.headers["etag"], plain.headers["etag"]):
        assert not etag.startswith("W/")
        assert c.get("/topics/world.rss", {"If-None-Match": etag}).status_code == 304
    max_age = int(plain.headers["cache-control"].split("max-age=")[1])
    assert 60 <= max_age <= 900
    # Stories 17 minutes apart: a quarter of that.
    assert max_age == 17 * 60 // 4
    # A poll that changes nothing keeps the validators; one with new stories changes them.
    version = agg.repo.content_version()
    poll_all(agg)
    assert agg.repo.content_version() == version
    assert c.get("/topics/world.rss", IDENTITY).headers["etag"] == plain.headers["etag"]
    server.serve("/a.rss", rss(news_items(13, site=SITE_A, start=-1), title="Example", site=SITE_A))
    poll_all(agg)
    assert agg.repo.content_version() == version + 1
    fresh = c.get("/topics/world.rss", {"If-None-Match": plain.headers["etag"], **IDENTITY})
    assert fresh.status_code == 200 and fresh.headers["etag"] != plain.headers["etag"]
    assert fresh.headers["last-modified"] != plain.headers["last-modified"]


def test_migration_indexes_stored_entries(two_sites: tuple[Aggregator, FeedServer]) -> None:
    """Upgrading a store that already holds entries makes them searchable."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    import storage

    agg, _ = two_sites
    url = agg.repo.url
    agg.repo.close()
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(storage.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = storage.repository.make_engine(url, immediate=True)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "i8_leases")  # to before the publishing migration
    engine.dispose()
    storage.repository.migrate(url)
    agg.repo = storage.open_repository(url)
    assert len(Client(agg).items("/topics/world.json?q=mercados")) == 2
