"""Turn a fetched body into a ``ParsedFeed``.

RSS 0.9x/1.0/2.0 and Atom go through feedparser; JSON Feed 1.0/1.1 is read with the
json module. Both paths end in the same normalisation: HTML sanitised with nh3 (one
allowlist for every source), relative links made absolute, dates as aware UTC
datetimes, plain-text title and text. A body that is not a feed, or a feed too broken
to trust, raises ``ParseError``; problems we can live with become ``warnings``.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import io
import json
import re
import time
import xml.sax
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache, partial
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import charset_normalizer
import feedparser
import nh3

from .exceptions import ParseError
from .sanitize import media_type, safe_url, scrub
from .types import Enclosure, FeedHints, ParsedEntry, ParsedFeed

__all__ = ["parse"]

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "em", "figure", "figcaption",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre",
        "q", "s", "small", "strong", "sub", "sup", "table", "thead", "tbody", "tr",
        "td", "th", "u", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "title"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "td": frozenset({"colspan", "rowspan"}),
    "th": frozenset({"colspan", "rowspan"}),
}
URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"

# Bounds on what one feed may make us store; past them the rest is dropped with a warning
# (a feed of 100,000 items or a 10 MB title is an attack or a bug, not news).
MAX_ENTRIES = 5000  # entries read from one document (the first: feeds list newest first)
MAX_TEXT_CHARS = 2000  # a title, an author or a category
MAX_NAMES = 100  # categories or authors of one entry
MAX_ENCLOSURES = 20
MAX_HTML_CHARS = 1_000_000  # an HTML field, before cleaning
# Elements open at once in an HTML field. The cleaner's time grows with the square of the
# depth ('<div>' * 100,000 took 75 s); real articles stay under 30. Deeper is kept as text.
MAX_HTML_DEPTH = 256
MAX_URL_CHARS = 2000  # longer links are dropped (store columns and indexes hold 2048)
MAX_GUID_CHARS = 1000  # a longer guid is replaced by its SHA-256
_ENTRY_START = re.compile(rb"<(?:[\w.-]+:)?(?:item|entry)[\s>/]", re.IGNORECASE)
_ENTRY_END = re.compile(rb"</(?:[\w.-]+:)?(?:item|entry)\s*>", re.IGNORECASE)

# A clock a little fast at the publisher is normal; a year ahead is a broken feed that
# would otherwise pin its items to the top of every list.
FUTURE_SLACK = timedelta(days=1)

_JSON_FEED_VERSION = re.compile(r"^https?://jsonfeed\.org/version/")
_JSON_TYPES = frozenset({"application/feed+json", "application/json", "text/json"})
_LEADING_JUNK = b" \t\r\n\xef\xbb\xbf"

# Tags after which rendered text breaks; other tags (b, a, ...) sit inside words.
_BLOCK_TAGS = frozenset(
    {
        "blockquote", "br", "figure", "figcaption", "h1", "h2", "h3", "h4", "h5", "h6",
        "hr", "img", "li", "ol", "p", "pre", "table", "thead", "tbody", "tr", "td", "th",
        "ul",
    }
)  # fmt: skip
# Only ever applied to nh3 output, which quotes every attribute value with '"' and
# escapes '"' inside it, so a '>' inside a value cannot end the match early.
_TAG = re.compile(r'<(/?)([a-zA-Z0-9]+)(?:[^>"]|"[^"]*")*>')
# Tags as the depth check sees them: linear, whatever the input.
_TAG_OPEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)([^<>]*)>?")
_ANY_TAG = re.compile(r"<[^<>]*>?")
# Elements that never hold others, or that the next of their kind closes: no depth.
_FLAT_TAGS = frozenset(
    """area base br col embed hr img input link meta param source track wbr
    p li dt dd option optgroup tr td th thead tbody tfoot rb rt rp""".split()
)


def _too_deep(value: str) -> bool:
    """Whether more than MAX_HTML_DEPTH elements are open at once somewhere in ``value``."""
    if value.count("<") <= MAX_HTML_DEPTH:
        return False
    depth = 0
    for m in _TAG_OPEN.finditer(value):
        if m.group(2).lower() in _FLAT_TAGS or m.group(3).endswith("/"):
            continue
        if m.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > MAX_HTML_DEPTH:
                return True
    return False


# expat's messages for a document that stops before its root element is closed.
_TRUNCATION_MESSAGES = (
    "no element found",
    "unclosed token",
    "unclosed cdata section",
    "partial character",
)
_ROOT_CLOSE = re.compile(rb"</\s*(?:[\w.-]+:)?(?:rss|feed|rdf)\s*>", re.IGNORECASE)
_HTML_START = re.compile(rb"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]", re.IGNORECASE)
_FEED_ROOT = re.compile(rb"<(?:[\w.-]+:)?(?:rss|feed|rdf)[\s>]", re.IGNORECASE)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_XML_BASE = b"xml:base"

# Entity declarations in a DTD's internal subset (see _refuse_dangerous_entities).
_DOCTYPE = re.compile(rb"<!DOCTYPE\b", re.IGNORECASE)
_ENTITY_DECL = re.compile(
    rb"""<!ENTITY\s+(%\s+)?([^\s>]+)\s+(?:(SYSTEM|PUBLIC)\b|"([^"]*)"|'([^']*)')?""",
    re.IGNORECASE,
)
_ENTITY_REF = re.compile(rb"&([^#\s;&][^\s;&]*);")
_XML_PREDEFINED = frozenset({b"lt", b"gt", b"amp", b"quot", b"apos"})
# Real feeds declare short named characters (&eacute; -> "&#233;"); a long value
# referenced many times is the "quadratic blowup" attack.
MAX_ENTITY_BYTES = 1024


