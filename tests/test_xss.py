"""Every HTML-bearing field we publish is inert, whatever a feed puts in it.

The OWASP XSS filter evasion cheat sheet's vectors (and a few newer ones: SVG, MathML,
srcset, details/ontoggle, mutation tricks) are in tests/data/xss/owasp_vectors.json. Each
is injected into every field an RSS, Atom and JSON feed can carry (feed title, item title,
summary, content, author, categories, link, enclosure URL and type), the feeds are polled
by the real poller from a real local server, and everything we then publish is read back
as a browser or feed reader would read it: RSS, Atom and JSON Feed (every text node and
attribute treated as HTML, as many readers do) and the HTML pages. No script, event
handler, javascript:/vbscript:/data: URL, style, iframe, object/embed, svg/math or form
may survive anywhere.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import feedparser
import httpx
import pytest
from builders import config_yaml
from conftest import FeedServer
from live import live_server
from test_fetch import poll

from aggregator.service import Aggregator

VECTORS: list[str] = json.loads(
    (Path(__file__).parent / "data" / "xss" / "owasp_vectors.json").read_text()
)
URL_VECTORS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.domain)",
    "  javascript:alert(1)",
    "java\tscript:alert(1)",
    "jav&#x09;ascript:alert(1)",
    "&#106;avascript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:image/svg+xml,<svg onload=alert(1)>",
    "livescript:alert(1)",
    "javascript://%0Aalert(1)",
    '"><script>alert(1)</script>',
]

# Tags no published fragment may contain; a page has only its own head (compared below).
FORBIDDEN = frozenset(
    """script style iframe frame frameset object embed applet svg math base meta link form
    input button textarea select isindex bgsound xss body head html title noscript template
    marquee video audio source details xmp layer ilayer param""".split()
)
# Tags our pages use themselves (issue 23 added the SVG charts and the filter form); each must
# appear as often with the hostile items as on the page before them.
PAGE_CHROME = frozenset(
    {"html", "head", "body", "meta", "title", "style", "link", "svg", "form", "input", "select"}
    | {"button"}
)
URL_ATTRS = frozenset(
    """href src action formaction background lowsrc dynsrc data srcset poster codebase cite
    xlink:href url""".split()
)
_BAD_SCHEME = re.compile(r"^(?:javascript|vbscript|livescript|data|mocha):", re.IGNORECASE)
_INVISIBLE = re.compile(r"[\x00-\x20\x7f-\x9f]+")


class Inspector(HTMLParser):
    """Reads markup as a browser would and notes everything that could run."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        self.tags[tag] += 1
        for name, value in attrs:
            name = name.lower()
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> event handler")
            if name == "style":
                self.problems.append(f"<{tag} style=...>")
            if name in URL_ATTRS and value is not None and bad_url(value):
                self.problems.append(f"<{tag} {name}={value!r}>")

    handle_startendtag = handle_starttag


def bad_url(value: str) -> bool:
    """Whether a URL would run something or carry a document (after what browsers strip)."""
    squeezed = _INVISIBLE.sub("", value)
    return bool(_BAD_SCHEME.match(squeezed)) or any(
        bool(_BAD_SCHEME.match(_INVISIBLE.sub("", part.strip().split(" ")[0])))
        for part in value.split(",")
    )


def inspect(markup: str) -> Inspector:
    p = Inspector()
    p.feed(markup)
    p.close()
    return p


def problems_in_fragment(markup: str, where: str) -> list[str]:
    """Problems in a published field, read as HTML."""
    p = inspect(markup)
    found = [f"{where}: {x}" for x in p.problems]
    found += [f"{where}: <{t}>" for t in p.tags if t in FORBIDDEN]
    return found


ATOM_NS = "{http://www.w3.org/2005/Atom}"
# Atom's plain-text elements and attributes: text by the format, whatever characters they hold
# (issue 22.7 keeps "<dialog>" in a text title); the test checks feedparser reads them as text.
ATOM_TEXT = frozenset({"title", "subtitle", "rights", "summary"})
ATOM_PLAIN = frozenset({"name", "email", "generator"})
# JSON Feed 1.1 plain-text members (and our sources' titles, documented alike).
JSON_PLAIN = frozenset({"title", "summary", "name", "tags", "feed_title"})


def is_atom_plain(el: ET.Element) -> bool:
    if not el.tag.startswith(ATOM_NS):
        return False
    name = el.tag.removeprefix(ATOM_NS)
    return name in ATOM_PLAIN or (name in ATOM_TEXT and el.get("type", "text") == "text")


