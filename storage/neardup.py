"""The near-duplicate story lookup: stored signatures, and their LSH buckets in memory.

The decision (is this a near-duplicate, of which story) is made by the caller's
``StoryMatcher`` (aggregator/neardup.py); this module stores fingerprints and finds the
stored entries that share a bucket with a new one.

Each entry's fingerprint is one row of ``entry_signatures``: its features (for the exact
decision) and its bucket keys, packed. The lookup goes through :class:`BucketIndex`, an
index of those keys held in memory by each process that saves. Before each lookup it reads
the rows stored since its last one (entry ids only grow), so it sees what other processes
saved; it holds the entries published within ``window + HORIZON_MARGIN`` of the newest one,
and a lookup for older dates (a feed sending its archive) reads the signatures of those
dates instead.

Why not an index in the store, as before: bucket keys are random, so the ~56 bucket rows
of a new entry each landed on a page of their own of a B-tree index. A poll of 20 new
entries dirtied ~1,100 pages, each written to the WAL and checkpointed: about 3 ms of the
8.5 ms a first-fetched item cost in all (docs/polling.md), and 6.4 KB of store per entry.
"""

from __future__ import annotations

import itertools
import struct
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from aggregator.types import Fingerprint, NearCandidate

from .models import EntrySignatureRow

# Entries sharing most buckets first; a bound so that a crowded bucket (a very common
# title) cannot make one lookup expensive.
CANDIDATE_LIMIT = 50
# Entries read per bucket of a lookup, the newest first: bounds the lookup's cost however
# crowded a bucket gets (bench/poll.py's store had buckets of 2,700 entries at 66,000).
BUCKET_ROWS = 20
# The memory index holds entries published from (newest - window - margin): a lookup of
# an entry published up to ``margin`` before the newest needs nothing else.
HORIZON_MARGIN = timedelta(days=4)
# Rebuilt this often: the horizon moves on, and pruned or edited entries leave it.
REBUILD_SECONDS = 3600.0
# Entry rows read for a lookup of dates before the horizon, the newest first.
ARCHIVE_ROWS = 5_000
# PostgreSQL: an entry id is handed out when its row is inserted but seen when the
# transaction commits, so a lower id can appear after a higher one was read. Ids skipped
# over are asked for again on every sync, for this long (then: rolled back, or an entry
# without a signature).
GAP_SECONDS = 120.0
GAP_IDS = 5_000
# Memory index: the longest sorted run of (key, entry) pairs, 6 bytes a pair; and the most
# entries one run covers, so that an entry is 16 bits, counted from the run's first.
_RUN_PAIRS = 1 << 21
_RUN_ENTRIES = 1 << 16
# Entries read from the store and added to the index at a time (about 7 MB of their keys).
_EXTEND_ROWS = 1 << 14
_KEY_MASK = 0xFFFFFFFF

_U32 = npt.NDArray[np.uint32]
_U16 = npt.NDArray[np.uint16]


class _Run(NamedTuple):
    """Pairs sorted by key; entry ``slot`` of a pair is ``base + rel``, below ``end``."""

    keys: _U32
    rel: _U16
    base: int
    end: int


def _pack(features: Sequence[int]) -> bytes:
    a = array("I", features)
    if a.itemsize != 4:  # pragma: no cover - every platform we run on has 32-bit "I"
        a = array("L", features)
    return a.tobytes()


def _unpack(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f"={len(blob) // 4}I", blob)  # as array("I") packed them


def pack_buckets(buckets: Iterable[int]) -> bytes:
    """An entry's distinct bucket keys as stored (signed 64-bit, little-endian)."""
    return np.fromiter(dict.fromkeys(buckets), dtype="<i8").tobytes()


def _keys32(blob: bytes) -> _U32:
    # The memory index keeps the low 32 bits of each key: half the memory, and a bucket
    # that two keys share by chance only adds a candidate the exact decision rejects.
    return np.frombuffer(blob, dtype="<i8").astype(np.uint32)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _micros(when: datetime) -> int:
    """Microseconds since the epoch: exact, as the stored dates are."""
    return (when - _EPOCH) // _US


def _when(micros: int) -> datetime:
    # Clamped: an item dated in year 1 (feeds do that) minus the window is no date.
    return _EPOCH + timedelta(microseconds=min(max(micros, _FIRST), _LAST))


_FIRST = _micros(datetime.min.replace(tzinfo=UTC))
_LAST = _micros(datetime.max.replace(tzinfo=UTC))


def save(s: Session, fingerprints: Sequence[tuple[int, Fingerprint]]) -> None:
    """Store the fingerprints of newly inserted entries (entry id, fingerprint)."""
    if not fingerprints:
        return
    # A Core insert: the ORM's bulk path costs more than the rows here.
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
                "buckets": pack_buckets(fp.buckets),
            }
            for eid, fp in fingerprints
        ],
    )


