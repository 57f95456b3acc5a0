"""Property-based tests (hypothesis) across the stages, not one function at a time.

1. Generated feeds (RSS, Atom, JSON Feed; any text, markup, entities, control characters,
   junk links, clashing guids, dates from year 1 to 9999 or none) go through parse, dedup,
   tag and publish: parse either returns a feed or raises ParseError, nothing else escapes;
   what publish writes always parses back (feedparser without bozo, json) and holds no
   active markup.
2. Generated filter queries are sent to the real app over a populated store (SQLite and
   PostgreSQL): each is a 400 with a JSON error or a 200 feed that parses.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

import feedparser
import httpx
import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer, store_url
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from live import live_server, poll_all
from test_xss import problems_in_json, problems_in_xml

from aggregator import dedup
from aggregator.config import load_config
from aggregator.exceptions import ParseError
from aggregator.filters import PARAMS
from aggregator.parse import parse
from aggregator.publish import FORMATS, FeedMeta, render
from aggregator.service import Aggregator
from aggregator.tag import Tagger, tag_intents
from aggregator.types import FeedContext, StoryItem, StorySource

ROOT = Path(__file__).parent.parent
FEED_URL = "https://gen.example/feed"
FETCHED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

# Text that stresses every layer: markup characters, entities, quotes, controls, surrogate-
# free astral characters, bidi marks, whitespace of all kinds.
TEXT = st.lists(
    st.one_of(
        st.sampled_from(list("<>&\"'/=;:#%? \t\n\r\x00\x01\x0b\u202e\u200b\xa0é中😀")),
        st.sampled_from(["<b>", "</p>", "<script>", "&amp;", "&lt;", "&#0;", "]]>", "<!--"]),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=30,
).map("".join)
WORDS = st.lists(
    st.sampled_from(
        "embassy sanctions treaty summit football goal election parliament Colombia Paris "
        "market bank storm climate the of and".split()
    ),
    max_size=8,
).map(" ".join)
LINK = st.one_of(
    st.none(),
    st.builds(
        lambda p: f"https://gen.example/{p}", st.text(string.ascii_letters + "/?&=#%", max_size=20)
    ),
    st.sampled_from(["javascript:alert(1)", "/relative/path", "//other.example/x", "data:,x", ""]),
    TEXT,
)
HTML_PART = st.one_of(
    TEXT,
    WORDS,
    st.sampled_from(
        [
            "<p>para</p>",
            '<a href="javascript:alert(1)" onclick="x()">a</a>',
            '<img src="/i.png" onerror="alert(1)">',
            "<script>alert(1)</script>",
            "<svg onload=alert(1)>",
            "<style>*{}</style>",
            "<table><tr><td>cell",
            '<iframe src="https://e.example/"></iframe>',
            "<ul><li>one<li>two</ul>",
        ]
    ),
)
HTML = st.lists(HTML_PART, max_size=6).map("".join)
DATE = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
)
ENTRY = st.fixed_dictionaries(
    {
        "guid": st.one_of(st.none(), st.sampled_from(["same", "g1", "g2"]), TEXT),
        "title": st.one_of(TEXT, WORDS),
        "link": LINK,
        "html": HTML,
        "date": DATE,
        "categories": st.lists(st.one_of(TEXT, WORDS), max_size=3),
        "author": st.one_of(st.none(), TEXT),
        "enclosure": st.one_of(st.none(), LINK),
    }
)
FEED = st.tuples(
    st.sampled_from(["rss", "atom", "json"]), st.one_of(TEXT, WORDS), st.lists(ENTRY, max_size=6)
)


def xml_text(value: str) -> str:
    # What a publisher's XML library would write: escaped, with characters XML cannot
    # hold left in (a broken feed is part of the input space too).
    return escape(value)


def build(kind: str, title: str, entries: list[dict[str, object]]) -> bytes:
    if kind == "json":
        items = []
        for i, e in enumerate(entries):
            item: dict[str, object] = {"id": e["guid"] if e["guid"] is not None else i}
            item.update(title=e["title"], content_html=e["html"], tags=e["categories"])
            if e["link"] is not None:
                item["url"] = e["link"]
            if e["date"] is not None:
                item["date_published"] = e["date"].isoformat()  # type: ignore[attr-defined]
            if e["author"] is not None:
                item["authors"] = [{"name": e["author"]}]
            if e["enclosure"] is not None:
                item["attachments"] = [{"url": e["enclosure"], "mime_type": "audio/mpeg"}]
            items.append(item)
        doc = {"version": "https://jsonfeed.org/version/1.1", "title": title, "items": items}
        return json.dumps(doc).encode()
    parts = []
    for e in entries:
        date = e["date"]
        if kind == "rss":
            parts.append("<item>")
            parts.append(f"<title>{xml_text(str(e['title']))}</title>")
            if e["guid"] is not None:
                parts.append(f"<guid>{xml_text(str(e['guid']))}</guid>")
            if e["link"] is not None:
                parts.append(f"<link>{xml_text(str(e['link']))}</link>")
            parts.append(f"<description>{xml_text(str(e['html']))}</description>")
            if date is not None:
                parts.append(f"<pubDate>{format_datetime(date)}</pubDate>")  # type: ignore[arg-type]
            for c in e["categories"]:  # type: ignore[attr-defined]
                parts.append(f"<category>{xml_text(c)}</category>")
            if e["author"] is not None:
                parts.append(f"<author>{xml_text(str(e['author']))}</author>")
            if e["enclosure"] is not None:
                parts.append(f'<enclosure url={quoteattr(str(e["enclosure"]))} type="audio/mpeg"/>')
            parts.append("</item>")
        else:
            parts.append("<entry>")
            parts.append(f'<title type="html">{xml_text(str(e["title"]))}</title>')
            parts.append(f"<id>{xml_text(str(e['guid'] or 'urn:x'))}</id>")
            if e["link"] is not None:
                parts.append(f"<link href={quoteattr(str(e['link']))}/>")
            if date is not None:
                parts.append(f"<updated>{date.isoformat()}</updated>")  # type: ignore[attr-defined]
            parts.append(f'<content type="html">{xml_text(str(e["html"]))}</content>')
            for c in e["categories"]:  # type: ignore[attr-defined]
                parts.append(f"<category term={quoteattr(c)}/>")
            if e["author"] is not None:
                parts.append(f"<author><name>{xml_text(str(e['author']))}</name></author>")
            if e["enclosure"] is not None:
                parts.append(f'<link rel="enclosure" href={quoteattr(str(e["enclosure"]))}/>')
            parts.append("</entry>")
    body = "".join(parts)
    if kind == "rss":
        doc = (
            f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{xml_text(title)}</title><link>https://gen.example/</link>{body}"
            "</channel></rss>"
        )
    else:
        doc = (
            '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{xml_text(title)}</title><id>urn:gen</id>"
            f"<updated>2026-11-24T00:00:00Z</updated>{body}</feed>"
        )
    return doc.encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    cfg = ROOT / "feeds.yaml"
    return Tagger.from_config(load_config(cfg), mode="rules")


META = FeedMeta(
    id="urn:aggregator:test",
    title="Generated",
    description="Generated stories",
    self_url="https://agg.example/stories.rss",
    html_url="https://agg.example/",
    updated=FETCHED,
    first_url="https://agg.example/stories.rss",
    next_url="https://agg.example/stories.rss?after=x",
    hub_url="https://agg.example/websub/hub",
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(feed=FEED)
def test_generated_feeds_through_parse_dedup_tag_publish(
    tagger: Tagger, feed: tuple[str, str, list[dict[str, object]]]
) -> None:
    kind, title, entries = feed
    body = build(kind, title, entries)
    ctype = {
        "rss": "application/rss+xml",
        "atom": "application/atom+xml",
        "json": "application/feed+json",
    }[kind]
    try:
        parsed = parse(body, FEED_URL, {"content-type": ctype}, FETCHED)
    except ParseError:
        event("parse error")
        return  # a clear, recorded error: allowed
    event(f"parsed {kind}, {'some' if parsed.entries else 'no'} entries")
    intents = dedup.plan(parsed.entries, FEED_URL, {})
    intents = tag_intents(tagger, intents, FeedContext((), parsed.title, parsed.language))
    # One intent per identity: an identity repeated in one document keeps its first entry.
    assert len({i.identity for i in intents}) == len(intents)
    assert len(intents) == len(set(dedup.identities(parsed.entries, FEED_URL)))
    items = [
        StoryItem(
            uid=f"s{n}",
            title=i.entry.title,
            link=i.entry.link,
            summary_html=i.entry.summary_html,
            content_html=i.entry.content_html,
            text=i.entry.text,
            authors=i.entry.authors,
            published=i.entry.published,
            updated=i.entry.updated,
            topics=tuple(t.topic for t in i.tags),
            categories=i.entry.categories,
            enclosures=i.entry.enclosures,
            sources=(StorySource(parsed.title, FEED_URL, i.entry.title, i.entry.link),),
        )
        for n, i in enumerate(intents)
    ]
    for fmt in FORMATS:
        out = render(fmt, META, items)
        if fmt == "json":
            doc = json.loads(out)
            assert len(doc["items"]) == len(items)
            assert not problems_in_json(doc)
        else:
            back = feedparser.parse(out)
            assert not back.bozo, back.get("bozo_exception")
            assert len(back.entries) == len(items)
            assert not problems_in_xml(out, fmt)


# ------------------------------------------------------------------------ filter queries

# Mostly plausible values for each parameter (so most queries reach the store), sometimes
# any text, sometimes an unknown parameter.
PLAUSIBLE = {
    "topics": ["business", "business+sport", "foreign-relations", "place:co", "Business"],
    "any": ["business,sport", "sport", "place:gb,business"],
    "not": ["sport", "business"],
    "source": ["n0.example.org", "https://n0.example.org/rss", "bbc.co.uk", "127.0.0.1"],
    "lang": ["en", "en-gb", "es", "zz-top"],
    "since": ["1d", "12h", "2026-11-01", "2026-11-24T12:00Z", "0s", "9999-12-31"],
    "until": ["1h", "2026-12-01", "1w"],
    "q": [
        "markets", '"central bank"', "storm or goal", "-football", "bank*", "NEAR(a b)",
        '"unclosed', "(", "^", "a AND", "café", "中文",
    ],
    "limit": ["1", "20", "500", "0", "501", "-1", "x"],
    "after": ["eyJ4IjoxfQ", "!!!", ""],
    "before": ["eyJ4IjoxfQ", ""],
}  # fmt: skip
GOOD = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
    lambda k: st.tuples(st.just(k), st.sampled_from(PLAUSIBLE[k]))
)
ANY = st.tuples(st.sampled_from([*PARAMS, "x"]), TEXT)
QUERY = st.lists(st.one_of(GOOD, GOOD, GOOD, GOOD, GOOD, ANY), max_size=3)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def populated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp(f"props-{request.param}")
    db = store_url(request, tmp)
    server = FeedServer()
    server.thread.start()
    try:
        urls = [
            server.serve(f"/n/{i}.rss", rss(news_items(25, site=f"https://n{i}.example.org")))
            for i in range(3)
        ]
        (tmp / "feeds.yaml").write_text(
            config_yaml([{"url": u, "tags": ["business"]} for u in urls], database_url=db)
        )
        agg = Aggregator.from_file(tmp / "feeds.yaml")
        poll_all(agg)
        with live_server(agg) as base, httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/stories.json").json()["items"]
            yield client
        agg.close()
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=QUERY,
    fmt=st.sampled_from(FORMATS),
    view=st.sampled_from(["/stories", "/topics/business"]),
)
def test_generated_filter_queries_are_a_400_or_a_feed(
    populated: httpx.Client, query: list[tuple[str, str]], fmt: str, view: str
) -> None:
    r = populated.get(f"{view}.{fmt}?{urlencode(query)}")
    assert r.status_code in (200, 400), (query, r.status_code, r.text[:300])
    event(str(r.status_code))
    if r.status_code == 400:
        assert r.json()["error"]
        return
    if fmt == "json":
        json.loads(r.content)
    else:
        assert not feedparser.parse(r.content).bozo
