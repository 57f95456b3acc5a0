"""Admins' tag corrections: put a story in a topic or take it out, and learn from it.

``correct(store, tagger, item, topic, inside)`` records the correction on every entry of
the item's story (a topic feed publishes stories, so "not in politics" must hold for each
copy), and re-tags those entries at once, so the topic feeds change with it. Later copies
that join the story inherit it (storage/repository.py), and every later tagging applies it
over rules and the classifier: a re-poll of an edited item, ``aggregator retag``, a reload.
``inside=None`` forgets the correction and the rules and the model decide again.

Corrections are also what the classifier learns from (learn.py): each corrected entry is a
positive or a negative of the topic corrected, wherever the tagger is trained (start,
reload, retag, and after a correction through the admin API).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from storage import Repository
from storage.tagging import TagChange

from .explain import entry_ids
from .tag import Tagger


class CorrectionError(ValueError):
    """The correction names no stored item or no configured topic; nothing was changed."""


@dataclass(frozen=True)
class Corrected:
    story: str  # the story uid corrected
    entries: tuple[int, ...]  # its entries, each corrected
    topic: str
    inside: bool | None  # None: the correction was forgotten
    feeds: frozenset[str]  # tag keys whose feeds changed


def correct(
    store: Repository, tagger: Tagger, item: str, topic: str, inside: bool | None
) -> Corrected:
    """Put ``item``'s story in ``topic`` (True), take it out (False), or let the rules
    decide again (None). Raises CorrectionError, changing nothing, on an unknown item or
    topic."""
    slugs = [t.slug for t in tagger.topic_configs]
    if topic not in slugs:
        near = difflib.get_close_matches(topic, slugs, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; the topics are {', '.join(slugs)}"
        raise CorrectionError(f"no topic {topic!r} in feeds.yaml{hint}")
    named = store.stored_entries(entry_ids(store, item))
    if not named:
        raise CorrectionError(f"no stored item {item!r} (an entry id or a story id)")
    uid = named[0].story_uid
    ids = store.story_entry_ids(uid)
    store.correct_tags(ids, topic, inside)
    entries = store.stored_entries(ids)
    tagged = tagger.analyse_each([(s.entry, s.feed) for s in entries])
    keep = frozenset({topic})
    changes = [
        TagChange(s.id, s.content_hash, new.tags, s.language, keep)
        for s, new in zip(entries, tagged, strict=True)
    ]
    return Corrected(uid, tuple(ids), topic, inside, frozenset(store.replace_tags(changes)))
