"""Queries of the near-duplicate story lookup: signatures and LSH buckets.

The decision (is this a near-duplicate, of which story) is made by the caller's
``StoryMatcher`` (aggregator/neardup.py); this module only stores fingerprints and finds
the stored entries that share a bucket with a new one, through the
``ix_story_buckets_bucket_published`` index, so one lookup costs the same however many
entries are stored.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from aggregator.types import Fingerprint, NearCandidate

from . import bulk
from .models import EntryRow, EntrySignatureRow, StoryBucketRow

# Entries sharing most buckets first; a bound so that a crowded bucket (a very common
# title) cannot make one lookup expensive.
CANDIDATE_LIMIT = 50
# Rows read per bucket of a lookup, the newest first: bounds the lookup's cost however
# crowded a bucket gets (bench/poll.py's store had buckets of 2,700 entries at 66,000).
BUCKET_ROWS = 20


def _pack(features: Sequence[int]) -> bytes:
    a = array("I", features)
    if a.itemsize != 4:  # pragma: no cover - every platform we run on has 32-bit "I"
        a = array("L", features)
    return a.tobytes()


def _unpack(blob: bytes) -> tuple[int, ...]:
    return tuple(array("I", blob))


def save(s: Session, fingerprints: Sequence[tuple[int, Fingerprint]]) -> None:
    """Store the fingerprints of newly inserted entries (entry id, fingerprint)."""
    if not fingerprints:
        return
    # Core inserts of the tables: the ORM's bulk path costs more than the rows here.
    s.execute(
        insert(cast(Table, EntrySignatureRow.__table__)),
        [
            {
                "entry_id": eid,
                "features": _pack(fp.features),
                "title": " ".join(fp.title),
                "short": fp.short,
                "host": fp.host,
                "published": fp.published,
            }
            for eid, fp in fingerprints
        ],
    )
    # About 56 rows per entry: the driver's executemany, with each entry's date converted
    # once for all its rows (storage/bulk.py).
    table = cast(Table, StoryBucketRow.__table__)
    cols = (table.c.entry_id, table.c.bucket, table.c.published)
    stamp = bulk.processor(s, table.c.published)
    rows = []
    for eid, fp in fingerprints:
        published = stamp(fp.published)
        rows += [(eid, b, published) for b in dict.fromkeys(fp.buckets)]
    # In bucket order, the order of the (bucket, published) index: the keys are random,
    # and inserting them sorted walks that index once instead of jumping about it.
    rows.sort(key=itemgetter(1))
    bulk.insert_many(s, table, cols, rows)


def replace(s: Session, entry_id: int, fp: Fingerprint | None) -> None:
    """An entry was edited: its fingerprint follows (its story does not change)."""
    s.execute(delete(StoryBucketRow).where(StoryBucketRow.entry_id == entry_id))
    s.execute(delete(EntrySignatureRow).where(EntrySignatureRow.entry_id == entry_id))
    if fp is not None:
        save(s, [(entry_id, fp)])


def candidates_many(
    s: Session, fps: Sequence[Fingerprint], window: timedelta, limit: int = CANDIDATE_LIMIT
) -> list[list[NearCandidate]]:
    """The stored near-duplicate candidates of each of ``fps`` (one poll's entries), in
    two queries for all of them.

    For each: the entries published within ``window`` of it that share most buckets with
    it (ties: the older id), at most ``limit``. A bucket contributes its ``BUCKET_ROWS``
    newest rows within the poll's dates: a crowded bucket (the words every title of a
    feed shares) says little about which entry is a rewrite, and reading all of it made
    each lookup grow with the store. The bucket rows of the whole poll come in one query,
    the signatures of all chosen entries in another, instead of two queries per entry.
    """
    wanted = [fp for fp in fps if fp.buckets]
    if not wanted:
        return [[] for _ in fps]
    table = cast(Table, StoryBucketRow.__table__)
    stamp, read = bulk.processor(s, table.c.published), bulk.reader(s, table.c.published)
    by_bucket: dict[int, list[tuple[int, datetime]]] = {}
    # Through the driver (storage/bulk.py): a poll asks for ~1,100 bucket keys, and an
    # entry's ~56 rows share one date, converted once.
    dates: dict[Any, datetime] = {}
    for bucket, eid, raw in bulk.select_newest_per_key(
        s,
        (table.c.bucket, table.c.entry_id, table.c.published),
        table.c.bucket,
        list({b for fp in wanted for b in fp.buckets}),
        table.c.published,
        stamp(min(fp.published for fp in wanted) - window),
        stamp(max(fp.published for fp in wanted) + window),
        BUCKET_ROWS,
    ):
        published = dates.get(raw)
        if published is None:
            published = dates[raw] = read(raw)
        by_bucket.setdefault(bucket, []).append((eid, published))
    chosen: list[list[int]] = []
    for fp in fps:
        shared: Counter[int] = Counter()
        for b in dict.fromkeys(fp.buckets):
            for eid, published in by_bucket.get(b, ()):
                if fp.published - window <= published <= fp.published + window:
                    shared[eid] += 1
        chosen.append(sorted(shared, key=lambda e: (-shared[e], e))[:limit])
    found = _load(s, list({eid for ids in chosen for eid in ids}))
    return [[found[e] for e in ids if e in found] for ids in chosen]


def _load(s: Session, ids: Sequence[int]) -> dict[int, NearCandidate]:
    """The stored signatures of ``ids`` with their entries' story and feed, by entry id."""
    found: dict[int, NearCandidate] = {}
    sig = EntrySignatureRow
    for i in range(0, len(ids), 500):
        # Columns, not ORM objects: a poll reads about six signatures per new entry, and
        # building (and tracking) an object for each cost more than the read.
        q = (
            select(
                sig.entry_id,
                sig.features,
                sig.title,
                sig.short,
                sig.host,
                sig.published,
                EntryRow.story_id,
                EntryRow.feed_id,
            )
            .join(EntryRow, EntryRow.id == sig.entry_id)
            .where(sig.entry_id.in_(ids[i : i + 500]))
        )
        for eid, features, title, short, host, published, story_id, feed_id in s.execute(q):
            found[eid] = NearCandidate(
                entry_id=eid,
                story_id=story_id,
                feed_id=feed_id,
                fingerprint=Fingerprint(
                    features=_unpack(features),
                    title=tuple(title.split()),
                    short=short,
                    host=host,
                    published=published,
                ),
            )
    return found


class PollBatch:
    """The entries of the poll being saved, looked up by LSH bucket like the stored ones.

    An entry of a large feed is compared with the earlier entries of the same poll that
    share a bucket with it (at most ``limit``, the most shared first), not with all of
    them: comparing each with every other made one poll of thousands of items quadratic
    (2,000 items: 2 million comparisons, minutes of CPU).
    """

    def __init__(self) -> None:
        self._by_bucket: dict[int, list[NearCandidate]] = {}

    def add(self, candidate: NearCandidate) -> None:
        for b in dict.fromkeys(candidate.fingerprint.buckets):
            self._by_bucket.setdefault(b, []).append(candidate)

    def candidates(self, fp: Fingerprint, limit: int = CANDIDATE_LIMIT) -> list[NearCandidate]:
        shared: Counter[int] = Counter()
        found: dict[int, NearCandidate] = {}
        for b in dict.fromkeys(fp.buckets):
            for c in self._by_bucket.get(b, ()):
                shared[c.entry_id] += 1
                found[c.entry_id] = c
        # Pseudo entry ids count down from -1 in poll order: the earliest first on ties.
        best = sorted(shared, key=lambda eid: (-shared[eid], -eid))[:limit]
        return [found[eid] for eid in best]
