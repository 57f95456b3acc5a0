"""Topic rules: categories (normalised), feed tags, keywords and regexes, with reasons."""

from __future__ import annotations

from pathlib import Path

from test_dedup import entry

from aggregator.config import load_config, parse_config
from aggregator.tag import Tagger, normalise_category

ROOT = Path(__file__).parent.parent


def shipped() -> Tagger:
    cfg = load_config(ROOT / "feeds.yaml")
    return Tagger(cfg.topics, cfg.category_synonyms)


def slugs(tags: tuple[object, ...]) -> set[str]:
    return {t.topic for t in tags}  # type: ignore[attr-defined]


def test_colombia_item_categories() -> None:
    e = entry(
        title="U.S. and Bogotá expand intelligence sharing on cocaine routes",
        text="Officials from both governments met on Tuesday.",
        categories=("Colombia", "foreign relations", "intelligence", "politics", "USA"),
    )
    tags = shipped().tag(e)
    assert {"foreign-relations", "politics", "colombia"} <= slugs(tags)
    assert "sport" not in slugs(tags)
    reasons = dict(tags)
    assert reasons["foreign-relations"] == 'category "foreign relations"'


def test_category_normalisation_and_synonyms() -> None:
    assert normalise_category("  Arts &  Culture ") == "arts and culture"
    assert normalise_category("Foreign-Relations") == "foreign relations"
    t = shipped()
    assert "foreign-relations" in slugs(t.tag(entry(categories=("International Relations",))))
    assert "foreign-relations" in slugs(t.tag(entry(categories=("DIPLOMACY",))))
    assert "sport" in slugs(t.tag(entry(categories=("Sports",))))
    assert "world" in slugs(t.tag(entry(categories=("World/Americas",))))
    assert "sport" in slugs(t.tag(entry(categories=("Soccer",))))


def test_keywords_are_whole_words_case_insensitive_with_reason() -> None:
    t = shipped()
    hit = t.tag(entry(title="New AMBASSADOR named", text="", categories=()))
    assert dict(hit)["foreign-relations"] == 'keyword "AMBASSADOR" in title'
    # "summit" inside another word is not the keyword.
    miss = t.tag(entry(title="Summitville mine reopens", text="", categories=()))
    assert "foreign-relations" not in slugs(miss)
    phrase = t.tag(entry(title="x", text="the foreign\n  minister said", categories=()))
    assert dict(phrase)["foreign-relations"] == 'keyword "foreign\n  minister" in text'


def test_regex_and_feed_tags() -> None:
    cfg = parse_config(
        "topics:\n"
        "  - name: Chips\n"
        "    slug: chips\n"
        "    rules:\n"
        "      regex: ['\\bTSMC|Nvidia\\b']\n"
        "      feed_tags: [Hardware]\n"
    )
    t = Tagger(cfg.topics)
    assert dict(t.tag(entry(title="nvidia results", categories=())))["chips"].startswith("regex")
    assert dict(t.tag(entry(title="x", categories=()), feed_tags=["hardware"]))["chips"] == (
        'feed tag "hardware"'
    )
    assert t.tag(entry(title="bananas", text="", categories=())) == ()


def test_languages_worked_out_in_the_parser_process_tag_the_same() -> None:
    """pipeline.prepare(language=True) detects each item's language; tagging then gives
    what it gave alone."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from aggregator.dedup import DEFAULT_POLICY
    from aggregator.pipeline import prepare
    from aggregator.types import FeedContext, Fetched

    data = ROOT / "tests" / "data" / "feeds"
    tagger = shipped()
    seen: set[str | None] = set()
    for name in ("dw_rdf.rdf", "bbc_world.rss", "npr_news.json"):
        body = (data / name).read_bytes()
        url = f"https://feeds.example/{name}"
        fetched = Fetched(url, url, 200, body, {}, None, None, 0)
        parsed, intents = prepare(
            fetched, url, datetime(2026, 11, 24, tzinfo=UTC), DEFAULT_POLICY.tracking, language=True
        )
        assert intents and all(i.entry.language_known for i in intents)
        feed = FeedContext((), parsed.title, parsed.language)
        here = tagger.analyse_many([i.entry for i in intents], feed)
        alone = tagger.analyse_many(
            [replace(i.entry, language=None, language_known=False) for i in intents], feed
        )
        assert here == alone
        seen |= {t.language for t in here}
    assert "en" in seen  # languages were really detected
