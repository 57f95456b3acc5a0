"""Re-tagging: apply the current topics to stored items, without fetching anything.

After topics change in feeds.yaml, stored items still carry the tags of the old rules.
``retag(store, config)`` reads the stored entries in batches (by id), tags them again with
the topics of ``config`` (rules, classifier, places, language), and replaces the tags that
differ in one transaction per batch; when any feed's content changed it bumps the content
version, so topic feeds are published anew. Safe while polling goes on: an entry a poll
changes in between keeps the poll's tags.

``topics=[slug, ...]`` re-tags only those topics and leaves every other tag alone; a slug
that is no longer in ``config`` has its tags removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from storage import Repository
from storage.tagging import TagChange

from .classify import Example, load_classifier
from .config import Config
from .learn import learned_examples
from .tag import Tagger, filings, profiles
from .types import with_corrections

log = logging.getLogger("aggregator.retag")

Progress = Callable[[int, int], None]  # (entries done, entries in all)
BATCH = 500


@dataclass
class RetagResult:
    entries: int = 0  # entries looked at
    changed: int = 0  # entries whose tags (or language) changed
    topics: set[str] = field(default_factory=set)  # tag keys whose items changed


def tagger_for(
    config: Config,
    topics: Sequence[str] | None = None,
    learned: Sequence[Example] = (),
) -> Tagger:
    """The tagger of ``config`` trained with what the store teaches too; only ``topics`` (and no
    place tags) when given."""
    if topics is None:
        return Tagger.from_config(config, learned=learned)
    chosen = [t for t in config.topics if t.slug in set(topics)]
    settings = config.tagging.model_copy(update={"place_tags": False})
    classifier = None
    if config.tagging.classifier:
        classifier = load_classifier(
            profiles(chosen),
            config.tagging.batch_size,
            learned,
            background=config.tagging.background,
        )
    return Tagger(
        chosen,
        config.category_synonyms,
        settings=settings,
        classifier=classifier,
        mode="both",
        filed=filings(learned),
    )


def retag(
    store: Repository,
    config: Config,
    topics: Sequence[str] | None = None,
    progress: Progress | None = None,
    *,
    batch_size: int = BATCH,
) -> RetagResult:
    """Re-apply the topics of ``config`` (all, or only ``topics``) to every stored entry.

    ``progress(done, total)`` is called after each batch. Returns what changed.
    """
    learned = learned_examples(store, config.topics) if config.tagging.classifier else []
    tagger = tagger_for(config, topics, learned)
    keep = frozenset(topics) if topics is not None else None
    total = store.count_entries()
    result = RetagResult()
    after = 0
    if progress:
        progress(0, total)
    while batch := store.entry_batch(after, batch_size):
        after = batch[-1].id
        tagged = tagger.analyse_each([(s.entry, s.feed) for s in batch])
        changes = []
        for stored, new in zip(batch, tagged, strict=True):
            mine = [t for t in stored.tags if keep is None or t.topic in keep]
            tags = with_corrections(new.tags, stored.corrections, keep)
            language = new.language if keep is None else stored.language
            if sorted(mine) != sorted(tags) or language != stored.language:
                changes.append(TagChange(stored.id, stored.content_hash, tags, language, keep))
        result.entries += len(batch)
        result.changed += len(changes)
        result.topics |= store.replace_tags(changes)
        if progress:
            progress(min(result.entries, max(total, result.entries)), max(total, result.entries))
    log.info(
        "retag topics=%s entries=%d changed=%d feeds=%s",
        "all" if topics is None else ",".join(topics),
        result.entries,
        result.changed,
        ",".join(sorted(result.topics)) or "-",
    )
    return result
