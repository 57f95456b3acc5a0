"""Tests for aggregator.publish: each format must survive a real parser unchanged."""

from __future__ import annotations

import calendar
import html
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import feedparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.publish import (
    FORMATS,
    JSON_FEED_VERSION,
    MEDIA_TYPES,
    FeedMeta,
    item_id,
    render,
    render_atom,
    render_json,
    render_rss,
)
from aggregator.sanitize import safe_url, strip_markup
from aggregator.types import Enclosure, StoryItem, StorySource

ATOM = "{http://www.w3.org/2005/Atom}"

META = FeedMeta(
    id="tag:news.example,2026:topics/politics",
    title="Politics & Policy — Aggregator",
    description="Stories tagged “politics”, from every feed we follow.",
    self_url="https://news.example/topics/politics/feed.xml",
    html_url="https://news.example/topics/politics",
    updated=datetime(2026, 3, 14, 9, 30, tzinfo=UTC),
    language="en",
)

EMPTY_META = FeedMeta(
    id="tag:news.example,2026:topics/empty",
    title="Empty",
    description="",
    self_url="https://news.example/topics/empty/feed.json",
    html_url="https://news.example/topics/empty",
    updated=datetime(1970, 1, 1, tzinfo=UTC),
)

CET = timezone(timedelta(hours=1))
EST = timezone(timedelta(hours=-5))
IST = timezone(timedelta(hours=5, minutes=30))
NPT = timezone(timedelta(hours=5, minutes=45))

REUTERS = ("Reuters World", "https://feeds.reuters.example/world.rss")
BBC = ("BBC News — Politics", "https://feeds.bbc.example/news/politics/rss.xml")
LEMONDE = ("Le Monde — À la une", "https://www.lemonde.example/rss/une.xml")
EVIL = ('<script>alert("x")</script> Daily & Co', "https://evil.example/feed")
NPR = ("NPR: Politics", "https://feeds.npr.example/1014/rss.xml")


def src(feed: tuple[str, str], title: str, link: str | None) -> StorySource:
    return StorySource(feed_title=feed[0], feed_url=feed[1], title=title, link=link)


def story(
    n: int,
    title: str,
    *,
    link: str | None = "",
    content: str | None = None,
    published: datetime,
    updated: datetime | None = None,
    authors: tuple[str, ...] = (),
    topics: tuple[str, ...] = ("politics",),
    categories: tuple[str, ...] = (),
    enclosures: tuple[Enclosure, ...] = (),
    sources: tuple[StorySource, ...] | None = None,
    summary: str | None = None,
    text: str | None = None,
) -> StoryItem:
    """A story with defaults derived from n; dates are converted to UTC like storage does."""
    if link == "":
        link = f"https://news.example/articles/{n:04d}?utm=feed&ref=rss"
    if content is None:
        content = f"<p>Body of story {n}: {title.replace('&', '&amp;').replace('<', '&lt;')}</p>"
    if sources is None:
        sources = (src(REUTERS, title, link),)
    return StoryItem(
        uid=f"01HZX{n:021d}",
        title=title,
        link=link,
        summary_html=content if summary is None else summary,
        content_html=content,
        text=text if text is not None else f"Plain text of story {n}. " * 5,
        authors=authors,
        published=published.astimezone(UTC),
        updated=(updated or published).astimezone(UTC),
        topics=topics,
        categories=categories,
        enclosures=enclosures,
        sources=sources,
    )


LONG_TEXT = " ".join(["The committee heard evidence from ministers and officials."] * 20)