def parse(content: bytes, url: str, headers: Mapping[str, str], fetched_at: datetime) -> ParsedFeed:
    """Parse ``content`` fetched from ``url``; raise ``ParseError`` if it is not a usable feed.

    ``headers`` are the response headers with lower-cased names; ``fetched_at`` stands in
    for the dates of entries that have none.
    """
    fetched_at = fetched_at.replace(tzinfo=UTC) if fetched_at.tzinfo is None else fetched_at
    ctx = _Context(url, fetched_at.astimezone(UTC))
    headers = {k.lower(): v for k, v in headers.items()}
    if not content.strip(_LEADING_JUNK + b"\x00"):
        raise ParseError("empty body, not a feed")
    if _is_json(content, headers):
        return _parse_json_feed(content, headers, ctx)
    return _parse_xml_feed(content, headers, ctx)


class _Context:
    """Per-call state: where relative URLs point, the fetch time, collected warnings."""

    def __init__(self, url: str, fetched_at: datetime) -> None:
        self.url = url
        self.fetched_at = fetched_at
        self.latest_allowed = fetched_at + FUTURE_SLACK
        self.warnings: list[str] = []
        self.sort_attributes = False  # see _parse_xml_feed
        self.set_base(url)

    def set_base(self, base: str) -> None:
        self.base = base
        self.cleaner = _cleaner(base if _is_web_url(base) else "")

    def absolute(self, link: object) -> str | None:
        """``link`` made absolute against the base; None unless it is an http(s) URL."""
        if not isinstance(link, str) or not link.strip():
            return None
        if len(link) > MAX_URL_CHARS:
            return None
        resolved = _join(self.base, scrub(link.strip()))
        if not resolved or not _is_web_url(resolved) or len(resolved) > MAX_URL_CHARS:
            return None
        return safe_url(resolved)

    def html(self, value: str) -> str:
        if len(value) > MAX_HTML_CHARS:
            self.warnings.append(f"an HTML field of {len(value)} characters was cut")
            value = value[:MAX_HTML_CHARS]  # nh3 closes whatever the cut left open
        if _too_deep(value):
            self.warnings.append(
                f"an HTML field nested deeper than {MAX_HTML_DEPTH} elements was kept as text"
            )
            value = html.escape(_collapse(html.unescape(_ANY_TAG.sub(" ", value))), quote=False)
        cleaned = self.cleaner.clean(scrub(value)).strip()
        return _ATTRIBUTES.sub(_sorted_attributes, cleaned) if self.sort_attributes else cleaned

    def date(self, value: datetime | None, what: str) -> datetime | None:
        if value is not None and value > self.latest_allowed:
            self.warnings.append(
                f"{what} {value.isoformat()} is in the future; using the fetch time"
            )
            return self.fetched_at
        return value


@lru_cache(maxsize=256)
def _cleaner(base: str) -> nh3.Cleaner:
    # One Cleaner per base URL: building one compiles the allowlists, cleaning is cheap.
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        url_relative=("rewrite_with_base", base) if base else "pass_through",
    )


# A start tag of nh3's output with two attributes or more; nh3 quotes every value with '"'.
_ATTRIBUTES = re.compile(r'<([a-zA-Z0-9]+)((?:\s[a-zA-Z0-9_:-]+="[^"]*"){2,})(\s*/?)>')
_ATTRIBUTE = re.compile(r'\s([a-zA-Z0-9_:-]+)="[^"]*"')


