"""Retention: prune to tombstones, re-polls never republish, ids never reused.

Real feeds from a local server, real stores (SQLite file and PostgreSQL), the real console
script for `aggregator prune`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import Item, config_yaml, rss
from conftest import FeedServer
from live import live_server
from live import poll_all as poll
from test_reload import ALPHA, BRAVO, headlines, wait_for
from test_status import aggregator

from aggregator import retention
from aggregator.config import ConfigError, parse_config
from aggregator.filters import StoryQuery
from aggregator.service import Aggregator

ALPHA_SITE, BRAVO_SITE = "https://alpha.example.com", "https://bravo.example.org"


def published(agg: Aggregator, topic: str | None = None) -> dict[str, str]:
    """uid -> title of every published story (of ``topic``)."""
    q = StoryQuery(all_of=(topic,) if topic else (), limit=500)
    return {s.uid: s.title for s in agg.repo.stories(q).items}


@pytest.fixture
def two_feeds(feed_server: FeedServer) -> tuple[str, str]:
    # Unconditional: every re-poll gets the whole feed again, old items included.
    a = feed_server.serve(
        "/a.rss",
        rss(headlines(ALPHA_SITE, ALPHA), title="Alpha News", site=ALPHA_SITE),
        conditional=False,
    )
    b = feed_server.serve(
        "/b.rss",
        rss(headlines(BRAVO_SITE, BRAVO), title="Bravo Times", site=BRAVO_SITE),
        conditional=False,
    )
    return a, b


def test_pruned_items_resent_are_not_new_and_ids_are_never_reused(
    tmp_path: Path, db_url: str, feed_server: FeedServer, two_feeds: tuple[str, str]
) -> None:
    a, b = two_feeds
    path = tmp_path / "feeds.yaml"
    path.write_text(
        config_yaml([{"url": a}, {"url": b, "retention": {"max_items": 2}}], database_url=db_url)
        + "retention:\n  max_items: 5\n"
    )
    agg = Aggregator.from_file(path)
    try:
        first = poll(agg)
        assert first[a].new == 12 and first[b].new == 8
        before = published(agg)
        assert len(before) == 20
        business_before = published(agg, "business")
        max_entry_id = max(s.id for s in agg.repo.entry_batch(0, 1000))

        dry = retention.prune(agg.repo, agg.config, dry_run=True)
        assert dry.pruned == {a: 7, b: 6} and dry.stories_hidden == 13
        assert len(published(agg)) == 20  # a dry run changes nothing

        counts = retention.prune(agg.repo, agg.config)
        assert counts.pruned == {a: 7, b: 6} and counts.tombstones == 13
        kept = published(agg)
        # The newest five of a and two of b (the per-feed override) stay published.
        assert sorted(kept.values()) == sorted(
            [t for t, _ in ALPHA[:5]] + [t for t, _ in BRAVO[:2]]
        )
        assert agg.repo.count_entries(a) == 5 and agg.repo.count_entries(b) == 2
        pruned_uids = set(before) - set(kept)
        assert set(published(agg, "business")) <= set(business_before)

        # The same feeds again, every old item re-sent: nothing new, nothing republished.
        again = poll(agg)
        assert (again[a].new, again[a].updated) == (0, 0) and again[b].new == 0
        assert published(agg) == kept

        # A pruned item re-sent with edits is still not news.
        edited = headlines(ALPHA_SITE, ALPHA)
        edited[
            9
        ].description += " &lt;p&gt;Correction: the planet is 40 light years away.&lt;/p&gt;"
        edited[9].title += " (corrected)"
        feed_server.serve("/a.rss", rss(edited, title="Alpha News", site=ALPHA_SITE))
        assert poll(agg)[a].new == 0 and published(agg) == kept

        # A really new item: published, with a fresh story uid and a fresh entry id.
        fresh = Item(
            title="Lighthouse keeper's diary found after a century",
            link=f"{ALPHA_SITE}/news/lighthouse",
            guid=f"{ALPHA_SITE}/id/5000",
            description="&lt;p&gt;A diary from 1925 turns up in an attic.&lt;/p&gt;",
            categories=["Heritage"],
            published=datetime.now(UTC),
        )
        feed_server.serve("/a.rss", rss([fresh, *edited], title="Alpha News", site=ALPHA_SITE))
        assert poll(agg)[a].new == 1
        now_published = published(agg)
        new_uids = set(now_published) - set(kept)
        assert [now_published[u] for u in new_uids] == [fresh.title]
        assert not new_uids & pruned_uids
        live_ids = [s.id for s in agg.repo.entry_batch(0, 1000)]
        assert max(live_ids) > max_entry_id

        # Much later, tombstones the feed stopped sending expire; no id comes back.
        feed_server.serve("/a.rss", rss([fresh], title="Alpha News", site=ALPHA_SITE))
        feed_server.serve("/b.rss", rss([], title="Bravo Times", site=BRAVO_SITE))
        poll(agg)
        later = retention.prune(agg.repo, agg.config, datetime.now(UTC) + timedelta(days=400))
        assert later.tombstones_expired >= 13
        newest_before = max(s.id for s in agg.repo.entry_batch(0, 1000))
        feed_server.serve(
            "/a.rss",
            rss(
                [
                    Item(
                        title="Second diary found in the same attic",
                        link=f"{ALPHA_SITE}/news/second-diary",
                        guid=f"{ALPHA_SITE}/id/5001",
                        description="&lt;p&gt;And a third, the owners say.&lt;/p&gt;",
                        published=datetime.now(UTC),
                    ),
                    fresh,
                ],
                title="Alpha News",
                site=ALPHA_SITE,
            ),
        )
        assert poll(agg)[a].new == 1
        assert max(s.id for s in agg.repo.entry_batch(0, 1000)) > newest_before
        assert not set(published(agg)) & pruned_uids
    finally:
        agg.close()


def test_prune_cli_dry_run_counts_then_prunes_by_days(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    now = datetime.now(UTC)
    items = [
        Item(
            title=f"Council weekly digest, week {48 - i}",
            link=f"https://council.example.gov/digest/{48 - i}",
            guid=f"digest-{48 - i}",
            description=f"&lt;p&gt;Minutes &amp;amp; decisions of week {48 - i}.&lt;/p&gt;",
            categories=["Local government"],
            published=now - timedelta(days=2 * i, hours=1),
        )
        for i in range(10)
    ]
    a = feed_server.serve(
        "/digest.rss", rss(items, title="Council", site="https://council.example.gov")
    )
    b = feed_server.serve(
        "/archive.rss", rss(items[:6], title="Archive", site="https://archive.example.gov")
    )
    (tmp_path / "feeds.yaml").write_text(
        config_yaml([{"url": a}, {"url": b, "retention": {"days": 30}}])
        + "retention:\n  days: 7\n  tombstone_days: 400\n"
    )
    assert aggregator("poll", "--once", cwd=tmp_path).returncode == 0

    dry = aggregator("prune", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    # Days 8, 10, ... 18 are past 7 days: six of the digest feed; the archive keeps 30 days.
    assert re.search(r"would prune 6 entries from 1 feed;", dry.stdout), dry.stdout
    assert a in dry.stdout and b not in dry.stdout
    status = aggregator("status", "--json", cwd=tmp_path)
    assert '"entries": 10' in status.stdout  # nothing pruned yet

    done = aggregator("prune", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pruned 6 entries from 1 feed;" in done.stdout
    again = aggregator("prune", cwd=tmp_path)
    assert "pruned 0 entries" in again.stdout and "6 kept" in again.stdout


def test_retention_keys_are_validated_with_their_line() -> None:
    text = config_yaml([{"url": "https://a.example/feed", "retention": {"max_items": 0}}])
    text += "retention:\n  days: soon\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert any("feeds[0].retention.max_items" in x for x in e.value.errors), e.value.errors
    assert any("retention.days" in x and ":" in x.split(" ")[0] for x in e.value.errors)


def test_the_running_server_prunes_on_its_own(tmp_path: Path, two_feeds: tuple[str, str]) -> None:
    a, b = two_feeds
    path = tmp_path / "feeds.yaml"
    path.write_text(
        config_yaml([{"url": a}, {"url": b}], database_url=f"sqlite:///{tmp_path / 's.db'}")
        + "retention:\n  max_items: 3\n  every: 1s\n"
    )
    agg = Aggregator.from_file(path)
    try:
        with live_server(agg, poll=True):
            wait_for("both polled and pruned", lambda: agg.repo.count_entries() == 6, 60)
            assert agg.pruner is not None and agg.pruner.runs >= 1
    finally:
        agg.close()