def replace(s: Session, entry_id: int, fp: Fingerprint | None) -> None:
    """An entry was edited: its fingerprint follows (its story does not change).

    The memory indexes keep the entry's old keys until their next rebuild: they find it
    as a candidate for what the old text matched, and the decision reads its new features.
    """
    s.execute(delete(EntrySignatureRow).where(EntrySignatureRow.entry_id == entry_id))
    if fp is not None:
        save(s, [(entry_id, fp)])


class _Keys:
    """Bucket key (32 bits) -> the entries that have it.

    Sorted runs of (key, entry) pairs, each at most ``_RUN_PAIRS`` long and over at most
    ``_RUN_ENTRIES`` consecutive entries: the entries a sync or a rebuild adds become a
    run. Runs of about equal size are merged, so there are few of them (one binary search
    each per lookup), and a merge never copies more than one run's worth: one sorted
    array of all the pairs made every merge copy the index.
    """

    def __init__(self) -> None:
        self.ids = array("q")  # per slot: entry id
        self.pubs = array("q")  # per slot: published, epoch microseconds
        self.runs: list[_Run] = []  # in slot order

    @property
    def pairs(self) -> int:
        return sum(len(r.keys) for r in self.runs)

    @property
    def nbytes(self) -> int:
        """Memory of the arrays."""
        runs = sum(r.keys.nbytes + r.rel.nbytes for r in self.runs)
        return runs + len(self.ids) * 16

    def extend(self, rows: Iterable[tuple[int, int, bytes]]) -> None:
        """Add entries (id, published, packed keys): a sync's few or a rebuild's many,
        ``_EXTEND_ROWS`` at a time: a rebuild's keys at once, as read, were 3 times the
        size of the index at its end."""
        rows = iter(rows)
        while batch := list(itertools.islice(rows, _EXTEND_ROWS)):
            self._extend(batch)

    def _extend(self, rows: list[tuple[int, int, bytes]]) -> None:
        first, blobs, counts = len(self.ids), [], []
        for eid, published, blob in rows:
            self.ids.append(eid)
            self.pubs.append(published)
            blobs.append(blob)
            counts.append(len(blob) // 8)
        keys = _keys32(b"".join(blobs))
        del blobs
        slots = np.repeat(np.arange(first, len(self.ids), dtype=np.int64), counts)
        i = 0
        while i < len(keys):
            j = min(i + _RUN_PAIRS, int(np.searchsorted(slots, slots[i] + _RUN_ENTRIES)))
            if j < len(slots):
                start = int(np.searchsorted(slots, slots[j]))  # the first pair of j's entry
                if start > i:
                    j = start  # whole entries in a run, unless one entry alone fills it
            self._push(keys[i:j], slots[i:j])
            i = j

    def _push(self, keys: _U32, slots: npt.NDArray[np.int64]) -> None:
        order = np.argsort(keys, kind="stable")
        base = int(slots[0])
        self.runs.append(
            _Run(keys[order], (slots[order] - base).astype(np.uint16), base, int(slots[-1]) + 1)
        )
        # Merge the newest run into the one before while that is no more than twice its
        # size and the two fit in one run: sizes stay roughly halving, so a few runs.
        while len(self.runs) > 1:
            a, b = self.runs[-2], self.runs[-1]
            if (
                len(a.keys) > 2 * len(b.keys)
                or len(a.keys) + len(b.keys) > _RUN_PAIRS
                or b.end - a.base > _RUN_ENTRIES
            ):
                break
            at = np.searchsorted(a.keys, b.keys, side="right")
            rel = (b.rel.astype(np.uint32) + (b.base - a.base)).astype(np.uint16)
            self.runs[-2:] = [
                _Run(np.insert(a.keys, at, b.keys), np.insert(a.rel, at, rel), a.base, b.end)
            ]

    def newest(self, wanted: _U32, lo: int, hi: int) -> dict[int, list[tuple[int, int]]]:
        """For each key of ``wanted`` (distinct): its ``BUCKET_ROWS`` newest entries
        published within [lo, hi], as (entry id, published)."""
        if not len(wanted):
            return {}
        found_which, found_slots = [], []
        for run in self.runs:
            left = np.searchsorted(run.keys, wanted, side="left")
            counts = np.searchsorted(run.keys, wanted, side="right") - left
            # Every matching position at once: key i's are at left[i] .. + counts[i].
            at = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            found_which.append(np.repeat(np.arange(len(wanted)), counts))
            found_slots.append(run.rel[np.repeat(left, counts) + at].astype(np.int64) + run.base)
        if not found_which:
            return {}
        which, slots = np.concatenate(found_which), np.concatenate(found_slots)
        pubs = np.frombuffer(self.pubs, dtype=np.int64)[slots]
        keep = (pubs >= lo) & (pubs <= hi)
        which, slots, pubs = which[keep], slots[keep], pubs[keep]
        order = np.lexsort((-pubs, which))  # by key, the newest first
        which, slots, pubs = which[order], slots[order], pubs[order]
        # Rank within its key's group; keep the first BUCKET_ROWS of each.
        first = np.r_[0, np.flatnonzero(np.diff(which)) + 1] if len(which) else which
        starts = np.repeat(first, np.diff(np.r_[first, len(which)]))
        keep = np.arange(len(which)) - starts < BUCKET_ROWS
        ids = np.frombuffer(self.ids, dtype=np.int64)
        out: dict[int, list[tuple[int, int]]] = {}
        keys = wanted.tolist()
        for i, eid, pub in zip(
            which[keep].tolist(), ids[slots[keep]].tolist(), pubs[keep].tolist(), strict=True
        ):
            out.setdefault(keys[i], []).append((eid, pub))
        return out


class BucketIndex:
    """The bucket keys of the stored entries published recently, in memory, for the
    lookup of one store (see the module's docstring); one per Repository, thread-safe."""

    def __init__(self, *, gaps: bool) -> None:
        self._lock = threading.Lock()
        self._keys = _Keys()
        self._gaps_on = gaps
        self._gaps: dict[int, float] = {}  # entry id skipped over -> when first missed
        self._high = 0  # the highest entry id read
        self._start: int | None = None  # published from (epoch µs); None: not built
        self._span: timedelta | None = None
        self._built = 0.0
        # Built on an empty store: no newest entry to count the horizon from yet.
        self._provisional = False

    def candidates_many(
        self,
        s: Session,
        fps: Sequence[Fingerprint],
        window: timedelta,
        limit: int = CANDIDATE_LIMIT,
    ) -> list[list[NearCandidate]]:
        """The stored near-duplicate candidates of each of ``fps`` (one poll's entries).

        For each: the entries published within ``window`` of it that share most buckets
        with it (ties: the older id), at most ``limit``. A bucket contributes its
        ``BUCKET_ROWS`` newest entries within the poll's dates: a crowded bucket (the words
        every title of a feed shares) says little about which entry is a rewrite. The
        signatures of all chosen entries come in one query.
        """
        wanted = [fp for fp in fps if fp.buckets]
        if not wanted:
            return [[] for _ in fps]
        w = window // _US
        lo = min(_micros(fp.published) for fp in wanted) - w
        hi = max(_micros(fp.published) for fp in wanted) + w
        keys = np.fromiter({b & _KEY_MASK for fp in wanted for b in fp.buckets}, np.uint32)
        with self._lock:
            start = self._refresh(s, window)
            by_bucket = self._keys.newest(keys, lo, hi)
        if lo < start:
            # Dates before the horizon: their signatures, read for this lookup. What the
            # index gave is newer, so it comes first in each bucket's newest rows.
            older = _archive(s, lo, min(hi, start - 1))
            for k, rows in older.newest(keys, lo, hi).items():
                by_bucket[k] = (by_bucket.get(k, []) + rows)[:BUCKET_ROWS]
        chosen: list[list[int]] = []
        published: dict[int, int] = {}
        for fp in fps:
            at = _micros(fp.published)
            shared: Counter[int] = Counter()
            for b in {b & _KEY_MASK for b in fp.buckets}:
                for eid, when in by_bucket.get(b, ()):
                    if at - w <= when <= at + w:
                        shared[eid] += 1
                        published[eid] = when
            chosen.append(sorted(shared, key=lambda e: (-shared[e], e))[:limit])
        found = _load(s, {eid: published[eid] for ids in chosen for eid in ids})
        return [[found[e] for e in ids if e in found] for ids in chosen]

    def _refresh(self, s: Session, window: timedelta) -> int:
        """Bring the index up to what ``s`` sees; the horizon's start (epoch µs)."""
        span = window + HORIZON_MARGIN
        if (
            self._start is None
            or span != self._span
            or time.monotonic() - self._built > REBUILD_SECONDS
        ):
            self._rebuild(s, span)
        else:
            self._sync(s)
        assert self._start is not None
        return self._start

    def _rebuild(self, s: Session, span: timedelta) -> None:
        sig = EntrySignatureRow
        newest = s.scalar(select(func.max(sig.published)))
        now = datetime.now(UTC)
        start = _micros(min(newest, now) if newest else now) - span // _US
        self._keys, self._gaps, self._high = _Keys(), {}, 0
        self._start, self._span, self._built = start, span, time.monotonic()
        self._provisional = newest is None
        # The highest id first, and rows up to it: one committed between the two reads
        # above it is left to the next sync, which reads from there, not added twice.
        high = s.scalar(select(func.max(sig.entry_id))) or 0
        # Streamed (PostgreSQL: a server-side cursor), as the index takes them.
        rows = s.execute(
            _rows()
            .where(sig.published >= _when(start), sig.entry_id <= high)
            .execution_options(yield_per=_EXTEND_ROWS)
        )
        self._keys.extend((eid, _micros(published), blob) for eid, published, blob in rows)
        if self._gaps_on:
            # Ids of transactions still open now: a while to appear.
            seen = set(self._keys.ids)
            stamp = time.monotonic()
            first = max(1, high - GAP_IDS // 5)
            self._gaps = {i: stamp for i in range(first, high + 1) if i not in seen}
        self._high = high

    def _sync(self, s: Session) -> None:
        sig = EntrySignatureRow
        newer = sig.entry_id > self._high
        stamp = time.monotonic()
        if self._gaps:
            self._gaps = {i: t for i, t in self._gaps.items() if stamp - t < GAP_SECONDS}
        if self._gaps:
            # The ids skipped over in the last two minutes: transactions in flight, rolled
            # back, or entries without a signature; at most GAP_IDS.
            newer = or_(newer, sig.entry_id.in_(list(self._gaps)))
        ids = self._add(s.execute(_rows().where(newer).order_by(sig.entry_id)))
        for i in ids:
            self._gaps.pop(i, None)
        top = max(ids, default=self._high)
        if self._gaps_on and top > self._high:
            got = set(ids)
            self._gaps.update((i, stamp) for i in range(self._high + 1, top) if i not in got)
            if len(self._gaps) > GAP_IDS:
                self._gaps = dict(sorted(self._gaps.items())[-GAP_IDS:])
        self._high = max(self._high, top)

    def _add(self, rows: Iterable[Any]) -> list[int]:
        assert self._start is not None
        rows = list(rows)
        if self._provisional and rows:
            # The first entries of a store built empty (a first fetch) set the horizon
            # as a rebuild would have: counted from the newest of them, not from now, so
            # a first fetch of items older than the window is not looked up in a read of
            # the store's signatures on every poll.
            newest = max(published for _, published, _ in rows)
            assert self._span is not None
            self._start = _micros(min(newest, datetime.now(UTC))) - self._span // _US
            self._provisional = False
        ids, kept = [], []
        for eid, published, blob in rows:
            ids.append(eid)
            at = _micros(published)
            if at >= self._start:
                kept.append((eid, at, blob))
        self._keys.extend(kept)
        return ids


def _rows() -> Any:
    sig = EntrySignatureRow
    return select(sig.entry_id, sig.published, sig.buckets)


def _archive(s: Session, lo: int, hi: int) -> _Keys:
    """The buckets of the entries published in [lo, hi] (epoch µs), the newest
    ``ARCHIVE_ROWS`` of them: for a lookup of dates the memory index does not hold."""
    sig = EntrySignatureRow
    keys = _Keys()
    q = (
        _rows()
        .where(
            and_(
                sig.published >= _when(lo),
                sig.published <= _when(hi),
            )
        )
        .order_by(sig.published.desc())
        .limit(ARCHIVE_ROWS)
    )
    keys.extend((eid, _micros(published), blob) for eid, published, blob in s.execute(q))
    return keys


def _load(s: Session, published: dict[int, int]) -> dict[int, NearCandidate]:
    """The stored signatures of the entries ``published`` names (id -> date, epoch µs, as
    the index holds it), with their entries' story and feed, by entry id."""
    found: dict[int, NearCandidate] = {}
    ids = list(published)
    conn = s.connection()
    # SQLite's driver takes "?"; psycopg's "%s".
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        # Through the driver: a poll reads tens of signatures per new entry (37 in
        # bench/poll.py's feeds), and SQLAlchemy's per-row work cost more than the read.
        rows = conn.exec_driver_sql(
            "SELECT s.entry_id, s.features, s.title, s.short, s.host, e.story_id, e.feed_id "
            "FROM entry_signatures s JOIN entries e ON e.id = s.entry_id "
            f"WHERE s.entry_id IN ({', '.join([mark] * len(part))})",
            tuple(part),
        ).fetchall()
        for eid, features, title, short, host, story_id, feed_id in rows:
            found[eid] = NearCandidate(
                entry_id=eid,
                story_id=story_id,
                feed_id=feed_id,
                fingerprint=Fingerprint(
                    features=_unpack(bytes(features)),
                    title=tuple(title.split()),
                    short=bool(short),
                    host=host,
                    published=_when(published[eid]),
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
