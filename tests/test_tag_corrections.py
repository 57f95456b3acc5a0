"""Admins' tag corrections (issue 20): stored, winning over rules and the model at every later
tagging (re-tag, re-poll of an edited item, a copy joining the story), through the CLI and
the admin API, and learned from by the classifier."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from builders import Item, rss
from conftest import FeedServer
from test_dedup import entry

from aggregator.config import parse_config
from aggregator.corrections import CorrectionError, correct
from aggregator.explain import explain
from aggregator.filters import StoryQuery
from aggregator.learn import learned_examples
from aggregator.retag import retag
from aggregator.service import Aggregator
from aggregator.tag import Tagger, classifier_text, filings
from aggregator.types import CORRECTED, FeedContext, ParsedEntry
from aggregator.web import create_app

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
        description="A late double settled the derby.",
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


def _yaml(urls: list[str], db_url: str) -> str:
    feeds = ", ".join(f"{{url: '{u}'}}" for u in urls)
    return (
        f"settings: {{database_url: '{db_url}'}}\n"
        "polling: {allow_private_addresses: true}\n"
        "tagging: {classifier: false}\n"
        f"feeds: [{feeds}]\n" + TOPICS
    )


def poll(agg: Aggregator) -> None:
    async def run() -> None:
        try:
            await agg.poll_all()
        finally:
            await agg.stop()

    asyncio.run(run())


@pytest.fixture
def agg(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Iterator[Aggregator]:
    url = feed_server.serve("/news.rss", rss(ITEMS), content_type="application/rss+xml")
    path = tmp_path / "feeds.yaml"
    path.write_text(_yaml([url], db_url))
    a = Aggregator.from_file(path)
    poll(a)
    yield a
    a.close()


def topics_by_title(agg: Aggregator) -> dict[str, set[str]]:
    return {
        s.title: {t for t in s.topics if not t.startswith("place:")}
        for s in agg.repo.stories(StoryQuery(limit=50)).items
    }


def in_feed(agg: Aggregator, topic: str) -> list[str]:
    return [s.title for s in agg.repo.stories(StoryQuery(all_of=(topic,), limit=50)).items]


def test_a_correction_wins_over_the_rules_and_survives_retag_and_edits(
    agg: Aggregator, feed_server: FeedServer
) -> None:
    striker, budget = ITEMS[1].title, ITEMS[2].title
    assert topics_by_title(agg)[striker] == {"sport"}
    version = agg.repo.content_version()
    out = correct(agg.repo, agg.tagger, "2", "sport", False)
    assert out.feeds == {"sport"} and out.entries == (2,)
    put = correct(agg.repo, agg.tagger, "3", "foreign-relations", True)
    assert put.feeds == {"foreign-relations"}
    assert topics_by_title(agg)[striker] == set()
    assert topics_by_title(agg)[budget] == {"foreign-relations"}
    assert striker not in in_feed(agg, "sport") and budget in in_feed(agg, "foreign-relations")
    assert agg.repo.content_version() > version  # the topic feeds are published anew
    assert dict(agg.repo.stored_entries([3])[0].tags)["foreign-relations"] == CORRECTED

    # A full re-tag decides by the rules again, and the corrections still win.
    result = retag(agg.repo, agg.config)
    assert result.changed == 0, result
    assert topics_by_title(agg)[striker] == set()
    assert topics_by_title(agg)[budget] == {"foreign-relations"}

    # The publisher edits the item (still a football story): the poll re-tags the new text,
    # and the correction holds.
    edited = [
        ITEMS[0],
        dataclasses.replace(ITEMS[1], description="Edited: a late double."),
        ITEMS[2],
    ]
    feed_server.serve("/news.rss", rss(edited), content_type="application/rss+xml")
    poll(agg)
    [stored] = agg.repo.stored_entries([2])
    assert stored.entry.summary_html.startswith("Edited"), stored.entry.summary_html
    assert "sport" not in dict(stored.tags)

    # explain shows the correction beside what the rules say.
    [why] = explain(agg.repo, agg.tagger, "2")
    assert why.corrections == {"sport": False}
    assert next(v for v in why.now if v.topic == "sport").reason is not None

    # Forgotten, the rules decide again.
    back = correct(agg.repo, agg.tagger, "2", "sport", None)
    assert back.feeds == {"sport"}
    assert topics_by_title(agg)[striker] == {"sport"}
    assert [c.topic for c in agg.repo.tag_corrections()] == ["foreign-relations"]


def test_a_copy_joining_a_corrected_story_carries_the_correction(
    agg: Aggregator, feed_server: FeedServer
) -> None:
    correct(agg.repo, agg.tagger, "2", "sport", False)
    # Another outlet carries the same article (same link): it joins the story.
    other = feed_server.serve("/other.rss", rss([ITEMS[1]]), content_type="application/rss+xml")
    agg.config_path.write_text(_yaml([feed_server.url("/news.rss"), other], agg.repo.url))
    again = Aggregator.from_file(agg.config_path)
    try:
        poll(again)
        entries = again.repo.stored_entries(again.repo.story_entry_ids(topics_uid(again)))
        assert len(entries) == 2
        assert all("sport" not in dict(e.tags) for e in entries)
        assert all(e.corrections == {"sport": False} for e in entries)
        assert ITEMS[1].title not in in_feed(again, "sport")
        # ...and keeps it at the next re-tag.
        retag(again.repo, again.config)
        assert ITEMS[1].title not in in_feed(again, "sport")
    finally:
        again.close()


def topics_uid(agg: Aggregator) -> str:
    [stored] = agg.repo.stored_entries([2])
    return stored.story_uid


def test_a_correction_of_nothing_changes_nothing(agg: Aggregator) -> None:
    with pytest.raises(CorrectionError, match="no topic 'sprot'.*did you mean 'sport'"):
        correct(agg.repo, agg.tagger, "2", "sprot", False)
    with pytest.raises(CorrectionError, match="no stored item '999'"):
        correct(agg.repo, agg.tagger, "999", "sport", False)
    assert agg.repo.tag_corrections() == []
    assert topics_by_title(agg)[ITEMS[1].title] == {"sport"}


def test_admin_api_corrects_lists_and_forgets(
    agg: Aggregator, admin_headers: dict[str, str]
) -> None:
    app = create_app(agg, poll=False)

    async def call(method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
            r = await c.request(method, path, headers=headers)
            await asyncio.sleep(0.05)  # the background retrain (classifier off: a no-op)
            return r

    assert asyncio.run(call("DELETE", "/admin/items/2/tags/sport", {})).status_code == 401
    uid = topics_uid(agg)
    r = asyncio.run(
        call("DELETE", f"/admin/items/urn:aggregator:story:{uid}/tags/sport", admin_headers)
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "story": uid,
        "entries": [2],
        "topic": "sport",
        "in": False,
        "feeds_changed": ["sport"],
    }
    r = asyncio.run(call("PUT", "/admin/items/3/tags/politics", admin_headers))
    assert r.status_code == 200 and r.json()["in"] is True
    listed = asyncio.run(call("GET", "/admin/corrections?limit=10", admin_headers)).json()
    assert [(c["entry_id"], c["topic"], c["in"]) for c in listed["corrections"]] == [
        (3, "politics", True),
        (2, "sport", False),
    ]
    assert listed["corrections"][1]["title"] == ITEMS[1].title
    assert topics_by_title(agg)[ITEMS[2].title] == {"politics"}
    r = asyncio.run(call("DELETE", "/admin/items/3/corrections/politics", admin_headers))
    assert r.status_code == 200 and r.json()["in"] is None
    assert topics_by_title(agg)[ITEMS[2].title] == set()
    bad = asyncio.run(call("PUT", "/admin/items/3/tags/nope", admin_headers))
    assert bad.status_code == 404 and "no topic 'nope'" in bad.json()["error"]
    bad = asyncio.run(call("GET", "/admin/corrections?limit=0", admin_headers))
    assert bad.status_code == 400


def test_cli_tags_add_remove_and_list(agg: Aggregator) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("AGGREGATOR_DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aggregator", *args, "--config", str(agg.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    done = cli("tags", "remove", "2", "sport")
    assert done.returncode == 0, done.stderr
    assert "(1 entry) is not in sport; feeds changed: sport" in done.stdout
    done = cli("tags", "add", "3", "politics")
    assert done.returncode == 0, done.stderr
    assert topics_by_title(agg)[ITEMS[1].title] == set()
    assert topics_by_title(agg)[ITEMS[2].title] == {"politics"}
    done = cli("tags", "corrections")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if "sport" in ln or "politics" in ln]
    assert "politics" in lines[0] and "yes" in lines[0] and ITEMS[2].title in lines[0]
    assert "sport" in lines[1] and "no" in lines[1]
    done = cli("explain", "2")
    assert "out: correction by an admin" in done.stdout
    done = cli("tags", "add", "3", "polítics")
    assert done.returncode == 1 and "no topic" in done.stderr and "politics" in done.stderr


CLASSIFIER_TOPICS = """
topics:
  - name: Sport
    slug: sport
    description: Sport, football, cricket, tennis, matches and tournaments.
    classifier:
      threshold: 0.5
      examples:
        - Late goal sends home side to cup final
        - Team wins title on final day of season
        - Tennis star knocked out in the first round
  - name: Business
    slug: business
    description: Companies, markets, trade, jobs and the economy.
    classifier:
      threshold: 0.5
      examples:
        - Shares fall as the central bank raises rates
        - Carmaker to cut 2,000 jobs after sales slump
        - Retailer reports record profits for the holiday quarter
