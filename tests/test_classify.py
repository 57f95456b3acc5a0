"""The semantic classifier: offline model, learned calibrated heads, exclude, switch off."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from builders import Item, rss
from conftest import FeedServer
from test_dedup import entry

from aggregator.classify import classifier_unavailable
from aggregator.config import parse_config
from aggregator.embed import shared_embedder
from aggregator.filters import StoryQuery
from aggregator.service import Aggregator
from aggregator.tag import Tagger

TOPICS = """
topics:
  - name: Foreign relations
    slug: foreign-relations
    description: Diplomacy and relations between countries, treaties, summits and sanctions.
    rules:
      keywords: [embassy]
      exclude:
        - keywords: [quiz]
    classifier:
      threshold: 0.30
      examples:
        - Foreign ministers meet to revive stalled peace talks
        - Country expels ambassador after spying row
  - name: Sport
    slug: sport
    description: Sport, football, cricket, tennis, matches and tournaments.
    classifier:
      threshold: 0.30
      examples:
        - Late goal sends home side to cup final
        - Team wins title on final day of season
"""


def test_model_loads_from_the_package_offline() -> None:
    assert classifier_unavailable() is None
    embedder = shared_embedder()
    assert embedder is not None
    vectors = embedder.encode(["a test sentence", "una frase de prueba"])
    assert vectors.shape == (2, 384)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-4


def test_classifier_tags_what_no_rule_names_with_its_score() -> None:
    cfg = parse_config(TOPICS)
    tagger = Tagger.from_config(cfg)
    assert tagger.classifier is not None
    items = [
        entry(title="Leaders sign border accord after decades of dispute", text="", categories=()),
        entry(title="Striker scores twice as champions stay top", text="", categories=()),
        entry(title="Diplomacy quiz: how well do you know world leaders?", text="", categories=()),
        entry(title="Recipe: a quick tomato soup", text="", categories=()),
    ]
    results = tagger.analyse_many(items)
    tags = [dict(r.tags) for r in results]
    assert tags[0]["foreign-relations"].startswith("classifier 0.")
    assert tags[0]["foreign-relations"].endswith(" >= 0.30")
    assert "sport" not in tags[0]
    assert tags[1]["sport"].startswith("classifier ")
    assert "foreign-relations" not in tags[1]
    assert "foreign-relations" not in tags[2]  # excluded, whatever the score
    assert not {"foreign-relations", "sport"} & set(tags[3])


def test_rules_win_first_and_classifier_can_be_switched_off() -> None:
    cfg = parse_config(TOPICS + "tagging:\n  classifier: false\n")
    tagger = Tagger.from_config(cfg)
    assert tagger.classifier is None
    hit = dict(tagger.tag(entry(title="New embassy opens", text="", categories=())))
    assert hit["foreign-relations"] == 'keyword "embassy" in title'
    miss = tagger.tag(entry(title="Leaders sign border accord", text="", categories=()))
    assert "foreign-relations" not in dict(miss)


def test_the_pipeline_tags_with_the_classifier_in_one_batch(
    tmp_path: Path, db_url: str, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aggregator.classify as classify

    batches: list[int] = []
    scores = classify.Classifier.scores

    def counting(self: classify.Classifier, items: Sequence[str]) -> list[dict[str, float]]:
        batches.append(len(items))
        return scores(self, items)

    # Counts the calls and lets them through to the real model.
    monkeypatch.setattr(classify.Classifier, "scores", counting)
    items = [
        Item("Leaders sign border accord after decades of dispute", "https://n.example/1"),
        Item("Striker scores twice as champions stay top", "https://n.example/2"),
        Item("Recipe: a quick tomato soup", "https://n.example/3"),
    ]
    url = feed_server.serve("/news.rss", rss(items), content_type="application/rss+xml")
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"settings: {{database_url: '{db_url}'}}\n"
        "polling: {allow_private_addresses: true}\n"
        f"feeds: [{{url: '{url}'}}]\n" + TOPICS
    )
    agg = Aggregator.from_file(path)

    async def run() -> None:
        try:
            await agg.poll_all()
        finally:
            await agg.stop()

    asyncio.run(run())
    topics = {s.title: s.topics for s in agg.repo.stories(StoryQuery(limit=10)).items}
    agg.repo.close()
    assert topics == {
        items[0].title: ("foreign-relations",),
        items[1].title: ("sport",),
        items[2].title: (),
    }
    assert batches == [3]  # the whole poll in one batch
