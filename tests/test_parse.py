"""Tests for aggregator.parse: real-looking feeds in, normalised ParsedFeed out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aggregator.parse as parse_module
from aggregator.exceptions import ParseError
from aggregator.parse import parse
from aggregator.types import Enclosure, ParsedEntry, ParsedFeed

FEEDS = Path(__file__).parent / "data" / "feeds"
FETCHED_AT = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)

# name -> (URL it is served from, Content-Type), as the real sites send them.
SOURCES: dict[str, tuple[str, str]] = {
    "bbc_world.rss": ("https://feeds.bbci.co.uk/news/world/rss.xml", "text/xml; charset=UTF-8"),
    "guardian_politics.rss": (
        "https://www.theguardian.com/politics/rss",
        "application/rss+xml; charset=utf-8",
    ),
    "verge_tech.atom": ("https://www.theverge.com/rss/index.xml", "application/atom+xml"),
    "dw_rdf.rdf": ("https://rss.dw.com/rdf/rss-en-all", "application/rdf+xml"),
    "npr_news.json": ("https://feeds.npr.org/1001/feed.json", "application/feed+json"),
    "colombia_usa.rss": (
        "https://www.hemispheredispatch.com/feed/",
        "application/rss+xml; charset=UTF-8",
    ),
    "same_guid.rss": ("https://www.harrowgatecourier.co.uk/rss/news", "application/xml"),
    "loose_entities.rss": ("https://www.valleyobserver.example/feed", "application/rss+xml"),
    "empty_channel.rss": ("https://www.gov.example/foreign-affairs/press.rss", "text/xml"),
    "broken_truncated.rss": ("https://feeds.bbci.co.uk/news/world/rss.xml", "text/xml"),
    "not_a_feed.html": ("https://www.exampletimes.co.uk/world", "text/html; charset=utf-8"),
    "garbage.bin": ("https://example.com/garbage.rss", "application/rss+xml"),
    "invalid.json": ("https://feeds.npr.org/1001/feed.json", "application/feed+json"),
}
GOOD = [
    "bbc_world.rss",
    "guardian_politics.rss",
    "verge_tech.atom",
    "dw_rdf.rdf",
    "npr_news.json",
    "colombia_usa.rss",
    "same_guid.rss",
    "loose_entities.rss",
]


def expected(name: str) -> dict[str, Any]:
    stem = name.rsplit(".", 1)[0]
    data: dict[str, Any] = json.loads((FEEDS / f"{stem}.expected.json").read_text())
    return data


def load(name: str) -> ParsedFeed:
    url, ctype = SOURCES[name]
    return parse((FEEDS / name).read_bytes(), url, {"content-type": ctype}, FETCHED_AT)


def parse_str(body: str | bytes, ctype: str = "application/rss+xml", **headers: str) -> ParsedFeed:
    data = body.encode() if isinstance(body, str) else body
    return parse(
        data,
        "https://news.example.com/feeds/all.xml",
        {"content-type": ctype, **headers},
        FETCHED_AT,
    )


def test_every_feed_file_has_expectations_and_a_source() -> None:
    feeds = {p.name for p in FEEDS.iterdir() if not p.name.endswith(".expected.json")}
    assert feeds == set(SOURCES)
    for name in feeds:
        assert (FEEDS / f"{name.rsplit('.', 1)[0]}.expected.json").exists(), name


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_feed_matches_expected(name: str) -> None:
    exp = expected(name)
    if "error" in exp:
        with pytest.raises(ParseError, match=exp["error"]):
            load(name)
        return

    feed = load(name)
    assert (feed.title, feed.link, feed.language) == (
        exp["feed"]["title"],
        exp["feed"]["link"],
        exp["feed"]["language"],
    )
    assert len(feed.entries) == exp["entries"]
    for check in exp["check"]:
        entry = feed.entries[check["index"]]
        where = f"{name}[{check['index']}]"
        assert entry.title == check["title"], where
        assert entry.link == check["link"], where
        assert entry.guid == check["guid"], where
        assert entry.categories == tuple(check["categories"]), where
        if check["published"] is None:
            assert entry.date_from_fetch, where
            assert entry.published == entry.updated == FETCHED_AT, where
        else:
            assert entry.published.isoformat() == check["published"], where
        if "date_from_fetch" in check:
            assert entry.date_from_fetch is check["date_from_fetch"], where
        if "updated" in check:
            assert entry.updated.isoformat() == check["updated"], where
        if "authors" in check:
            assert entry.authors == tuple(check["authors"]), where
        if "enclosures" in check:
            assert entry.enclosures == tuple(Enclosure(*e) for e in check["enclosures"]), where
        if "orig_link" in check:
            assert entry.orig_link == check["orig_link"], where
    if "warning" in exp:
        assert any(exp["warning"] in w for w in feed.warnings), feed.warnings
    elif "future_index" not in exp:
        assert feed.warnings == []


def all_entries() -> list[tuple[str, ParsedEntry]]:
    return [(name, e) for name in GOOD for e in load(name).entries]


def test_entities_decoded_in_titles() -> None:
    bbc = load("bbc_world.rss").entries
    assert bbc[2].title == "Japan\u2019s economy shrinks for second quarter in a row"
    assert bbc[6].title == "Germany's coalition collapses after finance minister sacked"
    # Inside CDATA the publisher wrote character references: they are still decoded.
    assert bbc[20].title.startswith("Vatican: Pope calls for \u2018courageous\u2019")
    guardian = load("guardian_politics.rss").entries
    assert guardian[4].title == "MPs & peers demand inquiry into \u00a31.2bn PPE contracts"
    colombia = load("colombia_usa.rss")
    assert colombia.title == "Hemisphere Dispatch \u2013 Colombia & the Americas"
    assert colombia.entries[4].authors == ("Andr\u00e9s Galindo",)
    for name, entry in all_entries():
        assert "&#" not in entry.title and "&amp;" not in entry.title, (name, entry.title)
        assert "  " not in entry.title and entry.title == entry.title.strip()


def test_scripts_handlers_and_javascript_urls_are_removed() -> None:
    index = expected("guardian_politics.rss")["xss_index"]
    entry = load("guardian_politics.rss").entries[index]
    body = entry.content_html
    for bad in (
        "<script",
        "document.cookie",
        "onclick",
        "onmouseover",
        "onerror",
        "javascript:",
        "<iframe",
        "<style",
        "display:none",
        "data:text/html",
    ):
        assert bad not in body, bad
    assert "document.location" not in entry.text
    assert "full public inquiry" in body
    assert (
        '<a href="https://www.theguardian.com/politics/ppe" rel="noopener noreferrer nofollow">'
        in body
    )
    assert 'src="https://i.guim.co.uk/img/media/ppe.jpg"' in body
    assert 'alt="PPE stored in a warehouse"' in body
    # The standfirst in <description> is HTML too, escaped in the XML.
    assert entry.summary_html.startswith("<p>Cross-party group writes")
    assert "<em>\u201csignificant failings\u201d</em>" in entry.summary_html


def test_only_allowlisted_markup_survives() -> None:
    for name, entry in all_entries():
        for fragment in (entry.content_html, entry.summary_html):
            assert "<script" not in fragment and "<div" not in fragment, name
            assert "class=" not in fragment and "srcset" not in fragment, name
            assert "decoding=" not in fragment, name


def test_relative_links_made_absolute() -> None:
    verge = load("verge_tech.atom").entries
    # xml:base on the entry overrides the feed's.
    assert verge[18].link == "https://www.theverge.com/reviews/pixel-11-review"
    assert verge[0].link == "https://www.theverge.com/reviews/macbook-pro-m5-review"
    assert 'src="https://www.theverge.com/wp-content/uploads/sites/2/2026/11/7912340.jpg' in (
        verge[0].content_html
    )
    guardian = load("guardian_politics.rss").entries
    assert 'href="https://www.theguardian.com/politics/live"' in guardian[0].content_html
    npr = load("npr_news.json").entries
    assert (
        npr[3].link
        == "https://www.npr.org/2026/11/24/1234567804/ohio-intel-semiconductor-factory-town"
    )
    assert 'href="https://www.npr.org/programs/morning-edition/"' in npr[0].content_html
    for name, entry in all_entries():
        assert entry.link is None or entry.link.startswith(("https://", "http://")), name
        for enc in entry.enclosures:
            assert enc.url.startswith("https://"), name
        for fragment in (entry.content_html, entry.summary_html):
            assert 'href="/' not in fragment and 'src="/' not in fragment, (name, fragment)


def test_relative_links_in_rss_resolve_against_the_feed_url() -> None:
    feed = parse_str(
        '<rss version="2.0"><channel><title>T</title><link>/</link>'
        "<item><title>a</title><link>/news/1</link>"
        '<description>&lt;a href="2"&gt;two&lt;/a&gt; &lt;img src="../i/3.jpg"&gt;'
        '&lt;a href="//cdn.example.net/x"&gt;x&lt;/a&gt;</description>'
        '<enclosure url="../audio/1.mp3" type="audio/mpeg" length="1200"/></item>'
        "</channel></rss>"
    )
    [entry] = feed.entries
    assert feed.link == "https://news.example.com/"
    assert entry.link == "https://news.example.com/news/1"
    assert 'href="https://news.example.com/feeds/2"' in entry.content_html
    assert 'src="https://news.example.com/i/3.jpg"' in entry.content_html
    assert 'href="https://cdn.example.net/x"' in entry.content_html
    assert entry.enclosures == (
        Enclosure("https://news.example.com/audio/1.mp3", "audio/mpeg", 1200),
    )


def test_links_made_absolute_by_the_cleaner_give_what_feedparser_gave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without xml:base, nh3 resolves links in HTML in place of feedparser's pass: every
    # entry must come out byte for byte as before, or the content hash of every stored
    # entry would change and the next poll would mark them all edited.
    odd = (
        '<rss version="2.0"><channel><title>T</title><link>https://news.example.com/</link>'
        "<item><title>a</title><link>/news/1</link><description>"
        '&lt;img width="640" src="../i/1.jpg" alt="A &amp;amp; B" height="480"&gt;'
        '&lt;a title="t" href="2?x=1&amp;amp;y=2#f"&gt;two&lt;/a&gt; &lt;a href="mailto:a@b.c"&gt;'
        'm&lt;/a&gt;&lt;table&gt;&lt;tr&gt;&lt;td rowspan="2" colspan="3"&gt;x&lt;/td&gt;'
        "&lt;/tr&gt;&lt;/table&gt;</description></item></channel></rss>"
    )
    names = [n for n in GOOD if not n.endswith(".json")]
    now = [load(n) for n in names] + [parse_str(odd)]
    assert 'alt="A &amp; B" height="480" src="https://news.example.com/i/1.jpg"' in (
        now[-1].entries[0].content_html
    )
    monkeypatch.setattr(parse_module, "_XML_BASE", b"")  # feedparser resolves, always
    before = [load(n) for n in names] + [parse_str(odd)]
    assert [f.entries for f in now] == [f.entries for f in before]


def test_xml_base_counts_in_a_utf16_document() -> None:
    doc = (
        '<?xml version="1.0" encoding="utf-16"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>t</title><id>x</id><updated>2026-11-01T00:00:00Z</updated>"
        '<entry xml:base="https://other.example/sub/"><title>a</title><id>1</id>'
        '<updated>2026-11-01T00:00:00Z</updated><content type="html">'
        '&lt;a href="p/1"&gt;x&lt;/a&gt;</content></entry></feed>'
    )
    for encoding in ("utf-16", "utf-16-le", "utf-8"):
        [entry] = parse_str(doc.encode(encoding), "application/atom+xml").entries
        assert 'href="https://other.example/sub/p/1"' in entry.content_html, encoding


def test_dates_are_aware_utc() -> None:
    for name, entry in all_entries():
        for d in (entry.published, entry.updated):
            assert d.tzinfo is not None and d.utcoffset() == timedelta(0), name
    bbc = load("bbc_world.rss").entries
    assert (
        b"<pubDate>Tue, 24 Nov 2026 12:46:00 -0500</pubDate>"
        in (FEEDS / "bbc_world.rss").read_bytes()
    )
    assert bbc[3].published == datetime(2026, 11, 24, 17, 46, tzinfo=UTC)
    dw = load("dw_rdf.rdf").entries
    assert dw[0].published == datetime(2026, 11, 24, 18, 44, 5, tzinfo=UTC)


def test_missing_date_uses_fetch_time() -> None:
    dw = load("dw_rdf.rdf").entries
    undated = [e for e in dw if e.date_from_fetch]
    assert [e.title for e in undated] == [
        "Weekly roundup: Europe in pictures",
        "Learn German: Lesson 47 \u2013 At the doctor",
    ]
    for e in undated:
        assert e.published == e.updated == FETCHED_AT
    assert not any(e.date_from_fetch for e in load("bbc_world.rss").entries)


def test_invalid_and_zero_dates_count_as_missing_old_dates_are_kept() -> None:
    colombia = load("colombia_usa.rss").entries
    assert colombia[23].date_from_fetch  # "0000-00-00 00:00:00"
    assert colombia[18].published == datetime(1955, 3, 15, 9, 0, tzinfo=UTC)
    feed = parse_str(
        '<rss version="2.0"><channel><title>T</title>'
        "<item><title>a</title><guid>a</guid>"
        "<pubDate>Mon, 31 Feb 2026 10:00:00 GMT</pubDate></item>"
        "<item><title>b</title><guid>b</guid><pubDate>yesterday</pubDate></item>"
        "<item><title>c</title><guid>c</guid>"
        "<pubDate>Thu, 01 Jan 1970 00:00:00 GMT</pubDate></item>"
        "</channel></rss>"
    )
    a, b, c = feed.entries
    assert a.date_from_fetch and b.date_from_fetch
    assert c.published == datetime(1970, 1, 1, tzinfo=UTC) and not c.date_from_fetch


def test_future_dates_clamped_to_fetch_time_with_warning() -> None:
    feed = load("colombia_usa.rss")
    entry = feed.entries[expected("colombia_usa.rss")["future_index"]]
    assert entry.published == FETCHED_AT and not entry.date_from_fetch
    assert any("2027-11-24" in w and "future" in w for w in feed.warnings)
    # Less than a day ahead is clock skew, not a bug: kept.
    soon = (FETCHED_AT + timedelta(hours=3)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    [e] = parse_str(
        f'<rss version="2.0"><channel><item><guid>x</guid><pubDate>{soon}</pubDate></item>'
        "</channel></rss>"
    ).entries
    assert e.published == FETCHED_AT + timedelta(hours=3)


def test_published_and_updated_do_not_borrow_from_each_other_wrongly() -> None:
    guardian = load("guardian_politics.rss").entries
    # pubDate + later dc:date
    assert guardian[1].updated - guardian[1].published == timedelta(minutes=45)
    dw = load("dw_rdf.rdf").entries
    # dc:date only: it is both.
    assert dw[1].published == dw[1].updated
    npr = load("npr_news.json").entries
    # date_modified only
    assert npr[18].published == npr[18].updated and not npr[18].date_from_fetch


def test_text_plain_content_is_escaped() -> None:
    entry = load("verge_tech.atom").entries[expected("verge_tech.atom")["plain_text_index"]]
    assert "<script" not in entry.content_html and "<b>" not in entry.content_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; that &lt;b&gt;is not bold" in (
        entry.content_html
    )
    assert "<b>is not bold</b>" in entry.text
    npr = load("npr_news.json").entries[12]
    assert "&lt;Orion&gt; capsule passed all checks &amp; is ready" in npr.content_html
    assert npr.text.endswith("the <Orion> capsule passed all checks & is ready.")


def test_text_is_plain_and_collapsed() -> None:
    for name, entry in all_entries():
        assert "<" not in entry.text or name in ("verge_tech.atom", "npr_news.json"), name
        assert "  " not in entry.text and "\n" not in entry.text, name
    g = load("guardian_politics.rss").entries[0]
    assert g.text.startswith("Treasury sources say the autumn statement")
    assert "\u201cWe will set out our plans in due course.\u201d" in g.text
    assert "PA Media Speaking" in g.text  # block boundaries become spaces


def test_content_and_summary_fall_back_to_each_other() -> None:
    bbc = load("bbc_world.rss").entries[0]  # description only
    assert bbc.content_html == bbc.summary_html != ""
    verge = load("verge_tech.atom").entries[1]  # both
    assert verge.summary_html == "A 24-hour battery changes how you use a laptop." or (
        verge.summary_html != verge.content_html
    )


def test_categories_deduplicated_in_order() -> None:
    guardian = load("guardian_politics.rss").entries
    assert guardian[16].categories == ("Farming", "Tax", "Politics")
    feed = parse_str(
        '<rss version="2.0"><channel><item><guid>x</guid>'
        '<category domain="https://x.example/c">  World </category><category>world</category>'
        "<category>World</category><category></category><category>USA</category>"
        "</item></channel></rss>"
    )
    assert feed.entries[0].categories == ("World", "world", "USA")


def test_authors_deduplicated_and_inherited() -> None:
    verge = load("verge_tech.atom").entries
    assert verge[4].authors == ("The Verge",)  # from the feed's <author>
    assert verge[0].authors == ("Nilay Brandt",)
    feed = parse_str(
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><item><guid>x</guid>'
        "<dc:creator>Jane Doe</dc:creator><dc:creator>Jane Doe</dc:creator>"
        "<author>news@example.com (John Roe)</author></item></channel></rss>"
    )
    assert feed.entries[0].authors == ("Jane Doe", "John Roe")


def test_guid_and_link_missing() -> None:
    colombia = load("colombia_usa.rss").entries
    assert colombia[3].guid is None and colombia[3].link
    assert colombia[19].guid is None and colombia[19].link is None
    assert colombia[19].title == "Correction"


def test_same_guid_entries_are_all_returned() -> None:
    feed = load("same_guid.rss")
    assert len(feed.entries) == 20
    assert {e.guid for e in feed.entries} == {"https://www.harrowgatecourier.co.uk/rss/news"}
    assert len({e.link for e in feed.entries}) == 20


def test_enclosures_from_enclosure_and_media_content() -> None:
    feed = parse_str(
        '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><item><guid>x</guid>'
        '<enclosure url="https://cdn.example/a.mp3" type="audio/mpeg" length="abc"/>'
        '<enclosure url="https://cdn.example/b.mp3" type="audio/mpeg"/>'
        '<media:content url="https://cdn.example/a.mp3" type="audio/mpeg" fileSize="99"/>'
        '<media:content url="https://cdn.example/v.mp4" type="video/mp4" fileSize="2048"/>'
        '<media:content medium="image"/>'
        "</item></channel></rss>"
    )
    assert feed.entries[0].enclosures == (
        Enclosure("https://cdn.example/a.mp3", "audio/mpeg", None),
        Enclosure("https://cdn.example/b.mp3", "audio/mpeg", None),
        Enclosure("https://cdn.example/v.mp4", "video/mp4", 2048),
    )


def test_links_that_are_not_web_urls_are_dropped() -> None:
    feed = parse_str(
        '<rss version="2.0"><channel><item><guid>x</guid><link>javascript:alert(1)</link>'
        "</item></channel></rss>"
    )
    assert feed.entries[0].link is None


JSON_10 = {
    "version": "https://jsonfeed.org/version/1",
    "title": "Daring Example",
    "home_page_url": "https://daring.example/",
    "author": {"name": "John Example", "url": "https://daring.example/about"},
    "items": [
        {
            "id": "https://daring.example/2026/11/24/one",
            "url": "https://daring.example/2026/11/24/one",
            "external_url": "https://elsewhere.example/story",
            "title": "Linked: a story elsewhere",
            "content_html": "<p>Worth reading.</p>",
            "date_published": "2026-11-24T10:00:00-05:00",
            "author": {"name": "Guest Writer"},
        },
        {
            "id": 2,
            "external_url": "https://elsewhere.example/two",
            "content_text": "No title, only text.",
            "date_published": "2026-11-24T09:00:00Z",
        },
    ],
}


def test_json_feed_1_0_author_and_1_1_authors() -> None:
    one, two = parse_str(json.dumps(JSON_10), "application/json").entries
    assert one.authors == ("Guest Writer",)
    assert two.authors == ("John Example",)  # the feed's author
    assert one.link == "https://daring.example/2026/11/24/one"
    assert one.published == datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    assert two.guid == "2" and two.title == "" and two.link == "https://elsewhere.example/two"
    npr = load("npr_news.json").entries
    assert npr[2].authors == ("Rebecca Hollins", "Carlos Berrios")
    assert npr[19].authors == ("NPR",)  # 1.1 feed-level authors


def test_json_feed_detected_by_body_and_bom() -> None:
    body = b"\xef\xbb\xbf \n" + json.dumps(JSON_10).encode()
    feed = parse(
        body, "https://daring.example/feed.json", {"content-type": "text/plain"}, FETCHED_AT
    )
    assert feed.title == "Daring Example" and len(feed.entries) == 2
    assert feed.link == "https://daring.example/"


def test_json_feed_summary_is_plain_text_and_bad_items_are_skipped() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [
            {"id": "a", "summary": "1 < 2 & <b>not bold</b>", "tags": ["A", "a", " A ", 3]},
            "not an item",
            {"id": "c", "url": "/c", "attachments": [{"url": "c.mp3", "size_in_bytes": "12"}]},
        ],
    }
    feed = parse(json.dumps(doc).encode(), "https://pod.example/feed.json", {}, FETCHED_AT)
    a, c = feed.entries
    assert a.summary_html == a.content_html == "1 &lt; 2 &amp; &lt;b&gt;not bold&lt;/b&gt;"
    assert a.text == "1 < 2 & <b>not bold</b>"
    assert a.categories == ("A", "a")
    assert c.link == "https://pod.example/c"
    assert c.enclosures == (Enclosure("https://pod.example/c.mp3", None, 12),)
    assert feed.warnings == ["entry 1 skipped: TypeError: item is a str, not an object"]


@pytest.mark.parametrize(
    ("body", "ctype", "message"),
    [
        (b"", "application/rss+xml", "empty body"),
        (b"  \r\n ", "application/rss+xml", "empty body"),
        (
            b'{"version": "https://jsonfeed.org/version/1.1", "items": [',
            "application/json",
            "invalid JSON",
        ),
        (b'{"name": "not a feed"}', "application/json", 'no "version"'),
        (b"[1, 2, 3]", "application/json", "top level is list"),
        (b'{"version": "https://jsonfeed.org/version/1.1"}', "application/feed+json", '"items"'),
        (b"<rss><channel><item><title>broken", "application/rss+xml", "truncated"),
        (b'<?xml version="1.0"?><config><a/></config>', "application/xml", "not a feed"),
        (b"/etc/passwd", "text/plain", "not a feed"),
        (b"Service Unavailable", "text/plain", "not a feed"),
    ],
)
def test_parse_errors_are_helpful(body: bytes, ctype: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_str(body, ctype)


def test_html_page_error_names_the_real_feed() -> None:
    with pytest.raises(ParseError) as info:
        load("not_a_feed.html")
    assert "looks like an HTML page" in str(info.value)
    assert "https://www.exampletimes.co.uk/world/rss.xml" in str(info.value)


def test_truncated_feed_is_an_error_not_a_partial_feed() -> None:
    # feedparser would salvage the first items; we refuse, so a cut-off download does
    # not store its half-written last item as an "update".
    with pytest.raises(ParseError, match="truncated"):
        load("broken_truncated.rss")
    # Also when the lenient parser is the one reading it (undefined entity first).
    body = (FEEDS / "loose_entities.rss").read_bytes()
    with pytest.raises(ParseError, match="truncated"):
        parse_str(body[: body.index(b"</item>", 600)])


def test_rss_served_as_html_still_parses_with_a_warning() -> None:
    body = (FEEDS / "bbc_world.rss").read_bytes()
    feed = parse(body, SOURCES["bbc_world.rss"][0], {"content-type": "text/html"}, FETCHED_AT)
    assert len(feed.entries) == 24
    assert any("NonXMLContentType" in w for w in feed.warnings)


def test_feed_language_falls_back_to_header() -> None:
    body = (FEEDS / "loose_entities.rss").read_bytes()
    feed = parse_str(body, "application/rss+xml", **{"content-language": "en-GB"})
    assert feed.language == "en-GB"


def test_one_bad_entry_is_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    real = parse_module._fp_enclosures

    def flaky(entry: Any, ctx: Any) -> tuple[Enclosure, ...]:
        if "Kenya court" in str(entry.get("title")):
            raise RuntimeError("boom")
        result: tuple[Enclosure, ...] = real(entry, ctx)
        return result

    monkeypatch.setattr(parse_module, "_fp_enclosures", flaky)
    feed = load("bbc_world.rss")
    assert len(feed.entries) == 23
    assert feed.warnings == ["entry 4 skipped: RuntimeError: boom"]


def test_naive_fetched_at_is_taken_as_utc() -> None:
    feed = parse(
        (FEEDS / "dw_rdf.rdf").read_bytes(),
        SOURCES["dw_rdf.rdf"][0],
        {},
        FETCHED_AT.replace(tzinfo=None),
    )
    assert feed.entries[14].published == FETCHED_AT


SAMPLES = [(FEEDS / name).read_bytes() for name in sorted(SOURCES)]


@st.composite
def mangled_feeds(draw: st.DrawFn) -> bytes:
    """A real feed file with a random slice replaced by random bytes."""
    body = draw(st.sampled_from(SAMPLES))
    start = draw(st.integers(0, len(body)))
    end = draw(st.integers(start, min(len(body), start + 200)))
    return body[:start] + draw(st.binary(max_size=50)) + body[end:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(st.binary(max_size=2000), mangled_feeds()),
    ctype=st.sampled_from(["application/rss+xml", "application/feed+json", "text/html", ""]),
)
def test_arbitrary_bytes_give_a_feed_or_parse_error(body: bytes, ctype: str) -> None:
    try:
        feed = parse(body, "https://fuzz.example/feed", {"content-type": ctype}, FETCHED_AT)
    except ParseError as e:
        assert str(e)
        return
    assert isinstance(feed, ParsedFeed)
    for entry in feed.entries:
        assert isinstance(entry, ParsedEntry)
        assert entry.published.tzinfo is not None


WRONG_PROLOG = (
    '<?xml version="1.0" encoding="windows-1252"?>\n<rss version="2.0"><channel>'
    "<title>Exchange rates</title><link>https://rates.example.com/</link>"
    "<item><title>Euro €</title><guid>rates-1</guid>"
    "<description>The euro (€) closed at 1.08 dollars; the yen at ¥157.</description></item>"
    "</channel></rss>"
)

# Headlines as national news sites write them, each in its legacy encoding, undeclared.
UNDECLARED = {
    "euc_jp": (
        "東京で記録的な大雨、鉄道各線で運転見合わせ。気象庁は警報を発表し、住民に避難を呼びかけた。"
    ),
    "shift_jis": (
        "東京で記録的な大雨、鉄道各線で運転見合わせ。気象庁は警報を発表し、住民に避難を呼びかけた。"
    ),
    "euc_kr": (
        "서울에 기록적인 폭우가 내려 지하철 운행이 중단"
        "되었습니다. 기상청은 호우 경보를 발령했습니다."
    ),
    "gb2312": ("北京市今天发布暴雨红色预警，地铁部分线路停运，市民被要求减少外出。"),
    "koi8_r": (
        "В Москве прошёл сильный ливень, движение транспорта нарушено, метро работает с задержками."
    ),
    "tis_620": ("ฝนตกหนักในกรุงเทพมหานคร การจราจรติดขัดอย่างหนัก กรมอุตุนิยมวิทยาเตือนให้ระวังน้ำท่วม"),
}


def test_utf8_bytes_under_a_wrong_declaration_are_read_as_utf8() -> None:
    """Issue 22.9: miniflux's windows-1252-incorrect-prolog.xml gave 'Euro â‚¬'."""
    for ctype in ("application/rss+xml", "text/xml; charset=windows-1252"):
        feed = parse_str(WRONG_PROLOG.encode("utf-8"), ctype)
        (entry,) = feed.entries
        assert entry.title == "Euro €", ctype
        assert entry.text == "The euro (€) closed at 1.08 dollars; the yen at ¥157."
        assert "declared windows-1252 but the bytes are UTF-8: read as UTF-8" in feed.warnings
    # Declared and true: nothing assumed, nothing said.
    honest = parse_str(WRONG_PROLOG.encode("cp1252"), "application/rss+xml")
    assert honest.entries[0].title == "Euro €" and honest.warnings == []


