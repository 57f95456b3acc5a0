"""Render a topic's chosen stories as RSS 2.0, Atom 1.0 or JSON Feed 1.1 bytes.

Pure functions: the caller picks the stories (newest first) and builds the
:class:`FeedMeta`; nothing here reads the clock, the database or the request.
The same input always gives the same bytes, because the web layer derives the
ETag from them and readers re-download whatever changes.

RSS and Atom go through feedgen; JSON Feed is small enough to build by hand.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from feedgen.feed import FeedGenerator

from aggregator.sanitize import media_type, safe_url, strip_markup
from aggregator.types import StoryItem, StorySource

FORMATS = ("rss", "atom", "json")

MEDIA_TYPES = {
    "rss": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "aggregator"
SUMMARY_CHARS = 300

# Published ids are forever: changing this prefix (or the quoting in item_id)
# makes every reader show every story again as new.
_ITEM_ID_PREFIX = "urn:aggregator:story:"
# RFC 8141 NSS characters (RFC 3986 pchar plus "/"); everything else is
# percent-encoded so any uid gives a syntactically valid URN.
_URN_SAFE = "-._~!$&'()*+,;=:@/"

# XML 1.0 forbids these code points; lxml raises on them (and on lone
# surrogates, which UTF-8 cannot encode). Feeds in the wild do contain them.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPACES = re.compile(r"\s+")

_DEFAULT_ENCLOSURE_TYPE = "application/octet-stream"
_SAFE_LINK_SCHEMES = frozenset({"http", "https"})

# feedgen formats every RSS date through locale.setlocale(LC_ALL, "C") and
# back, which is process-global: two renders in different threads can leave
# the process in the wrong locale. Serialising our own RSS renders removes
# that race; they are CPU-bound under the GIL anyway.
_RSS_LOCALE_LOCK = threading.Lock()


@dataclass(frozen=True)
class FeedMeta:
    """Feed-level values; callers build them per topic and per format."""

    id: str  # stable feed id, e.g. "tag:host,2026:topics/politics"
    title: str
    description: str
    self_url: str  # absolute URL of this very document (format-specific)
    html_url: str  # absolute URL of the human page
    updated: datetime  # tz-aware; newest item update or a fixed epoch when empty
    language: str | None = None
    # RFC 5005 paged feeds: absolute URLs of the first, next (older) and previous
    # (newer) pages of the same feed, when there are such pages.
    first_url: str | None = None
    next_url: str | None = None
    prev_url: str | None = None
    # The WebSub hub that pushes this feed (W3C WebSub: rel="hub" beside rel="self").
    hub_url: str | None = None

    def page_links(self) -> list[tuple[str, str]]:
        """(rel, href) of the paging links, in a fixed order."""
        links = [("first", self.first_url), ("previous", self.prev_url), ("next", self.next_url)]
        return [(rel, href) for rel, href in links if href]


def item_id(uid: str) -> str:
    """The published id of a story: never changes for a given ``uid``."""
    if not uid:
        raise ValueError("story uid must not be empty")
    return _ITEM_ID_PREFIX + quote(uid, safe=_URN_SAFE)


def render(fmt: str, meta: FeedMeta, items: Sequence[StoryItem]) -> bytes:
    """Render ``items`` (kept in the given order) as ``fmt``, one of :data:`FORMATS`."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown feed format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderer(meta, items)


def render_rss(meta: FeedMeta, items: Sequence[StoryItem]) -> bytes:
    """RSS 2.0 with ``atom:link rel="self"`` and ``dc:creator`` for author names."""
    fg = _feed_generator(meta, "rss")
    # RSS <author> must be an e-mail address; we only know names.
    fg.load_extension("dc", atom=False, rss=True)
    for item in items:
        fe = fg.add_entry(order="append")  # feedgen prepends by default
        fe.guid(item_id(item.uid), permalink=False)
        fe.title(rss_text(_title(item)))
        if item.link:
            fe.link(href=_url(item.link), rel="alternate")
        fe.description(_clean(_body(item)))
        fe.published(_utc(item.published))
        categories = _categories(item)
        if categories:
            fe.category([{"term": rss_text(c)} for c in categories])
        authors = _authors(item)
        if authors:
            fe.dc.dc_creator([rss_text(a) for a in authors])
        # Readers honour only one enclosure per RSS item; the others are in
        # Atom and JSON Feed.
        if item.enclosures:
            enc = item.enclosures[0]
            fe.link(
                href=_url(enc.url),
                rel="enclosure",
                type=_mime(enc.type),
                length=str(enc.length if enc.length is not None and enc.length >= 0 else 0),
            )
        if item.sources and item.sources[0].feed_url:
            first = item.sources[0]
            fe.source(
                url=_clean(first.feed_url),
                title=rss_text(_text(first.feed_title) or first.feed_url),
            )
    _add_feed_links(fg, meta)
    with _RSS_LOCALE_LOCK:
        out: bytes = fg.rss_str(pretty=False)
    return out


