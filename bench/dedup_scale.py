"""Time to deduplicate one item against 10k, 100k and 1M stored items.

    python bench/dedup_scale.py [--sizes 10000,100000,1000000] [--rounds 5]

For each size a fresh SQLite store (the real schema, migrated) gets that many synthetic
stored items: an entry, a story and a signature row each, with 56 LSH bucket keys (the
number a real item has), random 64-bit ones, as real bucket keys are hashes. Synthetic
items are published over the same two weeks as the measured items, so ~40% of them are
inside the 3-day matching window of any measured item: the bucket index, not the date,
keeps lookups cheap. The index is the memory one each saving process keeps
(storage/neardup.py ``BucketIndex``); its first lookup builds it, outside the timing. Its
horizon is widened to the labelled set's two weeks: measured here is the index, not the
bounded read of older dates (``ARCHIVE_ROWS``) a lookup before the horizon makes.
Then the labelled set (tests/data/dedup_eval.jsonl, 171 real-looking items) is saved
through the real path (``dedup.plan`` + ``Repository.save_poll``), and each of its items is
looked up again as a new item would be: fingerprint, candidates by bucket
(storage/neardup.py), exact decision (``Matcher.choose``). After one unmeasured pass per
store (caches, first calls), the stores take turns for ``--rounds`` rounds, so a busy moment
of the machine hits every size alike. Printed per size: the median and 95th percentile time
per item, the median of the index lookup alone, and the ratio of each to the smallest size's
(the bar measured in the same run; the issue asks for 1M within 1.5x of 10k).

Synthetic rows go in with the DB-API in bulk (the pipeline would take hours for 1M), and
the date index is built after the load, as a restore would. SQLite only: the synthetic
load uses its SQL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from dedup_eval import Item, load, run  # noqa: E402
from sqlalchemy import DateTime  # noqa: E402
from sqlalchemy.dialects import sqlite  # noqa: E402

from aggregator import dedup  # noqa: E402
from aggregator.neardup import fingerprint  # noqa: E402
from storage import neardup as neardup_store  # noqa: E402
from storage import open_repository  # noqa: E402
from storage.repository import Repository  # noqa: E402

BUCKETS_PER_ITEM = 56  # 48 text bands + 8 title bands (aggregator/neardup.py)
CHUNK = 20_000
INDEX = "ix_entry_signatures_published"


def build(db_url: str, n: int, seed: int = 1) -> None:
    """``n`` synthetic stored items around the labelled set's dates."""
    items = load()
    first, last = items[0].entry.published, items[-1].entry.published
    span = (last - first).total_seconds()
    dialect = sqlite.dialect()
    fmt = DateTime().dialect_impl(dialect).bind_processor(dialect)  # as the store writes
    assert fmt is not None
    rng = np.random.default_rng(seed)
    repo = open_repository(db_url)  # migrates: the real schema
    repo.close()
    import sqlite3

    con = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(
            "INSERT INTO feeds (url, title, tags, enabled, consecutive_errors) "
            "VALUES ('https://synthetic.example/feed', 'Synthetic', '[]', 1, 0)"
        )
        feed_id = con.execute("SELECT max(id) FROM feeds").fetchone()[0]
        con.execute(f"DROP INDEX {INDEX}")
        base_story = (con.execute("SELECT coalesce(max(id), 0) FROM stories").fetchone()[0]) + 1
        base_entry = (con.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()[0]) + 1
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            offsets = rng.uniform(0, span, hi - lo)
            when = [fmt(first + timedelta(seconds=float(s))) for s in offsets]
            con.executemany(
                "INSERT INTO stories (id, uid, canonical_url, published, updated, created_at) "
                "VALUES (?, ?, NULL, ?, ?, ?)",
                [
                    (base_story + i, f"syn{i}", w, w, w)
                    for i, w in zip(range(lo, hi), when, strict=True)
                ],
            )
            con.executemany(
                "INSERT INTO entries (id, feed_id, story_id, identity, content_hash, link,"
                " canonical_url, title, summary_html, content_html, text, authors, categories,"
                " enclosures, published, updated, date_from_fetch, first_seen_at,"
                " last_seen_at) VALUES (?, ?, ?, ?, '', NULL, NULL, ?, '', '', '', '[]', '[]',"
                " '[]', ?, ?, 0, ?, ?)",
                [
                    (base_entry + i, feed_id, base_story + i, f"s{i}", f"s{i}", w, w, w, w)
                    for i, w in zip(range(lo, hi), when, strict=True)
                ],
            )
            keys = rng.integers(-(2**63), 2**63 - 1, size=(hi - lo, BUCKETS_PER_ITEM), dtype="<i8")
            con.executemany(
                "INSERT INTO entry_signatures"
                " (entry_id, features, title, short, host, published, buckets)"
                " VALUES (?, ?, ?, 0, NULL, ?, ?)",
                [
                    (base_entry + i, rng.bytes(4 * 60), f"s{i}", w, row.tobytes())
                    for i, w, row in zip(range(lo, hi), when, keys, strict=True)
                ],
            )
            con.commit()
        con.execute(f"CREATE INDEX {INDEX} ON entry_signatures (published)")
        con.execute("ANALYZE")
        con.commit()
    finally:
        con.close()