ITEMS: list[StoryItem] = [
    story(
        1,
        "AT&T and Verizon face FCC inquiry over <outage> reports",
        published=datetime(2026, 3, 14, 4, 5, 6, tzinfo=EST),
        authors=("Jane O'Neil",),
        categories=("Telecom", "Politics"),
    ),
    story(
        2,
        'Minister says "no deal" is still on the table',
        published=datetime(2026, 3, 14, 9, 0, tzinfo=CET),
        updated=datetime(2026, 3, 14, 10, 15, tzinfo=CET),
        sources=(
            src(BBC, 'Minister: "no deal" still possible', "https://bbc.example/news/1"),
            src(
                REUTERS,
                "No-deal option remains, minister says",
                "https://reuters.example/a?b=1&c=2",
            ),
            src(NPR, "Minister keeps no-deal option", None),
        ),
        content='<p>The minister <a href="https://gov.example/speech">said</a> on Friday…</p>'
        '<img src="https://img.example/minister.jpg" alt="The minister">',
    ),
    story(
        3,
        "Élections municipales : la participation en hausse à Besançon",
        published=datetime(2026, 3, 13, 21, 45, tzinfo=CET),
        sources=(src(LEMONDE, "Élections municipales", "https://www.lemonde.example/a/123"),),
        topics=("politics", "france"),
        categories=("Élections", "élections", "France"),
    ),
    story(
        4,
        "Podcast: The week in Westminster",
        published=datetime(2026, 3, 13, 18, 0, tzinfo=UTC),
        enclosures=(Enclosure("https://cdn.example/ep42.mp3", "audio/mpeg", 31_457_280),),
        authors=("Chris Mason", "Laura Kuenssberg"),
    ),
    story(
        5,
        "Budget vote delayed after late-night session",
        link=None,
        published=datetime(2026, 3, 13, 23, 59, 59, tzinfo=IST),
        sources=(src(NPR, "Budget vote delayed", None),),
    ),
    story(
        6,
        "Senate passes bill 52–48 — what’s next?",
        published=datetime(2026, 3, 13, 12, 0, 30, 123456, tzinfo=EST),
        enclosures=(
            Enclosure("https://cdn.example/vote.pdf", None, None),
            Enclosure("https://cdn.example/vote-chart.png", "image/png", None),
        ),
    ),
    story(
        7,
        "Kathmandu talks resume; parties cite ‘progress’",
        published=datetime(2026, 3, 13, 8, 15, tzinfo=NPT),
    ),
    story(
        8,
        "Why the <filibuster> matters & who it helps",
        published=datetime(2026, 3, 12, 22, 0, tzinfo=EST),
        sources=(src(EVIL, "Filibuster explained", "https://evil.example/f?x=\"1\"&y='2'"),),
    ),
    story(
        9,
        "Ukraine–EU summit: 5 takeaways",
        published=datetime(2026, 3, 12, 17, 30, tzinfo=CET),
        sources=(
            src(REUTERS, "EU summit takeaways", "https://reuters.example/eu"),
            src(EVIL, "summit", "javascript:alert(1)"),
        ),
    ),
    story(
        10,
        "Poll: 61% back electoral reform",
        published=datetime(2026, 3, 12, 6, 0, tzinfo=UTC),
        text=LONG_TEXT,
    ),
    story(
        11,
        "中国人大会议闭幕",
        published=datetime(2026, 3, 11, 20, 0, tzinfo=timezone(timedelta(hours=8))),
        topics=("politics", "asia"),
    ),
    story(
        12,
        "Governor's race: O'Brien leads 'by a whisker'",
        published=datetime(2026, 3, 11, 15, 0, tzinfo=EST),
        authors=("",),
    ),
    story(
        13,
        "Supreme Court hears case on ballot access",
        published=datetime(2026, 3, 11, 14, 0, tzinfo=EST),
        content="",
        summary="<p>Only a summary was given.</p>",
    ),
    story(
        14,
        "Tom &amp; Jerry Act named after senators' cats",
        published=datetime(2026, 3, 11, 9, 0, tzinfo=UTC),
    ),
    story(
        15,
        "Coalition talks: what we know so far",
        published=datetime(2026, 3, 10, 19, 45, tzinfo=CET),
        summary="<p>Short summary.</p>",
        categories=("Coalition", "Germany", "POLITICS"),
    ),
    story(
        16,
        "Mayor unveils €2bn housing plan",
        published=datetime(2026, 3, 10, 11, 0, tzinfo=CET),
        sources=(
            src(LEMONDE, "Logement : le plan du maire", "https://www.lemonde.example/a/9"),
            src(REUTERS, "Mayor's housing plan", "https://reuters.example/h"),
        ),
    ),
    story(
        17,
        "Video: PM's statement in full",
        published=datetime(2026, 3, 10, 8, 0, tzinfo=UTC),
        enclosures=(Enclosure("https://cdn.example/pm.mp4", "video/mp4", 0),),
    ),
    story(
        18,
        "Live updates: election night",
        published=datetime(2026, 3, 9, 23, 0, tzinfo=EST),
        updated=datetime(2026, 3, 10, 6, 30, tzinfo=EST),
    ),
    story(
        19,
        "Opinion: Let’s talk about “civility”",
        published=datetime(2026, 3, 9, 12, 0, tzinfo=UTC),
        authors=("Ana García-López",),
    ),
    story(
        20,
        "Parliament \u00a0 debates   new\tspending rules",
        published=datetime(2026, 3, 9, 10, 0, tzinfo=UTC),
    ),
    story(
        21,
        "Leak inquiry widens",
        published=datetime(2026, 3, 8, 16, 0, tzinfo=UTC),
        sources=(),
    ),
    story(
        22,
        "Treaty text published (PDF)",
        published=datetime(2026, 3, 8, 9, 0, tzinfo=UTC),
        link="https://treaties.example/doc?id=42&lang=en#art-5",
    ),
    story(
        23,
        "Protests in São Paulo over pension reform",
        published=datetime(2026, 3, 7, 20, 0, tzinfo=timezone(timedelta(hours=-3))),
    ),
    story(
        24,
        "Ex-aide: 'I was told to <delete> the emails'",
        published=datetime(2026, 3, 7, 7, 0, tzinfo=UTC),
        link=None,
        sources=(src(BBC, "Ex-aide speaks", None),),
    ),
    story(
        25,
        "Week ahead in politics",
        published=datetime(2026, 3, 7, 0, 0, tzinfo=UTC),
    ),
]