def _sorted_attributes(m: re.Match[str]) -> str:
    """The tag with its attributes in name order, as feedparser's resolving pass left them
    (``_parse_xml_feed``), but the ``rel`` nh3 adds after them: so the content hashes of
    stored entries stay what they were."""
    attrs = sorted(
        (a.group(1) == "rel", a.group(1), a.group(0)) for a in _ATTRIBUTE.finditer(m.group(2))
    )
    return f"<{m.group(1)}{''.join(text for *_, text in attrs)}{m.group(3)}>"


def _join(base: str, link: str) -> str | None:
    try:
        return urljoin(base, link)
    except ValueError:  # e.g. an invalid IPv6 literal in either
        return None


def _is_web_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _is_json(content: bytes, headers: Mapping[str, str]) -> bool:
    head = content[:64].lstrip(_LEADING_JUNK)
    if head.startswith(b"{"):
        return True
    if head.startswith(b"<"):
        # Servers that label RSS as application/json exist; the body is the better witness.
        return False
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return ctype in _JSON_TYPES or ctype.endswith("+json")


# ---------------------------------------------------------------------------- text helpers


def _collapse(value: str) -> str:
    return " ".join(value.split())


def _plain(value: object) -> str:
    """Plain text as given, with entities some publishers double-escape decoded.

    Nothing in it is markup: ``Use <dialog>, not <div>`` in a text title is those words, and
    every output escapes plain fields as text (publish.py), so none of it can run anywhere.
    """
    return _collapse(scrub(html.unescape(value)))[:MAX_TEXT_CHARS] if isinstance(value, str) else ""


def _markup_to_plain(value: str) -> str:
    # Raw, unsanitised markup: let nh3 parse it (dropping script/style bodies) rather than
    # trusting a regex with whatever the publisher wrote. Its output is escaped text, decoded
    # once: what the HTML escaped (``&lt;dialog&gt;``) is text and stays.
    return _collapse(scrub(html.unescape(nh3.clean(value, tags=set()))))


def _text_of(clean_html: str) -> str:
    """Plain text of sanitised HTML; block boundaries become spaces."""

    def replace(m: re.Match[str]) -> str:
        return " " if m.group(2).lower() in _BLOCK_TAGS else ""

    return _collapse(html.unescape(_TAG.sub(replace, clean_html)))


def _escape_text(value: str) -> str:
    return html.escape(scrub(value[:MAX_HTML_CHARS]).strip(), quote=False)


def _guid(value: object) -> str | None:
    """A usable guid: stripped, storable; a giant one replaced by its hash."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # JSON Feed: numeric ids are common and mean the same
    if not isinstance(value, str) or not value.strip():
        return None
    guid = scrub(value.strip())
    if len(guid) > MAX_GUID_CHARS:
        return "sha256:" + hashlib.sha256(guid.encode("utf-8", "replace")).hexdigest()
    return guid


def _first_entries(content: bytes, ctx: _Context) -> bytes:
    """The document with at most MAX_ENTRIES items/entries: the rest cut out, the closing
    tags after the last one kept, so the cut document is as well-formed as the whole."""
    count = 0
    cut = None
    for m in _ENTRY_START.finditer(content):
        count += 1
        if count == MAX_ENTRIES + 1:
            cut = m.start()
    if cut is None:
        return content
    ends = [m.end() for m in _ENTRY_END.finditer(content, cut)]
    tail = content[ends[-1] :] if ends else b""
    ctx.warnings.append(f"{count} entries in the document; only the first {MAX_ENTRIES} read")
    return content[:cut] + tail


def _dedup(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        v = _collapse(v)
        if v and v not in seen:
            seen[v] = None
            if len(seen) == MAX_NAMES:
                break
    return tuple(seen)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value >= 0 and value == value and value != float("inf") else None
    if isinstance(value, str) and value.strip().isdigit():
        # Byte counts are small; a 5000-digit "length" is junk, not a reason to fail.
        return int(value.strip()) if len(value.strip()) < 20 else None
    return None


# ---------------------------------------------------------------------------- dates


def _from_struct(value: object) -> datetime | None:
    """feedparser's UTC struct_time as an aware datetime; None when it is not a real date."""
    if not isinstance(value, time.struct_time):
        return None
    try:
        # datetime() rejects Feb 30 and friends where timegm() would roll them over;
        # a leap second becomes :59.
        return datetime(
            value.tm_year,
            value.tm_mon,
            value.tm_mday,
            value.tm_hour,
            value.tm_min,
            min(value.tm_sec, 59),
            tzinfo=UTC,
        )
    except (ValueError, OverflowError):
        return None