def problems_in_xml(body: bytes, fmt: str) -> list[str]:
    root = ET.fromstring(body)
    found: list[str] = []
    for el in root.iter():
        name = el.tag.rsplit("}", 1)[-1]
        for text in (el.tail,) if is_atom_plain(el) else (el.text, el.tail):
            if text and text.strip():
                found += problems_in_fragment(text, f"{fmt} <{name}> text")
        for attr, value in el.attrib.items():
            attr_name = attr.rsplit("}", 1)[-1]
            if el.tag == f"{ATOM_NS}category" and attr_name in ("term", "label"):
                continue
            found += problems_in_fragment(value, f"{fmt} <{name} {attr_name}>")
            if attr_name in ("href", "url", "src") and bad_url(value):
                found.append(f"{fmt} <{name} {attr_name}={value!r}>")
        if name in ("link", "comments", "docs") and el.text and bad_url(el.text):
            found.append(f"{fmt} <{name}>{el.text!r}")
    return found


def problems_in_json(doc: Any, path: str = "json") -> list[str]:
    found: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k not in JSON_PLAIN:
                found += problems_in_json(v, f"{path}.{k}")
            if k in ("url", "external_url", "image", "banner_image", "icon", "favicon"):
                if isinstance(v, str) and not re.match(r"^https?://", v):
                    found.append(f"{path}.{k}={v!r}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += problems_in_json(v, f"{path}[{i}]")
    elif isinstance(doc, str):
        found += problems_in_fragment(doc, path)
    return found


def problems_in_page(body: str, chrome: Counter[str], where: str) -> list[str]:
    p = inspect(body)
    found = [f"{where}: {x}" for x in p.problems]
    for tag, n in p.tags.items():
        if tag in FORBIDDEN and (tag not in PAGE_CHROME or n != chrome[tag]):
            found.append(f"{where}: {n} <{tag}> (the page itself has {chrome[tag]})")
    return found


# ------------------------------------------------------------------------ hostile feeds


def url_vector(i: int) -> str:
    return URL_VECTORS[i % len(URL_VECTORS)]


def hostile_rss(vectors: list[str], site: str, title: str) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/">',
        f"<channel><title>{escape(title)}</title><link>{site}/</link>",
        "<description>Latest</description><language>en</language>",
    ]
    for i, v in enumerate(vectors):
        u = url_vector(i)
        parts += [
            "<item>",
            f"<title>{escape(v)}</title>",
            f"<link>{escape(u)}</link>",
            f'<guid isPermaLink="false">{site}/g/{i}</guid>',
            f"<description>{escape(f'<p>Intro {i}</p>{v}<p>end</p>')}</description>",
            f"<content:encoded><![CDATA[<p>Body {i}</p>{v}]]></content:encoded>",
            f"<dc:creator>{escape(v)}</dc:creator>",
            f"<category>{escape(v)}</category>",
            f'<enclosure url={quoteattr(u)} type={quoteattr(v)} length="12"/>',
            f'<media:content url={quoteattr(u)} type="image/svg+xml"/>',
            f"<pubDate>Tue, 24 Nov 2026 {i % 24:02d}:00:00 GMT</pubDate>",
            "</item>",
        ]
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def hostile_atom(vectors: list[str], site: str, title: str) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f'<title type="html">{escape(title)}</title><id>{site}/feed</id>',
        f'<link href="{site}/"/><updated>2026-11-24T12:00:00Z</updated>',
    ]
    for i, v in enumerate(vectors):
        u = url_vector(i + 5)
        parts += [
            "<entry>",
            f'<title type="html">{escape(v)}</title>',
            f"<id>{site}/e/{i}</id>",
            f'<link rel="alternate" href={quoteattr(u)}/>',
            f'<link rel="enclosure" href={quoteattr(u)} type={quoteattr(v)} length="3"/>',
            f"<updated>2026-11-24T{i % 24:02d}:30:00Z</updated>",
            f"<author><name>{escape(v)}</name><uri>{escape(u)}</uri></author>",
            f"<category term={quoteattr(v)} label={quoteattr(v)}/>",
            f'<summary type="html">{escape(f"<p>Sum {i}</p>{v}")}</summary>',
            f'<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
            f"<p>Xhtml {i}</p></div></content>"
            if i % 3 == 0
            else f'<content type="html">{escape(f"<p>Content {i}</p>{v}")}</content>',
            "</entry>",
        ]
    parts.append("</feed>")
    return "\n".join(parts).encode()