BY_UID = {item.uid: item for item in ITEMS}


def epoch(dt: datetime) -> int:
    """Whole seconds since the epoch: what survives every format."""
    return int(dt.timestamp())


def parsed_epoch(struct: Any) -> int:
    return calendar.timegm(struct)


def norm_title(title: str) -> str:
    return " ".join(title.split())


def xml_items(body: bytes) -> list[ET.Element]:
    return ET.fromstring(body).findall("./channel/item")


# --- round trips ------------------------------------------------------------


def test_rss_round_trip_through_feedparser() -> None:
    body = render_rss(META, ITEMS)
    d = feedparser.parse(body)
    assert d.bozo == 0, d.get("bozo_exception")
    assert d.version == "rss20"
    assert d.feed.title == META.title
    assert d.feed.link == META.html_url
    assert d.feed.language == "en"
    assert len(d.entries) == len(ITEMS)
    for entry, item in zip(d.entries, ITEMS, strict=True):
        assert entry.id == item_id(item.uid)
        assert entry.guidislink is False
        assert entry.title == norm_title(item.title)
        assert entry.get("link") == item.link
        assert parsed_epoch(entry.published_parsed) == epoch(item.published)


def test_atom_round_trip_through_feedparser() -> None:
    body = render_atom(META, ITEMS)
    d = feedparser.parse(body)
    assert d.bozo == 0, d.get("bozo_exception")
    assert d.version == "atom10"
    assert d.feed.id == META.id
    assert d.feed.title == META.title
    assert d.feed.subtitle == META.description
    assert d.feed.link == META.html_url
    assert parsed_epoch(d.feed.updated_parsed) == epoch(META.updated)
    assert d.feed.generator == "aggregator"
    assert len(d.entries) == len(ITEMS)
    for entry, item in zip(d.entries, ITEMS, strict=True):
        assert entry.id == item_id(item.uid)
        assert entry.title == norm_title(item.title)
        alternates = [ln.href for ln in entry.get("links", []) if ln.rel == "alternate"]
        assert alternates == ([item.link] if item.link else [])
        assert parsed_epoch(entry.published_parsed) == epoch(item.published)
        assert parsed_epoch(entry.updated_parsed) == epoch(item.updated)
        assert entry.author  # Atom requires one per entry (or feed)
        assert entry.content[0].type == "text/html"