def _from_string(value: object) -> datetime | None:
    """An RFC 3339 date (JSON Feed), or RFC 822 as some JSON feeds write; None if neither."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 with a positive offset, etc.
        return None


def _dates(
    published: datetime | None, updated: datetime | None, ctx: _Context
) -> tuple[datetime, datetime, bool]:
    published = ctx.date(published, "published date")
    updated = ctx.date(updated, "updated date")
    first = published or updated
    if first is None:
        return ctx.fetched_at, ctx.fetched_at, True
    return first, updated or first, False


# ---------------------------------------------------------------------------- RSS / Atom


_XML_ENCODING = re.compile(
    rb"""^(\s*<\?xml[^>]*?\bencoding\s*=\s*)["']([A-Za-z0-9._:-]{1,40})["']""", re.IGNORECASE
)
_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE)
_DETECT_BYTES = 200_000  # what the detector reads of an undeclared document


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _as_declared_or_detected(content: bytes, headers: dict[str, str], ctx: _Context) -> bytes:
    """``content`` as UTF-8 when its declared encoding is wrong or missing (``headers``'
    Content-Type then says utf-8), with a warning saying what was assumed; else as it is.

    Valid UTF-8 is taken as UTF-8 whatever was declared: text in another encoding is
    almost never valid UTF-8 by chance, while feeds that say windows-1252 or iso-8859-1
    and send UTF-8 are common. An undeclared document that is not UTF-8 is given to
    charset-normalizer. UTF-16/32 (a BOM, NULs) are left to feedparser.
    """
    head = content[:4]
    if b"\x00" in head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return content
    body = content.removeprefix(b"\xef\xbb\xbf")
    ctype = headers.get("content-type", "")
    in_header = _CHARSET.search(ctype)
    in_prolog = _XML_ENCODING.match(body)
    declared = (in_header.group(1) if in_header else None) or (
        in_prolog.group(2).decode("ascii") if in_prolog else None
    )
    if body.isascii():
        return content
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        utf8 = False
    else:
        utf8 = True
    if utf8:
        if declared is None or _codec(declared) == "utf-8" or content.startswith(b"\xef\xbb"):
            return content
        ctx.warnings.append(f"declared {declared} but the bytes are UTF-8: read as UTF-8")
        text = body
    elif declared is None:
        best = charset_normalizer.from_bytes(body[:_DETECT_BYTES]).best()
        if best is None:
            return content
        name = _codec(best.encoding) or best.encoding
        ctx.warnings.append(f"no character encoding declared; read as {name} (detected)")
        text = body.decode(best.encoding, errors="replace").encode("utf-8")
    else:
        return content  # as declared: feedparser decodes it
    if in_prolog:
        text = _XML_ENCODING.sub(rb'\1"utf-8"', text, count=1)
    mime = ctype.split(";", 1)[0].strip() or "application/xml"
    headers["content-type"] = f"{mime}; charset=utf-8"
    return text


def _parse_xml_feed(content: bytes, headers: dict[str, str], ctx: _Context) -> ParsedFeed:
    _refuse_dangerous_entities(content)
    content = _first_entries(content, ctx)
    fp_headers = dict(headers)
    # feedparser resolves relative URIs against content-location; without it they
    # would stay relative (it never sees the URL we fetched).
    location = _join(ctx.url, headers.get("content-location", "")) or ctx.url
    fp_headers["content-location"] = location if _is_web_url(location) else ""
    content = _as_declared_or_detected(content, fp_headers, ctx)
    # Looked for in the bytes: a UTF-16 or UTF-32 document (NULs near the start) could
    # hide it, so feedparser resolves those.
    resolve = _XML_BASE in content or b"\x00" in content[:4]
    # feedparser's pass writes attributes in name order; nh3 keeps them as they come.
    ctx.sort_attributes = not resolve
    try:
        # A stream, never raw bytes: feedparser tries bytes as a filename first.
        result = feedparser.parse(
            io.BytesIO(content),
            response_headers=fp_headers,
            sanitize_html=False,
            # Relative links inside HTML are made absolute by nh3 when it cleans the HTML
            # (``_cleaner``), against the same base feedparser would use, unless an
            # xml:base changes the base inside the document. feedparser doing it as well
            # cost a third of its parse time.
            resolve_relative_uris=resolve,
        )
    except Exception as e:  # feedparser should not raise, but a crash is still "unreadable"
        raise ParseError(f"feed could not be parsed: {type(e).__name__}: {e}") from e

    version: str = result.get("version") or ""
    entries: list[Any] = list(result.get("entries") or [])
    _check_bozo(result, content, version, entries, ctx)
    if not version and not entries:
        raise ParseError(_not_a_feed(content, None, ctx.url))

    feed = dict.get(result, "feed") or {}
    ctx.set_base(fp_headers["content-location"])
    feed_authors = _fp_authors(feed) if version.startswith("atom") else ()
    parsed: list[ParsedEntry] = []
    for i, entry in enumerate(entries):
        try:
            parsed.append(_fp_entry(entry, feed_authors, ctx))
        except Exception as e:  # one broken item must not cost the whole feed
            ctx.warnings.append(f"entry {i} skipped: {type(e).__name__}: {e}")
    language = _plain(dict.get(feed, "language")) or _plain(headers.get("content-language"))
    return ParsedFeed(
        title=_fp_text(feed, "title"),
        link=ctx.absolute(dict.get(feed, "link")),
        language=language or None,
        entries=parsed,
        warnings=ctx.warnings,
        hints=_feed_hints(feed, content, _websub(_fp_links(feed, ctx), headers, ctx)),
    )