def hostile_json(vectors: list[str], site: str, title: str) -> bytes:
    items = []
    for i, v in enumerate(vectors):
        u = url_vector(i + 3)
        items.append(
            {
                "id": f"{site}/j/{i}",
                "url": u,
                "external_url": u,
                "title": v,
                "content_html": f"<p>Json {i}</p>{v}",
                "summary": v,
                "authors": [{"name": v, "url": u}],
                "tags": [v, "World"],
                "date_published": f"2026-11-24T{i % 24:02d}:15:00Z",
                "attachments": [{"url": u, "mime_type": v}],
            }
        )
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": title,
            "home_page_url": f"{site}/",
            "items": items,
        }
    ).encode()


@pytest.fixture
def hostile_agg(tmp_path: Path, feed_server: FeedServer) -> Aggregator:
    feeds = []
    for n, (name, build) in enumerate(
        (("rss", hostile_rss), ("atom", hostile_atom), ("json", hostile_json))
    ):
        site = f"https://{name}.example.net"
        body = build(VECTORS, site, VECTORS[n * 7 + 1])
        ctype = {"rss": "application/rss+xml", "atom": "application/atom+xml"}.get(
            name, "application/feed+json"
        )
        url = feed_server.serve(f"/x.{name}", body, content_type=ctype)
        feeds.append({"url": url, "tags": ["foreign-relations"]})
    path = tmp_path / "feeds.yaml"
    db = f"sqlite:///{tmp_path / 'store.db'}"
    path.write_text(config_yaml(feeds, database_url=db, items_per_feed=500))
    return Aggregator.from_file(path)


def test_vectors_are_many() -> None:
    assert len(VECTORS) >= 70 and len(set(VECTORS)) == len(VECTORS)


def test_no_xss_vector_survives_into_anything_we_publish(hostile_agg: Aggregator) -> None:
    agg = hostile_agg
    try:
        with live_server(agg) as base:
            # What the pages hold of their own (head, style, alternate links) before any item.
            pages = ("/topics/foreign-relations", "/")
            chrome = {page: inspect(httpx.get(f"{base}{page}").text).tags for page in pages}
            results = poll(agg)
            assert all(r.status == "ok" for r in results.values()), results
            assert sum(r.new for r in results.values()) == 3 * len(VECTORS)

            found: list[str] = []
            for view in ("/stories", "/topics/foreign-relations"):
                # Copies, not events: payloads alike in their words are one event, rightly.
                for fmt in ("rss", "atom"):
                    r = httpx.get(f"{base}{view}.{fmt}?limit=500&stories=copies")
                    assert r.status_code == 200
                    parsed = feedparser.parse(r.content)
                    assert not parsed.bozo
                    assert len(parsed.entries) >= len(VECTORS)
                    if fmt == "atom":
                        assert {e.title_detail.type for e in parsed.entries} == {"text/plain"}
                    found += problems_in_xml(r.content, f"{view}.{fmt}")
                r = httpx.get(f"{base}{view}.json?limit=500&stories=copies")
                doc = r.json()
                assert len(doc["items"]) >= len(VECTORS)
                found += problems_in_json(doc, f"{view}.json")
            for page in pages:
                r = httpx.get(f"{base}{page}")
                assert r.status_code == 200
                # Second line of defence: no script may run on our pages at all.
                csp = r.headers["content-security-policy"]
                assert "default-src 'none'" in csp and "script-src" not in csp
                found += problems_in_page(r.text, chrome[page], page)
            # The text around the payloads is kept: sanitising is not deleting.
            body = httpx.get(f"{base}/stories.json?limit=500&stories=copies").json()
            texts = " ".join(i.get("content_html", "") for i in body["items"])
            assert "Intro 0" in texts or "Body 0" in texts
            assert "Json 1" in texts and "Content 1" in texts
    finally:
        agg.close()
    report = sorted(set(found))
    assert not found, f"{len(found)} payloads survived:\n" + "\n".join(report[:80])


def test_the_inspector_catches_what_it_must() -> None:
    # The checks above can fail: each kind of payload, left in, is reported.
    assert problems_in_fragment("<script>alert(1)</script>", "x")
    assert problems_in_fragment('<img src="x" onerror="alert(1)">', "x")
    assert problems_in_fragment('<a href="jav&#x09;ascript:alert(1)">x</a>', "x")
    assert problems_in_fragment('<img srcset="a.png 1x, javascript:alert(1) 2x">', "x")
    assert problems_in_fragment('<p style="x:expression(alert(1))">x</p>', "x")
    assert problems_in_fragment("<svg><a>x</a></svg>", "x")
    assert not problems_in_fragment('<p>fine <a href="https://a.example/">link</a></p>', "x")
    assert not problems_in_fragment("x &lt;script&gt; shown as text", "x")
    xml = b"<rss><channel><item><link>javascript:alert(1)</link></item></channel></rss>"
    assert problems_in_xml(xml, "rss")
    assert problems_in_json({"url": "data:text/html,x"})
