"""The topic rule language, compiled: each rule becomes a matcher that returns its reason.

A matcher takes an ``ItemView`` (the item's fields, folded and tokenised lazily, once per
item) and returns a reason string such as ``keyword "embassy" in title`` or None.
Keywords and phrases are whole words, case- and accent-insensitive ("Bogota" matches
"Bogotá"); before any regular expression runs, a keyword rule checks the item's word set
for the first word of each keyword, which skips most items in a set lookup.
Regular expressions see the text as written (case-insensitive).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import regex

from .places import Gazetteer, PlaceMention, strip_accents
from .topicconfig import DEFAULT_SCOPE, Rule
from .types import FeedContext, ParsedEntry

_log = logging.getLogger("aggregator.rules")

_WORD = re.compile(r"\w+")
_LEADING_WORD = re.compile(r"^\w+")


def fold(text: str) -> str:
    """What keywords are compared on: no accents, case folded."""
    return strip_accents(text).casefold()


def feed_tag_key(tag: str) -> str:
    """Feed tags compare like this: 'Foreign-Relations' == 'foreign relations'."""
    return " ".join(re.sub(r"[\W_]+", " ", fold(tag)).split())


@dataclass
class _Field:
    text: str  # accents stripped, case kept: what keyword regexes search
    words: frozenset[str]  # lower-cased \w+ words: the keyword prefilter


class ItemView:
    """One item's fields as rules see them; each derived form is computed at most once."""

    def __init__(
        self,
        entry: ParsedEntry,
        feed: FeedContext,
        categories: Mapping[str, str],
        language: str | None,
        gazetteer: Gazetteer | None,
    ) -> None:
        self.entry = entry
        self.feed = feed
        self.categories = categories  # canonical -> as written
        self.feed_tags = {feed_tag_key(t): t for t in feed.tags}
        self.language = language
        self._gazetteer = gazetteer
        self._places: dict[str, PlaceMention] | None = None
        self._fields: dict[str, _Field] = {}

    def raw(self, name: str) -> str:
        e = self.entry
        if name == "title":
            return e.title
        if name == "text":
            return e.text
        if name == "categories":
            return "\n".join(e.categories)
        if name == "author":
            return "\n".join(e.authors)
        if name == "feed":
            return self.feed.title
        if name == "feed_tags":
            return "\n".join(self.feed.tags)
        if name == "link_host":
            try:
                return urlsplit(e.link or "").hostname or ""
            except ValueError:
                return ""
        if name == "language":
            return self.language or ""
        raise KeyError(name)

    def folded(self, name: str) -> _Field:
        f = self._fields.get(name)
        if f is None:
            text = strip_accents(self.raw(name))
            f = _Field(text, frozenset(_WORD.findall(text.lower())))
            self._fields[name] = f
        return f

    @property
    def places(self) -> dict[str, PlaceMention]:
        if self._places is None:
            g = self._gazetteer
            self._places = g.find(self.entry.title + "\n" + self.entry.text) if g else {}
        return self._places


class Matcher(Protocol):
    label: str

    def __call__(self, view: ItemView) -> str | None: ...


@dataclass
class Keywords:
    keywords: tuple[str, ...]
    scope: tuple[str, ...]
    label: str = ""
    pattern: re.Pattern[str] = field(init=False)
    firsts: frozenset[str] | None = field(init=False)

    def __post_init__(self) -> None:
        folded = sorted({fold(k.strip()) for k in self.keywords}, key=len, reverse=True)
        # A phrase matches across any run of whitespace.
        alts = [r"\s+".join(re.escape(w) for w in kw.split()) for kw in folded]
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)
        firsts = [_LEADING_WORD.match(k) for k in folded]
        self.firsts = frozenset(m.group(0) for m in firsts if m) if all(firsts) else None
        self.label = self.label or "keywords [" + ", ".join(self.keywords) + "]"

    def __call__(self, view: ItemView) -> str | None:
        for name in self.scope:
            f = view.folded(name)
            if self.firsts is not None and self.firsts.isdisjoint(f.words):
                continue
            if m := self.pattern.search(f.text):
                return f'keyword "{m.group(0)}" in {name}'
        return None


# The longest one search of one field may take. A pattern such as (a+)+$ backtracks
# exponentially on an item crafted for it; the stdlib's re has no time bound, so the
# ``regex`` module (re's syntax) runs topic regexes with this timeout.
REGEX_TIMEOUT = 0.1
# A pattern that timed out this many times is not run again in this process.
REGEX_STRIKES = 3


@dataclass
class Regex:
    patterns: tuple[str, ...]
    scope: tuple[str, ...]
    label: str = ""
    compiled: tuple[regex.Pattern[str], ...] = field(init=False)
    strikes: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.compiled = tuple(regex.compile(p, regex.IGNORECASE) for p in self.patterns)
        self.label = self.label or "regex " + ", ".join(f"/{p}/" for p in self.patterns)

    def __call__(self, view: ItemView) -> str | None:
        for rx in self.compiled:
            if self.strikes.get(rx.pattern, 0) >= REGEX_STRIKES:
                continue
            for name in self.scope:
                try:
                    found = rx.search(view.raw(name), timeout=REGEX_TIMEOUT)
                except TimeoutError:
                    self._strike(rx.pattern, name)
                    break
                if found:
                    return f"regex /{rx.pattern}/ in {name}"
        return None

    def _strike(self, pattern: str, name: str) -> None:
        strikes = self.strikes[pattern] = self.strikes.get(pattern, 0) + 1
        last = strikes >= REGEX_STRIKES
        _log.warning(
            "regex /%s/ took over %d ms on one item's %s: taken as no match%s",
            pattern,
            REGEX_TIMEOUT * 1000,
            name,
            "; it timed out too often and is no longer run (fix it in feeds.yaml)" if last else "",
        )