def render_atom(meta: FeedMeta, items: Sequence[StoryItem]) -> bytes:
    """Atom 1.0; every entry has an author, html content and both dates."""
    fg = _feed_generator(meta, "atom")
    # Makes the document valid even with no entries, where no entry author
    # can stand in for the feed's.
    fg.author({"name": _clean(meta.title)})
    for item in items:
        fe = fg.add_entry(order="append")  # feedgen prepends by default
        fe.id(item_id(item.uid))
        fe.title(_clean(_title(item)))
        fe.updated(_utc(item.updated))
        fe.published(_utc(item.published))
        fe.author([{"name": a} for a in (_authors(item) or [_fallback_author(item, meta)])])
        fe.content(_clean(_body(item)), type="html")
        # feedgen 1.0 drops rel/type/length from entry links (its loop variable
        # shadows the link dict), turning enclosures into alternates; write
        # entry links ourselves.
        fe.register_extension("aggregator_links", _AtomEntryLinks, atom=True, rss=False)
        links: list[dict[str, str]] = []
        if item.link:
            links.append({"rel": "alternate", "href": _url(item.link)})
        for enc in item.enclosures:
            link = {"rel": "enclosure", "href": _url(enc.url)}
            if media_type(enc.type):
                link["type"] = _mime(enc.type)
            if enc.length is not None and enc.length >= 0:
                link["length"] = str(enc.length)
            links.append(link)
        fe.aggregator_links.links = links
        # A summary equal to the content only doubles the document size.
        if item.summary_html and item.summary_html != item.content_html:
            fe.summary(_clean(item.summary_html), type="html")
        categories = _categories(item)
        if categories:
            fe.category([{"term": c} for c in categories])
    _add_feed_links(fg, meta)
    out: bytes = fg.atom_str(pretty=False)
    return out


