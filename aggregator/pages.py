"""Pages for people: the topic list, one page per topic, and an OPML of every topic feed.

Pure functions from plain values to bytes. Every value from feeds.yaml or from a remote
feed goes through :func:`_e` (HTML escaping); links from remote feeds are kept only when
they are http(s). No script, one small inline stylesheet (allowed by the pages' CSP),
semantic HTML (landmarks, headings, lists, ``<time>``), readable without CSS.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlsplit

from .publish import FORMATS, MEDIA_TYPES
from .types import StoryItem

# The only style the pages use; the CSP allows inline styles and nothing else.
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:1rem;"
    "color:#1a1a1a;background:#fff}a{color:#0645ad}h1{font-size:1.6rem}"
    "li{margin:.6rem 0}small,.meta{color:#555}ul.stories{list-style:none;padding:0}"
    ".tags a{margin-right:.4rem}"
)

# HTML pages need no script, frame, plugin or third-party origin.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
OPML_MEDIA_TYPE = "text/x-opml; charset=utf-8"

_FORMAT_NAMES = {"rss": "RSS", "atom": "Atom", "json": "JSON Feed"}


@dataclass(frozen=True)
class TopicSummary:
    slug: str
    name: str
    description: str
    stories: int


def feed_urls(base: str, slug: str) -> dict[str, str]:
    return {fmt: f"{base}/topics/{slug}.{fmt}" for fmt in FORMATS}


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _safe_link(url: str | None) -> str | None:
    if url and urlsplit(url).scheme.lower() in ("http", "https"):
        return url
    return None


def _alternates(title: str, urls: dict[str, str]) -> str:
    return "".join(
        f'<link rel="alternate" type="{_e(MEDIA_TYPES[fmt].split(";")[0])}" '
        f'title="{_e(f"{title} ({_FORMAT_NAMES[fmt]})")}" href="{_e(url)}">'
        for fmt, url in urls.items()
    )


def _subscribe(urls: dict[str, str]) -> str:
    return " · ".join(
        f'<a href="{_e(url)}" type="{_e(MEDIA_TYPES[fmt].split(";")[0])}">{_FORMAT_NAMES[fmt]}</a>'
        for fmt, url in urls.items()
    )


def _page(title: str, head: str, body: str) -> bytes:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style>{head}</head>"
        f"<body>{body}</body></html>"
    ).encode()


def home_page(base: str, topics: Sequence[TopicSummary]) -> bytes:
    """Every topic with its story count, its page and a subscribe link per format."""
    head = "".join(_alternates(t.name, feed_urls(base, t.slug)) for t in topics) + (
        f'<link rel="outline" type="text/x-opml" title="All topic feeds (OPML)" '
        f'href="{_e(base)}/topics.opml">'
    )
    rows = "".join(
        f'<li id="{_e(t.slug)}"><h2><a href="{_e(base)}/topics/{_e(t.slug)}">{_e(t.name)}</a>'
        f"</h2><p>{_e(t.description)}</p>"
        f'<p class="meta">{t.stories} {"story" if t.stories == 1 else "stories"} · '
        f"Subscribe: {_subscribe(feed_urls(base, t.slug))}</p></li>"
        for t in topics
    )
    body = (
        "<header><h1>Topic feeds</h1>"
        "<p>Stories from many news feeds, grouped by topic. Subscribe to a topic in any feed "
        "reader, or import every topic at once with the "
        f'<a href="{_e(base)}/topics.opml" type="text/x-opml">OPML file</a>.</p></header>'
        f'<main><ul class="topics">{rows}</ul></main>'
        f'<footer><p><a href="{_e(base)}/topics">Topics as JSON</a> · '
        f'<a href="{_e(base)}/openapi.json">API description (OpenAPI)</a></p></footer>'
    )
    return _page("Topic feeds", head, body)


def topic_page(base: str, topic: TopicSummary, items: Sequence[StoryItem]) -> bytes:
    """A topic's latest stories, each with its sources and tags."""
    urls = feed_urls(base, topic.slug)
    stories = "".join(_story(base, item) for item in items) or "<li>No stories yet.</li>"
    body = (
        f'<nav><a href="{_e(base)}/">All topics</a></nav>'
        f"<header><h1>{_e(topic.name)}</h1><p>{_e(topic.description)}</p>"
        f'<p class="meta">{topic.stories} stories · Subscribe: {_subscribe(urls)}</p></header>'
        f'<main><h2>Latest stories</h2><ul class="stories">{stories}</ul></main>'
    )
    return _page(f"{topic.name} — topic feeds", _alternates(topic.name, urls), body)


def _story(base: str, item: StoryItem) -> str:
    title = _e(" ".join(item.title.split()) or "Untitled")
    link = _safe_link(item.link)
    heading = f'<a href="{_e(link)}">{title}</a>' if link else title
    published = item.published.astimezone(UTC)
    when = (
        f'<time datetime="{published.isoformat()}">'
        f"{published.strftime('%d %b %Y, %H:%M UTC')}</time>"
    )
    sources = ", ".join(
        f'<a href="{_e(url)}">{_e(s.feed_title or s.feed_url)}</a>'
        if (url := _safe_link(s.link))
        else _e(s.feed_title or s.feed_url)
        for s in item.sources
    )
    tags = "".join(
        f'<a href="{_e(base)}/topics/{_e(t)}">{_e(t)}</a>' for t in item.topics if ":" not in t
    )
    summary = " ".join(item.text.split())
    if len(summary) > 280:
        summary = summary[:279].rsplit(" ", 1)[0] + "…"
    return (
        f"<li><article><h3>{heading}</h3>"
        f'<p class="meta">{when}{" · from " + sources if sources else ""}</p>'
        + (f"<p>{_e(summary)}</p>" if summary else "")
        + (f'<p class="tags">Topics: {tags}</p>' if tags else "")
        + "</article></li>"
    )


def opml(base: str, topics: Sequence[TopicSummary]) -> bytes:
    """OPML 2.0 listing every topic's Atom feed (with its page), for one-step import."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "Topic feeds"
    ET.SubElement(head, "docs").text = "http://opml.org/spec2.opml"
    body = ET.SubElement(root, "body")
    for t in topics:
        ET.SubElement(
            body,
            "outline",
            type="rss",
            text=t.name,
            title=t.name,
            description=t.description,
            xmlUrl=feed_urls(base, t.slug)["atom"],
            htmlUrl=f"{base}/topics/{t.slug}",
        )
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out
