"""Deduplication: who is who among entries.

Three questions, answered here without touching the store:

* **identity** of an entry within its feed: its guid/id, else its canonical link, else a hash
  of title and content. Some feeds give every item the same guid; when one fetch repeats a
  guid with different links, those entries fall back to their links (as miniflux does).
* **content hash**: did a known entry change? Fields that change on every fetch (a date we
  made up from the fetch time) are left out, so an unchanged item is never "updated".
* **canonical URL**: the key by which entries from different feeds become one story.

``plan()`` turns a parsed feed plus the stored hashes into one ``EntryIntent`` per entry:
new, updated or unchanged, with the near-duplicate fingerprint of each entry to store
(aggregator/neardup.py). The story an entry joins is decided where the story rows are,
in the poll's transaction (storage): the story of its canonical URL, else the story of its
closest near-duplicate (``Policy.matcher``), else a new one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from .config import DedupSettings
from .events import EventMatcher
from .neardup import Matcher, fingerprint
from .types import EntryAction, EntryIntent, ParsedEntry, TopicTag

# Query parameters that only say where a click came from, never which article it is.
# feeds.yaml ``dedup.tracking_params`` adds to these (docs/feeds-yaml.md lists them).
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "yclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "ref",
        "ref_src",
        "ref_url",
        "cmpid",
        "ito",
        "ns_mchannel",
        "ns_source",
        "ns_campaign",
        "ns_linkname",
        "ns_fee",
        "at_medium",
        "at_campaign",
        "s_cid",
        "smid",
        "rss",
        "feed",
        "partner",
    }
)
TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "mtm_", "_hs", "hsa_", "oly_")
DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 section 6.2.2.2: escapes of unreserved characters mean the character itself.
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True)
class Tracking:
    """Which query parameters to drop: exact names and name prefixes, lower-case."""

    names: frozenset[str] = TRACKING_PARAMS
    prefixes: tuple[str, ...] = TRACKING_PREFIXES

    @classmethod
    def with_extra(cls, extra: Iterable[str]) -> Tracking:
        """The built-in list plus ``extra`` names; a trailing ``*`` makes a prefix."""
        extra = [e.strip().lower() for e in extra if e.strip()]
        return cls(
            names=TRACKING_PARAMS | {e for e in extra if not e.endswith("*")},
            prefixes=TRACKING_PREFIXES + tuple(e.rstrip("*") for e in extra if e.endswith("*")),
        )

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        n = name.lower()
        return n in self.names or n.startswith(self.prefixes)


DEFAULT_TRACKING = Tracking()


@dataclass(frozen=True)
class Policy:
    """feeds.yaml ``dedup:`` as the pipeline uses it."""

    tracking: Tracking = DEFAULT_TRACKING
    near_duplicates: bool = True
    matcher: Matcher = Matcher()
    events: EventMatcher | None = EventMatcher()

    @classmethod
    def from_settings(cls, s: DedupSettings) -> Policy:
        return cls(
            tracking=Tracking.with_extra(s.tracking_params),
            near_duplicates=s.near_duplicates,
            matcher=Matcher(
                threshold=s.threshold, title_threshold=s.title_threshold, window=s.window
            ),
            events=EventMatcher(
                threshold=s.event_threshold,
                lexical_threshold=s.event_lexical_threshold,
                same_title=s.event_same_title,
                window=s.event_window,
                cap=s.event_cap,
            )
            if s.events
            else None,
        )

    @property
    def story_matcher(self) -> Matcher | None:
        return self.matcher if self.near_duplicates else None

    @property
    def event_matcher(self) -> EventMatcher | None:
        return self.events if self.near_duplicates else None


DEFAULT_POLICY = Policy()


def lead_index(sources: Sequence[tuple[str, str | None]], preferred: Sequence[str]) -> int:
    """Which of a story's entries (feed URL, link), first seen first, gives its headline.

    The first entry of the first preferred source (a feed URL, or a host that the feed or
    the link is on) that carries the story; the first entry seen when none does.
    """
    for want in preferred:
        for i, (feed_url, link) in enumerate(sources):
            if want == feed_url or (
                "/" not in want and (_on_host(feed_url, want) or _on_host(link, want))
            ):
                return i
    return 0


def _on_host(url: str | None, host: str) -> bool:
    try:
        h = (urlsplit(url).hostname or "") if url else ""
    except ValueError:
        return False
    h = h.removeprefix("www.")
    return h == host or h.endswith("." + host)


def _normalise_escapes(s: str) -> str:
    def fix(m: re.Match[str]) -> str:
        c = chr(int(m.group(1), 16))
        return c if c in _UNRESERVED else "%" + m.group(1).upper()

    return _ESCAPE.sub(fix, s)


def canonical_url(
    url: str | None, base: str | None = None, tracking: Tracking = DEFAULT_TRACKING
) -> str | None:
    """A comparison key for an article URL; None for anything that is not http(s).

    Lower-cased host without ``www.``, no scheme distinction (http and https are one
    article), no default port, no fragment, no tracking parameters, sorted query, no
    trailing slash, percent-escapes normalised. The path keeps its case: servers may not.
    """
    if not url or not url.strip():
        return None
    url = url.strip()
    if base:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    if not host:
        return None
    if port and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = _normalise_escapes(parts.path) or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    query = sorted(
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in tracking
    )
    return urlunsplit(("https", host, path, urlencode(query), ""))


def content_hash(entry: ParsedEntry) -> str:
    """A hash of what a reader sees of an entry, leaving out fetch-time artefacts."""
    payload = {
        "title": entry.title,
        "link": entry.link,
        "summary": entry.summary_html,
        "content": entry.content_html,
        "authors": list(entry.authors),
        "categories": list(entry.categories),
        "enclosures": [list(e) for e in entry.enclosures],
        # A date we made up from the fetch time changes on every poll: not content.
        "published": None if entry.date_from_fetch else entry.published.isoformat(),
        "updated": None if entry.date_from_fetch else entry.updated.isoformat(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fallback_identity(entry: ParsedEntry, feed_url: str) -> str:
    # Built-in tracking list only: an identity must not change when an admin extends it.
    link = canonical_url(entry.link, feed_url)
    if link:
        return "link:" + link
    digest = hashlib.sha256(f"{entry.title}\0{entry.content_html}".encode()).hexdigest()
    return "hash:" + digest


def identities(entries: Sequence[ParsedEntry], feed_url: str) -> list[str]:
    """The identity of each entry within its feed (same order as ``entries``)."""
    links_per_guid: dict[str, set[str | None]] = {}
    for e in entries:
        if e.guid:
            links_per_guid.setdefault(e.guid, set()).add(canonical_url(e.link, feed_url))
    guid_counts = Counter(e.guid for e in entries if e.guid)
    out = []
    for e in entries:
        # A guid shared by several different articles is no identity at all.
        shared = e.guid and guid_counts[e.guid] > 1 and len(links_per_guid[e.guid]) > 1
        if e.guid and not shared:
            out.append("guid:" + e.guid)
        else:
            out.append(_fallback_identity(e, feed_url))
    return out


Tagger = Callable[[ParsedEntry], Sequence[TopicTag]]


def plan(
    entries: Sequence[ParsedEntry],
    feed_url: str,
    stored_hashes: Mapping[str, str],
    tagger: Tagger | None = None,
    tracking: Tracking = DEFAULT_TRACKING,
) -> list[EntryIntent]:
    """Decide new / updated / unchanged for each entry; tag the ones that need storing.

    An identity seen twice in one fetch keeps its first occurrence (feeds list newest first).
    """
    seen: set[str] = set()
    out = []
    for entry, identity in zip(entries, identities(entries, feed_url), strict=True):
        if identity in seen:
            continue
        seen.add(identity)
        digest = content_hash(entry)
        stored = stored_hashes.get(identity)
        if stored is None:
            action: EntryAction = "new"
        elif stored != digest:
            action = "updated"
        else:
            action = "unchanged"
        tags = tuple(tagger(entry)) if tagger and action != "unchanged" else ()
        url = canonical_url(entry.orig_link or entry.link, feed_url, tracking)
        out.append(
            EntryIntent(
                identity=identity,
                content_hash=digest,
                canonical_url=url,
                action=action,
                entry=entry,
                tags=tags,
                fingerprint=fingerprint(entry, url) if action != "unchanged" else None,
            )
        )
    return out


def decide(intents: Sequence[EntryIntent], stored_hashes: Mapping[str, str]) -> list[EntryIntent]:
    """Re-decide intents planned against no stored hashes, now that they are known.

    ``plan(entries, url, {})`` is the part of dedup that needs no store (it runs in a
    parser process); this is the rest. An unchanged entry drops its fingerprint, as
    ``plan`` would have given it none.
    """
    out = []
    for intent in intents:
        stored = stored_hashes.get(intent.identity)
        if stored is None:
            out.append(intent if intent.action == "new" else replace(intent, action="new"))
        elif stored != intent.content_hash:
            out.append(replace(intent, action="updated"))
        else:
            out.append(replace(intent, action="unchanged", tags=(), fingerprint=None))
    return out
