"""The topic rule language: every rule form, scopes, nesting, exclude, and bad rules."""

from __future__ import annotations

import pytest
from test_dedup import entry

from aggregator.config import parse_config
from aggregator.exceptions import ConfigError
from aggregator.rules import FeedContext
from aggregator.tag import Tagger


def tagger(rules_yaml: str, *, languages: str = "", extra: str = "") -> Tagger:
    """A tagger with one topic 't' whose ``rules:`` block is ``rules_yaml``."""
    indented = "\n".join("      " + line for line in rules_yaml.strip("\n").splitlines())
    text = "topics:\n  - name: T\n    slug: t\n" + languages + "    rules:\n" + indented + "\n"
    cfg = parse_config(text + extra)
    return Tagger(cfg.topics, cfg.category_synonyms, settings=cfg.tagging)


def reason(t: Tagger, feed: FeedContext | None = None, **kw: object) -> str | None:
    kw.setdefault("categories", ())
    kw.setdefault("text", "")
    tags = dict(t.analyse(entry(**kw), feed).tags)
    return tags.get("t")


def test_keywords_any_whole_word_case_and_accent_insensitive() -> None:
    t = tagger("keywords: [Bogotá, peace talks]")
    assert reason(t, title="Talks resume in BOGOTA") == 'keyword "BOGOTA" in title'
    assert reason(t, title="x", text="bogota mayor") == 'keyword "bogota" in text'
    assert reason(t, title="Protesters in Bogotá") == 'keyword "Bogota" in title'
    assert reason(t, title="the Peace\n Talks began") == 'keyword "Peace\n Talks" in title'
    assert reason(t, title="Bogotanos celebrate") is None  # whole words only
    assert reason(t, title="peacetalks") is None


def test_all_any_none_of_keywords_and_nesting() -> None:
    t = tagger(
        """
match:
  - all: [sanctions, Russia]
  - any:
      - all: [tariff, {any: [China, Beijing]}]
      - none: [football, cricket]
        in: [categories]
"""
    )
    assert reason(t, title="EU sanctions on Russia", categories=("Football",)) == (
        'keyword "sanctions" in title and keyword "Russia" in title'
    )
    assert reason(t, title="sanctions only", categories=("Football",)) is None
    assert reason(t, title="A tariff on Beijing", categories=("Cricket",)) == (
        'keyword "tariff" in title and keyword "Beijing" in title'
    )
    # none: matches when no child does, in the scope given.
    assert reason(t, title="anything", categories=("Politics",)) == (
        "none of keywords [football]; keywords [cricket]"
    )
    assert reason(t, title="anything", categories=("Cricket",)) is None


def test_regex_rule_and_scopes() -> None:
    t = tagger(
        r"""
match:
  - regex: '^www\.bbc\.co\.uk$'
    in: [link_host]
  - regex: ['\bG(?:7|20)\b']
  - keywords: [Reuters]
    in: [author]
  - keywords: [wire]
    in: [feed, feed_tags]
"""
    )
    assert reason(t, title="x", link="https://www.bbc.co.uk/news/1") == (
        r"regex /^www\.bbc\.co\.uk$/ in link_host"
    )
    assert reason(t, title="x", link="https://bbc.co.uk.evil.example/") is None
    assert reason(t, title="G20 leaders meet") == r"regex /\bG(?:7|20)\b/ in title"
    assert reason(t, title="x", authors=("Reuters staff",)) == 'keyword "Reuters" in author'
    assert reason(t, title="Reuters says") is None  # author scope only
    assert reason(t, FeedContext(title="Wire service"), title="x") == 'keyword "Wire" in feed'
    assert reason(t, FeedContext(tags=("wire",)), title="x") == 'keyword "wire" in feed_tags'


def test_categories_feed_tags_places_language_rules() -> None:
    t = tagger(
        """
match:
  - categories: [Diplomacy]
  - feed_tags: [Foreign Relations]
  - all:
      - places: [CO]
      - language: [es]
  - places: [US]
    capitals: true
"""
    )
    assert reason(t, title="x", categories=("International Relations",)) == (
        'category "International Relations" as "Diplomacy"'
    )
    assert reason(t, FeedContext(tags=("foreign-relations",)), title="x") == (
        'feed tag "foreign-relations"'
    )
    es = "El gobierno colombiano anunció hoy una reforma en Bogotá con el apoyo del congreso"
    assert reason(t, title="Reforma", text=es + " de Colombia.") == (
        'place CO ("Colombia", name) and language es'
    )
    assert reason(t, title="Colombia reform passes parliament", text="The vote was close.") is None
    # "Washington" counts as the US only where the rule says capitals: true.
    assert reason(t, title="Washington warns allies") == 'place US ("Washington", capital)'


