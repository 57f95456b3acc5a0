"""Feed filters given as query parameters: parsed, checked and put in one canonical form.

    /topics/world.atom?topics=politics+colombia&not=sport&source=bbc.co.uk&lang=en
        &since=7d&until=2026-03-01&q="peace talks" -rumour&limit=20&after=<cursor>

Pure: nothing here touches the request object or the database. :func:`parse_query` turns
the raw ``(name, value)`` pairs into a :class:`StoryQuery` or raises :class:`FilterError`
naming the parameter and what was wrong with it (the web layer answers 400 with that text).
Storage turns a ``StoryQuery`` into SQL (``storage/stories.py``).

Tag keys are what ``entry_tags.topic`` holds: a topic slug (``politics``) or a namespaced
key (``place:co``), so the same query serves topic, place and filtered feeds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal, NamedTuple
from urllib.parse import urlencode, urlsplit

from .exceptions import AggregatorError
from .types import StoryItem

MAX_LIMIT = 500
MAX_QUERY_CHARS = 256
MAX_VALUES = 20

PARAMS = (
    "topics",
    "any",
    "not",
    "source",
    "lang",
    "since",
    "until",
    "q",
    "limit",
    "after",
    "before",
    "stories",
)

_TAG_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*(?::[a-z0-9][a-z0-9_.-]*)?$")
_LANG = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{1,8})*$")
_HOST = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# '+' in a query string decodes to a space, so "a+b" arrives as "a b"; commas work too.
_LIST_SEP = re.compile(r"[\s,+]+")
_CURSOR = re.compile(r"^(-?\d{1,19})\.(\d{1,19})$")
_QUERY_TOKEN = re.compile(r'-?"[^"]*"?|\S+')


class FilterError(AggregatorError, ValueError):
    """A query parameter that cannot be used; the message says which and why."""


class Cursor(NamedTuple):
    """A position in a feed's order (newest first): the story's published time and id."""

    published: datetime
    story_id: int

    def token(self) -> str:
        """Opaque to clients, but readable: ``<published µs since epoch>.<story id>``."""
        micros = (self.published - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.story_id}"

    @classmethod
    def parse(cls, name: str, token: str) -> Cursor:
        m = _CURSOR.match(token)
        if not m:
            raise FilterError(f"{name}: not a page cursor from one of our feeds: {token!r}")
        try:
            published = _EPOCH + timedelta(microseconds=int(m.group(1)))
        except OverflowError as e:
            raise FilterError(f"{name}: page cursor out of range: {token!r}") from e
        return cls(published, int(m.group(2)))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StoryPage(NamedTuple):
    """One page of a feed, newest first, and where the pages beside it start."""

    items: list[StoryItem]
    next: Cursor | None  # older stories: ``after=next``
    prev: Cursor | None  # newer stories: ``before=prev``


class TextTerm(NamedTuple):
    """One word or quoted phrase of ``q=``; ``negated`` for a leading ``-``."""

    text: str
    phrase: bool
    negated: bool


@dataclass(frozen=True)
class TextQuery:
    """``q=`` in web-search syntax: words (all required), "phrases", ``or``, ``-word``.

    ``groups`` is a conjunction of disjunctions of positive terms; ``excluded`` are the
    negated terms. PostgreSQL takes ``raw`` through ``websearch_to_tsquery``, which reads
    the same syntax; SQLite gets an FTS5 expression built from the parsed terms.
    """

    raw: str
    groups: tuple[tuple[TextTerm, ...], ...]
    excluded: tuple[TextTerm, ...]


@dataclass(frozen=True)
class StoryQuery:
    """Which stories a feed shows, and which page of them."""

    all_of: tuple[str, ...] = ()  # tag keys every story must carry
    any_of: tuple[str, ...] = ()  # at least one of these
    none_of: tuple[str, ...] = ()  # none of these
    feed_urls: tuple[str, ...] = ()  # from one of these feeds ...
    hosts: tuple[str, ...] = ()  # ... or from a feed on one of these hosts (or subdomains)
    langs: tuple[str, ...] = ()  # language tags, "en" also matches "en-gb"
    since: datetime | None = None  # published at or after
    until: datetime | None = None  # published before
    text: TextQuery | None = None
    limit: int = 50
    # "events": one item per news event, every outlet's story in it; "copies": one item
    # per story (copies of one text), as before events existed.
    level: Literal["events", "copies"] = "events"
    after: Cursor | None = None  # the page after this position (older items)
    before: Cursor | None = None  # the page before this position (newer items)
    # The filter as given (relative times unresolved), sorted: for links and cache keys.
    params: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def cache_key(self) -> tuple[object, ...]:
        """Equal for two queries that select the same rows (relative times resolved)."""
        return (
            self.all_of,
            self.any_of,
            self.none_of,
            self.feed_urls,
            self.hosts,
            self.langs,
            self.since,
            self.until,
            self.text.raw if self.text else None,
            self.limit,
            self.level,
            self.after,
            self.before,
        )

    def query_string(self, page: tuple[Literal["after", "before"], Cursor] | None = None) -> str:
        """The canonical filter as a query string (``""`` when empty), optionally a page."""
        pairs = list(self.params)
        if page is not None:
            pairs.append((page[0], page[1].token()))
        return urlencode(pairs) if pairs else ""

    def with_tag(self, key: str) -> StoryQuery:
        """The same query restricted to stories tagged ``key`` (a topic or place feed)."""
        if key in self.all_of:
            return self
        return replace(self, all_of=tuple(sorted((*self.all_of, key))))


def parse_query(
    pairs: Iterable[tuple[str, str]],
    *,
    now: datetime,
    default_limit: int,
    is_known_tag: Callable[[str], bool] | None = None,
) -> StoryQuery:
    """Check and normalise the query parameters of a feed request.

    Raises :class:`FilterError` for an unknown parameter or a value that cannot be used.
    Relative times (``since=1d``) are resolved against ``now`` truncated to the minute, so
    a cached rendering stays valid for up to a minute.
    """
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if name not in PARAMS:
            raise FilterError(f"unknown parameter {name!r}; expected one of {', '.join(PARAMS)}")
        if "\x00" in value:
            # No store takes it (PostgreSQL refuses NUL in text): a 400, not a 503.
            raise FilterError(f"{name}: a NUL character is not allowed")
        values.setdefault(name, []).append(value)
    for name in ("since", "until", "q", "limit", "after", "before", "stories"):
        if len(values.get(name, ())) > 1:
            raise FilterError(f"{name}: give it once, not {len(values[name])} times")
    if "after" in values and "before" in values:
        raise FilterError("after and before: give one page cursor, not both")

    def one(name: str) -> str | None:
        got = values.get(name)
        return got[0] if got else None

    now = now.astimezone(UTC).replace(second=0, microsecond=0)
    all_of = _tags("topics", values.get("topics", []), is_known_tag)
    any_of = _tags("any", values.get("any", []), is_known_tag)
    none_of = _tags("not", values.get("not", []), is_known_tag)
    clash = set(all_of + any_of) & set(none_of)
    if clash:
        raise FilterError(f"not: {', '.join(sorted(clash))} is also required; nothing could match")
    feed_urls, hosts = _sources(values.get("source", []))
    langs = _langs(values.get("lang", []))
    since = _time("since", one("since"), now)
    until = _time("until", one("until"), now)
    if since and until and since >= until:
        raise FilterError("since must be earlier than until")
    raw_q = one("q")
    text = parse_text(raw_q) if raw_q is not None else None
    limit = _limit(one("limit"), default_limit)
    after = Cursor.parse("after", one("after") or "") if one("after") is not None else None
    before = Cursor.parse("before", one("before") or "") if one("before") is not None else None
    level = one("stories")
    if level is not None and level not in ("events", "copies"):
        raise FilterError(f"stories: {level!r} is not one of events, copies")

    params: list[tuple[str, str]] = []
    for name, seq in (("topics", all_of), ("any", any_of), ("not", none_of)):
        if seq:
            params.append((name, " ".join(seq)))
    if feed_urls or hosts:
        params.append(("source", ",".join((*feed_urls, *hosts))))
    if langs:
        params.append(("lang", ",".join(langs)))
    for name in ("since", "until", "q"):
        raw = one(name)
        if raw is not None:
            params.append((name, raw.strip()))
    if one("limit") is not None:
        params.append(("limit", str(limit)))
    if level is not None:
        params.append(("stories", level))
    return StoryQuery(
        all_of=all_of,
        any_of=any_of,
        none_of=none_of,
        feed_urls=feed_urls,
        hosts=hosts,
        langs=langs,
        since=since,
        until=until,
        text=text,
        limit=limit,
        level="copies" if level == "copies" else "events",
        after=after,
        before=before,
        params=tuple(params),
    )


def _split(name: str, raw_values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in raw_values:
        out.extend(v for v in _LIST_SEP.split(raw.strip()) if v)
    if len(out) > MAX_VALUES:
        raise FilterError(f"{name}: at most {MAX_VALUES} values, got {len(out)}")
    return out


def _tags(
    name: str, raw_values: Sequence[str], is_known: Callable[[str], bool] | None
) -> tuple[str, ...]:
    keys: list[str] = []
    for raw in _split(name, raw_values):
        key = raw.lower()
        if not _TAG_KEY.match(key):
            raise FilterError(
                f"{name}: {raw!r} is not a topic slug (letters, digits, '-', e.g. "
                "foreign-relations; several joined with '+')"
            )
        if is_known is not None and not is_known(key):
            raise FilterError(f"{name}: no topic {raw!r}; see /topics for the list")
        keys.append(key)
    return tuple(sorted(set(keys)))


def _sources(raw_values: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    urls: list[str] = []
    hosts: list[str] = []
    for raw in raw_values:
        for value in (v.strip() for v in raw.split(",")):
            if not value:
                continue
            if "://" in value:
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise FilterError(f"source: {value!r} is not an http(s) feed URL")
                urls.append(value)
                continue
            host = value.lower().rstrip(".")
            if host.startswith("www."):
                host = host[4:]
            if not _HOST.match(host) or "." not in host:
                raise FilterError(
                    f"source: {value!r} is neither a feed URL nor a host name (e.g. bbc.co.uk)"
                )
            hosts.append(host)
    if len(urls) + len(hosts) > MAX_VALUES:
        raise FilterError(f"source: at most {MAX_VALUES} values")
    return tuple(sorted(set(urls))), tuple(sorted(set(hosts)))


def _langs(raw_values: Sequence[str]) -> tuple[str, ...]:
    langs: list[str] = []
    for raw in _split("lang", raw_values):
        lang = raw.lower().replace("_", "-")
        if not _LANG.match(lang):
            raise FilterError(f"lang: {raw!r} is not a language tag (e.g. en, es, pt-br)")
        langs.append(lang)
    return tuple(sorted(set(langs)))


def _time(name: str, raw: str | None, now: datetime) -> datetime | None:
    if raw is None:
        return None
    value = raw.strip()
    m = _RELATIVE.match(value)
    if m:
        try:
            return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
        except OverflowError as e:
            raise FilterError(f"{name}: {raw!r} reaches too far back") from e
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise FilterError(
            f"{name}: {raw!r} is not a date (2026-03-01), a date and time "
            "(2026-03-01T12:00:00Z) or a time ago (90m, 12h, 7d, 2w)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _limit(raw: str | None, default: int) -> int:
    if raw is None:
        return min(default, MAX_LIMIT)
    try:
        n = int(raw)
    except ValueError:
        raise FilterError(f"limit: {raw!r} is not a whole number") from None
    if not 1 <= n <= MAX_LIMIT:
        raise FilterError(f"limit: must be between 1 and {MAX_LIMIT}, got {n}")
    return n


def parse_text(raw: str) -> TextQuery:
    """Parse ``q=``: words, "quoted phrases", ``or`` between alternatives, ``-excluded``."""
    if len(raw) > MAX_QUERY_CHARS:
        raise FilterError(f"q: at most {MAX_QUERY_CHARS} characters, got {len(raw)}")
    groups: list[list[TextTerm]] = []
    excluded: list[TextTerm] = []
    pending_or = False
    for token in _QUERY_TOKEN.findall(raw):
        negated = token.startswith("-") and len(token) > 1
        body = token[1:] if negated else token
        phrase = body.startswith('"')
        text = " ".join(_words(body.strip('"')))
        if not text:
            continue
        if not phrase and not negated and text.lower() == "or" and " " not in text:
            pending_or = bool(groups)
            continue
        term = TextTerm(text, phrase or " " in text, negated)
        if negated:
            excluded.append(term)
        elif pending_or:
            groups[-1].append(term)
        else:
            groups.append([term])
        pending_or = False
    if not groups:
        raise FilterError(
            "q: give at least one word to search for (a query of only -excluded words "
            "or punctuation matches nothing)"
        )
    return TextQuery(raw.strip(), tuple(tuple(g) for g in groups), tuple(excluded))


def _words(text: str) -> list[str]:
    # Split like the full-text tokenizers do: letters and digits are words, the rest is not.
    return re.findall(r"\w+", text)