class Timer:
    """Looks the labelled items up in one store, as new items would be."""

    def __init__(self, db_url: str) -> None:
        self.repo = Repository(db_url)
        self.total: list[float] = []  # fingerprint + index lookup + decision
        self.index: list[float] = []  # the index lookup alone (storage/neardup.py)

    def round(self, items: list[Item], keep: bool = True) -> None:
        policy = dedup.DEFAULT_POLICY
        matcher = policy.matcher
        for item in items:
            url = dedup.canonical_url(item.entry.link, item.feed_url, policy.tracking)
            t0 = time.perf_counter()
            fp = fingerprint(item.entry, url)
            assert fp is not None
            with self.repo._reading() as s:
                t1 = time.perf_counter()
                [found] = self.repo._buckets.candidates_many(s, [fp], matcher.window)
                t2 = time.perf_counter()
                matcher.choose(fp, -1, found)
            if keep:
                self.total.append(time.perf_counter() - t0)
                self.index.append(t2 - t1)

    def close(self) -> None:
        self.repo.close()


def _p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]


def main() -> None:
    neardup_store.HORIZON_MARGIN = timedelta(days=15)
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    items = load()
    with tempfile.TemporaryDirectory() as tmp:
        timers: dict[int, Timer] = {}
        try:
            for n in sizes:
                path = Path(tmp) / f"scale{n}.db"
                t0 = time.perf_counter()
                build(f"sqlite:///{path}", n)
                run(f"sqlite:///{path}", items, dedup.DEFAULT_POLICY)  # the real way
                print(
                    f"store of {n:>9,} synthetic + {len(items)} labelled items: built in "
                    f"{time.perf_counter() - t0:.0f}s, {path.stat().st_size / 1e6:.0f} MB",
                    flush=True,
                )
                timers[n] = Timer(f"sqlite:///{path}")
                timers[n].round(items, keep=False)  # warm: builds the index, first calls
                keys = timers[n].repo._buckets._keys
                print(
                    f"  memory index: {len(keys.ids):,} entries, "
                    f"{keys.nbytes / 1e6:.0f} MB in {len(keys.runs)} runs",
                    flush=True,
                )
            # Sizes take turns, so a busy moment of the machine hits all of them alike.
            for _ in range(args.rounds):
                for n in sizes:
                    timers[n].round(items)
            bar = statistics.median(timers[sizes[0]].total)
            bar_index = statistics.median(timers[sizes[0]].index)
            for n in sizes:
                t = timers[n]
                total, index = statistics.median(t.total), statistics.median(t.index)
                print(
                    f"stored={n:>9,} lookups={len(t.total)} median_ms={total * 1000:.2f} "
                    f"p95_ms={_p95(t.total) * 1000:.2f} index_median_ms={index * 1000:.2f} "
                    f"ratio_to_{sizes[0]}={total / bar:.2f} index_ratio={index / bar_index:.2f}"
                )
        finally:
            for timer in timers.values():
                timer.close()
    last = timers[sizes[-1]]
    print(
        f"ratio {sizes[-1]}/{sizes[0]} = {statistics.median(last.total) / bar:.2f} "
        f"(index alone {statistics.median(last.index) / bar_index:.2f}; must be <= 1.5)"
    )


if __name__ == "__main__":
    main()
