"""A real feed reader against the running server: Debian's newsboat reloads topic feeds
and its SQLite cache holds what we publish (.ci/run installs newsboat with apt-get)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from live import live_server
from test_pipeline import poll_all

from aggregator.service import Aggregator

NEWSBOAT = shutil.which("newsboat")
SITE = "https://news.example.com"


def newsboat_reload(tmp: Path, urls: list[str]) -> sqlite3.Connection:
    """``newsboat -x reload`` with its own urls, config and cache files; the cache.

    newsboat keeps one row per guid across all its feeds (a story in two topics is one
    article to it), so each test feed gets its own cache directory here.
    """
    tmp.mkdir(exist_ok=True)
    (tmp / "urls").write_text("".join(u + "\n" for u in urls))
    (tmp / "config").write_text(
        'reload-threads 2\ndownload-timeout 20\nuser-agent "newsboat-test"\n'
    )
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    cache = tmp / "cache.db"
    # No skipping: a machine without the reader fails here (.ci/run installs it).
    assert NEWSBOAT is not None, "newsboat is not installed: apt-get install newsboat"
    done = subprocess.run(
        [
            NEWSBOAT,
            "-u",
            str(tmp / "urls"),
            "-c",
            str(cache),
            "-C",
            str(tmp / "config"),
            "-l",
            "4",
            "-d",
            str(tmp / "newsboat.log"),
            "-x",
            "reload",
        ],
        env={
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home),
            "XDG_DATA_HOME": str(home),
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return sqlite3.connect(cache)


def test_newsboat_reloads_topic_feeds(tmp_path: Path, db_url: str, feed_server: FeedServer) -> None:
    feed_server.serve("/a.rss", rss(news_items(9, site=SITE), site=SITE))
    path = tmp_path / "feeds.yaml"
    path.write_text(
        config_yaml([{"url": feed_server.url("/a.rss"), "tags": ["world"]}], database_url=db_url)
        # news_items repeats six texts; near-duplicate merging (test_stories.py) would fold them.
        + "dedup:\n  near_duplicates: false\n"
    )
    agg = Aggregator.from_file(path)
    try:
        poll_all(agg)
        with live_server(agg) as base:
            atom, rss_url = f"{base}/topics/world.atom", f"{base}/topics/business.rss"
            expected = {
                url: json.loads(httpx.get(url.rsplit(".", 1)[0] + ".json").content)["items"]
                for url in (atom, rss_url)
            }
            assert len(expected[atom]) == 9 and expected[rss_url]
            for url, items in expected.items():
                db = newsboat_reload(tmp_path / url.rsplit(".", 1)[1], [url])
                (title,) = db.execute(
                    "SELECT title FROM rss_feed WHERE rssurl = ?", (url,)
                ).fetchone()
                assert title == ("World" if url == atom else "Business")
                rows = db.execute(
                    "SELECT guid, title, url FROM rss_item WHERE feedurl = ? ORDER BY pubDate DESC",
                    (url,),
                ).fetchall()
                assert [r[0] for r in rows] == [i["id"] for i in items], url
                assert [r[1] for r in rows] == [i["title"] for i in items], url
                assert [r[2] for r in rows] == [i.get("url", "") for i in items], url
                db.close()

            # New stories arrive; the next reload adds exactly those, keeping the others.
            feed_server.serve("/a.rss", rss(news_items(11, site=SITE, start=-2), site=SITE))
            poll_all(agg)
            db = newsboat_reload(tmp_path / "atom", [atom])
            guids = [
                g for (g,) in db.execute("SELECT guid FROM rss_item WHERE feedurl = ?", (atom,))
            ]
            fresh = json.loads(httpx.get(f"{base}/topics/world.json").content)["items"]
            assert len(guids) == len(set(guids)) == 11
            assert set(guids) == {i["id"] for i in fresh}
            db.close()
    finally:
        agg.close()