def test_json_round_trip() -> None:
    doc = json.loads(render_json(META, ITEMS))
    assert doc["version"] == "https://jsonfeed.org/version/1.1" == JSON_FEED_VERSION
    assert doc["title"] == META.title
    assert doc["home_page_url"] == META.html_url
    assert doc["feed_url"] == META.self_url
    assert doc["description"] == META.description
    assert doc["language"] == "en"
    assert len(doc["items"]) == len(ITEMS)
    for out, item in zip(doc["items"], ITEMS, strict=True):
        assert out["id"] == item_id(item.uid)
        assert out["title"] == norm_title(item.title)
        assert out.get("url") == item.link
        assert "url" in out or item.link is None  # None values are omitted, not null
        published = datetime.fromisoformat(out["date_published"])
        modified = datetime.fromisoformat(out["date_modified"])
        assert published.utcoffset() == timedelta(0)
        assert epoch(published) == epoch(item.published)
        assert epoch(modified) == epoch(item.updated)
        assert out["_aggregator"]["topics"] == list(item.topics)
        assert [s["feed_url"] for s in out["_aggregator"]["sources"]] == [
            s.feed_url for s in item.sources
        ]
        # Quotes and brackets in URLs go out percent-encoded (sanitize.safe_url).
        assert [s.get("url") for s in out["_aggregator"]["sources"]] == [
            safe_url(s.link) if s.link else None for s in item.sources
        ]
        assert None not in out.values()


def test_feedparser_reads_atom_and_json_dates_identically() -> None:
    atom = feedparser.parse(render_atom(META, ITEMS))
    doc = json.loads(render_json(META, ITEMS))
    for entry, out in zip(atom.entries, doc["items"], strict=True):
        assert entry.published == out["date_published"]
        assert entry.updated == out["date_modified"]


# --- determinism and dates ----------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_rendering_is_deterministic(fmt: str) -> None:
    first = render(fmt, META, ITEMS)
    second = render(fmt, META, list(ITEMS))
    assert first == second


def test_rss_dates_come_from_meta_and_items_not_the_clock() -> None:
    root = ET.fromstring(render_rss(META, ITEMS[:1]))
    assert root.findtext("./channel/lastBuildDate") == "Sat, 14 Mar 2026 09:30:00 +0000"
    # 04:05:06 at UTC-5
    assert root.findtext("./channel/item/pubDate") == "Sat, 14 Mar 2026 09:05:06 +0000"
    assert root.findtext("./channel/generator") == "aggregator"


def test_atom_dates_come_from_meta_and_items_not_the_clock() -> None:
    root = ET.fromstring(render_atom(META, [ITEMS[1]]))
    assert root.findtext(f"./{ATOM}updated") == "2026-03-14T09:30:00+00:00"
    entry = root.find(f"./{ATOM}entry")
    assert entry is not None
    assert entry.findtext(f"{ATOM}published") == "2026-03-14T08:00:00+00:00"
    assert entry.findtext(f"{ATOM}updated") == "2026-03-14T09:15:00+00:00"


def test_fractional_seconds_are_dropped_in_every_format() -> None:
    item = BY_UID[ITEMS[5].uid]
    assert item.published.microsecond == 123456
    out = json.loads(render_json(META, [item]))["items"][0]
    assert out["date_published"] == "2026-03-13T17:00:30+00:00"
    entry = ET.fromstring(render_atom(META, [item])).find(f"./{ATOM}entry")
    assert entry is not None
    assert entry.findtext(f"{ATOM}published") == "2026-03-13T17:00:30+00:00"


