"""Identity, content hashes and canonical URLs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.dedup import Tracking, canonical_url, content_hash, identities, plan
from aggregator.types import ParsedEntry

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def entry(**kw: object) -> ParsedEntry:
    base = ParsedEntry(
        guid="g1",
        link="https://news.example.com/a/1",
        title="Title",
        summary_html="<p>Body</p>",
        content_html="<p>Body</p>",
        text="Body",
        authors=("Ana",),
        published=T,
        updated=T,
        date_from_fetch=False,
        categories=("World",),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_identity_prefers_guid_then_link_then_hash() -> None:
    feed = "https://news.example.com/feed"
    ids = identities(
        [
            entry(guid="abc"),
            entry(guid=None, link="/a/2?utm_source=x"),
            entry(guid=None, link=None, title="No link"),
        ],
        feed,
    )
    assert ids[0] == "guid:abc"
    assert ids[1] == "link:https://news.example.com/a/2"
    assert ids[2].startswith("hash:")


def test_a_guid_shared_by_different_articles_is_not_an_identity() -> None:
    feed = "https://x.example/feed"
    es = [entry(guid="same", link=f"https://x.example/{i}") for i in range(3)]
    assert len(set(identities(es, feed))) == 3
    # The same article listed twice (same guid, same link) stays one identity.
    assert len(set(identities([es[0], es[0]], feed))) == 1


def test_content_hash_ignores_fetch_time_dates() -> None:
    a = entry(date_from_fetch=True, published=T, updated=T)
    b = entry(
        date_from_fetch=True, published=T + timedelta(hours=1), updated=T + timedelta(hours=1)
    )
    assert content_hash(a) == content_hash(b)
    assert content_hash(entry()) != content_hash(entry(updated=T + timedelta(minutes=5)))
    assert content_hash(entry()) != content_hash(entry(title="Other"))


def test_plan_new_updated_unchanged_and_repeats() -> None:
    feed = "https://x.example/feed"
    e1, e2, e3 = entry(guid="1"), entry(guid="2"), entry(guid="3")
    stored = {"guid:1": content_hash(e1), "guid:2": "stale"}
    intents = plan([e1, e2, e3, e3], feed, stored, lambda e: ())
    assert [i.action for i in intents] == ["unchanged", "updated", "new"]


# (a, b): two ways of writing one article's URL.
SAME = [
    ("https://Example.com/a", "http://example.com/a"),
    ("HTTPS://EXAMPLE.COM/a", "https://example.com/a"),
    ("https://example.com/a/", "https://example.com/a"),
    ("https://example.com/a/b/", "http://example.com/a/b"),
    ("https://www.example.com/a", "https://example.com/a"),
    ("https://example.com.:443/a", "https://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:80/a", "https://example.com/a"),
    ("https://example.com/a#comments", "https://example.com/a"),
    ("https://example.com/a#", "https://example.com/a"),
    ("https://example.com/a?utm_source=rss&utm_medium=feed", "https://example.com/a"),
    ("https://example.com/a?UTM_Campaign=x", "https://example.com/a"),
    ("https://example.com/a?utm_content=x&utm_term=y&id=3", "https://example.com/a?id=3"),
    ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
    ("https://example.com/a?fbclid=xyz&id=7", "https://example.com/a?id=7"),
    ("https://example.com/a?gclid=1", "https://example.com/a"),
    ("https://example.com/a?msclkid=1&dclid=2", "https://example.com/a"),
    ("https://example.com/a?mc_cid=1&mc_eid=2", "https://example.com/a"),
    ("https://example.com/a?ref=twitter", "https://example.com/a"),
    ("https://example.com/a?ref_src=twsrc", "https://example.com/a"),
    ("https://example.com/a?igshid=abc", "https://example.com/a"),
    ("https://example.com/a?cmpid=rss&ns_source=x", "https://example.com/a"),
    ("https://example.com/a?at_medium=rss&at_campaign=y", "https://example.com/a"),
    ("https://example.com/a?pk_campaign=x&mtm_source=y", "https://example.com/a"),
    ("https://example.com/a?_hsenc=x&_hsmi=y", "https://example.com/a"),
    ("https://example.com/a?smid=tw-share", "https://example.com/a"),
    ("https://example.com/a?", "https://example.com/a"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com/%7Euser/a", "https://example.com/~user/a"),
    ("https://example.com/caf%c3%a9", "https://example.com/caf%C3%A9"),
    ("  https://example.com/a  ", "https://example.com/a"),
    (
        "https://news.example.com/2026/11/24/quake-hits/?utm_source=feedburner#top",
        "http://news.example.com/2026/11/24/quake-hits",
    ),
    ("https://example.com/story?id=9&utm_source=x&page=2", "https://example.com/story?page=2&id=9"),
]
# (a, b): two different articles, however alike their URLs look.
DIFFERENT = [
    ("https://example.com/a", "https://example.com/b"),
    ("https://example.com/a?id=1", "https://example.com/a?id=2"),
    ("https://example.com/a", "https://example.org/a"),
    ("https://example.com:8443/a", "https://example.com/a"),
    ("https://example.com/A", "https://example.com/a"),
    ("https://news.example.com/a", "https://example.com/a"),
    ("https://example.com/a?page=2", "https://example.com/a"),
    ("https://example.com/a/b", "https://example.com/a"),
    ("https://example.com/2026/11/24/quake", "https://example.com/2026/11/25/quake"),
    ("https://example.com/a?id=1&id=2", "https://example.com/a?id=1"),
    ("https://example.com/%2Fa", "https://example.com//a"),
    ("https://example.com/a?q=x%26y", "https://example.com/a?q=x&y"),
    ("https://example.com/a?reference=1", "https://example.com/a"),
]


def test_canonical_url_table() -> None:
    assert len(SAME) + len(DIFFERENT) >= 40
    for a, b in SAME:
        assert canonical_url(a) == canonical_url(b), (a, b)
    for a, b in DIFFERENT:
        assert canonical_url(a) != canonical_url(b), (a, b)
    assert canonical_url("/x", "https://example.com/feed") == "https://example.com/x"
    assert canonical_url("x?utm_source=a", "https://example.com/news/feed") == (
        "https://example.com/news/x"
    )
    assert canonical_url("//cdn.example.com/x", "https://example.com/feed") == (
        "https://cdn.example.com/x"
    )
    for bad in (None, "", "   ", "mailto:a@b", "javascript:alert(1)", "http://[bad", "ftp://x/y"):
        assert canonical_url(bad) is None


def test_tracking_params_extend_from_feeds_yaml() -> None:
    from aggregator.config import parse_config
    from aggregator.exceptions import ConfigError

    cfg = parse_config("dedup:\n  tracking_params: [src, sc_*]\n")
    tracking = Tracking.with_extra(cfg.dedup.tracking_params)
    url = "https://example.com/a?src=rss&sc_cid=1&id=4&utm_source=x"
    assert canonical_url(url, tracking=tracking) == "https://example.com/a?id=4"
    with pytest.raises(ConfigError, match="tracking_params"):
        parse_config("dedup:\n  tracking_params: ['a*b']\n")
    # The built-in list alone keeps them.
    assert canonical_url(url) == "https://example.com/a?id=4&sc_cid=1&src=rss"


def test_plan_prefers_feedburner_orig_link() -> None:
    feed = "https://feeds.feedburner.example/site"
    e = entry(
        link="https://feedproxy.example/~r/site/~3/abc/",
        orig_link="https://site.example/2026/story?utm_medium=rss",
    )
    [intent] = plan([e], feed, {})
    assert intent.canonical_url == "https://site.example/2026/story"


@given(st.text(max_size=200))
def test_canonical_url_never_raises_and_is_idempotent(s: str) -> None:
    c = canonical_url(s)
    if c is not None:
        assert canonical_url(c) == c
