"""Tagging: which topics an entry belongs to, and why.

A topic (feeds.yaml) matches an entry when any of its rules does (rules.py has the rule
language: keywords, regexes, categories, feed tags, places, language, any/all/none), or when
its optional semantic classifier scores the entry at or above the topic's threshold; an
``exclude`` rule that matches vetoes the topic, and ``languages`` restricts it.

Categories are normalised (case, spacing, punctuation, "&" = "and", paths such as
"World/Americas" split into parts) and mapped through synonyms (a built-in table plus
feeds.yaml's ``category_synonyms``).

Besides topics, every entry gets a tag ``place:xx`` per country it mentions (places.py) and a
detected language (language.py). Every tag carries its reason, e.g.
``category "foreign relations"``, ``keyword "embassy" in title``,
``classifier 0.52 >= 0.40``, so an admin can see why an item is in a topic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

from .classify import Classifier, Example, TopicProfile, load_classifier
from .config import Config, TopicConfig
from .embed import item_text
from .language import detect_language, normalise_language
from .places import Gazetteer, default_gazetteer
from .rules import (
    Categories,
    FeedTags,
    ItemView,
    Keywords,
    Matcher,
    Places,
    Regex,
    compile_rule,
    contains_words,
    feed_tag_key,
    first_reason,
    wanted_categories,
)
from .topicconfig import DEFAULT_SCOPE, TaggingSettings
from .types import EntryIntent, FeedContext, ParsedEntry, TopicTag

Mode = Literal["rules", "classifier", "both"]
PLACE_PREFIX = "place:"

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
    "government": "politics",
    "government and politics": "politics",
    "world politics": "foreign relations",
    "geopolitics": "foreign relations",
    "global affairs": "foreign relations",
    "security and defence": "foreign relations",
    "defence and diplomacy": "foreign relations",
    "americas": "world",
    "europe": "world",
    "africa": "world",
    "asia": "world",
    "asia pacific": "world",
    "middle east": "world",
    "money": "business",
    "finance": "business",
    "companies": "business",
    "personal tech": "technology",
    "science and tech": "technology",
    "football": "sport",
    "soccer": "sport",
}

_SPLIT = re.compile(r"\s*[/>|]\s*")


def normalise_category(value: str) -> str:
    """'  World  News ' -> 'world news'; 'Arts & Culture' -> 'arts and culture'.

    Path separators lose their spaces: 'World / Americas' -> 'world/americas'.
    """
    v = unicodedata.normalize("NFKC", value).casefold()
    v = v.replace("&", " and ")
    v = re.sub(r"[_\-–—:;,.()\"']+", " ", v)
    # "World / Americas" is the path "world/americas", as feeds.yaml's synonyms write it.
    return _SPLIT.sub(lambda m: m.group(0).strip(), " ".join(v.split()))


_WORDISH = re.compile(r"[^\s/]+")


def singular(word: str) -> str:
    """'elections' -> 'election', 'policies' -> 'policy'; enough to compare category names."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def category_key(value: str) -> str:
    """What categories are compared on: normalised, every word singular."""
    return _WORDISH.sub(lambda m: singular(m.group(0)), normalise_category(value))


class Tagging(NamedTuple):
    """What the tagger found for one entry."""

    tags: tuple[TopicTag, ...]  # topics, then place:xx tags
    language: str | None


class Verdict(NamedTuple):
    """One topic's decision on one entry, for explanations."""

    topic: str
    reason: str | None  # why the entry is in the topic; None: it is not
    why_not: str | None  # why it is not (no rule matched, excluded by..., language)
    score: float | None  # the classifier's similarity, when the topic has one


@dataclass(frozen=True)
class _CompiledTopic:
    slug: str
    languages: frozenset[str]
    rules: tuple[Matcher, ...]
    exclude: tuple[Matcher, ...]
    threshold: float | None  # None: no classifier for this topic


