"""Tagging: which topics an entry belongs to, and why.

A topic (feeds.yaml) matches an entry when any of its rules does:

* ``keywords``: a word or phrase, whole words, case-insensitive, in the title or the text;
* ``regex``: a case-insensitive regular expression, in the title or the text;
* ``categories``: one of the entry's own categories, after normalisation (case, spacing,
  punctuation, "&" = "and", paths such as "World/Americas" split, and synonyms);
* ``feed_tags``: a tag given to the entry's feed in feeds.yaml.

Every tag carries its reason, e.g. ``category "foreign relations"`` or
``keyword "embassy" in title``, so an admin can see why an item is in a topic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .config import TopicConfig
from .types import ParsedEntry, TopicTag

# Common ways news sites spell the same category. Keys and values are normalised forms;
# feeds.yaml's category_synonyms extend (and override) this table.
DEFAULT_SYNONYMS: dict[str, str] = {
    "international relations": "foreign relations",
    "foreign affairs": "foreign relations",
    "foreign policy": "foreign relations",
    "diplomacy": "foreign relations",
    "international affairs": "foreign relations",
    "world news": "world",
    "international": "world",
    "global": "world",
    "sports": "sport",
    "tech": "technology",
    "science and technology": "technology",
    "business news": "business",
    "economy": "business",
    "markets": "business",
    "politics and government": "politics",
    "us politics": "politics",
    "uk politics": "politics",
    "elections": "politics",
}

_SPLIT = re.compile(r"\s*[/>|]\s*")


def normalise_category(value: str) -> str:
    """'  World  News ' -> 'world news'; 'Arts & Culture' -> 'arts and culture'."""
    v = unicodedata.normalize("NFKC", value).casefold()
    v = v.replace("&", " and ")
    v = re.sub(r"[_\-–—:;,.()\"']+", " ", v)
    return " ".join(v.split())


def _keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str] | None:
    alts = []
    for kw in sorted({k.strip() for k in keywords if k.strip()}, key=len, reverse=True):
        # A phrase matches across any run of whitespace.
        alts.append(r"\s+".join(re.escape(w) for w in kw.split()))
    if not alts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class _CompiledTopic:
    slug: str
    keywords: re.Pattern[str] | None
    regexes: tuple[re.Pattern[str], ...]
    categories: frozenset[str]
    feed_tags: frozenset[str]


class Tagger:
    """Topic rules compiled once; ``tag()`` is then a handful of regex searches."""

    def __init__(
        self, topics: Sequence[TopicConfig], synonyms: Mapping[str, str] | None = None
    ) -> None:
        self.synonyms = dict(DEFAULT_SYNONYMS)
        for k, v in (synonyms or {}).items():
            self.synonyms[normalise_category(k)] = normalise_category(v)
        self.topics = [
            _CompiledTopic(
                slug=t.slug,
                keywords=_keyword_pattern(t.rules.keywords),
                regexes=tuple(re.compile(r, re.IGNORECASE) for r in t.rules.regex),
                categories=frozenset(self.canonical_category(c) for c in t.rules.categories),
                feed_tags=frozenset(normalise_category(x) for x in t.rules.feed_tags),
            )
            for t in topics
        ]

    def canonical_category(self, value: str) -> str:
        n = normalise_category(value)
        return self.synonyms.get(n, n)

    def entry_categories(self, categories: Iterable[str]) -> dict[str, str]:
        """canonical form -> the category as the feed wrote it (whole and path parts)."""
        out: dict[str, str] = {}
        for raw in categories:
            forms = [raw, *_SPLIT.split(raw)] if _SPLIT.search(raw) else [raw]
            for form in forms:
                if form.strip():
                    out.setdefault(self.canonical_category(form), raw)
        return out

    def tag(self, entry: ParsedEntry, feed_tags: Sequence[str] = ()) -> tuple[TopicTag, ...]:
        cats = self.entry_categories(entry.categories)
        ftags = {normalise_category(t): t for t in feed_tags}
        out = []
        for topic in self.topics:
            reason = self._reason(topic, entry, cats, ftags)
            if reason:
                out.append(TopicTag(topic.slug, reason))
        return tuple(out)

    @staticmethod
    def _reason(
        topic: _CompiledTopic,
        entry: ParsedEntry,
        cats: Mapping[str, str],
        ftags: Mapping[str, str],
    ) -> str | None:
        for c in topic.categories:
            if c in cats:
                return f'category "{cats[c]}"'
        for t in topic.feed_tags:
            if t in ftags:
                return f'feed tag "{ftags[t]}"'
        fields = (("title", entry.title), ("text", entry.text))
        if topic.keywords:
            for name, value in fields:
                if m := topic.keywords.search(value):
                    return f'keyword "{m.group(0)}" in {name}'
        for rx in topic.regexes:
            for name, value in fields:
                if rx.search(value):
                    return f"regex /{rx.pattern}/ in {name}"
        return None
