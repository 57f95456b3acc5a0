"""Re-tagging stored items and explaining tags, on a real store filled by a real poll."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from builders import Item, rss
from conftest import FeedServer

from aggregator.config import Config, parse_config
from aggregator.explain import explain
from aggregator.filters import StoryQuery
from aggregator.retag import retag
from aggregator.service import Aggregator
from aggregator.tag import Tagger
from aggregator.web import create_app
from storage.tagging import TagChange

ITEMS = [
    Item(
        "Ambassador recalled after embassy row",
        "https://n.example/1",
        description="The foreign minister said talks with Colombia were off.",
        categories=["World"],
    ),
    Item(
        "Striker scores twice as champions stay top",
        "https://n.example/2",
        categories=["Football"],
    ),
    Item(
        "Parliament passes budget after long debate",
        "https://n.example/3",
        description="Ministers said the tax changes start in April.",
        categories=["Politics"],
    ),
]

TOPICS = """
topics:
  - name: Foreign relations
    slug: foreign-relations
    rules:
      keywords: [embassy]
  - name: Sport
    slug: sport
    rules:
      categories: [sport]
  - name: Politics
    slug: politics
    rules:
      keywords: [senate]
"""

# The admin edits the topics: politics now knows "parliament"; foreign relations excludes
# rows; sport is gone.
NEW_TOPICS = """
topics:
  - name: Foreign relations
    slug: foreign-relations
    rules:
      keywords: [embassy, ambassador]
      exclude:
        - keywords: [row]
          in: [title]
  - name: Politics
    slug: politics
    rules:
      keywords: [senate, parliament]
