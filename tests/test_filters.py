"""The feed filter parser: every bad value is a FilterError naming the parameter."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.filters import PARAMS, Cursor, FilterError, parse_query, parse_text
from storage.stories import fts5_match

NOW = datetime(2026, 11, 25, 9, 30, 42, tzinfo=UTC)
KNOWN = {"politics", "world", "foreign-relations", "colombia", "sport"}


def parse(*pairs: tuple[str, str], limit: int = 50):  # type: ignore[no-untyped-def]
    return parse_query(
        pairs, now=NOW, default_limit=limit, is_known_tag=lambda k: k in KNOWN or ":" in k
    )


def test_topic_expressions() -> None:
    # "+" arrives as a space after URL decoding; commas and repeats work too.
    q = parse(("topics", "foreign-relations colombia"), ("any", "world,sport"), ("not", "politics"))
    assert q.all_of == ("colombia", "foreign-relations")
    assert q.any_of == ("sport", "world")
    assert q.none_of == ("politics",)
    assert parse(("topics", "Colombia+world")).all_of == ("colombia", "world")
    assert parse(("topics", "place:co")).all_of == ("place:co",)


def test_sources_languages_times_and_limit() -> None:
    q = parse(
        ("source", "https://feeds.bbci.co.uk/news/world/rss.xml,www.Guardian.co.uk"),
        ("lang", "EN,pt_BR"),
        ("since", "7d"),
        ("until", "2026-11-25T08:00:00+01:00"),
        ("limit", "20"),
    )
    assert q.feed_urls == ("https://feeds.bbci.co.uk/news/world/rss.xml",)
    assert q.hosts == ("guardian.co.uk",)
    assert q.langs == ("en", "pt-br")
    # Relative times count from the minute, so a cached rendering lasts up to a minute.
    assert q.since == datetime(2026, 11, 18, 9, 30, tzinfo=UTC)
    assert q.until == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    assert q.limit == 20
    assert parse(("since", "2026-11-01")).since == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse().limit == 50 and parse(limit=800).limit == 500


def test_canonical_query_string_and_cache_key() -> None:
    a = parse(("topics", "world+colombia"), ("since", "1d"))
    b = parse(("since", "1d"), ("topics", "colombia,world"))
    assert a.query_string() == b.query_string() == "topics=colombia+world&since=1d"
    assert a.cache_key == b.cache_key
    assert parse(("limit", "5")).cache_key != parse(("limit", "6")).cache_key
    cursor = Cursor(datetime(2026, 11, 24, 18, 0, 0, 250, tzinfo=UTC), 42)
    assert Cursor.parse("after", cursor.token()) == cursor
    assert a.query_string(("after", cursor)).endswith("&after=" + cursor.token())


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("topic", "world")], "unknown parameter 'topic'"),
        ([("topics", "nope")], "topics: no topic 'nope'"),
        ([("topics", "<script>")], "is not a topic slug"),
        ([("topics", "world"), ("not", "world")], "nothing could match"),
        ([("source", "ftp://x.example/feed")], "not an http(s) feed URL"),
        ([("source", "not a host")], "neither a feed URL nor a host"),
        ([("lang", "english!")], "lang: 'english!' is not a language tag"),
        ([("since", "yesterday")], "since: 'yesterday' is not a date"),
        ([("until", "2026-13-01")], "until: '2026-13-01' is not a date"),
        ([("since", "2026-11-02"), ("until", "2026-11-01")], "earlier than until"),
        ([("since", "1d"), ("since", "2d")], "give it once"),
        ([("limit", "ten")], "limit: 'ten' is not a whole number"),
        ([("limit", "0")], "between 1 and 500"),
        ([("limit", "501")], "between 1 and 500"),
        ([("q", "-rumour")], "at least one word"),
        ([("q", '"" ---')], "at least one word"),
        ([("q", "x" * 300)], "at most 256 characters"),
        ([("after", "abc")], "after: not a page cursor"),
        ([("after", "1.2"), ("before", "1.2")], "not both"),
        ([("since", "999999w")], "since:"),
    ],
)
def test_malformed_filters_say_what_is_wrong(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FilterError) as e:
        parse(*pairs)
    assert message in str(e.value)


def test_text_query_syntax() -> None:
    q = parse_text('"peace talks" Colombia or Venezuela -rumour')
    assert [[t.text for t in g] for g in q.groups] == [["peace talks"], ["Colombia", "Venezuela"]]
    assert [t.text for t in q.excluded] == ["rumour"]
    assert fts5_match(q) == '("peace talks" AND ("Colombia" OR "Venezuela")) NOT "rumour"'


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*PARAMS, "x", "utm_source"]),
            st.text(st.characters(codec="utf-8"), max_size=40),
        ),
        max_size=6,
    )
)
def test_any_input_parses_or_is_a_filter_error(pairs: list[tuple[str, str]]) -> None:
    try:
        parse(*pairs)
    except FilterError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_query_is_valid_fts5(raw: str) -> None:
    try:
        q = parse_text(raw)
    except FilterError:
        return
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(title, text)")
    db.execute("INSERT INTO t VALUES ('peace talks', 'Colombia café')")
    db.execute("SELECT rowid FROM t WHERE t MATCH ?", (fts5_match(q),)).fetchall()


def test_relative_times() -> None:
    for raw, delta in [("90s", timedelta(seconds=90)), ("12h", timedelta(hours=12))]:
        got = parse(("since", raw)).since
        assert got == NOW.replace(second=0) - delta
    assert parse(("since", "2w")).since == NOW.replace(second=0) - timedelta(weeks=2)


def test_nul_in_any_value_is_a_filter_error() -> None:
    # Found by tests/test_properties.py: PostgreSQL refused q="\x00..." and the feed was a 503.
    for name in ("q", "topics", "source", "lang", "since"):
        with pytest.raises(FilterError, match="NUL"):
            parse_query([(name, "a\x00b")], now=NOW, default_limit=50)