def test_naive_datetimes_are_rejected() -> None:
    naive = story(99, "Naive", published=datetime(2026, 1, 1, tzinfo=UTC))
    naive = StoryItem(**{**naive.__dict__, "published": datetime(2026, 1, 1)})
    for fmt in FORMATS:
        with pytest.raises(ValueError, match="timezone-aware"):
            render(fmt, META, [naive])


def test_given_order_is_kept_not_resorted() -> None:
    shuffled = [ITEMS[3], ITEMS[0], ITEMS[24], ITEMS[1]]
    expected = [item_id(i.uid) for i in shuffled]
    assert [e.id for e in feedparser.parse(render_rss(META, shuffled)).entries] == expected
    assert [e.id for e in feedparser.parse(render_atom(META, shuffled)).entries] == expected
    assert [i["id"] for i in json.loads(render_json(META, shuffled))["items"]] == expected


# --- links and ids ------------------------------------------------------------


def test_rss_has_atom_self_link_and_channel_link() -> None:
    root = ET.fromstring(render_rss(META, ITEMS))
    channel = root.find("channel")
    assert channel is not None
    selfs = [ln for ln in channel.findall(f"{ATOM}link") if ln.get("rel") == "self"]
    assert len(selfs) == 1
    assert selfs[0].get("href") == META.self_url
    assert selfs[0].get("type") == "application/rss+xml"
    assert channel.findtext("link") == META.html_url
    guid = channel.find("item/guid")
    assert guid is not None and guid.get("isPermaLink") == "false"


def test_atom_has_self_and_alternate_links() -> None:
    root = ET.fromstring(render_atom(META, ITEMS))
    links = {ln.get("rel"): ln.get("href") for ln in root.findall(f"{ATOM}link")}
    assert links == {"self": META.self_url, "alternate": META.html_url}
    assert root.findtext(f"{ATOM}id") == META.id
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"


def test_items_without_link() -> None:
    no_link = [i for i in ITEMS if i.link is None]
    assert len(no_link) == 2
    for item in xml_items(render_rss(META, no_link)):
        assert item.find("link") is None
    root = ET.fromstring(render_atom(META, no_link))
    for entry in root.findall(f"{ATOM}entry"):
        assert [ln.get("rel") for ln in entry.findall(f"{ATOM}link")] == []
        assert entry.find(f"{ATOM}content") is not None
    for out in json.loads(render_json(META, no_link))["items"]:
        assert "url" not in out


def test_item_id_is_stable_and_a_valid_urn() -> None:
    assert item_id("01HZX123") == "urn:aggregator:story:01HZX123"
    assert item_id("a b/ü?#%") == "urn:aggregator:story:a%20b/%C3%BC%3F%23%25"
    with pytest.raises(ValueError):
        item_id("")


# --- body, sources, escaping ----------------------------------------------------


def rss_description(item: StoryItem) -> str:
    """The item's HTML, unescaped once by the XML parser as a reader would."""
    text = xml_items(render_rss(META, [item]))[0].findtext("description")
    assert text is not None
    return text


def atom_content(item: StoryItem) -> str:
    entry = ET.fromstring(render_atom(META, [item])).find(f"{ATOM}entry")
    assert entry is not None
    content = entry.find(f"{ATOM}content")
    assert content is not None and content.get("type") == "html"
    return content.text or ""


def json_content(item: StoryItem) -> str:
    content: str = json.loads(render_json(META, [item]))["items"][0]["content_html"]
    return content


BODIES: list[Callable[[StoryItem], str]] = [rss_description, atom_content, json_content]


@pytest.mark.parametrize("body", BODIES)
def test_single_source_line(body: Callable[[StoryItem], str]) -> None:
    html_ = body(ITEMS[0])
    assert html_.startswith(ITEMS[0].content_html)
    assert html_.endswith(
        '<p class="sources">Source: <a href="https://news.example/articles/0001?utm=feed&amp;'
        'ref=rss">Reuters World</a></p>'
    )