def render_json(meta: FeedMeta, items: Sequence[StoryItem]) -> bytes:
    """JSON Feed 1.1 with an ``_aggregator`` extension naming sources and topics."""
    feed = _without_none(
        {
            "version": JSON_FEED_VERSION,
            "title": _clean(meta.title),
            "home_page_url": _clean(meta.html_url),
            "feed_url": _clean(meta.self_url),
            "description": _clean(meta.description) or None,
            "language": meta.language or None,
            "next_url": _clean(meta.next_url) if meta.next_url else None,
            "hubs": [{"type": "WebSub", "url": _clean(meta.hub_url)}] if meta.hub_url else None,
            "items": [_json_item(item) for item in items],
            # JSON Feed has next_url only; the other RFC 5005 links go in our extension.
            "_aggregator": _without_none(
                {
                    "first_url": _clean(meta.first_url) if meta.first_url else None,
                    "prev_url": _clean(meta.prev_url) if meta.prev_url else None,
                }
            )
            or None,
        }
    )
    return json.dumps(feed, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _AtomEntryLinks:
    """feedgen entry extension that writes an Atom entry's ``<link>`` elements."""

    def __init__(self) -> None:
        self.links: list[dict[str, str]] = []

    def extend_atom(self, entry: Any) -> Any:
        for attrib in self.links:
            # No namespace: feedgen declares Atom as the default namespace by
            # a plain xmlns attribute, so unqualified names are Atom on output.
            entry.append(entry.makeelement("link", attrib))
        return entry

    def extend_rss(self, item: Any) -> Any:
        return item


class _FeedLinks:
    """feedgen feed extension writing the channel/feed-level paging links.

    feedgen writes only ``rel="self"`` as ``atom:link`` in RSS, and in Atom the RSS
    channel ``<link>`` is taken from the last link added, so extra links go here.
    """

    def __init__(self) -> None:
        self.links: list[tuple[str, str]] = []

    def extend_ns(self) -> dict[str, str]:
        return {}

    def _insert(self, parent: Any, tag: str, before: str) -> None:
        # Atom wants feed metadata before the first entry; RSS readers expect it too.
        children = list(parent)
        at = next((i for i, c in enumerate(children) if c.tag == before), len(children))
        for offset, (rel, href) in enumerate(self.links):
            parent.insert(at + offset, parent.makeelement(tag, {"rel": rel, "href": href}))

    def extend_atom(self, feed: Any) -> Any:
        self._insert(feed, "link", "{http://www.w3.org/2005/Atom}entry")
        return feed

    def extend_rss(self, rss: Any) -> Any:
        self._insert(rss[0], "{http://www.w3.org/2005/Atom}link", "item")
        return rss


def _add_feed_links(fg: FeedGenerator, meta: FeedMeta) -> None:
    links = [(rel, _clean(href)) for rel, href in meta.page_links()]
    if meta.hub_url:
        links.insert(0, ("hub", _clean(meta.hub_url)))
    if links:
        fg.register_extension("aggregator_feed_links", _FeedLinks, None, atom=True, rss=True)
        fg.aggregator_feed_links.links = links


_RENDERERS: dict[str, Callable[[FeedMeta, Sequence[StoryItem]], bytes]] = {
    "rss": render_rss,
    "atom": render_atom,
    "json": render_json,
}


def _feed_generator(meta: FeedMeta, fmt: str) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(_clean(meta.id))
    fg.title(_clean(meta.title))
    # RSS requires a non-empty channel description.
    fg.description(_clean(meta.description) or _clean(meta.title))
    # Order matters: feedgen uses the last link added as the RSS channel <link>.
    fg.link(href=_clean(meta.self_url), rel="self", type=MEDIA_TYPES[fmt].split(";")[0])
    fg.link(href=_clean(meta.html_url), rel="alternate", type="text/html")
    # Sets Atom <updated> and RSS <lastBuildDate>, both of which otherwise
    # default to the current time and would change the bytes on every render.
    fg.updated(_utc(meta.updated))
    # Without arguments feedgen also writes its own name, URI and version.
    fg.generator(GENERATOR)
    if meta.language:
        fg.language(_clean(meta.language))
    return fg


def _json_item(item: StoryItem) -> dict[str, Any]:
    authors = _authors(item)
    tags = _categories(item)
    attachments = [
        _without_none(
            {
                "url": _url(enc.url),
                # Required by JSON Feed 1.1.
                "mime_type": _mime(enc.type),
                "size_in_bytes": enc.length if enc.length is not None and enc.length >= 0 else None,
            }
        )
        for enc in item.enclosures
    ]
    return _without_none(
        {
            "id": item_id(item.uid),
            "url": _url(item.link) if item.link else None,
            "title": _clean(_title(item)),
            "content_html": _clean(_body(item)),
            "summary": _summary(item.text) or None,
            "date_published": _utc(item.published).isoformat(),
            "date_modified": _utc(item.updated).isoformat(),
            "authors": [{"name": a} for a in authors] or None,
            "tags": tags or None,
            "attachments": attachments or None,
            "_aggregator": {
                "sources": [_json_source(s) for s in item.sources],
                "topics": [_clean(t) for t in item.topics],
            },
        }
    )


def _json_source(source: StorySource) -> dict[str, Any]:
    return _without_none(
        {
            "title": _text(source.title),
            "feed_title": _text(source.feed_title),
            "feed_url": _url(source.feed_url),
            "url": _url(source.link) if source.link else None,
        }
    )


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _body(item: StoryItem) -> str:
    """The story's HTML followed by a line naming where it came from."""
    content = item.content_html or item.summary_html
    line = _sources_html(item.sources)
    if not line:
        return content
    return f"{content}\n{line}" if content else line


def _sources_html(sources: Sequence[StorySource]) -> str:
    if not sources:
        return ""
    label = "Source" if len(sources) == 1 else "Sources"
    names = ", ".join(_source_anchor(s) for s in sources)
    return f'<p class="sources">{label}: {names}</p>'


def _source_anchor(source: StorySource) -> str:
    name = html.escape(_text(source.feed_title).strip() or source.feed_url, quote=True)
    # Source links come from remote feeds unsanitised; a javascript: URL here
    # would be live in every reader that renders the body.
    if source.link and urlsplit(source.link).scheme.lower() in _SAFE_LINK_SCHEMES:
        return f'<a href="{html.escape(safe_url(source.link), quote=True)}">{name}</a>'
    return name


def _title(item: StoryItem) -> str:
    """Plain-text title; Atom (and feedgen for RSS) will not take an empty one."""
    title = _SPACES.sub(" ", item.title).strip()
    return title or _summary(item.text, 80) or "Untitled"


def _summary(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = _SPACES.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    # Prefer a word boundary unless that throws away most of the text.
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-—–") + "…"


def _categories(item: StoryItem) -> list[str]:
    return _dedup(_text(c).strip() for c in (*item.topics, *item.categories))


def _authors(item: StoryItem) -> list[str]:
    return _dedup(_text(a).strip() for a in item.authors)


def _fallback_author(item: StoryItem, meta: FeedMeta) -> str:
    for source in item.sources:
        if source.feed_title.strip():
            return _text(source.feed_title).strip()
    return _clean(meta.title)


def _dedup(values: Iterable[str]) -> list[str]:
    """Drop empty values and case-insensitive repeats, keeping first spellings."""
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        key = value.casefold()
        if value and key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _utc(dt: datetime) -> datetime:
    """UTC, whole seconds: RFC 822 has no fractions, and all formats should agree."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware: {dt!r}")
    return dt.astimezone(UTC).replace(microsecond=0)


def _clean(text: str) -> str:
    return _NOT_XML_CHAR.sub("", text)


def _text(text: str) -> str:
    """A plain-text field: its characters are the text, markup-looking or not (parse.py keeps
    ``Use <dialog>`` as written); Atom, JSON Feed and the pages escape them as text."""
    return _clean(text)


def rss_text(text: str) -> str:
    """``text`` for an RSS plain-text element, which many readers render as HTML.

    Text that an HTML reader would take for markup is escaped once more, so that it shows as
    written there (feedparser reads the result as escaped HTML) instead of running or vanishing;
    other text is written as it is.
    """
    text = _clean(text)
    return html.escape(text, quote=False) if strip_markup(text) != text else text


def _url(url: str) -> str:
    return _clean(safe_url(url))


def _mime(value: str | None) -> str:
    return media_type(value) or _DEFAULT_ENCLOSURE_TYPE