def contains_words(words: tuple[str, ...], part: tuple[str, ...]) -> bool:
    """``part`` occurs in ``words`` as a run of whole words."""
    n = len(part)
    return 0 < n <= len(words) and any(words[i : i + n] == part for i in range(len(words) - n + 1))


@dataclass
class Categories:
    """Configured categories (as written, a compared form) against the item's own ones.

    A configured category matches a publisher's category equal to it or containing it as
    whole words ("politics" in "Politics and Government"); the item's categories come
    already split into path parts and mapped through the synonyms (tag.entry_categories).
    """

    wanted: tuple[tuple[str, str], ...]
    label: str

    def __call__(self, view: ItemView) -> str | None:
        cats = view.categories
        hits = [(cats[c], configured) for configured, c in self.wanted if c in cats]
        if hits:
            # The publisher's own word for it first: "Football" as "football", not "sport".
            same = [h for h in hits if _same(*h)]
            return _category_reason(*(same or hits)[0])
        for configured, c in self.wanted:
            part = tuple(c.split())
            for key, raw in cats.items():
                if contains_words(tuple(key.split()), part):
                    return _category_reason(raw, configured)
        return None


def wanted_categories(
    categories: Iterable[str], forms: Callable[[str], tuple[str, ...]]
) -> tuple[tuple[str, str], ...]:
    """(as configured, form) pairs, every category's own form before any synonym's."""
    pairs = [(c, f) for c in categories for f in forms(c)]
    own = [(c, fs[0]) for c in categories if (fs := forms(c))]
    return tuple(dict.fromkeys([*own, *pairs]))


def _same(raw: str, configured: str) -> bool:
    return fold(" ".join(raw.split())) == fold(" ".join(configured.split()))


def _category_reason(raw: str, configured: str) -> str:
    if _same(raw, configured):
        return f'category "{raw}"'
    return f'category "{raw}" as "{configured}"'


@dataclass
class FeedTags:
    wanted: tuple[str, ...]  # feed_tag_key forms
    label: str

    def __call__(self, view: ItemView) -> str | None:
        for t in self.wanted:
            if t in view.feed_tags:
                return f'feed tag "{view.feed_tags[t]}"'
        return None


@dataclass
class Places:
    codes: tuple[str, ...]
    capitals: bool
    label: str

    def __call__(self, view: ItemView) -> str | None:
        places = view.places
        for code in self.codes:
            m = places.get(code)
            if m is not None and (self.capitals or m.kind != "capital"):
                return f'place {code} ("{m.form}", {m.kind})'
        return None


@dataclass
class Language:
    codes: tuple[str, ...]
    label: str

    def __call__(self, view: ItemView) -> str | None:
        if view.language in self.codes:
            return f"language {view.language}"
        return None


@dataclass
class Group:
    op: str  # any / all / none
    children: tuple[Matcher, ...]
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or f"{self.op}(" + "; ".join(c.label for c in self.children) + ")"

    def __call__(self, view: ItemView) -> str | None:
        if self.op == "any":
            for c in self.children:
                if r := c(view):
                    return r
            return None
        if self.op == "all":
            reasons = []
            for c in self.children:
                r = c(view)
                if r is None:
                    return None
                reasons.append(r)
            return " and ".join(reasons)
        for c in self.children:
            if c(view):
                return None
        return "none of " + "; ".join(c.label for c in self.children)


def compile_rule(
    rule: Rule,
    canonical: Callable[[str], tuple[str, ...]],
    scope: tuple[str, ...] = DEFAULT_SCOPE,
) -> Matcher:
    """One feeds.yaml rule -> a matcher. ``canonical``: a category name's compared forms."""
    here = rule.scope or scope
    if rule.keywords is not None:
        return Keywords(rule.keywords, here)
    if rule.regex is not None:
        return Regex(rule.regex, here)
    if rule.categories is not None:
        return Categories(
            wanted_categories(rule.categories, canonical),
            "categories [" + ", ".join(rule.categories) + "]",
        )
    if rule.feed_tags is not None:
        return FeedTags(
            tuple(feed_tag_key(t) for t in rule.feed_tags),
            "feed_tags [" + ", ".join(rule.feed_tags) + "]",
        )
    if rule.places is not None:
        return Places(rule.places, rule.capitals, "places [" + ", ".join(rule.places) + "]")
    if rule.language is not None:
        return Language(rule.language, "language [" + ", ".join(rule.language) + "]")
    op = rule.kind
    children: Iterable[Rule] = getattr(rule, op)
    return Group(op, tuple(compile_rule(c, canonical, here) for c in children))


def first_reason(matchers: Iterable[Matcher], view: ItemView) -> str | None:
    for m in matchers:
        if r := m(view):
            return r
    return None