@pytest.mark.parametrize("body", BODIES)
def test_several_sources_are_all_named(body: Callable[[StoryItem], str]) -> None:
    html_ = body(ITEMS[1])
    assert html_.startswith(ITEMS[1].content_html)  # trusted, passed through untouched
    assert html_.endswith(
        '<p class="sources">Sources: '
        '<a href="https://bbc.example/news/1">BBC News — Politics</a>, '
        '<a href="https://reuters.example/a?b=1&amp;c=2">Reuters World</a>, '
        "NPR: Politics</p>"
    )


@pytest.mark.parametrize("body", BODIES)
def test_feed_titles_and_urls_are_escaped_in_the_body(body: Callable[[StoryItem], str]) -> None:
    html_ = body(ITEMS[7])
    assert "<script" not in html_
    # Quotes in the URL percent-encoded; the feed title is plain text, so its "<script>"
    # shows as those characters (issue 22.7) and nothing in it is a tag.
    name = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Daily &amp; Co"
    assert f'<a href="https://evil.example/f?x=%221%22&amp;y=%272%27">{name}</a>' in html_


@pytest.mark.parametrize("body", BODIES)
def test_non_http_source_links_are_not_linked(body: Callable[[StoryItem], str]) -> None:
    html_ = body(ITEMS[8])
    assert "javascript:" not in html_
    assert html_.endswith(", &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Daily &amp; Co</p>")
    assert "<script" not in html_


def test_body_falls_back_to_summary_and_omits_source_line_without_sources() -> None:
    assert json_content(ITEMS[12]).startswith("<p>Only a summary was given.</p>\n")
    assert json_content(ITEMS[20]) == ITEMS[20].content_html


def test_rss_source_element_names_the_first_feed() -> None:
    item = xml_items(render_rss(META, [ITEMS[1]]))[0]
    source = item.find("source")
    assert source is not None
    assert source.get("url") == BBC[1]
    assert source.text == BBC[0]


def test_titles_with_markup_characters_are_plain_text_in_xml() -> None:
    item = xml_items(render_rss(META, [ITEMS[0]]))[0]
    assert item.findtext("title") == ITEMS[0].title
    raw = render_atom(META, [ITEMS[13]])
    assert b"<title>Tom &amp;amp; Jerry Act named after senators' cats</title>" in raw


# --- authors, categories, enclosures, summary ---------------------------------------


def test_authors() -> None:
    rss = xml_items(render_rss(META, ITEMS))
    dc = "{http://purl.org/dc/elements/1.1/}creator"
    assert [c.text for c in rss[3].findall(dc)] == ["Chris Mason", "Laura Kuenssberg"]
    assert rss[11].findall(dc) == []  # blank author names are dropped
    atom = feedparser.parse(render_atom(META, ITEMS)).entries
    assert [a.name for a in atom[3].authors] == ["Chris Mason", "Laura Kuenssberg"]
    assert atom[0].author == "Jane O'Neil"
    assert atom[2].author == LEMONDE[0]  # no author: the first source's feed title
    assert atom[20].author == META.title  # neither author nor source
    doc = json.loads(render_json(META, ITEMS))["items"]
    assert doc[18]["authors"] == [{"name": "Ana García-López"}]
    assert "authors" not in doc[2]


def test_categories_are_topics_then_categories_deduplicated() -> None:
    # "France" repeats the topic "france" and "élections" the first spelling.
    expected = ["politics", "france", "Élections"]
    assert [c.text for c in xml_items(render_rss(META, [ITEMS[2]]))[0].findall("category")] == (
        expected
    )
    assert [t.term for t in feedparser.parse(render_atom(META, [ITEMS[2]])).entries[0].tags] == (
        expected
    )
    assert json.loads(render_json(META, [ITEMS[2]]))["items"][0]["tags"] == expected
    assert json.loads(render_json(META, [ITEMS[14]]))["items"][0]["tags"] == [
        "politics",
        "Coalition",
        "Germany",
    ]


