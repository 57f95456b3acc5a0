"""Pages for people: the topic list, one page per topic, and an OPML of every topic feed.

Pure functions from plain values to bytes. Every value from feeds.yaml or from a remote
feed goes through :func:`_e` (HTML escaping); links from remote feeds are kept only when
they are http(s). No script, one small inline stylesheet (allowed by the pages' CSP),
semantic HTML (landmarks, headings, lists, ``<time>``), readable without CSS.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

from . import charts
from .filters import StoryPage, StoryQuery
from .publish import FORMATS, MEDIA_TYPES
from .types import StoryItem

# The only style the pages use; the CSP allows inline styles and nothing else.
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:1rem;"
    "color:#1a1a1a;background:#fff;overflow-wrap:anywhere}a{color:#0645ad}h1{font-size:1.6rem}"
    "li{margin:.6rem 0}small,.meta{color:#555}ul.stories,ul.topics{list-style:none;padding:0}"
    ".tags a{margin-right:.4rem}h3{font-size:1.1rem;margin:.2rem 0}"
    "figure{margin:1rem 0}figcaption{color:#444;font-size:.9rem}svg.chart{max-width:100%}"
    "svg.spark{vertical-align:middle;margin-left:.4rem}"
    "form.filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;"
    "padding:.6rem;border:1px solid #ccc;border-radius:4px}"
    "form.filters label{display:flex;flex-direction:column;font-size:.85rem;color:#333}"
    "form.filters input,form.filters select,form.filters button{font:inherit;max-width:100%}"
    "nav.pages{display:flex;justify-content:space-between;margin:1rem 0}"
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
    per_day: Mapping[date, int] = field(default_factory=dict)  # stories a day, last 30 days
    last_update: datetime | None = None  # its newest story's arrival


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


def _updated(at: datetime | None) -> str:
    # A date, not "5 min ago": the page is cached until the content changes, so a relative
    # time would go stale while it is served.
    if at is None:
        return "never updated"
    utc = at.astimezone(UTC)
    return (
        f'updated <time datetime="{utc.isoformat()}">{utc.strftime("%d %b %Y, %H:%M UTC")}</time>'
    )


def home_page(base: str, topics: Sequence[TopicSummary], now: datetime) -> bytes:
    """Every topic with its story count, last update, volume sparkline and subscribe links."""
    head = "".join(_alternates(t.name, feed_urls(base, t.slug)) for t in topics) + (
        f'<link rel="outline" type="text/x-opml" title="All topic feeds (OPML)" '
        f'href="{_e(base)}/topics.opml">'
    )
    today = now.astimezone(UTC).date()
    rows = []
    for t in topics:
        days = charts.last_days(t.per_day, today)
        spark = charts.sparkline(days, f"{t.name}: {charts.volume_summary(days)}")
        rows.append(
            f'<li id="{_e(t.slug)}"><h2><a href="{_e(base)}/topics/{_e(t.slug)}">'
            f"{_e(t.name)}</a></h2><p>{_e(t.description)}</p>"
            f'<p class="meta">{charts.stories(t.stories)} · {_updated(t.last_update)}{spark}</p>'
            f'<p class="meta">Subscribe: {_subscribe(feed_urls(base, t.slug))}</p></li>'
        )
    body = (
        "<header><h1>Topic feeds</h1>"
        "<p>Stories from many news feeds, grouped by topic. Subscribe to a topic in any feed "
        "reader, or import every topic at once with the "
        f'<a href="{_e(base)}/topics.opml" type="text/x-opml">OPML file</a>.</p></header>'
        f'<main><ul class="topics">{"".join(rows)}</ul></main>'
        f'<footer><p><a href="{_e(base)}/topics">Topics as JSON</a> · '
        f'<a href="{_e(base)}/openapi.json">API description (OpenAPI)</a></p></footer>'
    )
    return _page("Topic feeds", head, body)


_SINCE_CHOICES = (
    ("", "any time"),
    ("1d", "last day"),
    ("7d", "last week"),
    ("30d", "last 30 days"),
)


def _filters_form(
    base: str, topic: TopicSummary, query: StoryQuery, names: Mapping[str, str]
) -> str:
    given = dict(query.params)
    also = given.get("topics", "")
    options = '<option value="">any</option>' + "".join(
        f'<option value="{_e(slug)}"{" selected" if also == slug else ""}>{_e(name)}</option>'
        for slug, name in names.items()
        if slug != topic.slug
    )
    since = given.get("since", "")
    since_opts = "".join(
        f'<option value="{v}"{" selected" if since == v else ""}>{label}</option>'
        for v, label in _SINCE_CHOICES
    )
    if since and since not in dict(_SINCE_CHOICES):
        since_opts += f'<option value="{_e(since)}" selected>{_e(since)}</option>'

    def text(name: str, label: str, size: int, kind: str = "text", hint: str = "") -> str:
        return (
            f'<label for="f-{name}">{label}<input id="f-{name}" type="{kind}" name="{name}" '
            f'size="{size}" value="{_e(given.get(name, ""))}" placeholder="{_e(hint)}"></label>'
        )

    return (
        f'<form class="filters" method="get" action="{_e(base)}/topics/{_e(topic.slug)}" '
        'role="search" aria-label="Filter stories">'
        + text("q", "Search", 20, "search", 'words, "a phrase", -not')
        + f'<label for="f-topics">Also in topic<select id="f-topics" name="topics">'
        f"{options}</select></label>"
        + text("source", "Source", 14, hint="bbc.co.uk")
        + text("lang", "Language", 4, hint="en")
        + f'<label for="f-since">Published<select id="f-since" name="since">{since_opts}'
        "</select></label>" + '<button type="submit">Filter</button></form>'
    )


def topic_page(
    base: str,
    topic: TopicSummary,
    page: StoryPage,
    query: StoryQuery,
    names: Mapping[str, str],
    now: datetime,
) -> bytes:
    """A topic's stories (one page of them, filtered), a 30-day chart, filters and paging."""
    urls = feed_urls(base, topic.slug)
    here = f"{base}/topics/{topic.slug}"
    stories = "".join(_story(base, item, names) for item in page.items) or (
        "<li>No stories match these filters.</li>" if query.params else "<li>No stories yet.</li>"
    )
    links = []
    head = [_alternates(topic.name, urls)]
    if page.prev is not None:
        href = f"{here}?{query.query_string(('before', page.prev))}"
        head.append(f'<link rel="prev" href="{_e(href)}">')
        links.append(f'<a rel="prev" href="{_e(href)}">← Newer stories</a>')
    if page.next is not None:
        href = f"{here}?{query.query_string(('after', page.next))}"
        head.append(f'<link rel="next" href="{_e(href)}">')
        links.append(f'<a rel="next" href="{_e(href)}">Older stories →</a>')
    paging = f'<nav class="pages" aria-label="Pages">{"".join(links)}</nav>' if links else ""
    days = charts.last_days(topic.per_day, now.astimezone(UTC).date())
    chart = (
        f"<figure>{charts.bar_chart(days, 'volume')}"
        f"<figcaption>{_e(charts.volume_summary(days))}</figcaption></figure>"
    )
    filtered = " (filtered)" if query.params else ""
    body = (
        f'<nav aria-label="Site"><a href="{_e(base)}/">All topics</a></nav>'
        f"<header><h1>{_e(topic.name)}</h1><p>{_e(topic.description)}</p>"
        f'<p class="meta">{charts.stories(topic.stories)} · {_updated(topic.last_update)} · '
        f"Subscribe: {_subscribe(urls)}</p>{chart}</header>"
        f"<main>{_filters_form(base, topic, query, names)}"
        f'<h2>Stories{filtered}</h2><ul class="stories">{stories}</ul>{paging}</main>'
    )
    return _page(f"{topic.name} — topic feeds", "".join(head), body)


def _story(base: str, item: StoryItem, names: Mapping[str, str]) -> str:
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
    # Topic names, not slugs; a tag whose topic left feeds.yaml is not linked.
    tags = "".join(
        f'<a href="{_e(base)}/topics/{_e(t)}">{_e(names[t])}</a>' for t in item.topics if t in names
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
