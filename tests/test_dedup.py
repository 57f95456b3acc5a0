"""Identity, content hashes and canonical URLs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from aggregator.dedup import canonical_url, content_hash, identities, plan
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


SAME = [
    ("https://Example.com/a", "http://example.com/a"),
    ("https://example.com/a/", "https://example.com/a"),
    ("https://www.example.com/a", "https://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:80/a", "https://example.com/a"),
    ("https://example.com/a#comments", "https://example.com/a"),
    ("https://example.com/a?utm_source=rss&utm_medium=feed", "https://example.com/a"),
    ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
    ("https://example.com/a?fbclid=xyz&id=7", "https://example.com/a?id=7"),
    ("https://example.com/a?gclid=1", "https://example.com/a"),
]
DIFFERENT = [
    ("https://example.com/a", "https://example.com/b"),
    ("https://example.com/a?id=1", "https://example.com/a?id=2"),
    ("https://example.com/a", "https://example.org/a"),
    ("https://example.com:8443/a", "https://example.com/a"),
    ("https://example.com/A", "https://example.com/a"),
]


def test_canonical_url_table() -> None:
    for a, b in SAME:
        assert canonical_url(a) == canonical_url(b), (a, b)
    for a, b in DIFFERENT:
        assert canonical_url(a) != canonical_url(b), (a, b)
    assert canonical_url("/x", "https://example.com/feed") == "https://example.com/x"
    for bad in (None, "", "   ", "mailto:a@b", "javascript:alert(1)", "http://[bad"):
        assert canonical_url(bad) is None


@given(st.text(max_size=200))
def test_canonical_url_never_raises_and_is_idempotent(s: str) -> None:
    c = canonical_url(s)
    if c is not None:
        assert canonical_url(c) == c