"""


def test_the_classifier_learns_from_corrections_deterministically(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    ambiguous = Item(
        "Club owners sell stadium naming rights in record deal",
        "https://n.example/naming",
        description="The football club's owners signed a sponsorship worth millions.",
    )
    url = feed_server.serve("/x.rss", rss([ambiguous]), content_type="application/rss+xml")
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"settings: {{database_url: '{db_url}'}}\n"
        "polling: {allow_private_addresses: true}\n"
        f"feeds: [{{url: '{url}'}}]\n" + CLASSIFIER_TOPICS
    )
    agg = Aggregator.from_file(path)
    try:
        poll(agg)
        [stored] = agg.repo.stored_entries([1])
        item = stored.entry
        before = agg.tagger._scores([item])[0]
        correct(agg.repo, agg.tagger, "1", "business", True)
        correct(agg.repo, agg.tagger, "1", "sport", False)
        learned = learned_examples(agg.repo, agg.config.topics)
        assert [e[:3] for e in learned] == [
            (classifier_text(item), "business", True),
            (classifier_text(item), "sport", False),
        ]
        # The next training (a reload, a restart) learns from them...
        first = Tagger.from_config(agg.config, learned=learned)
        after = first._scores([item])[0]
        assert after["business"] > before["business"] + 0.1, (before, after)
        assert after["sport"] < before["sport"] - 0.1, (before, after)
        # ...and a similar item the admins never saw moves the same way.
        similar = entry(title="Football club agrees shirt sponsorship deal", text="", categories=())
        was, now = agg.tagger._scores([similar])[0], first._scores([similar])[0]
        assert now["business"] > was["business"], (was, now)
        # Training is deterministic: the same store gives the same heads, bit for bit.
        second = Tagger.from_config(
            agg.config, learned=learned_examples(agg.repo, agg.config.topics)
        )
        assert first.classifier is not None and second.classifier is not None
        for slug, head in first.classifier.heads.items():
            other = second.classifier.heads[slug]
            assert np.array_equal(head.w, other.w) and (head.b, head.a, head.c) == (
                other.b,
                other.a,
                other.c,
            )
        # A restart trains on the store's corrections by itself.
        restarted = Aggregator.from_file(path)
        try:
            assert restarted.tagger._scores([item])[0] == pytest.approx(after)
        finally:
            restarted.close()
    finally:
        agg.close()


CHESS = [
    "Grandmaster wins the world chess championship after a tie-break",
    "Teenager becomes the youngest chess grandmaster in history",
    "Chess olympiad: the home team takes gold on the final board",
    "World chess champion loses to a rival in a rapid game",
    "Chess federation bans a player over a cheating scandal",
    "Blitz chess final goes to sudden death at the tournament",
]
ARTS = [
    "Gallery opens a retrospective of the painter's late work",
    "Orchestra announces its new season of concerts",
    "Novelist wins the national book prize for a debut",
    "Film festival opens with a documentary about the sea",
]


def test_the_store_teaches_what_publishers_categories_and_feed_tags_say(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    """Items a publisher filed under a topic's category (or a feed tagged for a topic) teach
    its head; those filed elsewhere are its negatives; keyword tags teach nothing."""
    filed = [
        Item(t, f"https://n.example/chess/{i}", description="", categories=["Sport"])
        for i, t in enumerate(CHESS)
    ]
    filed += [
        Item(t, f"https://n.example/arts/{i}", description="", categories=["Arts"])
        for i, t in enumerate(ARTS)
    ]
    keyword = Item("Derby day crowds fill the town", "https://n.example/d", categories=["Local"])
    a = feed_server.serve("/a.rss", rss([*filed, keyword]), content_type="application/rss+xml")
    markets = [Item("Copper hits a record on supply fears", "https://m.example/1")]
    b = feed_server.serve("/b.rss", rss(markets), content_type="application/rss+xml")
    topics = CLASSIFIER_TOPICS.replace(
        "    classifier:\n      threshold: 0.5\n      examples:\n        - Late goal",
        "    rules:\n      categories: [sport]\n      keywords: [derby]\n"
        "    classifier:\n      threshold: 0.5\n      examples:\n        - Late goal",
    ).replace(
        "    classifier:\n      threshold: 0.5\n      examples:\n        - Shares fall",
        "    rules:\n      feed_tags: [markets]\n"
        "    classifier:\n      threshold: 0.5\n      examples:\n        - Shares fall",
    )
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"settings: {{database_url: '{db_url}'}}\n"
        "polling: {allow_private_addresses: true}\n"
        f"feeds: [{{url: '{a}'}}, {{url: '{b}', tags: [markets]}}]\n" + topics
    )
    agg = Aggregator.from_file(path)
    try:
        poll(agg)
        learned = learned_examples(agg.repo, agg.config.topics)
        sides: dict[tuple[str, bool], set[str]] = {}
        for e in learned:
            sides.setdefault((e.topic, e.inside), set()).add(e.text)
        assert sides[("sport", True)] == set(CHESS)
        assert sides[("sport", False)] == set(ARTS)  # filed under Arts, not Sport
        assert sides[("business", True)] == {markets[0].title}
        assert ("business", False) not in sides  # no categories rule: nothing says "not"
        assert all(keyword.title not in e.text for e in learned)  # a keyword is no signal
        # Event matching's stored embeddings are reused, not computed again.
        assert all(e.vector is not None for e in learned)
        # An uncategorised chess item is now sport, by what the publisher's filing taught.
        new = entry(title="Chess prodigy, 12, beats a world champion", text="", categories=())
        alone = Tagger.from_config(agg.config)._scores([new])[0]
        taught = Tagger.from_config(agg.config, learned=learned)._scores([new])[0]
        assert taught["sport"] > alone["sport"] + 0.1, (alone, taught)
        assert taught["sport"] >= 0.5, taught
        # A feed whose categories file sport is trusted with its categorised items: the
        # model adds sport to its uncategorised item, not to one it filed under Arts (as it
        # still does for a feed whose categories never said sport).
        assert filings(learned) == {"sport": frozenset({a})}
        tagger = Tagger.from_config(agg.config, learned=learned)
        arts = dataclasses.replace(new, categories=("Arts",))

        def sport(item: ParsedEntry, feed: str) -> bool:
            return "sport" in {x.topic for x in tagger.analyse(item, FeedContext(url=feed)).tags}

        assert sport(new, a) and not sport(arts, a) and sport(arts, b)
        [why] = [v for v in tagger.explain(arts, FeedContext(url=a)) if v.topic == "sport"]
        assert why.why_not is not None and "files this topic by category" in why.why_not
    finally:
        agg.close()


def test_corrections_with_the_classifier_off_still_tag_by_rules(agg: Aggregator) -> None:
    assert agg.tagger.classifier is None
    correct(agg.repo, agg.tagger, "1", "politics", True)
    assert agg.learned() == []  # nothing to train
    rules = parse_config(_yaml(["https://x.example/f"], agg.repo.url))
    retag(agg.repo, rules)
    assert topics_by_title(agg)[ITEMS[0].title] == {"foreign-relations", "politics"}
