"""One story, one item: wire stories rewritten by several outlets, through the real pipeline.

Feeds are served by a real local HTTP server, polled by the real pipeline into SQLite and
PostgreSQL, and read back through the real topic feed output (JSON Feed, RSS).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from html import escape, unescape
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from builders import Item, config_yaml, rss
from conftest import FeedServer

from aggregator.service import Aggregator
from aggregator.web import create_app

DATA = Path(__file__).parent / "data" / "dedup_eval.jsonl"
# One wire story (5 outlets, one title-only), and stories that share its words but are not it.
CLUSTERS = (
    "peru-quake",
    "chile-quake",
    "colombia-us-tariffs",
    "colombia-us-deportations",
    "portugal-election",
    "romania-election",
)


def eval_items(clusters: tuple[str, ...] = CLUSTERS) -> dict[str, list[dict[str, Any]]]:
    """outlet -> its items of the given clusters, from the labelled set."""
    by_feed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in DATA.read_text().splitlines():
        d = json.loads(line)
        if d["cluster"] in clusters:
            by_feed[d["feed"]].append(d)
    return by_feed


def to_item(d: dict[str, Any], guid: str | None = None, **kw: Any) -> Item:
    from datetime import datetime

    return Item(
        title=escape(kw.get("title", d["title"])),
        link=escape(d["link"]),
        guid=guid or d["link"],
        description=escape(kw.get("text", d["text"])),
        published=datetime.fromisoformat(d["published"].replace("Z", "+00:00")),
    )


def serve_outlet(server: FeedServer, outlet: str, items: list[Item]) -> str:
    return server.serve(
        f"/{outlet}.rss",
        rss(items, title=f"{outlet.title()} News", site=f"https://{outlet}.example"),
        content_type="application/rss+xml",
    )


def make(tmp_path: Path, db_url: str, feeds: list[dict[str, Any]], dedup: str = "") -> Aggregator:
    path = tmp_path / "feeds.yaml"
    path.write_text(config_yaml(feeds, database_url=db_url) + dedup)
    return Aggregator.from_file(path)


def poll(agg: Aggregator) -> None:
    async def run() -> None:
        try:
            for f in agg.enabled_feeds():  # in order: the first feed's story leads
                result = await agg.poll(f.url)
                assert result.status in ("ok", "not_modified"), result
        finally:
            await agg.stop()

    asyncio.run(run())


def get(agg: Aggregator, path: str) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(agg, poll=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
            return await c.get(path)

    return asyncio.run(run())


def world_json(agg: Aggregator) -> list[dict[str, Any]]:
    r = get(agg, "/topics/world.json")
    assert r.status_code == 200
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def story_of(items: list[dict[str, Any]], link_part: str) -> dict[str, Any]:
    found = [
        i for i in items if any(link_part in s.get("url", "") for s in i["_aggregator"]["sources"])
    ]
    assert len(found) == 1, [i["title"] for i in found]
    return found[0]


def test_wire_story_is_one_item_and_look_alikes_stay_apart(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    outlets = eval_items()
    # The wire first, so its story is created first and leads.
    order = ["wire"] + sorted(o for o in outlets if o != "wire")
    urls = {o: serve_outlet(feed_server, o, [to_item(d) for d in outlets[o]]) for o in order}
    wire_only = make(tmp_path, db_url, [{"url": urls["wire"], "tags": ["world"]}])
    poll(wire_only)
    before = {i["id"]: i["title"] for i in world_json(wire_only)}
    peru_id = story_of(world_json(wire_only), "peru-earthquake")["id"]
    wire_only.close()

    # The other outlets join; one of them is also tagged politics.
    feeds = [
        {"url": urls[o], "tags": ["world", "politics"] if o == "ledger" else ["world"]}
        for o in order
    ]
    agg = make(tmp_path, db_url, feeds)
    try:
        poll(agg)
        items = world_json(agg)
        # One item per story of the set, and the ids of before did not change.
        assert len(items) == len(CLUSTERS)
        assert before.keys() <= {i["id"] for i in items}
        peru = story_of(items, "peru-earthquake")
        assert peru["id"] == peru_id
        sources = peru["_aggregator"]["sources"]
        assert len(sources) == 5
        assert {s["feed_url"] for s in sources} == {
            urls[o] for o in ("wire", "ledger", "courier", "herald", "radio9")
        }
        # Headline and link from the first source; the others named, with links, in the body.
        assert peru["title"] == outlets["wire"][0]["title"]
        assert peru["url"] == outlets["wire"][0]["link"]
        for s in sources:
            assert escape(s["url"], quote=True) in peru["content_html"]
        # A story's topics are the union of its entries' tags.
        assert {"world", "politics"} <= set(peru["_aggregator"]["topics"])
        assert peru_id in {i["id"] for i in get(agg, "/topics/politics.json").json()["items"]}
        # The look-alikes: each its own story, with only its own outlets.
        for cluster, part in [
            ("chile-quake", "chile-earthquake"),
            ("colombia-us-tariffs", "colombia-us-tariffs"),
            ("colombia-us-deportations", "colombia-deportation-flights"),
            ("portugal-election", "portugal-election-results"),
            ("romania-election", "romania-presidential-runoff"),
        ]:
            story = story_of(items, part)
            expected = {d["link"] for o in outlets.values() for d in o if d["cluster"] == cluster}
            assert {s["url"] for s in story["_aggregator"]["sources"]} == expected, cluster
        # RSS says the same: one item, every source linked in the description.
        feed = feedparser.parse(get(agg, "/topics/world.rss").content)
        assert len(feed.entries) == len(CLUSTERS)
        [rss_peru] = [e for e in feed.entries if e.id == peru_id]
        assert all(s["url"] in unescape(rss_peru.description) for s in sources)
    finally:
        agg.close()


def test_correction_joins_edit_updates_and_a_restart_sees_the_same_stories(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    outlets = eval_items(("peru-quake", "chile-quake"))
    wire = outlets["wire"]
    peru = next(d for d in wire if d["cluster"] == "peru-quake")
    url = serve_outlet(feed_server, "wire", [to_item(d) for d in wire])
    ledger_url = serve_outlet(feed_server, "ledger", [to_item(d) for d in outlets["ledger"]])
    feeds = [{"url": url, "tags": ["world"]}, {"url": ledger_url, "tags": ["world"]}]
    agg = make(tmp_path, db_url, feeds)
    poll(agg)
    stories = agg.repo.count_stories()
    assert stories == 2
    agg.close()

    # Restart (a new process would do the same): the edited wire entry keeps its story,
    # and a correction issued as a new item under the same title joins it.
    corrected = peru["text"].replace("at least 12 people", "at least 14 people")
    feed_server.serve(
        "/wire.rss",
        rss(
            [
                to_item(
                    peru, guid="wire-peru-correction", text="CORRECTS death toll. " + corrected
                ),
                to_item(peru, text=corrected),  # the same entry (same guid), edited
                *[to_item(d) for d in wire if d is not peru],
            ],
            site="https://wire.example",
        ),
        content_type="application/rss+xml",
    )
    courier = next(d for d in eval_items(("peru-quake",))["courier"])
    courier_url = serve_outlet(feed_server, "courier", [to_item(courier)])
    agg = make(tmp_path, db_url, [*feeds, {"url": courier_url, "tags": ["world"]}])
    try:
        poll(agg)
        assert agg.repo.count_stories() == stories
        items = world_json(agg)
        story = story_of(items, "peru-earthquake-arequipa")
        links = [s["url"] for s in story["_aggregator"]["sources"]]
        assert links.count(peru["link"]) == 2  # the original and its correction
        assert courier["link"] in links
        # The edit is what the story shows now.
        assert "at least 14 people" in story["content_html"]
    finally:
        agg.close()


def test_near_duplicates_off_merges_by_link_only(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    outlets = eval_items(("peru-quake",))
    urls = [serve_outlet(feed_server, o, [to_item(d) for d in ds]) for o, ds in outlets.items()]
    # The same wire copy under a tracking-laden link, in another feed: one story by URL.
    copy = dict(outlets["wire"][0], link=outlets["wire"][0]["link"] + "?src=partner-feed")
    urls.append(serve_outlet(feed_server, "partner", [to_item(copy, guid="partner-1")]))
    dedup = "dedup:\n  near_duplicates: false\n  tracking_params: [src]\n"
    agg = make(tmp_path, db_url, [{"url": u, "tags": ["world"]} for u in urls], dedup)
    try:
        poll(agg)
        assert agg.repo.count_stories() == len(outlets)
    finally:
        agg.close()


def test_a_preferred_source_leads_and_the_item_id_stays(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    outlets = eval_items(("peru-quake",))
    order = ["wire"] + sorted(o for o in outlets if o != "wire")
    feeds = [
        {"url": serve_outlet(feed_server, o, [to_item(d) for d in outlets[o]]), "tags": ["world"]}
        for o in order
    ]
    agg = make(tmp_path, db_url, feeds)
    try:
        poll(agg)
        [plain] = world_json(agg)
    finally:
        agg.close()
    assert plain["url"] == outlets["wire"][0]["link"]
    courier = outlets["courier"][0]
    # By site: the courier's links are on www.courier.example; its feed is on 127.0.0.1.
    prefer = "dedup:\n  preferred_sources: [missing.example, courier.example]\n"
    agg = make(tmp_path, db_url, feeds, prefer)
    try:
        [story] = world_json(agg)
        assert story["id"] == plain["id"]
        assert story["title"] == courier["title"] and story["url"] == courier["link"]
        sources = [s["url"] for s in story["_aggregator"]["sources"]]
        assert sources[0] == courier["link"]
        assert sorted(sources) == sorted(s["url"] for s in plain["_aggregator"]["sources"])
        assert "Rescuers" in story["content_html"]
        # Atom says the same: the preferred source's link, every source linked in the body.
        [entry] = feedparser.parse(get(agg, "/topics/world.atom").content).entries
        assert entry.id == plain["id"] and entry.link == courier["link"]
        assert all(escape(u, quote=True) in entry.content[0].value for u in sources)
    finally:
        agg.close()
    # By feed URL.
    agg = make(tmp_path, db_url, feeds, f"dedup:\n  preferred_sources: ['{feeds[2]['url']}']\n")
    try:
        [story] = world_json(agg)
        assert story["id"] == plain["id"]
        assert story["_aggregator"]["sources"][0]["feed_url"] == feeds[2]["url"]
    finally:
        agg.close()


@pytest.mark.parametrize("value", ["['not a host']", "[ftp.example/x]", "['']"])
def test_preferred_sources_must_be_feeds_or_hosts(value: str) -> None:
    from aggregator.config import parse_config
    from aggregator.exceptions import ConfigError

    with pytest.raises(ConfigError, match="preferred_sources"):
        parse_config(f"dedup:\n  preferred_sources: {value}\n")


@pytest.mark.parametrize("threshold", ["0.2", "1.5"])
def test_threshold_out_of_range_is_a_config_error(tmp_path: Path, threshold: str) -> None:
    from aggregator.config import parse_config
    from aggregator.exceptions import ConfigError

    with pytest.raises(ConfigError, match="dedup.threshold"):
        parse_config(f"dedup:\n  threshold: {threshold}\n")


def test_split_is_remembered_by_later_polls(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    from datetime import UTC, datetime

    from aggregator.exceptions import StoryError

    outlets = eval_items(("peru-quake", "chile-quake"))
    order = ["wire"] + sorted(o for o in outlets if o != "wire")
    urls = {o: serve_outlet(feed_server, o, [to_item(d) for d in outlets[o]]) for o in order}
    agg = make(tmp_path, db_url, [{"url": urls[o], "tags": ["world"]} for o in order])
    try:
        poll(agg)
        since = datetime(2026, 11, 1, tzinfo=UTC)
        [peru, chile, *_] = agg.repo.story_clusters(since)
        assert len(peru.entries) == 5 and len(chile.entries) == 3
        radio = [e for e in peru.entries if e.feed_url == urls["radio9"]]
        herald = [e for e in peru.entries if e.feed_url == urls["herald"]]
        now = datetime.now(UTC)
        with pytest.raises(StoryError, match="no story"):
            agg.repo.split_story("nope", [radio[0].entry_id], now)
        with pytest.raises(StoryError, match="at least one entry"):
            agg.repo.split_story(peru.uid, [e.entry_id for e in peru.entries], now)
        with pytest.raises(StoryError, match="not in story"):
            agg.repo.split_story(peru.uid, [chile.entries[0].entry_id], now)
        moved = [radio[0].entry_id, herald[0].entry_id]
        new_uid = agg.repo.split_story(peru.uid, moved, now)
        # Asking again (a double click) changes nothing.
        with pytest.raises(StoryError, match="not in story"):
            agg.repo.split_story(peru.uid, moved, now)
        split = agg.repo.story_cluster(new_uid)
        assert split is not None and split.split_from == peru.uid
        assert {e.entry_id for e in split.entries} == set(moved)
        # Later polls, with the split-off entries edited, do not merge them back.
        herald_item = outlets["herald"][0]
        serve_outlet(
            feed_server,
            "herald",
            [to_item(herald_item, text=herald_item["text"] + " Aftershocks followed.")],
        )
        poll(agg)
        after = agg.repo.story_cluster(peru.uid)
        assert after is not None and len(after.entries) == 3
        split_after = agg.repo.story_cluster(new_uid)
        assert split_after is not None
        assert {e.entry_id for e in split_after.entries} == set(moved)
        ids = {i["id"] for i in world_json(agg)}
        assert len(ids) == 3  # the two halves of Peru, and Chile
    finally:
        agg.close()


def test_the_dedup_migration_upgrades_a_store_holding_data(db_url: str) -> None:
    import importlib.util
    from datetime import UTC, datetime

    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import text

    from aggregator import dedup
    from aggregator.types import ParsedEntry, PollResult, PollSave
    from storage import Repository
    from storage.repository import make_engine, migrate

    versions = Path(__file__).parent.parent / "storage" / "migrations" / "versions"
    spec = importlib.util.spec_from_file_location("i4_dedup", versions / "i4_dedup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(versions.parent))
    engine = make_engine(db_url)
    t = "2026-11-17 14:05:00+00:00"
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, module.down_revision)
            conn.execute(
                text(
                    "INSERT INTO feeds (url, title, tags, enabled, consecutive_errors) "
                    "VALUES ('https://wire.example/feed', 'Wire', '[]', true, 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO stories (uid, canonical_url, published, updated, created_at)"
                    " VALUES ('old', 'https://wire.example/a', :t, :t, :t)"
                ),
                {"t": t},
            )
            conn.execute(
                text(
                    "INSERT INTO entries (feed_id, story_id, identity, content_hash, link,"
                    " canonical_url, title, summary_html, content_html, text, authors,"
                    " categories, enclosures, published, updated, date_from_fetch,"
                    " first_seen_at, last_seen_at) VALUES ((SELECT min(id) FROM feeds),"
                    " (SELECT min(id) FROM stories), 'guid:a', 'h',"
                    " 'https://wire.example/a', 'https://wire.example/a', 'Old', '', '', '',"
                    " '[]', '[]', '[]', :t, :t, false, :t, :t)"
                ),
                {"t": t},
            )
    finally:
        engine.dispose()
    migrate(db_url)
    repo = Repository(db_url)
    try:
        published = datetime(2026, 11, 17, 15, tzinfo=UTC)
        e = ParsedEntry(
            None,
            "https://wire.example/a?utm_source=x",
            "Old",
            "",
            "",
            "",
            (),
            published,
            published,
            False,
            (),
        )
        intents = dedup.plan([e], "https://other.example/feed", {})
        result = PollResult("https://other.example/feed", "ok", 200, None, 1, 0, 0, 0)
        repo.save_poll(
            "https://other.example/feed",
            PollSave(result, published, tuple(intents), matcher=dedup.DEFAULT_POLICY.matcher),
        )
        # The old entry's story is found by its URL; nothing else is made.
        assert repo.count_stories() == 1
        cluster = repo.story_cluster("old")
        assert cluster is not None and len(cluster.entries) == 2
    finally:
        repo.close()
