"""Find a site's feeds from one of its page URLs (``aggregator feeds add``).

::

    page = fetch(url)                         # the guarded fetch: SSRF guard, limits
    if page is a feed:        -> [url]        # given a feed URL: nothing to find
    if page is HTML:
        links = <link rel="alternate"> of RSS/Atom/JSON Feed types, in page order
        if links:             -> links        # what the site says, as it says it
    candidates = COMMON_PATHS on the site's root, each fetched and parsed
                              -> those that are feeds

The page's own links are trusted as listed (the site names them; fetching each would
only cost the publisher requests); guessed paths are kept only when they really parse as
a feed. Every request goes through :func:`aggregator.fetch.fetch`, so the SSRF guard,
time and size limits and the per-host limit apply here as they do to polling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

from .exceptions import FetchError, ParseError
from .fetch import FetchLimits, HostLimiter, fetch, make_client
from .parse import parse
from .types import Fetched

# The feed types a <link rel="alternate"> may name, and what we call them.
FEED_TYPES = {
    "application/rss+xml": "rss",
    "application/atom+xml": "atom",
    "application/feed+json": "json",
    "application/json": "json",
    "application/rdf+xml": "rdf",
}
# Where sites and blog engines put feeds when the page does not link one
# (WordPress /feed, Hugo /index.xml, Jekyll /feed.xml, JSON Feed /feed.json).
COMMON_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/index.xml", "/feed.xml", "/feed.json", "/rss")


@dataclass(frozen=True)
class FoundFeed:
    url: str
    title: str  # the link's title attribute or the feed's own title; may be empty
    kind: str  # rss, atom, json or rdf
    via: str  # "given" (the URL is a feed), "link" (<link rel=alternate>) or "path" (guessed)


class _Links(HTMLParser):
    """<base href> and the feed <link rel="alternate"> elements of a page's markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.found: list[tuple[str, str, str]] = []  # href, type, title

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "").strip() for k, v in attrs}
        if tag == "base" and self.base is None and a.get("href"):
            self.base = a["href"]
        if tag != "link" or not a.get("href"):
            return
        ctype = a.get("type", "").split(";", 1)[0].strip().lower()
        if "alternate" in a.get("rel", "").lower().split() and ctype in FEED_TYPES:
            self.found.append((a["href"], ctype, a.get("title", "")))


def page_links(content: bytes, page_url: str) -> list[FoundFeed]:
    """The feeds a page links with ``<link rel="alternate">``, absolute, without repeats."""
    finder = _Links()
    try:
        finder.feed(content[: 512 * 1024].decode("utf-8", "replace"))
        finder.close()
    except Exception:  # broken markup: whatever was found before it still counts
        pass
    base = _join(page_url, finder.base) if finder.base else page_url
    out: list[FoundFeed] = []
    seen: set[str] = set()
    for href, ctype, title in finder.found:
        url = _join(base or page_url, href)
        if url is None or url in seen or urlsplit(url).scheme not in ("http", "https"):
            continue
        seen.add(url)
        out.append(FoundFeed(url, " ".join(title.split()), FEED_TYPES[ctype], "link"))
    return out


def _join(base: str, href: str) -> str | None:
    try:
        return urljoin(base, href).split("#", 1)[0]
    except ValueError:
        return None


def _kind(fetched: Fetched) -> str:
    head = fetched.content[:1024].lstrip(b" \t\r\n\xef\xbb\xbf")
    if head.startswith(b"{"):
        return "json"
    if b"<feed" in head:
        return "atom"
    if b"<rdf:RDF" in head or b"<RDF" in head:
        return "rdf"
    return "rss"


def _as_feed(fetched: Fetched, url: str, via: str) -> FoundFeed | None:
    """The fetched body as a found feed, or None when it is not a feed."""
    try:
        parsed = parse(fetched.content, fetched.final_url, fetched.headers, datetime.now(UTC))
    except ParseError:
        return None
    return FoundFeed(url, parsed.title, _kind(fetched), via)


def _is_html(fetched: Fetched) -> bool:
    ctype = fetched.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    head = fetched.content[:1024].lstrip().lower()
    return ctype in ("text/html", "application/xhtml+xml") or head.startswith(
        (b"<!doctype html", b"<html")
    )


async def discover(
    url: str, limits: FetchLimits, client: httpx.AsyncClient | None = None
) -> list[FoundFeed]:
    """The feeds found for ``url`` (a feed or a site's page), best first.

    Raises ``FetchError`` when ``url`` itself cannot be fetched; an empty list means the
    page was read and no feed was found.
    """
    own = client is None
    http = client or make_client(limits, max_connections=limits.per_host * 2)
    hosts = HostLimiter(limits.per_host)
    try:
        page = await fetch(http, url, limits=limits, hosts=hosts)
        given = _as_feed(page, url, "given")
        if given is not None:
            return [given]
        where = page.moved_to or url
        if _is_html(page):
            linked = page_links(page.content, where)
            if linked:
                return linked
        return await _common_paths(http, where, limits, hosts)
    finally:
        if own:
            await http.aclose()


async def _common_paths(
    http: httpx.AsyncClient, page_url: str, limits: FetchLimits, hosts: HostLimiter
) -> list[FoundFeed]:
    parts = urlsplit(page_url)
    root = f"{parts.scheme}://{parts.netloc}"

    async def attempt(path: str) -> FoundFeed | None:
        try:
            fetched = await fetch(http, root + path, limits=limits, hosts=hosts)
        except FetchError:
            return None  # no feed there (mostly 404s): that is what guessing means
        return _as_feed(fetched, root + path, "path")

    found = await asyncio.gather(*(attempt(p) for p in COMMON_PATHS))
    out: list[FoundFeed] = []
    seen: set[tuple[str, str]] = set()
    for f in found:
        if f is None:
            continue
        # /feed and /rss are often the same feed served twice; list it once.
        if f.title and (f.title, f.kind) in seen:
            continue
        seen.add((f.title, f.kind))
        out.append(f)
    return out


def discover_sync(url: str, limits: FetchLimits) -> list[FoundFeed]:
    """:func:`discover` for synchronous callers (the CLI)."""
    return asyncio.run(discover(url, limits))


def choose(found: list[FoundFeed], pick: str | None) -> FoundFeed | None:
    """The feed ``pick`` names (a 1-based number or a URL), or the only one found."""
    if pick is None:
        return found[0] if len(found) == 1 else None
    if pick.isdigit() and 1 <= int(pick) <= len(found):
        return found[int(pick) - 1]
    return next((f for f in found if f.url == pick), None)