@pytest.mark.parametrize("encoding", list(UNDECLARED))
def test_undeclared_legacy_encodings_are_detected(encoding: str) -> None:
    """Issue 22.9: undeclared EUC-JP, EUC-KR, GB2312, Shift-JIS, KOI8-R, TIS-620: mojibake."""
    text = UNDECLARED[encoding]
    body = (
        '<?xml version="1.0"?>\n<rss version="2.0"><channel><title>News</title>'
        f"<item><title>{text[:30]}</title><guid>a-1</guid>"
        f"<description>{text} {text}</description></item></channel></rss>"
    ).encode(encoding)
    feed = parse_str(body, "application/rss+xml")
    (entry,) = feed.entries
    assert entry.title == text[:30]
    assert entry.text == f"{text} {text}"
    assert any(w.startswith("no character encoding declared; read as ") for w in feed.warnings)


def test_c0_and_c1_controls_never_reach_the_fields() -> None:
    """Issue 22.9: control characters reached the outputs ("contains bad characters")."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
        "<item><title>Budget\u0085 vote\u009c delayed</title><guid>b-1</guid>"
        "<description>Talks \u0080resume\u009f on Monday</description></item></channel></rss>"
    ).encode("utf-8")
    (entry,) = parse_str(body).entries
    for value in (entry.title, entry.text, entry.summary_html, entry.content_html):
        assert not any("\x00" <= c < "\x09" or "\x7f" <= c <= "\x9f" for c in value), value
    # feedparser reads C1 in XML as the windows-1252 characters they were meant to be.
    assert entry.title == "Budget… voteœ delayed"
    # JSON Feed strings are not repaired: the controls are dropped.
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [
            {"id": "c", "title": "Budget\u0085 vote\u0001 delayed", "content_text": "x\u009fy"}
        ],
    }
    (item,) = parse(json.dumps(doc).encode(), "https://j.example/f.json", {}, FETCHED_AT).entries
    assert item.title == "Budget vote delayed" and item.text == "xy"


# Issue 22.7: a text construct's escaped "<dialog>" is words, not a tag to delete.
ESCAPED_TEXT_ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title type="text">Front-end &lt;notes&gt;</title>
  <id>tag:web.example,2026:feed</id>
  <updated>2026-11-30T10:00:00Z</updated>
  <link href="https://web.example/"/>
  <entry>
    <title type="text">Use &lt;dialog&gt;, not &lt;div&gt;; the &lt;script&gt; tag</title>
    <id>tag:web.example,2026:1</id>
    <updated>2026-11-30T10:00:00Z</updated>
    <link href="https://web.example/dialog"/>
    <author><name>Ana &lt;ana@web.example&gt;</name></author>
    <category term="&lt;dialog&gt;"/>
    <summary type="html">&lt;p&gt;Why &amp;lt;dialog&amp;gt; beats a
      &lt;b&gt;div&lt;/b&gt;&lt;/p&gt;</summary>
  </entry>
  <entry>
    <title type="html">&lt;b&gt;Bold&lt;/b&gt; and &amp;lt;escaped&amp;gt;</title>
    <id>tag:web.example,2026:2</id>
    <updated>2026-11-30T09:00:00Z</updated>
    <link href="https://web.example/bold"/>
  </entry>
</feed>
"""


def test_escaped_text_in_plain_fields_stays_text() -> None:
    feed = parse(ESCAPED_TEXT_ATOM, "https://web.example/atom", {}, FETCHED_AT)
    first, second = feed.entries
    assert feed.title == "Front-end <notes>"
    assert first.title == "Use <dialog>, not <div>; the <script> tag"
    assert first.authors == ("Ana <ana@web.example>",)
    assert first.categories == ("<dialog>",)
    assert first.text == "Why <dialog> beats a div"
    # An HTML title loses its tags but not what it escaped.
    assert second.title == "Bold and <escaped>"
