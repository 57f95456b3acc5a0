"""Hostile feed *content*: every case gives a recorded error or a clean, sanitised result.

tests/test_hostile.py is the hostile *server* matrix (slow bodies, redirects, bombs,
Retry-After, ...). Here the server is well behaved and the documents are not: XML entity
and DTD tricks, broken encodings, NUL bytes and lone surrogates, giant fields and feeds,
impossible dates, clashing ids, markup payloads in every field, things that are not feeds.
All of them are polled at once by the real poller, next to normal feeds, on SQLite and on
PostgreSQL; then everything stored is published and read back. The poller never raises,
the normal feeds get all their items, and nothing we publish holds a payload.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import feedparser
import httpx
import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from live import live_server, poll_all
from test_xss import problems_in_fragment, problems_in_json, problems_in_xml

from aggregator.filters import StoryQuery
from aggregator.parse import MAX_ENTRIES, MAX_TEXT_CHARS
from aggregator.publish import rss_text
from aggregator.service import Aggregator
from aggregator.types import PollResult, StoryItem

Check = Callable[[list[StoryItem], PollResult, Aggregator, str], None]


@dataclass
class Case:
    body: bytes
    error: str | None = None  # the recorded error holds this; None: the poll is "ok"
    check: Check | None = None  # for "ok": what the stored stories must look like
    ctype: str = "application/rss+xml; charset=utf-8"
    entries: int | None = None  # stored entries, when known


def rss_doc(items: str, *, head: str = "", channel: str = "Hostile", prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>{channel}</title><link>https://hostile.example/</link>"
        f"<description>d</description>{head}{items}</channel></rss>"
    ).encode()


def item(
    n: int | str, title: str, *, desc: str = "", extra: str = "", date: str | None = None
) -> str:
    when = date or "Tue, 24 Nov 2026 10:00:00 GMT"
    return (
        f"<item><title>{title}</title><guid>urn:h:{n}</guid>"
        f"<link>https://hostile.example/{n}</link><pubDate>{when}</pubDate>"
        f"<description>{desc or escape(f'<p>Body of {title}</p>')}</description>{extra}</item>"
    )


def json_doc(items: list[object], **feed: object) -> bytes:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "Hostile JSON", **feed}
    doc["items"] = items
    return json.dumps(doc).encode()


def atom_doc(entries: str, *, attrs: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" {attrs}>'
        "<title>Hostile Atom</title><id>urn:hostile:atom</id>"
        "<updated>2026-11-24T10:00:00Z</updated>"
        f'<link href="https://hostile.example/atom"/>{entries}</feed>'
    ).encode()


# -------------------------------------------------------------------------- checks


def n_entries(n: int) -> Check:
    def check(stories: list[StoryItem], r: PollResult, agg: Aggregator, url: str) -> None:
        assert agg.repo.count_entries(url) == n

    return check


def title_is(expected: str) -> Check:
    def check(stories: list[StoryItem], r: PollResult, agg: Aggregator, url: str) -> None:
        assert [s.title for s in stories] == [expected], [s.title[:80] for s in stories]

    return check


def dated_at_fetch(stories: list[StoryItem], r: PollResult, agg: Aggregator, url: str) -> None:
    now = datetime.now(UTC)
    for s in stories:
        assert now - timedelta(hours=1) < s.published <= now + timedelta(minutes=1), s.published


def no_text(*needles: str) -> Check:
    def check(stories: list[StoryItem], r: PollResult, agg: Aggregator, url: str) -> None:
        assert stories
        for s in stories:
            blob = " ".join((s.title, s.summary_html, s.content_html, s.text, *s.categories))
            for needle in needles:
                assert needle not in blob, (needle, blob[:200])

    return check


def all_of(*checks: Check) -> Check:
    def check(stories: list[StoryItem], r: PollResult, agg: Aggregator, url: str) -> None:
        for c in checks:
            c(stories, r, agg, url)

    return check


def inert(stories: list[StoryItem], r: PollResult, agg: Aggregator, url: str) -> None:
    """Every HTML field as stored reads as harmless HTML, every plain-text one as RSS publishes
    it (where readers take text for HTML); links are web links or nothing."""
    assert stories
    for s in stories:
        plain = [s.title, *s.authors, *s.categories, *(src.title for src in s.sources)]
        for where, value in (("html", s.summary_html), ("html", s.content_html)) + tuple(
            ("plain", rss_text(v)) for v in plain
        ):
            assert not problems_in_fragment(value, where), (where, value[:300])
        for link in (s.link, *(e.url for e in s.enclosures)):
            assert link is None or link.startswith(("http://", "https://")), link


def capped(stories: list[StoryItem], r: PollResult, agg: Aggregator, url: str) -> None:
    assert stories
    for s in stories:
        assert len(s.title) <= MAX_TEXT_CHARS
        assert len(s.categories) <= 100 and all(len(c) <= MAX_TEXT_CHARS for c in s.categories)


# -------------------------------------------------------------------------- the cases

LAUGHS_DEEP = (
    '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">'
    + "".join(
        f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]>"
)
BIG_ENTITY = "x" * 50_000
rng = random.Random(8)
PAYLOAD = (
    '<script>alert(1)</script><style>body{display:none}</style><iframe src="https://e.example/">'
    '</iframe><svg onload="alert(1)"><circle/></svg><img src="javascript:alert(1)" '
    'onerror="alert(2)"><a href="javascript:alert(3)">j</a><object data="x.swf"></object>'
    '<p style="background:url(javascript:alert(4))">styled</p>'
    '<a href="data:text/html,<script>alert(5)</script>">d</a><form action="/x"><input></form>'
)


def cases(port: int) -> dict[str, Case]:
    here = f"http://127.0.0.1:{port}"
    markup_items = "".join(
        item(
            f"m{i}",
            escape(PAYLOAD + f"Payload title {i}"),
            desc=escape(PAYLOAD + f"<p>payload body {i}</p>"),
            extra=(
                f"<content:encoded><![CDATA[{PAYLOAD}<p>payload content {i}</p>]]>"
                "</content:encoded>"
                f"<dc:creator>{escape(PAYLOAD)}Author {i}</dc:creator>"
                f"<category>{escape(PAYLOAD)}Cat {i}</category>"
                f'<enclosure url="javascript:alert(1)" type={quoteattr(PAYLOAD)}/>'
            ),
        )
        for i in range(5)
    )
    return {
        # -- XML entity and DTD attacks (the plain billion laughs and XXE are in test_fetch)
        "laughs-deep": Case(
            (LAUGHS_DEEP + rss_doc(item(1, "&i;")).decode().split("?>", 1)[1]).encode(),
            error="refused",
        ),
        "quadratic-blowup": Case(
            rss_doc(
                item(1, "q", desc="&big;" * 1000),
                prolog=f'<!DOCTYPE rss [<!ENTITY big "{BIG_ENTITY}">]>',
            ),
            error="refused",
        ),
        "xxe-passwd": Case(
            rss_doc(
                item(1, "&x;"), prolog='<!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            ),
            error="external entity",
        ),
        "xxe-http": Case(
            rss_doc(item(1, "&x;"), prolog=f'<!DOCTYPE rss [<!ENTITY x SYSTEM "{here}/secret">]>'),
            error="external entity",
        ),
        "xxe-parameter": Case(
            rss_doc(
                item(1, "p"),
                prolog='<!DOCTYPE rss [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
            ),
            error="refused",
        ),
        "xxe-public": Case(
            rss_doc(
                item(1, "&x;"),
                prolog=f'<!DOCTYPE rss [<!ENTITY x PUBLIC "-//X//Y" "{here}/secret">]>',
            ),
            error="external entity",
        ),
        "external-dtd": Case(
            rss_doc(item(1, "Dtd title"), prolog=f'<!DOCTYPE rss SYSTEM "{here}/evil.dtd">'),
            check=title_is("Dtd title"),
        ),
        "xinclude": Case(
            rss_doc(
                item(
                    1,
                    "Xinclude",
                    extra='<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
                    'href="file:///etc/passwd" parse="text"/>',
                )
            ),
            check=no_text("root:"),
        ),
        # -- encodings and impossible characters
        "invalid-utf8": Case(
            rss_doc(item(1, "Bad bytes BAD here")).replace(b"BAD", b"\xff\xfe\xc3\x28"),
            check=n_entries(1),
        ),
        "nul-bytes": Case(
            rss_doc(item(1, "Nul\x00title", desc="nul\x00body")),
            check=no_text("\x00"),
        ),
        "utf16-bom": Case(
            rss_doc(item(1, "Sixteen bits")).decode().replace("utf-8", "utf-16").encode("utf-16"),
            ctype="application/rss+xml",  # no charset: the BOM and the prolog say UTF-16
            check=title_is("Sixteen bits"),
        ),
        "utf16-charset-lies": Case(
            rss_doc(item(1, "Lies")).decode().replace("utf-8", "utf-16").encode("utf-16"),
            error="not a feed",  # the header says UTF-8: what the body is cannot be trusted
        ),
        "unknown-charset": Case(
            rss_doc(item(1, "Charset")).replace(b"utf-8", b"x-no-such-charset"),
            check=n_entries(1),
        ),
        "control-chars": Case(
            rss_doc(item(1, "Ctl\x01\x02\x0b\x1ftitle")),
            check=no_text("\x01", "\x0b"),
        ),
        "bidi-zero-width": Case(rss_doc(item(1, "evil\u202egnp.exe\u200b")), check=n_entries(1)),
        "json-nul": Case(
            json_doc([{"id": "n1", "title": "nul\u0000json", "content_html": "<p>a\u0000b</p>"}]),
            ctype="application/feed+json",
            check=no_text("\x00"),
        ),
        "json-lone-surrogate": Case(
            json_doc([{"id": "s1", "title": "half \ud800 pair", "content_text": "x\udfffy"}]),
            ctype="application/feed+json",
            check=n_entries(1),
        ),
        # -- size
        "title-10mb": Case(rss_doc(item(1, "T" * 10_000_000, desc="short")), check=capped),
        "items-100k": Case(
            rss_doc(
                "".join(
                    f"<item><guid>k{i}</guid><title>Item {i}</title></item>" for i in range(100_000)
                )
            ),
            check=n_entries(MAX_ENTRIES),
        ),
        "categories-10k": Case(
            rss_doc(
                item(1, "Cats", extra="".join(f"<category>c{i}</category>" for i in range(10_000)))
            ),
            check=capped,
        ),
        "link-1mb": Case(
            rss_doc(
                item(1, "Long link").replace(
                    "https://hostile.example/1", "https://hostile.example/" + "l" * 1_000_000
                )
            ),
            check=n_entries(1),
        ),
        "guid-100kb": Case(rss_doc(item("g" * 100_000, "Long guid")), check=n_entries(1)),
        "deep-html": Case(
            rss_doc(item(1, "Deep", desc=escape("<div>" * 50_000 + "deep" + "</div>" * 50_000))),
            check=n_entries(1),
        ),
        "deep-json": Case(
            b'{"version": "https://jsonfeed.org/version/1.1", "items": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}",
            ctype="application/feed+json",
            error="invalid JSON",
        ),
        "enclosures-10k": Case(
            rss_doc(
                item(
                    1,
                    "Encl",
                    extra="".join(
                        f'<enclosure url="https://e.example/{i}.mp3" type="audio/mpeg" length="1"/>'
                        for i in range(10_000)
                    ),
                )
            ),
            check=n_entries(1),
        ),
        # -- dates
        "year-0": Case(
            rss_doc(item(1, "Year zero", date="Sat, 01 Jan 0000 00:00:00 GMT")),
            check=dated_at_fetch,
        ),
        "year-9999": Case(
            rss_doc(item(1, "Year 9999", date="Fri, 31 Dec 9999 23:59:59 GMT")),
            check=dated_at_fetch,
        ),
        "date-garbage": Case(
            rss_doc(item(1, "Garbage date", date="Mon, 99 Foo 2026 99:99:99 +9999")),
            check=dated_at_fetch,
        ),
        "atom-year-0": Case(
            atom_doc(
                "<entry><title>A0</title><id>urn:a0</id><updated>0000-01-01T00:00:00Z</updated>"
                '<link href="https://hostile.example/a0"/></entry>'
            ),
            ctype="application/atom+xml",
            check=dated_at_fetch,
        ),
        "json-dates": Case(
            json_doc(
                [
                    {"id": "d1", "title": "Far future", "date_published": "9999-12-31T23:59:59Z"},
                    {
                        "id": "d2",
                        "title": "Year minus one",
                        "date_published": "-0001-01-01T00:00:00Z",
                    },
                    {"id": "d3", "title": "Not a date", "date_published": {"y": 1}},
                ]
            ),
            ctype="application/feed+json",
            check=all_of(n_entries(3), dated_at_fetch),
        ),
        # -- identities
        "dup-id-different-content": Case(
            rss_doc(item(1, "First version") + item(1, "Second version, other text")),
            check=lambda stories, r, agg, url: None,
        ),
        "one-guid-for-all": Case(
            rss_doc(
                "".join(
                    item("same", f"Same guid {i}").replace(
                        "https://hostile.example/same", f"https://hostile.example/s{i}"
                    )
                    for i in range(30)
                )
            ),
            check=n_entries(30),
        ),
        "no-id-no-link": Case(
            rss_doc(
                "".join(f"<item><description>only text {i}</description></item>" for i in range(5))
            ),
            check=n_entries(5),
        ),
        "empty-items": Case(rss_doc("<item></item>" * 10), check=lambda stories, r, agg, url: None),
        # -- markup payloads in every field
        "script-everywhere": Case(
            rss_doc(markup_items, channel=escape(PAYLOAD) + "Channel"),
            check=all_of(n_entries(5), inert),
        ),
        "atom-xhtml-script": Case(
            atom_doc(
                '<entry><title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
                "<script>alert(1)</script>Xhtml title</div></title><id>urn:x1</id>"
                "<updated>2026-11-24T10:00:00Z</updated>"
                '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
                '<p onclick="alert(1)">x</p>'
                '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(2)"/>'
                '<a href="javascript:alert(3)">j</a></div></content></entry>'
            ),
            ctype="application/atom+xml",
            check=inert,
        ),
        "atom-xml-base-javascript": Case(
            atom_doc(
                '<entry xml:base="javascript:alert(1)//"><title>Base</title><id>urn:b1</id>'
                '<updated>2026-11-24T10:00:00Z</updated><link href="x"/>'
                '<content type="html">&lt;a href="rel"&gt;rel&lt;/a&gt;&lt;img src="i.png"&gt;'
                "</content></entry>"
            ),
            ctype="application/atom+xml",
            check=inert,
        ),
        "svg-content-type": Case(
            atom_doc(
                "<entry><title>Svg</title><id>urn:svg</id><updated>2026-11-24T10:00:00Z</updated>"
                '<content type="image/svg+xml">PHN2ZyBvbmxvYWQ9ImFsZXJ0KDEpIi8+</content></entry>'
            ),
            ctype="application/atom+xml",
            check=inert,
        ),
        "json-html-everywhere": Case(
            json_doc(
                [
                    {
                        "id": "j1",
                        "title": PAYLOAD + "Json title",
                        "content_html": PAYLOAD + "<p>json body</p>",
                        "summary": PAYLOAD,
                        "url": "javascript:alert(1)",
                        "authors": [{"name": PAYLOAD}],
                        "tags": [PAYLOAD],
                        "attachments": [{"url": "data:text/html,x", "mime_type": PAYLOAD}],
                    }
                ],
                home_page_url="javascript:alert(1)",
            ),
            ctype="application/feed+json",
            check=inert,
        ),
        "comment-and-cdata-tricks": Case(
            rss_doc(
                item(
                    1,
                    "Cdata",
                    desc="<![CDATA[<p>a</p><!-- --><script>alert(1)</script> -->]]]]><![CDATA[>]]>",
                )
            ),
            check=inert,
        ),
        # -- not a feed at all
        "empty-body": Case(b"", error="empty body"),
        "html-page": Case(
            b"<!doctype html><html><body><p>hi</p></body></html>",
            ctype="text/html",
            error="not a feed",
        ),
        "binary-garbage": Case(
            bytes(rng.randrange(256) for _ in range(20_000)),
            ctype="application/octet-stream",
            error="",
        ),
        "gzip-without-header": Case(gzip.compress(rss(news_items(3))), error=""),
        "truncated": Case(rss(news_items(10))[:2000], error="truncated"),
        "json-not-a-feed": Case(
            b'{"hello": "world"}', ctype="application/json", error="not a JSON Feed"
        ),
        "json-items-not-list": Case(
            json_doc([])[:-3] + b'"x"}', ctype="application/feed+json", error="items"
        ),
        "json-odd-items": Case(
            json_doc([1, "x", None, [], {"id": "ok", "title": "The one good item"}]),
            ctype="application/feed+json",
            check=title_is("The one good item"),
        ),
        "rss-without-channel": Case(
            b'<?xml version="1.0"?><rss version="2.0"></rss>', check=n_entries(0)
        ),
    }


NORMAL = 3


@pytest.fixture
def hostile_run(tmp_path: Path, feed_server: FeedServer, db_url: str):
    table = cases(feed_server.port)
    feed_server.serve("/secret", b"top secret", content_type="text/plain")
    feed_server.serve("/evil.dtd", b'<!ENTITY evil "pwned">', content_type="application/xml-dtd")
    # Each case's links are its own, so no two cases' items join one story by URL.
    urls = {
        name: feed_server.serve(
            f"/h/{name}",
            c.body.replace(
                b"https://hostile.example/", f"https://hostile.example/{name}/".encode()
            ),
            content_type=c.ctype,
        )
        for name, c in table.items()
    }
    normal = [
        feed_server.serve(f"/n/{i}.rss", rss(news_items(20, site=f"https://n{i}.example.org")))
        for i in range(NORMAL)
    ]
    path = tmp_path / "feeds.yaml"
    path.write_text(
        config_yaml(
            [{"url": u} for u in [*urls.values(), *normal]],
            database_url=db_url,
            max_body_bytes=12 * 1024 * 1024,
            fetch_timeout="120s",
            items_per_feed=500,
        )
        # Stories per case: the checks read each case's items back on their own.
        + "dedup:\n  near_duplicates: false\n"
    )
    agg = Aggregator.from_file(path)
    try:
        yield agg, table, urls, normal, feed_server
    finally:
        agg.close()


def test_hostile_feeds_each_give_a_recorded_error_or_a_clean_result(hostile_run) -> None:
    agg, table, urls, normal, server = hostile_run
    assert len(table) >= 40
    results = poll_all(agg)  # never raises: that is the first half of the test

    for url in normal:
        assert results[url].status == "ok" and agg.repo.count_entries(url) == 20, results[url]
    health = {h.url: h for h in agg.repo.feed_health()}
    failures = []
    for name, case in table.items():
        url = urls[name]
        r = results[url]
        recorded = health[url]
        try:
            assert recorded.last_status == r.status, "the outcome is recorded"
            if case.error is not None:
                assert r.status == "error", f"expected an error, got {r}"
                assert case.error in (r.error or ""), r.error
                assert recorded.last_error == r.error
            else:
                assert r.status == "ok", r.error
                stories = agg.repo.stories(StoryQuery(feed_urls=(url,), limit=500)).items
                if case.check is not None:
                    case.check(stories, r, agg, url)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    print("\n".join(failures))
    assert not failures, "\n".join(failures)
    # Nothing the documents pointed at was fetched.
    assert server.hits("/secret") == 0 and server.hits("/evil.dtd") == 0

    # Everything stored is published clean, and every format parses.
    found: list[str] = []
    with live_server(agg) as base:
        for fmt in ("rss", "atom"):
            r = httpx.get(f"{base}/stories.{fmt}?limit=500", timeout=60)
            assert r.status_code == 200 and not feedparser.parse(r.content).bozo
            found += problems_in_xml(r.content, fmt)
        doc = httpx.get(f"{base}/stories.json?limit=500", timeout=60).json()
        found += problems_in_json(doc)
        assert "\x00" not in json.dumps(doc, ensure_ascii=False)
        page = httpx.get(f"{base}/", timeout=60)
        assert page.status_code == 200
    assert not found, "\n".join(sorted(set(found))[:50])

    # A second round: nothing crashes, the normal feeds are still fine, nothing doubles.
    before = {u: agg.repo.count_entries(u) for u in urls.values()}
    again = poll_all(agg)
    assert all(again[u].status != "error" for u in normal)
    assert {u: agg.repo.count_entries(u) for u in urls.values()} == before