_SY_PERIODS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": timedelta(days=30),
    "yearly": timedelta(days=365),
}
_SKIP_HOURS = re.compile(rb"<skipHours\b[^>]*>(.*?)</skipHours>", re.IGNORECASE | re.DOTALL)
_SKIP_DAYS = re.compile(rb"<skipDays\b[^>]*>(.*?)</skipDays>", re.IGNORECASE | re.DOTALL)
_HOUR = re.compile(rb"<hour>\s*(\d{1,2})\s*</hour>", re.IGNORECASE)
_DAY = re.compile(rb"<day>\s*([A-Za-z]+)\s*</day>", re.IGNORECASE)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _feed_hints(
    feed: dict[str, Any], content: bytes, websub: tuple[str | None, str | None]
) -> FeedHints:
    """RSS <ttl>, sy:updatePeriod/updateFrequency and <skipHours>/<skipDays>."""
    ttl = _int_or_none(dict.get(feed, "ttl"))
    period = _SY_PERIODS.get(str(dict.get(feed, "sy_updateperiod") or "").strip().lower())
    frequency = _int_or_none(dict.get(feed, "sy_updatefrequency")) or 1
    # feedparser keeps only the last <hour>/<day>, so these are read from the bytes.
    hours: set[int] = set()
    if m := _SKIP_HOURS.search(content):
        # RSS says 0-23; some feeds write 24 for midnight.
        hours = {int(h) % 24 for h in _HOUR.findall(m.group(1)) if int(h) <= 24}
    days: set[int] = set()
    if m := _SKIP_DAYS.search(content):
        names = (d.decode("ascii").lower() for d in _DAY.findall(m.group(1)))
        days = {_WEEKDAYS.index(n) for n in names if n in _WEEKDAYS}
    return FeedHints(
        ttl=timedelta(minutes=ttl) if ttl else None,
        update_period=period / min(frequency, 10_000) if period else None,
        skip_hours=tuple(sorted(hours)),
        skip_days=tuple(sorted(days)),
        hub=websub[0],
        self_url=websub[1],
    )


_LINK_HEADER = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))""", re.IGNORECASE)


def _fp_links(feed: dict[str, Any], ctx: _Context) -> list[tuple[str, str]]:
    """(rel, href) of a feed's <link>/<atom:link> elements."""
    out = []
    for link in dict.get(feed, "links") or ():
        if isinstance(link, Mapping):
            out.append((str(link.get("rel", "")), str(link.get("href", ""))))
    return out


def _websub(
    body_links: list[tuple[str, str]], headers: Mapping[str, str], ctx: _Context
) -> tuple[str | None, str | None]:
    """``(hub, self)`` for WebSub: HTTP Link headers first (as the spec says), then the
    body's links; absolute http(s) URLs or None."""
    links = []
    for m in _LINK_HEADER.finditer(headers.get("link", "")):
        if found := _REL.search(m.group(2)):
            links.append(((found.group(1) or found.group(2) or ""), m.group(1)))
    links.extend(body_links)
    hub: str | None = None
    self_url: str | None = None
    for rels, href in links:
        names = rels.lower().split()
        if hub is None and "hub" in names:
            hub = ctx.absolute(href)
        if self_url is None and "self" in names:
            self_url = ctx.absolute(href)
    return hub, self_url