def test_enclosures() -> None:
    rss = xml_items(render_rss(META, [ITEMS[3], ITEMS[5], ITEMS[16]]))
    encs = [i.findall("enclosure") for i in rss]
    assert [len(e) for e in encs] == [1, 1, 1]  # RSS readers honour one
    assert encs[0][0].attrib == {
        "url": "https://cdn.example/ep42.mp3",
        "length": "31457280",
        "type": "audio/mpeg",
    }
    assert encs[1][0].attrib == {
        "url": "https://cdn.example/vote.pdf",
        "length": "0",
        "type": "application/octet-stream",
    }
    assert encs[2][0].get("length") == "0"

    atom = feedparser.parse(render_atom(META, [ITEMS[3], ITEMS[5]]))
    assert atom.bozo == 0
    assert [e.href for e in atom.entries[1].enclosures] == [
        "https://cdn.example/vote.pdf",
        "https://cdn.example/vote-chart.png",
    ]
    assert atom.entries[0].enclosures[0].type == "audio/mpeg"
    assert atom.entries[0].enclosures[0].length == "31457280"

    items = json.loads(render_json(META, [ITEMS[3], ITEMS[5], ITEMS[16]]))["items"]
    assert items[0]["attachments"] == [
        {
            "url": "https://cdn.example/ep42.mp3",
            "mime_type": "audio/mpeg",
            "size_in_bytes": 31457280,
        }
    ]
    assert items[1]["attachments"] == [
        {"url": "https://cdn.example/vote.pdf", "mime_type": "application/octet-stream"},
        {"url": "https://cdn.example/vote-chart.png", "mime_type": "image/png"},
    ]
    assert items[2]["attachments"][0]["size_in_bytes"] == 0
    assert "attachments" not in json.loads(render_json(META, [ITEMS[0]]))["items"][0]


def test_json_summary_is_truncated_plain_text() -> None:
    summary = json.loads(render_json(META, [ITEMS[9]]))["items"][0]["summary"]
    assert summary.endswith("…")
    assert len(summary) <= 300
    assert LONG_TEXT.startswith(summary[:-1])
    short = json.loads(render_json(META, [ITEMS[0]]))["items"][0]["summary"]
    assert short == ITEMS[0].text.strip()


def test_atom_summary_only_when_it_differs_from_content() -> None:
    entries = ET.fromstring(render_atom(META, [ITEMS[0], ITEMS[14]])).findall(f"{ATOM}entry")
    assert entries[0].find(f"{ATOM}summary") is None
    summary = entries[1].find(f"{ATOM}summary")
    assert summary is not None and summary.get("type") == "html"
    assert summary.text == "<p>Short summary.</p>"


# --- edge cases -----------------------------------------------------------------


def test_empty_feed_is_valid_in_every_format() -> None:
    for fmt in ("rss", "atom"):
        d = feedparser.parse(render(fmt, EMPTY_META, []))
        assert d.bozo == 0, d.get("bozo_exception")
        assert d.version == {"rss": "rss20", "atom": "atom10"}[fmt]
        assert d.entries == []
        assert d.feed.title == "Empty"
    rss = ET.fromstring(render_rss(EMPTY_META, []))
    assert rss.findtext("./channel/description") == "Empty"  # RSS requires one
    doc = json.loads(render_json(EMPTY_META, []))
    assert doc == {
        "version": JSON_FEED_VERSION,
        "title": "Empty",
        "home_page_url": EMPTY_META.html_url,
        "feed_url": EMPTY_META.self_url,
        "items": [],
    }


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown feed format 'xml'"):
        render("xml", META, ITEMS)


def test_media_types_cover_every_format() -> None:
    assert set(MEDIA_TYPES) == set(FORMATS)
    assert all(mt.endswith("; charset=utf-8") for mt in MEDIA_TYPES.values())


def test_render_dispatches_to_the_format_functions() -> None:
    assert render("rss", META, ITEMS) == render_rss(META, ITEMS)
    assert render("atom", META, ITEMS) == render_atom(META, ITEMS)
    assert render("json", META, ITEMS) == render_json(META, ITEMS)


def test_json_is_utf8_without_ascii_escapes() -> None:
    body = render_json(META, [ITEMS[10]])
    assert "中国人大会议闭幕".encode() in body
    assert b"\\u" not in body