def test_places_shorthand_and_demonyms_ignore_capitals() -> None:
    t = tagger("places: [co]")
    assert reason(t, title="Colombian coffee growers") == 'place CO ("Colombian", demonym)'
    assert reason(t, title="Talks in Bogotá") is None  # capital, not allowed here


def test_exclude_vetoes_any_positive_rule() -> None:
    t = tagger(
        """
keywords: [election]
categories: [politics]
exclude:
  - keywords: [student union, fantasy football]
  - regex: 'quiz'
    in: [title]
"""
    )
    assert reason(t, title="Election day") == 'keyword "Election" in title'
    assert reason(t, title="Student union election results") is None
    assert reason(t, title="Weekly news quiz", categories=("Politics",)) is None


def test_topic_languages_restrict() -> None:
    t = tagger("keywords: [Petro]", languages="    languages: [es]\n")
    es = "El presidente Petro presentó una nueva propuesta de paz ante el Congreso de la República"
    assert reason(t, title="Petro", text=es) == 'keyword "Petro" in title'
    en = "President Petro presented a new peace proposal to Congress on Tuesday afternoon"
    assert reason(t, title="Petro", text=en) is None


def test_old_style_rules_still_load_and_match() -> None:
    t = tagger("keywords: [embassy]\nregex: ['\\bAI\\b']\ncategories: [tech]\nfeed_tags: [x]")
    assert reason(t, title="New embassy") == 'keyword "embassy" in title'
    assert reason(t, title="AI rules") == r"regex /\bAI\b/ in title"
    assert reason(t, title="x", categories=("Technology",)) == 'category "Technology" as "tech"'


def test_place_tags_are_stored_with_reasons() -> None:
    cfg = parse_config("topics: []\n")
    t = Tagger(cfg.topics)
    tags = dict(t.tag(entry(title="U.S. and Colombian officials meet in Moscow", text="")))
    assert tags == {"place:us": 'place "U S" (name)', "place:co": 'place "Colombian" (demonym)'}
    cfg = parse_config("tagging:\n  capitals_as_places: true\n")
    tags = dict(Tagger(cfg.topics, settings=cfg.tagging).tag(entry(title="Moscow says", text="")))
    assert tags == {"place:ru": 'place "Moscow" (capital)'}