def _check_bozo(
    result: Any, content: bytes, version: str, entries: list[Any], ctx: _Context
) -> None:
    """Raise ParseError for a broken document unless what feedparser salvaged is sound."""
    if not result.get("bozo"):
        return
    exc = result.get("bozo_exception")
    if isinstance(exc, feedparser.CharacterEncodingOverride | feedparser.NonXMLContentType):
        ctx.warnings.append(_describe(exc))
        return
    if _is_truncated(exc, content):
        # A cut-off download: the last item is likely incomplete and would be stored as
        # an "update" of the real one. Better to fail this poll and read the next.
        raise ParseError(f"feed is truncated ({_describe(exc)}); the download was cut short")
    if version and entries:
        # The lenient parser read it; feeds with e.g. an undefined HTML entity are common.
        ctx.warnings.append(f"feed is not well-formed XML ({_describe(exc)}); read leniently")
        return
    raise ParseError(_not_a_feed(content, exc, ctx.url))


def _describe(exc: object) -> str:
    if isinstance(exc, xml.sax.SAXParseException):
        where = f"line {exc.getLineNumber()}, column {exc.getColumnNumber()}"
        return f"{exc.getMessage()} at {where}"
    return f"{type(exc).__name__}: {exc}"


def _is_truncated(exc: object, content: bytes) -> bool:
    message = str(exc).lower()
    if any(m in message for m in _TRUNCATION_MESSAGES):
        return True
    # expat stops at the first error, so a feed with a bad entity *and* a missing end
    # never reports "no element found": look for the root's end tag ourselves. UTF-16
    # puts NULs between the letters; dropping them keeps the check byte-simple.
    tail = content.rstrip()[-4096:].replace(b"\x00", b"")
    return _FEED_ROOT.search(content[:4096].replace(b"\x00", b"")) is not None and (
        _ROOT_CLOSE.search(tail) is None
    )


def _refuse_dangerous_entities(content: bytes) -> None:
    """Refuse a DTD declaring external, parameter, nested or oversized entities.

    feedparser drops most entity declarations before expat sees them and falls back to
    its lenient parser, so a billion-laughs or XXE document would be "read leniently"
    with the attack left in the text. Such a document is hostile, not a feed with a
    typo: it is refused and the error says why. Plain declarations such as
    ``<!ENTITY eacute "&#233;">`` (common in real feeds) stay allowed.
    """
    head = content[:65536].replace(b"\x00", b"")
    start = _DOCTYPE.search(head)
    if start is None:
        return
    end = head.find(b"]>", start.end())
    subset = head[start.end() : end if end >= 0 else len(head)]
    for m in _ENTITY_DECL.finditer(subset):
        parameter, name = m.group(1), m.group(2).decode("ascii", "replace")
        value = m.group(4) if m.group(4) is not None else m.group(5)
        if m.group(3) or value is None:
            raise ParseError(f"refused: the document declares an external entity {name!r} (XXE)")
        if parameter:
            raise ParseError(f"refused: the document declares a parameter entity {name!r}")
        nested = [r for r in _ENTITY_REF.findall(value) if r not in _XML_PREDEFINED]
        if nested:
            raise ParseError(
                f"refused: entity {name!r} expands other entities "
                f"({', '.join(sorted({n.decode('ascii', 'replace') for n in nested}))}): "
                "entity expansion ('billion laughs') is not allowed"
            )
        if len(value) > MAX_ENTITY_BYTES:
            raise ParseError(
                f"refused: entity {name!r} is {len(value)} bytes long "
                f"(more than {MAX_ENTITY_BYTES}): entity expansion is not allowed"
            )


def _not_a_feed(content: bytes, exc: object, base: str) -> str:
    head = content[:4096].lstrip(_LEADING_JUNK)
    if _HTML_START.search(head):
        message = "looks like an HTML page, not a feed"
        alternates = [u for u in (_join(base, h) for h in _alternate_feeds(content)) if u]
        if alternates:
            message += "; the page links to " + ", ".join(alternates[:3])
        return message
    if b"\x00" in content[:1024] or not _mostly_text(content[:1024]):
        return "not a feed: the body is binary data"
    if exc is not None:
        return f"not a feed: could not parse the document ({_describe(exc)})"
    return "not a feed: no RSS, Atom or RDF root element and no entries"


def _mostly_text(sample: bytes) -> bool:
    text = sample.decode("utf-8", "replace")
    bad = sum(1 for c in text if c == "\ufffd" or (c < " " and c not in "\t\r\n"))
    return bad <= len(text) // 20


class _AlternateFinder(HTMLParser):
    """Collects <link rel="alternate"> feed URLs, to say where the real feed is."""

    FEED_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/feed+json"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "link":
            return
        a = {k: (v or "") for k, v in attrs}
        if "alternate" in a.get("rel", "").lower().split() and (
            a.get("type", "").lower() in self.FEED_TYPES
        ):
            self.found.append(a.get("href", ""))


