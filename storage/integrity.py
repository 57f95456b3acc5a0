"""Consistency checks across the tables one poll writes together.

A poll saves its entries, their stories, tags and near-duplicate signatures in one
transaction, so however a process dies these always agree. ``check`` says whether they do:
the crash tests run it after every kill, and an admin can run it after an incident.
"""

from __future__ import annotations

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from aggregator.types import StoreCheck

from .models import (
    ContentVersionRow,
    EntryRow,
    EntrySignatureRow,
    EntryTagRow,
    StoryRow,
)


def _count(s: Session, q: object) -> int:
    return int(s.scalar(q) or 0)  # type: ignore[call-overload]


def check(s: Session) -> StoreCheck:
    def rows(model: type) -> int:
        return _count(s, select(func.count()).select_from(model))

    counts = {
        "entries": rows(EntryRow),
        "stories": rows(StoryRow),
        "tags": rows(EntryTagRow),
        "signatures": rows(EntrySignatureRow),
    }
    entry = exists().where(EntryRow.id == EntryTagRow.entry_id)
    findings = {
        # A story is made for its first entry in the same transaction; alone it means a
        # save was cut in half. (Retention may delete a story's last tombstone: it then
        # flags the story pruned and keeps it, so no uid or id is handed out twice.)
        "stories without an entry": select(func.count())
        .select_from(StoryRow)
        .where(StoryRow.pruned.is_(False), ~exists().where(EntryRow.story_id == StoryRow.id)),
        "entries without their story": select(func.count())
        .select_from(EntryRow)
        .where(~exists().where(StoryRow.id == EntryRow.story_id)),
        "tags without their entry": select(func.count()).select_from(EntryTagRow).where(~entry),
        "signatures without their entry": select(func.count())
        .select_from(EntrySignatureRow)
        .where(~exists().where(EntryRow.id == EntrySignatureRow.entry_id)),
    }
    problems = []
    for what, q in findings.items():
        n = _count(s, q)
        if n:
            problems.append(f"{n} {what}")
    versions = rows(ContentVersionRow)
    if versions != 1:
        problems.append(f"{versions} content_version rows (want 1)")
    return StoreCheck(counts, tuple(problems))
