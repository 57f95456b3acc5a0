"""Why an item carries its tags: the stored reasons, and what the current topics say now.

An item is named by its entry id (a number, as ``aggregator explain`` and the admin API
show it), by its story uid, or by the published item id ``urn:aggregator:story:UID``;
a story explains each of its entries (one per feed that carried it).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from storage import Repository

from .tag import Tagger, Verdict

STORY_URN = "urn:aggregator:story:"


@dataclass(frozen=True)
class Explanation:
    """One stored entry: its tags as stored, and every topic's verdict with today's rules."""

    entry_id: int
    story: str  # published item id
    feed_url: str
    title: str
    link: str | None
    categories: tuple[str, ...]
    language: str | None
    stored: dict[str, str]  # tag key -> reason, as stored (topics and place:xx)
    now: tuple[Verdict, ...]  # per topic of the current feeds.yaml, before corrections
    corrections: dict[str, bool]  # admins': topic -> in (these win over ``now``)

    def as_json(self) -> dict[str, object]:
        return {
            "entry_id": self.entry_id,
            "story": self.story,
            "feed_url": self.feed_url,
            "title": self.title,
            "link": self.link,
            "categories": list(self.categories),
            "language": self.language,
            "tags": [{"tag": k, "reason": v} for k, v in self.stored.items()],
            "corrections": [{"topic": k, "in": v} for k, v in self.corrections.items()],
            "topics_now": [
                {"topic": v.topic, "in": v.reason is not None, "reason": v.reason}
                | ({"why_not": v.why_not} if v.why_not else {})
                | ({"score": round(v.score, 4)} if v.score is not None else {})
                for v in self.now
            ],
        }


def entry_ids(store: Repository, item: str) -> list[int]:
    """The stored entries an item id names (see the module docstring); [] if none."""
    item = item.strip()
    # isdigit() also takes '²' and other digits int() refuses; ids fit in 18 digits.
    if item.isascii() and item.isdigit():
        return [int(item)] if len(item) <= 18 else []
    uid = unquote(item.removeprefix(STORY_URN))
    return store.story_entry_ids(uid) if uid else []


def explain(store: Repository, tagger: Tagger, item: str) -> list[Explanation]:
    """Explanations of every entry ``item`` names; [] when it names none."""
    out = []
    for s in store.stored_entries(entry_ids(store, item)):
        out.append(
            Explanation(
                entry_id=s.id,
                story=STORY_URN + s.story_uid,
                feed_url=s.feed_url,
                title=s.entry.title,
                link=s.entry.link,
                categories=s.entry.categories,
                language=s.language,
                stored={t.topic: t.reason for t in s.tags},
                now=tuple(tagger.explain(s.entry, s.feed)),
                corrections=dict(s.corrections),
            )
        )
    return out