def _alternate_feeds(content: bytes) -> list[str]:
    finder = _AlternateFinder()
    try:
        finder.feed(content[:65536].decode("utf-8", "replace"))
    except Exception:  # the hint is a courtesy; never let it hide the real error
        return []
    return [h for h in finder.found if h]


def _fp_text(node: Any, key: str) -> str:
    """A feedparser text construct as plain text, honouring its declared type."""
    value = dict.get(node, key)
    if not isinstance(value, str):
        return ""
    detail = dict.get(node, key + "_detail") or {}
    if "html" in str(detail.get("type", "text/html")):
        return _markup_to_plain(value)
    return _plain(value)


def _fp_html(construct: Any, ctx: _Context) -> str:
    """Sanitised HTML for a feedparser content/summary construct (a dict with type+value)."""
    value = construct.get("value")
    if not isinstance(value, str) or not value.strip():
        return ""
    ctype = str(construct.get("type") or "text/html").lower()
    if "html" in ctype:
        return ctx.html(value)
    return _escape_text(value)


def _fp_authors(node: Any) -> tuple[str, ...]:
    names: list[str] = []
    for author in dict.get(node, "authors") or []:
        if isinstance(author, Mapping):
            names.append(_plain(author.get("name") or author.get("email") or ""))
    if not names:
        names.append(_plain(dict.get(node, "author")))
    return _dedup(names)


def _fp_entry(entry: Any, feed_authors: tuple[str, ...], ctx: _Context) -> ParsedEntry:
    # dict.get everywhere: FeedParserDict.get follows aliases (guid->id, updated->
    # published with a DeprecationWarning), and we want exactly what the feed said.
    get: Callable[[str], Any] = partial(dict.get, entry)

    guid = _guid(get("id"))

    summary_detail = get("summary_detail")
    if not isinstance(summary_detail, Mapping) and isinstance(get("summary"), str):
        summary_detail = {"type": "text/html", "value": get("summary")}
    summary_html = _fp_html(summary_detail, ctx) if isinstance(summary_detail, Mapping) else ""
    contents = [c for c in get("content") or [] if isinstance(c, Mapping)]
    content_html = next((h for h in (_fp_html(c, ctx) for c in contents) if h), "")
    content_html = content_html or summary_html
    summary_html = summary_html or content_html

    published, updated, from_fetch = _dates(
        _from_struct(get("published_parsed")), _from_struct(get("updated_parsed")), ctx
    )

    categories: list[str] = []
    for tag in get("tags") or []:
        if isinstance(tag, Mapping):
            term = tag.get("term") or tag.get("label")
            if isinstance(term, str):
                categories.append(_plain(term))

    return ParsedEntry(
        guid=guid,
        link=ctx.absolute(get("link")),
        title=_fp_text(entry, "title"),
        summary_html=summary_html,
        content_html=content_html,
        text=_text_of(content_html),
        authors=_fp_authors(entry) or feed_authors,
        published=published,
        updated=updated,
        date_from_fetch=from_fetch,
        categories=_dedup(categories),
        enclosures=_fp_enclosures(entry, ctx),
        orig_link=ctx.absolute(get("feedburner_origlink")),
    )


def _fp_enclosures(entry: Any, ctx: _Context) -> tuple[Enclosure, ...]:
    found: dict[str, Enclosure] = {}
    candidates: list[tuple[object, object, object]] = []
    for link in dict.get(entry, "links") or []:
        if isinstance(link, Mapping) and link.get("rel") == "enclosure":
            candidates.append((link.get("href"), link.get("type"), link.get("length")))
    for media in dict.get(entry, "media_content") or []:
        if isinstance(media, Mapping):
            candidates.append((media.get("url"), media.get("type"), media.get("filesize")))
    for href, mime, length in candidates[: MAX_ENCLOSURES * 4]:
        absolute = ctx.absolute(href)
        if absolute and absolute not in found:
            found[absolute] = Enclosure(absolute, media_type(mime), _int_or_none(length))
            if len(found) == MAX_ENCLOSURES:
                break
    return tuple(found.values())


# ---------------------------------------------------------------------------- JSON Feed


