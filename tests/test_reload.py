"""Hot reload: feeds.yaml edited under a really running server (uvicorn on 127.0.0.1).

Every test starts the app with its scheduler and watcher on a real socket, serves feeds from
a real local server, edits feeds.yaml the ways admins and editors do, and checks what the
server then polls and serves.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from builders import Item, config_yaml, rss
from conftest import FeedServer
from live import live_server, poll_all
from ruamel.yaml import YAML

from aggregator.config import parse_config
from aggregator.reload import plan
from aggregator.service import Aggregator

T = TypeVar("T")

STORM_TOPIC = {
    "name": "Storms",
    "slug": "storms",
    "description": "Storms, floods and the power cuts they bring.",
    "rules": {"keywords": ["storm", "power cut"]},
}


def wait_for(what: str, check: Callable[[], T], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def feeds_yaml(db_url: str, feeds: list[dict[str, Any]], topics: list[dict[str, Any]] = ()) -> str:
    """feeds.yaml with the shipped topics (plus ``topics``) and a comment an admin left."""
    text = config_yaml(feeds, database_url=db_url)
    if topics:
        doc = YAML(typ="safe").load(text)
        doc["topics"] = [*doc["topics"], *topics]
        out = io.StringIO()
        YAML(typ="safe", pure=True).dump(doc, out)
        text = out.getvalue()
    return "# Edited by hand while the server runs.\n" + text


@contextmanager
def running(path: Path) -> Iterator[tuple[Aggregator, str]]:
    """The server as `aggregator serve` runs it: polling, watching feeds.yaml, on a socket."""
    agg = Aggregator.from_file(path)
    try:
        with live_server(agg, poll=True) as base:
            wait_for("the watcher is in place", lambda: agg.watcher and agg.watcher.checks >= 1)
            yield agg, base
    finally:
        agg.close()


def served_titles(base: str, path: str) -> list[str]:
    r = httpx.get(base + path, timeout=5)
    if r.status_code != 200:
        return []
    return [i["title"] for i in r.json()["items"]]


def replace_by_rename(path: Path, text: str) -> None:
    """Save as editors do: write a new file beside it, then rename it over the old one."""
    tmp = path.with_name("." + path.name + ".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


ALPHA = [
    ("Central bank holds interest rates as inflation eases", ["Business", "Economy"]),
    ("Storm Ciarán batters the coast; 40,000 homes without power", ["UK", "Weather"]),
    ("City striker's late goal sends club top of the league", ["Sport", "Football"]),
    ("Chipmaker unveils an AI accelerator twice as fast as its last", ["Technology"]),
    ("Budget vote delayed after opposition walkout", ["Politics"]),
    ("Museum returns Benin bronzes to Nigeria", ["Arts &amp; Culture", "World/Africa"]),
    ("Rail strike called off after last-minute pay deal", ["UK", "Transport"]),
    ("Heatwave warning for southern Europe this weekend", ["World/Europe"]),
    ("Pharmaceutical merger creates a €90bn company", ["Business"]),
    ("Telescope spots water vapour on a distant exoplanet", ["Science"]),
    ("Flooding closes motorway as the storm moves north", ["UK", "Weather"]),
    ("Tennis star withdraws from the final with an injury", ["Sport", "Tennis"]),
]
BRAVO = [
    ("Ferry services cancelled as storm force winds hit the islands", ["Scotland"]),
    ("Start-up raises $200m to build a battery plant", ["Business", "Energy"]),
    ("Election officials count postal votes by hand", ["Politics"]),
    ("Orchestra cancels its tour over visa delays", ["Music"]),
    ("Wildfire smoke drifts across the border", ["Canada", "Environment"]),
    ("Mortgage rates fall for the third month running", ["Money"]),
    ("Cycling team fined for breaking equipment rules", ["Sport"]),
    ("Farmers protest over import tariffs", ["Farming", "Trade"]),
]


def headlines(site: str, stories: list[tuple[str, list[str]]]) -> list[Item]:
    base = datetime(2026, 11, 30, 7, 45, tzinfo=UTC)
    return [
        Item(
            title=title,
            link=f"{site}/news/{i}-{title.split()[0].lower()}?utm_source=rss",
            guid=f"{site}/id/{1000 + i}",
            description=f"&lt;p&gt;{title}. &lt;a href=&quot;/more/{i}&quot;&gt;More&lt;/a&gt;"
            f" &amp;mdash; updated&lt;/p&gt;",
            categories=cats,
            published=base - timedelta(minutes=23 * i),
            author=f"desk{i % 3}@{site.split('//')[1]} (News desk)",
        )
        for i, (title, cats) in enumerate(stories)
    ]


@pytest.fixture
def feeds(feed_server: FeedServer) -> dict[str, str]:
    alpha, bravo = "https://alpha.example.com", "https://bravo.example.org"
    return {
        "a": feed_server.serve(
            "/a.rss", rss(headlines(alpha, ALPHA), title="Alpha News", site=alpha)
        ),
        "b": feed_server.serve(
            "/b.rss", rss(headlines(bravo, BRAVO), title="Bravo Times", site=bravo)
        ),
    }


def test_valid_edits_add_and_remove_feeds_and_keep_items(
    tmp_path: Path, db_url: str, feed_server: FeedServer, feeds: dict[str, str]
) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml(db_url, [{"url": feeds["a"]}]))
    with running(path) as (agg, base):
        wait_for("feed a polled", lambda: agg.repo.count_entries(feeds["a"]) == 12)
        assert feed_server.hits("/b.rss") == 0

        # A new feed: synced, scheduled, polled within seconds, served.
        path.write_text(feeds_yaml(db_url, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
        wait_for("feed b polled", lambda: agg.repo.count_entries(feeds["b"]) == 8)
        assert agg.scheduler is not None and feeds["b"] in agg.scheduler.feed_urls
        titles = wait_for(
            "feed b served",
            lambda: served_titles(base, f"/stories.json?source={feeds['b']}"),
        )
        assert sorted(titles) == sorted(t for t, _ in BRAVO)
        assert agg.last_config_error is None

        # Removing a feed stops it; its items stay stored and served.
        path.write_text(feeds_yaml(db_url, [{"url": feeds["b"]}]))
        wait_for("feed a unscheduled", lambda: feeds["a"] not in agg.scheduler.feed_urls)
        assert [f.url for f in agg.config.feeds] == [feeds["b"]]
        assert agg.repo.count_entries(feeds["a"]) == 12
        assert len(served_titles(base, f"/stories.json?source={feeds['a']}")) == 12
        assert not agg.polls_feed(feeds["a"])
        health = {h.url: h for h in agg.repo.feed_health()}
        assert not health[feeds["a"]].enabled and health[feeds["a"]].entries == 12


def test_interval_edit_reschedules_only_that_feed(
    tmp_path: Path, feed_server: FeedServer, feeds: dict[str, str]
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml(db, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
    with running(path) as (agg, _base):
        sched = agg.scheduler
        assert sched is not None
        wait_for("both polled", lambda: agg.repo.count_entries() == 20)
        path.write_text(
            feeds_yaml(db, [{"url": feeds["a"], "interval": "2h"}, {"url": feeds["b"]}])
        )
        wait_for("a's interval applied", lambda: sched.interval(feeds["a"]).total_seconds() == 7200)
        assert sched.interval(feeds["b"]).total_seconds() == 1800
        # Disabling is a change too: the job goes, the stored items stay.
        path.write_text(
            feeds_yaml(db, [{"url": feeds["a"], "enabled": False}, {"url": feeds["b"]}])
        )
        wait_for("a unscheduled", lambda: sched.feed_urls == {feeds["b"]})
        assert agg.repo.count_entries(feeds["a"]) == 12


def test_invalid_edit_is_refused_with_its_line_and_the_old_config_keeps_running(
    tmp_path: Path, db_url: str, feeds: dict[str, str]
) -> None:
    path = tmp_path / "feeds.yaml"
    good = feeds_yaml(db_url, [{"url": feeds["a"]}])
    path.write_text(good)
    with running(path) as (agg, base):
        wait_for("feed a polled", lambda: agg.repo.count_entries(feeds["a"]) == 12)
        running_config = agg.config
        bad = feeds_yaml(db_url, [{"url": feeds["a"]}, {"url": feeds["b"], "interval": "soon"}])
        bad_line = next(i for i, line in enumerate(bad.splitlines(), 1) if "soon" in line)
        path.write_text(bad)
        errors = wait_for("the error recorded", lambda: agg.last_config_error)
        assert any(
            e.startswith(f"{path}:{bad_line}:") and "feeds[1].interval" in e and "soon" in e
            for e in errors
        ), errors
        assert agg.config is running_config
        assert agg.scheduler is not None and agg.scheduler.feed_urls == {feeds["a"]}
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
        assert len(served_titles(base, "/stories.json")) == 12

        # Fixing the file applies it and clears the error.
        path.write_text(feeds_yaml(db_url, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
        wait_for("the fix applied", lambda: agg.repo.count_entries(feeds["b"]) == 8)
        assert agg.last_config_error is None


def test_half_written_file_is_an_invalid_edit_until_completed(
    tmp_path: Path, feeds: dict[str, str]
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml(db, [{"url": feeds["a"]}]))
    with running(path) as (agg, _base):
        wait_for("feed a polled", lambda: agg.repo.count_entries(feeds["a"]) == 12)
        full = feeds_yaml(db, [{"url": feeds["a"]}, {"url": feeds["b"], "title": "Bravo"}])
        # Cut inside feed b's URL: what a slow writer leaves between two writes.
        cut = full.index(feeds["b"]) + len("ht")
        with path.open("w") as f:
            f.write(full[:cut])
            f.flush()
            errors = wait_for("the partial file refused", lambda: agg.last_config_error)
            # The error names the line the file stops on.
            assert errors[0].startswith(f"{path}:{full[:cut].count(chr(10)) + 1}:"), errors
            assert [x.url for x in agg.config.feeds] == [feeds["a"]]
            f.write(full[cut:])
        wait_for("the completed file applied", lambda: agg.config.feed(feeds["b"]))
        assert agg.config.feed(feeds["b"]).title == "Bravo"  # type: ignore[union-attr]
        assert agg.last_config_error is None
        wait_for("feed b polled", lambda: agg.repo.count_entries(feeds["b"]) == 8)


def test_files_replaced_by_rename_are_followed(tmp_path: Path, feeds: dict[str, str]) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml(db, [{"url": feeds["a"]}]))
    with running(path) as (agg, _base):
        replace_by_rename(path, feeds_yaml(db, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
        wait_for("first rename applied", lambda: agg.config.feed(feeds["b"]))
        # The watch is on the directory, so the new inode is watched as well.
        replace_by_rename(path, feeds_yaml(db, [{"url": feeds["b"]}]))
        wait_for("second rename applied", lambda: agg.config.feed(feeds["a"]) is None)
        # vim's way: move the old file aside, write a new one.
        os.replace(path, path.with_name("feeds.yaml~"))
        path.write_text(feeds_yaml(db, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
        wait_for("backup-and-write applied", lambda: agg.config.feed(feeds["a"]))
        wait_for("both polled", lambda: agg.repo.count_entries() == 20)
        assert agg.last_config_error is None


def test_topic_edits_retag_stored_items_and_the_topic_feed_follows(
    tmp_path: Path, db_url: str, feeds: dict[str, str]
) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml(db_url, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
    with running(path) as (agg, base):
        wait_for("both polled", lambda: agg.repo.count_entries() == 20)
        assert httpx.get(base + "/topics/storms.json", timeout=5).status_code == 404
        polls = agg.repo.feed_health()

        path.write_text(
            feeds_yaml(db_url, [{"url": feeds["a"]}, {"url": feeds["b"]}], topics=[STORM_TOPIC])
        )
        titles = wait_for(
            "the new topic's feed filled by re-tagging",
            lambda: served_titles(base, "/topics/storms.json"),
        )
        assert sorted(titles) == sorted([ALPHA[1][0], ALPHA[10][0], BRAVO[0][0]]), titles
        retagged = wait_for("the retag result", lambda: agg.reloader.last_retag)
        assert retagged.topics == {"storms"} and retagged.entries == 20
        # Re-tagging fetched nothing: no feed was polled for it.
        assert [h.last_attempt_at for h in agg.repo.feed_health()] == [
            h.last_attempt_at for h in polls
        ]

        # Editing the rule re-tags that topic again: the feed narrows.
        narrower = {**STORM_TOPIC, "rules": {"keywords": ["storm force", "flooding"]}}
        path.write_text(
            feeds_yaml(db_url, [{"url": feeds["a"]}, {"url": feeds["b"]}], topics=[narrower])
        )
        wait_for(
            "the narrowed topic applied",
            lambda: (
                sorted(served_titles(base, "/topics/storms.json"))
                == sorted([ALPHA[10][0], BRAVO[0][0]])
            ),
        )
        # Removing the topic removes its feed and its stored tags.
        path.write_text(feeds_yaml(db_url, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
        wait_for(
            "the removed topic gone",
            lambda: httpx.get(base + "/topics/storms.json", timeout=5).status_code == 404,
        )
        wait_for("its tags removed", lambda: agg.repo.topic_counts().get("storms", 0) == 0)
        assert agg.repo.count_entries() == 20


def test_plan_says_what_an_edit_changes(feeds: dict[str, str]) -> None:
    old = parse_config(config_yaml([{"url": feeds["a"]}, {"url": feeds["b"]}]))
    same = plan(old, old)
    assert not same.needs_retag and not same.feeds_added and not same.context
    new = parse_config(
        feeds_yaml(
            "sqlite:////tmp/other.db",
            [{"url": feeds["b"], "tags": ["weather"]}, {"url": "https://c.example.net/feed"}],
            topics=[STORM_TOPIC],
        )
    )
    change = plan(old, new)
    assert change.feeds_added == ("https://c.example.net/feed",)
    assert change.feeds_removed == (feeds["a"],)
    assert change.feeds_changed == (feeds["b"],)
    assert change.topics_changed == ("storms",)
    # A feed's tags can decide topics (rules.feed_tags): everything is re-tagged.
    assert change.retag_all and change.retag_topics is None
    assert change.restart == ("settings.database_url",)


def many_feeds(feed_server: FeedServer, n: int) -> list[dict[str, Any]]:
    """``n`` small real feeds on the local server, each with two items."""
    out = []
    for i in range(n):
        site = f"https://site{i}.example.net"
        items = headlines(site, ALPHA[2 * (i % 6) : 2 * (i % 6) + 2])
        out.append(
            {"url": feed_server.serve(f"/f{i}.rss", rss(items, title=f"Site {i}", site=site))}
        )
    return out


def test_an_empty_or_truncated_file_is_refused_and_nothing_is_dropped(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    """Issue 22.1: an empty file, or its first half, looked valid and was applied live."""
    path = tmp_path / "feeds.yaml"
    all_feeds = many_feeds(feed_server, 10)
    full = feeds_yaml(db_url, all_feeds)
    path.write_text(full)
    poller = Aggregator.from_file(path)  # polled before: the server spreads its first polls
    try:
        poll_all(poller)
    finally:
        poller.close()
    with running(path) as (agg, base):
        assert agg.repo.count_entries() == 20
        tagged = agg.repo.topic_counts()
        assert tagged
        running_config = agg.config

        path.write_text("")
        errors = wait_for("the empty file refused", lambda: agg.last_config_error)
        assert any("empty" in e for e in errors), errors
        assert agg.config is running_config

        # The first half: valid YAML, 4 of the 10 feeds, and the topics list cut off.
        cut = full[: full.index(all_feeds[4]["url"])].rsplit("\n", 1)[0] + "\n"
        assert parse_config(cut).topics == ()
        path.write_text(cut)
        wait_for(
            "the half file refused",
            lambda: any("6 of 10" in e for e in agg.last_config_error or []),
        )
        assert any("every topic" in e for e in agg.last_config_error or [])
        assert agg.config is running_config
        assert agg.scheduler is not None and len(agg.scheduler.feed_urls) == 10
        time.sleep(1)  # no re-tag ran behind the refusal
        assert agg.repo.topic_counts() == tagged
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200

        # Removing a few feeds is an ordinary edit, and it clears the refusal.
        path.write_text(feeds_yaml(db_url, all_feeds[:7]))
        wait_for("the small removal applied", lambda: len(agg.config.feeds) == 7)
        assert agg.last_config_error is None


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff\xfe",
        b"\x00",
        b"settings:\n  default_interval: 99999999999d\nfeeds: []\n",
        b"settings:\n  default_interval: .inf\nfeeds: []\n",
        b"settings:\n  default_interval: .nan\nfeeds: []\n",
    ],
    ids=["nul-bom", "nul", "overflow", "inf", "nan"],
)
def test_unreadable_edits_are_refused_and_the_watcher_keeps_watching(
    tmp_path: Path, feeds: dict[str, str], content: bytes
) -> None:
    """Issue 22.2: ruamel's ReaderError and OverflowError ended the watch for good."""
    db = f"sqlite:///{tmp_path / 'store.db'}"
    path = tmp_path / "feeds.yaml"
    path.write_text(feeds_yaml(db, [{"url": feeds["a"]}]))
    with running(path) as (agg, _base):
        path.write_bytes(content)
        errors = wait_for("the edit refused", lambda: agg.last_config_error)
        assert errors[0].startswith(str(path)), errors
        assert [f.url for f in agg.config.feeds] == [feeds["a"]]
        # Still watching: the next valid edit is applied.
        path.write_text(feeds_yaml(db, [{"url": feeds["a"]}, {"url": feeds["b"]}]))
        wait_for("the next edit applied", lambda: agg.config.feed(feeds["b"]))
        assert agg.last_config_error is None