class Tagger:
    """Topic rules compiled once; ``analyse()`` is then a handful of set lookups and regexes."""

    def __init__(
        self,
        topics: Sequence[TopicConfig],
        synonyms: Mapping[str, str] | None = None,
        *,
        settings: TaggingSettings | None = None,
        gazetteer: Gazetteer | None = None,
        classifier: Classifier | None = None,
        mode: Mode = "both",
        filed: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.settings = settings or TaggingSettings()
        self.mode = mode
        # topic -> feeds whose publisher's categories file it: the model does not overrule
        # such a feed's filing of an item it categorised.
        self.filed = dict(filed or {})
        self.synonyms = dict(DEFAULT_SYNONYMS)
        self.synonyms = {category_key(k): category_key(v) for k, v in self.synonyms.items()}
        for k, v in (synonyms or {}).items():
            self.synonyms[category_key(k)] = category_key(v)
        # Multi-word synonyms, looked for inside longer categories.
        self._phrases = {
            tuple(k.split()): (v, len(k.split())) for k, v in self.synonyms.items() if " " in k
        }
        self.gazetteer = gazetteer if gazetteer is not None else default_gazetteer()
        self.classifier = classifier
        self.topic_configs = tuple(topics)
        self.topics = [self._compile(t) for t in topics]

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        mode: Mode = "both",
        learned: Sequence[Example] = (),
    ) -> Tagger:
        """The tagger feeds.yaml asks for, with the classifier when it is on and installed;
        ``learned``: what the store teaches (learn.py) joins its training."""
        classifier = None
        if config.tagging.classifier and mode != "rules":
            classifier = load_classifier(
                profiles(config.topics),
                config.tagging.batch_size,
                learned,
                background=config.tagging.background,
            )
        return cls(
            config.topics,
            config.category_synonyms,
            settings=config.tagging,
            classifier=classifier,
            mode=mode,
            filed=filings(learned),
        )

    def _compile(self, t: TopicConfig) -> _CompiledTopic:
        r = t.rules
        canon = self.category_forms
        matchers: list[Matcher] = []
        if r.categories:
            matchers.append(
                Categories(
                    wanted_categories(r.categories, canon),
                    f"categories {r.categories}",
                )
            )
        if r.feed_tags:
            matchers.append(
                FeedTags(tuple(feed_tag_key(x) for x in r.feed_tags), f"feed_tags {r.feed_tags}")
            )
        if r.keywords:
            matchers.append(Keywords(r.keywords, DEFAULT_SCOPE))
        if r.regex:
            matchers.append(Regex(r.regex, DEFAULT_SCOPE))
        if r.places:
            matchers.append(Places(r.places, False, f"places {r.places}"))
        matchers.extend(compile_rule(rule, canon) for rule in r.match)
        return _CompiledTopic(
            slug=t.slug,
            languages=frozenset(t.languages),
            rules=tuple(matchers),
            exclude=tuple(compile_rule(rule, canon) for rule in r.exclude),
            threshold=t.classifier.threshold if t.classifier else None,
        )

    def canonical_category(self, value: str) -> str:
        n = category_key(value)
        return self.synonyms.get(n, n)

    def category_forms(self, value: str) -> tuple[str, ...]:
        """A configured category's forms to look for: itself, then its canonical one.

        "election" is a synonym of "politics", yet must still be found inside
        "Presidential Election of 2020".
        """
        n = category_key(value)
        return tuple(dict.fromkeys((n, self.synonyms.get(n, n))))

    def entry_categories(self, categories: Iterable[str]) -> dict[str, str]:
        """canonical form -> the category as the feed wrote it.

        Each category gives its whole form, its path parts ("world/americas": "world",
        "americas"), their synonyms, and the synonyms of the multi-word phrases it contains
        ("United States International Relations" holds "international relations", so it
        also counts as "foreign relations"). One-word synonyms are not looked for inside
        longer categories: "international" is "world", but "United States International
        Relations" is not world news.
        """
        out: dict[str, str] = {}
        for raw in categories:
            forms = [raw, *_SPLIT.split(raw)] if _SPLIT.search(raw) else [raw]
            for form in forms:
                if not form.strip():
                    continue
                key = category_key(form)
                out.setdefault(key, raw)
                out.setdefault(self.synonyms.get(key, key), raw)
                words = tuple(key.split())
                if len(words) > 2:
                    for phrase, (target, size) in self._phrases.items():
                        if size < len(words) and contains_words(words, phrase):
                            out.setdefault(target, raw)
        return out

    def tag(self, entry: ParsedEntry, feed_tags: Sequence[str] = ()) -> tuple[TopicTag, ...]:
        """The topic and place tags of one entry (see ``analyse`` for the language too)."""
        return self.analyse(entry, FeedContext(tags=tuple(feed_tags))).tags

    def analyse(self, entry: ParsedEntry, feed: FeedContext | None = None) -> Tagging:
        return self.analyse_many([entry], feed)[0]

    def analyse_many(
        self, entries: Sequence[ParsedEntry], feed: FeedContext | None = None
    ) -> list[Tagging]:
        """Tag entries of one feed; the classifier, if any, runs once over the whole batch."""
        feed = feed or FeedContext()
        return self.analyse_each([(e, feed) for e in entries])

    def analyse_each(self, items: Sequence[tuple[ParsedEntry, FeedContext]]) -> list[Tagging]:
        """Tag entries of any feeds (re-tagging stored ones); one classifier batch for all."""
        scores = self._scores([e for e, _ in items])
        return [self._one(e, f, s) for (e, f), s in zip(items, scores, strict=True)]

    def explain(self, entry: ParsedEntry, feed: FeedContext) -> list[Verdict]:
        """Every topic's verdict on one entry with the current rules: why in, or why not."""
        scores = self._scores([entry])[0]
        view = self._view(entry, feed)
        out = []
        for topic in self.topics:
            reason, why_not = self._decide(topic, view, scores)
            out.append(Verdict(topic.slug, reason, why_not, scores.get(topic.slug)))
        return out

    def _scores(self, entries: Sequence[ParsedEntry]) -> list[dict[str, float]]:
        if self.classifier is None or self.mode == "rules" or not entries:
            return [{} for _ in entries]
        return self.classifier.scores([classifier_text(e) for e in entries])

    def _view(self, entry: ParsedEntry, feed: FeedContext) -> ItemView:
        if self.settings.detect_language and entry.language_known:
            language = entry.language  # worked out in the parser process (pipeline.prepare)
        elif self.settings.detect_language:
            language = detect_language(entry.title, entry.text, feed.language)
        else:
            language = normalise_language(feed.language)
        return ItemView(
            entry, feed, self.entry_categories(entry.categories), language, self.gazetteer
        )

    def _decide(
        self, topic: _CompiledTopic, view: ItemView, scores: Mapping[str, float]
    ) -> tuple[str | None, str | None]:
        """(reason the entry is in the topic, None) or (None, why it is not)."""
        language = view.language
        if topic.languages and language is not None and language not in topic.languages:
            return None, f"language {language} not in {sorted(topic.languages)}"
        reason = None
        if self.mode != "classifier":
            reason = first_reason(topic.rules, view)
        score = scores.get(topic.slug)
        best = max(scores.values(), default=0.0)
        floor = self.settings.relative * best
        if reason is None and topic.threshold is not None and self.mode != "rules":
            if view.categories and view.feed.url in self.filed.get(topic.slug, ()):
                return None, "no rule matched; its feed files this topic by category, not this item"
            if score is not None and score >= topic.threshold and score >= floor:
                reason = f"classifier {score:.2f} >= {topic.threshold:.2f}"
        if reason is None:
            if score is not None and topic.threshold is not None:
                if score >= topic.threshold:
                    return None, (
                        f"no rule matched; classifier {score:.2f} is under "
                        f"{self.settings.relative:.2f} x the best topic's {best:.2f}"
                    )
                return None, f"no rule matched; classifier {score:.2f} < {topic.threshold:.2f}"
            return None, "no rule matched"
        if veto := first_reason(topic.exclude, view):
            return None, f"excluded: {veto} (else: {reason})"
        return reason, None

    def _one(self, entry: ParsedEntry, feed: FeedContext, scores: Mapping[str, float]) -> Tagging:
        view = self._view(entry, feed)
        out: list[TopicTag] = []
        for topic in self.topics:
            reason, _ = self._decide(topic, view, scores)
            if reason is not None:
                out.append(TopicTag(topic.slug, reason))
        if self.settings.place_tags:
            for code, m in view.places.items():
                if m.kind == "capital" and not self.settings.capitals_as_places:
                    continue
                out.append(TopicTag(PLACE_PREFIX + code.lower(), f'place "{m.form}" ({m.kind})'))
        return Tagging(tuple(out), view.language)