def _parse_json_feed(content: bytes, headers: dict[str, str], ctx: _Context) -> ParsedFeed:
    try:
        doc = json.loads(content)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ParseError(f"invalid JSON, not a JSON Feed: {e}") from e
    if not isinstance(doc, dict):
        raise ParseError(f"JSON body is not a JSON Feed: top level is {type(doc).__name__}")
    version = doc.get("version")
    if not isinstance(version, str) or not _JSON_FEED_VERSION.match(version):
        raise ParseError(
            'JSON body is not a JSON Feed: no "version" starting with '
            f"https://jsonfeed.org/version/ (got {version!r})"
        )
    items = doc.get("items")
    if not isinstance(items, list):
        raise ParseError('JSON body is not a JSON Feed: "items" is missing or not a list')

    home = ctx.absolute(doc.get("home_page_url"))
    base = home or ctx.absolute(doc.get("feed_url")) or ctx.url
    ctx.set_base(base)
    feed_authors = _json_authors(doc)
    if len(items) > MAX_ENTRIES:
        ctx.warnings.append(f"{len(items)} items; only the first {MAX_ENTRIES} read")
        items = items[:MAX_ENTRIES]
    parsed: list[ParsedEntry] = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise TypeError(f"item is a {type(item).__name__}, not an object")
            entry = _json_entry(item, feed_authors, ctx)
            if not (entry.title or entry.text or entry.link or entry.enclosures):
                # {"id": null} and the like: nothing to show, nothing to tell it apart by.
                raise ValueError("no title, url, content or attachment")
            parsed.append(entry)
        except Exception as e:  # one broken item must not cost the whole feed
            ctx.warnings.append(f"entry {i} skipped: {type(e).__name__}: {e}")
    language = _plain(doc.get("language")) or _plain(headers.get("content-language"))
    links: list[tuple[str, str]] = []
    hubs = doc.get("hubs")
    for h in hubs if isinstance(hubs, list) else ():
        if isinstance(h, dict) and str(h.get("type", "")).lower() == "websub":
            links.append(("hub", str(h.get("url", ""))))
    links.append(("self", str(doc.get("feed_url") or "")))
    hub, self_url = _websub(links, headers, ctx)
    return ParsedFeed(
        title=_plain(doc.get("title")),
        link=home,
        language=language or None,
        entries=parsed,
        warnings=ctx.warnings,
        hints=FeedHints(hub=hub, self_url=self_url),
    )


def _json_authors(node: Mapping[str, Any]) -> tuple[str, ...]:
    # 1.1 has "authors"; 1.0 had a single "author" object. Accept either in any version.
    raw = node.get("authors")
    people = raw if isinstance(raw, list) else []
    if not people and isinstance(node.get("author"), dict):
        people = [node["author"]]
    return _dedup(_plain(p.get("name")) for p in people if isinstance(p, dict))


def _json_entry(item: dict[str, Any], feed_authors: tuple[str, ...], ctx: _Context) -> ParsedEntry:
    guid = _guid(item.get("id"))

    raw_text = item.get("content_text")
    content_text = scrub(raw_text[:MAX_HTML_CHARS]) if isinstance(raw_text, str) else ""
    raw_html = item.get("content_html")
    content_html = ctx.html(raw_html) if isinstance(raw_html, str) else ""
    content_html = content_html or (_escape_text(content_text) if content_text.strip() else "")
    # JSON Feed's "summary" is plain text by definition.
    summary = item.get("summary")
    summary_html = _escape_text(summary) if isinstance(summary, str) and summary.strip() else ""
    content_html = content_html or summary_html
    summary_html = summary_html or content_html
    text = _collapse(content_text) if content_text.strip() else _text_of(content_html)

    published, updated, from_fetch = _dates(
        _from_string(item.get("date_published")), _from_string(item.get("date_modified")), ctx
    )
    tags = item.get("tags")
    categories = (
        _dedup(_plain(t) for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()
    )

    enclosures: dict[str, Enclosure] = {}
    attachments = item.get("attachments")
    for att in attachments[: MAX_ENCLOSURES * 4] if isinstance(attachments, list) else []:
        if not isinstance(att, dict):
            continue
        href = ctx.absolute(att.get("url"))
        mime = att.get("mime_type")
        if href and href not in enclosures:
            enclosures[href] = Enclosure(
                href, media_type(mime), _int_or_none(att.get("size_in_bytes"))
            )

    return ParsedEntry(
        guid=guid,
        # external_url points at someone else's page (a linkblog's subject): it is only
        # the link when the item has no page of its own.
        link=ctx.absolute(item.get("url")) or ctx.absolute(item.get("external_url")),
        title=_plain(item.get("title")),
        summary_html=summary_html,
        content_html=content_html,
        text=text,
        authors=_json_authors(item) or feed_authors,
        published=published,
        updated=updated,
        date_from_fetch=from_fetch,
        categories=categories,
        enclosures=tuple(enclosures.values()),
    )