"""


def _yaml(url: str, db_url: str, topics: str) -> str:
    return (
        f"settings: {{database_url: '{db_url}'}}\n"
        "polling: {allow_private_addresses: true}\n"
        f"feeds: [{{url: '{url}'}}]\n" + topics
    )


@pytest.fixture
def agg(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Iterator[Aggregator]:
    url = feed_server.serve("/news.rss", rss(ITEMS), content_type="application/rss+xml")
    path = tmp_path / "feeds.yaml"
    path.write_text(_yaml(url, db_url, TOPICS))
    a = Aggregator.from_file(path)

    async def run() -> None:
        try:
            await a.poll_all()
        finally:
            await a.stop()

    asyncio.run(run())
    yield a
    a.close()


def topics_by_title(agg: Aggregator) -> dict[str, set[str]]:
    return {
        s.title: {t for t in s.topics if not t.startswith("place:")}
        for s in agg.repo.stories(StoryQuery(limit=50)).items
    }


def new_config(agg: Aggregator) -> Config:
    return parse_config(_yaml("https://x.example/f", agg.repo.url, NEW_TOPICS))


def test_retag_applies_changed_topics_and_publishes(agg: Aggregator) -> None:
    assert topics_by_title(agg) == {
        ITEMS[0].title: {"foreign-relations"},
        ITEMS[1].title: {"sport"},
        ITEMS[2].title: set(),
    }
    version = agg.repo.content_version()
    seen: list[tuple[int, int]] = []
    result = retag(
        agg.repo, new_config(agg), progress=lambda d, t: seen.append((d, t)), batch_size=2
    )
    assert topics_by_title(agg) == {
        ITEMS[0].title: set(),  # excluded now: "row" in the title
        ITEMS[1].title: set(),  # the topic is gone
        ITEMS[2].title: {"politics"},
    }
    assert (result.entries, result.changed) == (3, 3)
    assert result.topics == {"foreign-relations", "sport", "politics"}
    assert seen == [(0, 3), (2, 3), (3, 3)]  # batches of two
    assert agg.repo.content_version() > version  # the topic feeds are published anew
    # Place tags are kept (the gazetteer did not change), with their reasons.
    stored = agg.repo.stored_entries([1, 2, 3])
    assert ("place:co", 'place "Colombia" (name)') in stored[0].tags
    # A second run finds nothing to do and publishes nothing.
    version = agg.repo.content_version()
    again = retag(agg.repo, new_config(agg))
    assert (again.entries, again.changed, again.topics) == (3, 0, set())
    assert agg.repo.content_version() == version


def test_retag_one_topic_leaves_the_others_alone(agg: Aggregator) -> None:
    result = retag(agg.repo, new_config(agg), topics=["politics"])
    assert result.topics == {"politics"}
    assert topics_by_title(agg) == {
        ITEMS[0].title: {"foreign-relations"},  # not re-tagged: still in
        ITEMS[1].title: {"sport"},
        ITEMS[2].title: {"politics"},
    }
    # A topic no longer in feeds.yaml: re-tagging it removes its tags.
    assert retag(agg.repo, new_config(agg), topics=["sport"]).topics == {"sport"}
    assert topics_by_title(agg)[ITEMS[1].title] == set()


def test_a_poll_in_between_wins_over_a_stale_retag(agg: Aggregator) -> None:
    [stored] = agg.repo.stored_entries([2])
    stale = TagChange(stored.id, "0" * 64, (), stored.language)
    assert agg.repo.replace_tags([stale]) == set()
    assert dict(agg.repo.stored_entries([2])[0].tags)["sport"] == 'category "Football" as "sport"'


def test_explain_shows_stored_reasons_and_todays_verdicts(agg: Aggregator) -> None:
    [e] = explain(agg.repo, agg.tagger, "1")
    assert e.title == ITEMS[0].title
    assert e.stored["foreign-relations"] == 'keyword "embassy" in title'
    verdicts = {v.topic: v for v in e.now}
    assert verdicts["foreign-relations"].reason == 'keyword "embassy" in title'
    assert verdicts["politics"].reason is None
    assert verdicts["politics"].why_not == "no rule matched"
    # By published item id too; with the new topics the exclusion is named.
    [same] = explain(agg.repo, Tagger.from_config(new_config(agg)), e.story)
    verdict = {v.topic: v for v in same.now}["foreign-relations"]
    assert verdict.reason is None
    assert (
        verdict.why_not == 'excluded: keyword "row" in title (else: keyword "Ambassador" in title)'
    )
    assert explain(agg.repo, agg.tagger, "999") == []
    assert explain(agg.repo, agg.tagger, "urn:aggregator:story:nope") == []


def test_admin_explain_route(agg: Aggregator, admin_headers: dict[str, str]) -> None:
    app = create_app(agg, poll=False)

    async def get(path: str, headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
            return await c.get(path, headers=headers)

    r = asyncio.run(get("/admin/items/2/explain", admin_headers))
    assert r.status_code == 200
    [entry] = r.json()["entries"]
    assert entry["tags"] == [{"tag": "sport", "reason": 'category "Football" as "sport"'}]
    assert {"topic": "sport", "in": True, "reason": 'category "Football" as "sport"'} in entry[
        "topics_now"
    ]
    assert r.headers["cache-control"] == "no-store"
    assert asyncio.run(get("/admin/items/2/explain", {})).status_code == 401
    missing = asyncio.run(get("/admin/items/77/explain", admin_headers))
    assert missing.status_code == 404 and "77" in missing.json()["error"]


def test_cli_retag_and_explain(agg: Aggregator) -> None:
    path = agg.config_path
    path.write_text(path.read_text().replace(TOPICS, NEW_TOPICS))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("AGGREGATOR_DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aggregator", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    done = cli("retag", "--topic", "politics")
    assert done.returncode == 0, done.stderr
    assert "3 items re-tagged, 1 changed" in done.stdout
    assert "politics" in done.stdout
    done = cli("explain", "3")
    assert done.returncode == 0, done.stderr
    assert ITEMS[2].title in done.stdout
    assert 'keyword "Parliament" in title' in done.stdout
    assert "no rule matched" in done.stdout
    done = cli("explain", "12345")
    assert done.returncode == 1
    assert "no stored item" in done.stderr
    # A slug neither configured nor stored is a typo, not a removal (issue 22.14).
    done = cli("retag", "--topic", "nosuch")
    assert done.returncode == 2, done.stdout
    assert "no topic 'nosuch'" in done.stderr and "stored tags are removed" not in done.stdout
