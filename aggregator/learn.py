"""What the classifier learns from the store, besides the examples in feeds.yaml.

Two kinds of stored items teach a topic's head (classify.py), each as a positive or a
negative of that one topic:

- **Corrections**: every item an admin put in a topic or took out of it (corrections.py).
- **Trusted signals**: items tagged because a publisher said so, not because of a word in
  them: a matching publisher category (``category "..."``), a feed tag from feeds.yaml
  (``feed tag "..."``). These say what the topic's news looks like in the store's own
  feeds, in their language and house style, which a dozen example headlines cannot; the
  head then finds the same news in feeds that send no categories. For a topic with a
  ``categories`` rule, an item whose publisher gave categories but none that matched is a
  negative: the publisher filed it elsewhere. And a feed whose categories have put items in
  a topic is trusted to file that topic: the model adds the topic to none of its items
  that carry categories (tag.py, ``filings``).

Keyword, regex, place and classifier tags teach nothing: learning from them would only
confirm the rules (and the head's own mistakes). The newest ``SCAN`` entries are read, at
most ``PER_SIDE`` positives and as many negatives per topic are kept, newest first, and the
order is fixed so that the same store always trains the same heads. Embeddings stored for
event matching are reused, so training does not embed these items again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from storage import Repository
from storage.tagging import TaggedText

from .classify import Example
from .config import TopicConfig
from .embed import ITEM_CHARS, item_text
from .topicconfig import Rule

# The corrections the classifier trains on, newest first: admins make dozens, not thousands.
CORRECTIONS = 2000
# Entries read for trusted signals, and examples kept per topic and side: bounds on the work
# of each training in a large store (the NYT development half has fewer per side).
SCAN = 5000
PER_SIDE = 500

TRUSTED = ('category "', 'feed tag "')


def learned_examples(store: Repository, topics: Sequence[TopicConfig]) -> list[Example]:
    """Corrections, then trusted signals, for the topics that have a classifier."""
    learned = [
        Example(item_text(entry.title, entry.text), topic, inside)
        for entry, fixes in store.corrected_entries(CORRECTIONS)
        for topic, inside in sorted(fixes.items())
    ]
    if any(t.classifier is not None for t in topics):
        learned.extend(trusted_examples(store.latest_tagged(SCAN, ITEM_CHARS), topics))
    return learned


def trusted_examples(
    rows: Sequence[TaggedText], topics: Sequence[TopicConfig], per_side: int = PER_SIDE
) -> list[Example]:
    """Positives and negatives of each classifier topic from ``rows`` (newest first)."""
    out: list[Example] = []
    for topic in topics:
        if topic.classifier is None:
            continue
        files_by_category = _has_categories(topic)
        pos: list[Example] = []
        neg: list[Example] = []
        for row in rows:
            if row.corrected:
                continue  # the correction itself is the example
            reason = row.reasons.get(topic.slug)
            if reason is not None:
                if reason.startswith(TRUSTED) and len(pos) < per_side:
                    filed = row.feed_url if reason.startswith(TRUSTED[0]) else ""
                    pos.append(_example(row, topic.slug, True, filed))
            elif files_by_category and row.categories and len(neg) < per_side:
                neg.append(_example(row, topic.slug, False))
        if pos:
            out.extend(pos)
            out.extend(neg)
    return out


def _example(row: TaggedText, topic: str, inside: bool, filed_by: str = "") -> Example:
    return Example(item_text(row.title, row.text), topic, inside, row.vector, filed_by)


def _has_categories(topic: TopicConfig) -> bool:
    """Whether a publisher's categories can put an item in ``topic``."""
    return bool(topic.rules.categories) or any(_rule_has_categories(r) for r in topic.rules.match)


def _rule_has_categories(rule: Rule) -> bool:
    groups: Iterable[Rule] = (*(rule.any or ()), *(rule.all or ()))
    return bool(rule.categories) or any(_rule_has_categories(r) for r in groups)