def filings(learned: Iterable[Example]) -> dict[str, frozenset[str]]:
    """topic -> the feeds whose publisher's categories put stored items in it."""
    out: dict[str, set[str]] = {}
    for e in learned:
        if e.inside and e.filed_by:
            out.setdefault(e.topic, set()).add(e.filed_by)
    return {topic: frozenset(feeds) for topic, feeds in out.items()}


def classifier_text(entry: ParsedEntry) -> str:
    """What the classifier reads of an entry, in tagging and in training alike: what event
    matching embeds too, so one embedding serves both."""
    return item_text(entry.title, entry.text)


def profiles(topics: Sequence[TopicConfig]) -> list[TopicProfile]:
    """The classifier's view of the topics that ask for it."""
    return [
        TopicProfile(
            t.slug,
            t.description or t.name,
            t.classifier.examples,
            t.classifier.threshold,
            t.classifier.negative_examples,
        )
        for t in topics
        if t.classifier is not None
    ]


def tag_intents(
    tagger: Tagger, intents: Sequence[EntryIntent], feed: FeedContext
) -> list[EntryIntent]:
    """Tag (and detect the language of) every intent that will be stored, as one batch."""
    todo = [i for i, intent in enumerate(intents) if intent.action != "unchanged"]
    results = tagger.analyse_many([intents[i].entry for i in todo], feed)
    out = list(intents)
    for i, result in zip(todo, results, strict=True):
        out[i] = replace(out[i], tags=result.tags, language=result.language)
    return out