def test_xml_illegal_characters_are_dropped_not_fatal() -> None:
    dirty = story(
        98,
        "Bad\x0bbytes\x00 in \ufffetitle",
        published=datetime(2026, 1, 1, tzinfo=UTC),
        content="<p>form\x0cfeed</p>",
    )
    for fmt in ("rss", "atom"):
        d = feedparser.parse(render(fmt, META, [dirty]))
        assert d.bozo == 0
        # \x0b is whitespace, collapsed like any other; the rest is dropped.
        assert d.entries[0].title == "Bad bytes in title"
    assert json.loads(render_json(META, [dirty]))["items"][0]["title"] == "Bad bytes in title"


def test_empty_title_gets_a_readable_fallback() -> None:
    untitled = story(97, "  ", published=datetime(2026, 1, 1, tzinfo=UTC), text="")
    from_text = story(96, "", published=datetime(2026, 1, 1, tzinfo=UTC), text="Short text.")
    for fmt in ("rss", "atom"):
        entries = feedparser.parse(render(fmt, META, [untitled, from_text])).entries
        assert [e.title for e in entries] == ["Untitled", "Short text."]


# Titles a real feed could carry: any printable text, markup characters included.
TITLE = (
    st.text(
        st.characters(
            blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
            blacklist_characters="\ufffe\uffff",
        ),
        min_size=1,
        max_size=80,
    )
    .map(norm_title)
    .filter(bool)
)


@settings(max_examples=60, deadline=None)
@given(title=TITLE)
def test_any_title_round_trips(title: str) -> None:
    # Exactness is checked with a strict XML parser: feedparser "repairs" text
    # that looks like double-encoded UTF-8 (e.g. "à¡¡" comes back as "ࡡ").
    item = story(1, title, published=datetime(2026, 1, 1, tzinfo=UTC))
    rss = render_rss(META, [item])
    rss_title = xml_items(rss)[0].findtext("title")
    # In RSS, text an HTML reader would take for markup is escaped once more (issue 22.7).
    assert rss_title == title if strip_markup(title) == title else html.unescape(rss_title) == title
    atom = render_atom(META, [item])
    assert ET.fromstring(atom).findtext(f"{ATOM}entry/{ATOM}title") == title
    for body in (rss, atom):
        assert feedparser.parse(body).bozo == 0
    assert json.loads(render_json(META, [item]))["items"][0]["title"] == title


def test_markup_looking_plain_text_reaches_every_reader_as_written() -> None:
    """Issue 22.7: stored plain text that looks like tags is published as text, not deleted."""
    title = "Use <dialog>, not <div>; the <script> tag"
    item = story(
        1,
        title,
        published=datetime(2026, 1, 1, tzinfo=UTC),
        authors=("Ana <ana@web.example>",),
        categories=("<dialog>",),
        text="Why <dialog> beats a div",
    )
    atom = feedparser.parse(render_atom(META, [item])).entries[0]
    assert atom.title == title and atom.title_detail.type == "text/plain"
    assert atom.author == "Ana <ana@web.example>"
    assert "<dialog>" in [t.term for t in atom.tags]
    doc = json.loads(render_json(META, [item]))["items"][0]
    assert doc["title"] == title and doc["summary"] == "Why <dialog> beats a div"
    assert doc["authors"] == [{"name": "Ana <ana@web.example>"}] and "<dialog>" in doc["tags"]
    # RSS has no text type and readers render its titles as HTML: escaped once more there,
    # they show as written, and nothing in them is a tag.
    rss = feedparser.parse(render_rss(META, [item])).entries[0]
    assert rss.title_detail.type == "text/html" and html.unescape(rss.title) == title
    assert "<" not in rss.title
    assert html.unescape(rss.author) == "Ana <ana@web.example>"
    # Text with no tag in it is written as it is.
    plain = story(2, "Tom & Jerry: 3 < 4", published=datetime(2026, 1, 1, tzinfo=UTC))
    assert xml_items(render_rss(META, [plain]))[0].findtext("title") == "Tom & Jerry: 3 < 4"