def errors(rules_yaml: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        tagger(rules_yaml)
    return e.value.errors


def test_bad_rules_name_topic_rule_and_line() -> None:
    [bad_regex] = errors("match:\n  - all:\n      - sanctions\n      - regex: '(unclosed'\n")
    assert bad_regex.startswith(
        'feeds.yaml:8:15: topics[0].rules.match[0].all[1].regex[0] (topic "T"): '
        "invalid regular expression '(unclosed': missing )"
    )
    [bad_field] = errors("match:\n  - keywords: [x]\n    in: [body]\n")
    assert bad_field.startswith('feeds.yaml:7:16: topics[0].rules.match[0].in[0] (topic "T"): ')
    assert "'title', 'text', 'categories', 'author'" in bad_field
    [two] = errors("match:\n  - keywords: [x]\n    places: [CO]\n")
    assert "exactly one of" in two and "found: keywords, places" in two
    assert two.startswith("feeds.yaml:6:11: topics[0].rules.match[0] ")
    [unknown] = errors("exclude:\n  - keyword: [x]\n")
    assert unknown == (
        'feeds.yaml:6:11: topics[0].rules.exclude[0].keyword (topic "T"): '
        "unknown key; did you mean 'keywords'? expected one of: keywords, regex, categories, "
        "feed_tags, places, language, any, all, none, in, capitals"
    )
    [place] = errors("places: [ZZ]\n")
    assert "unknown country code 'ZZ'" in place
    [lang] = errors("match:\n  - language: [english]\n")
    assert "'english' is not a language code" in lang
    [empty] = errors("match:\n  - any: []\n")
    assert "empty any: list" in empty
    [scope] = errors("match:\n  - places: [CO]\n    in: [title]\n")
    assert "'in' applies to keywords and regex, not to places" in scope


def test_source_categories_map_through_the_synonyms_table() -> None:
    t = tagger(
        "categories: [foreign relations]",
        extra="category_synonyms:\n  World/Americas: Foreign Relations\n",
    )
    # Built-in synonyms, and a whole path mapped in feeds.yaml (spaces around "/" ignored).
    assert reason(t, title="x", categories=("International relations",)) == (
        'category "International relations" as "foreign relations"'
    )
    assert reason(t, title="x", categories=("Diplomacy",)) == (
        'category "Diplomacy" as "foreign relations"'
    )
    assert reason(t, title="x", categories=("World / Americas",)) == (
        'category "World / Americas" as "foreign relations"'
    )
    assert reason(t, title="x", categories=("World/Europe",)) is None


def test_scopes_are_inherited_by_nested_rules_unless_they_set_their_own() -> None:
    t = tagger(
        """
match:
  - all:
      - summit
      - any: [Kenya, {keywords: [Nairobi], in: [text]}]
    in: [title]
  - keywords: [opinion]
    in: [categories]
"""
    )
    assert reason(t, title="Summit in Kenya") == (
        'keyword "Summit" in title and keyword "Kenya" in title'
    )
    assert reason(t, title="Summit opens", text="Leaders met in Kenya.") is None  # title only
    assert reason(t, title="Summit opens", text="Leaders met in Nairobi.") == (
        'keyword "Summit" in title and keyword "Nairobi" in text'
    )
    assert reason(t, title="x", categories=("Opinion",)) == 'keyword "Opinion" in categories'
    assert reason(t, title="An opinion") is None


def test_more_bad_rules_name_topic_rule_and_line() -> None:
    [capitals] = errors("match:\n  - keywords: [x]\n    capitals: true\n")
    assert capitals.startswith('feeds.yaml:6:11: topics[0].rules.match[0] (topic "T"): ')
    assert "'capitals' applies to places only" in capitals
    [in_exclude] = errors("exclude:\n  - any:\n      - regex: ['ok', 'bad[']\n")
    assert in_exclude.startswith(
        'feeds.yaml:7:29: topics[0].rules.exclude[0].any[0].regex[1] (topic "T"): '
        "invalid regular expression 'bad[': unterminated character set"
    )
    [nested_field] = errors("match:\n  - none:\n      - keywords: [x]\n        in: [summary]\n")
    assert nested_field.startswith(
        'feeds.yaml:8:20: topics[0].rules.match[0].none[0].in[0] (topic "T"): '
    )
    [empty] = errors("keywords: ['  ']\n")
    assert "empty keyword" in empty and 'topics[0].rules.keywords (topic "T")' in empty


def test_categories_as_publishers_write_them() -> None:
    t = tagger("categories: [international relations, election, politics, americas]")
    # Whole words inside a longer category, in any case, singular or plural.
    assert reason(t, title="x", categories=("United States International Relations",)) == (
        'category "United States International Relations" as "international relations"'
    )
    assert reason(t, title="x", categories=("PRESIDENTIAL ELECTIONS OF 2020",)) == (
        'category "PRESIDENTIAL ELECTIONS OF 2020" as "election"'
    )
    assert reason(t, title="x", categories=("Politics and Government",)) == (
        'category "Politics and Government" as "politics"'
    )
    # Path forms: any part, separators with or without spaces.
    assert reason(t, title="x", categories=("world/americas",)) == (
        'category "world/americas" as "americas"'
    )
    assert reason(t, title="x", categories=("fox-news/politics/elections",)) == (
        'category "fox-news/politics/elections" as "election"'
    )
    # Whole words only: no match inside a word, nor on a part of a phrase.
    assert reason(t, title="x", categories=("Relations", "Geopolitical", "Reelection")) is None
    assert reason(t, title="x", categories=("International Trade",)) is None


def test_a_multi_word_synonym_inside_a_longer_category_counts_but_one_word_does_not() -> None:
    t = tagger("categories: [foreign relations, world]")
    # "international relations" is a synonym of "foreign relations", found inside.
    assert reason(t, title="x", categories=("United States International Relations",)) == (
        'category "United States International Relations" as "foreign relations"'
    )
    w = tagger("categories: [world]")
    # "international" alone is "world", but not when it is a word of a longer category.
    assert reason(w, title="x", categories=("United States International Relations",)) is None
    assert reason(w, title="x", categories=("International",)) == (
        'category "International" as "world"'
    )
