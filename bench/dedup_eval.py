"""Pairwise precision, recall and F1 of story merging on the labelled set.

    python bench/dedup_eval.py [--db-url URL] [--threshold 0.35] [--show-errors]

The set (tests/data/dedup_eval.jsonl) is hand-written for this project: news items of
made-up outlets (wire.example, ledger.example, ...) describing real-looking events, each
labelled with the story it belongs to: one story rewritten by several outlets (different
URLs, headlines, reworded paragraphs, some title-only items) and hard negatives (two
earthquakes, two Colombia-US rows a day apart, two elections, daily briefings and market
wraps of one feed, template local news of two cities, two NASA Moon stories a day apart,
floods in Spain and in Italy a day apart).

Every item goes through the real path: ``dedup.plan`` then ``Repository.save_poll``, one
poll per item in publication order, into a fresh store (SQLite by default). Two items
are predicted together when they end up in the same story. Also prints the same figures
for canonical-URL matching alone, as the bar.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from aggregator import dedup  # noqa: E402
from aggregator.neardup import Matcher  # noqa: E402
from aggregator.types import ParsedEntry, PollResult, PollSave  # noqa: E402
from storage import open_repository  # noqa: E402

DATA = ROOT / "tests" / "data" / "dedup_eval.jsonl"


class Item(NamedTuple):
    cluster: str
    feed_url: str
    entry: ParsedEntry


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    false_merges: list[tuple[str, str]]  # (cluster, cluster) of wrongly merged pairs
    missed: list[tuple[str, str, str]]  # (cluster, title, title) of pairs not merged
    seconds_per_item: float


def load(path: Path = DATA) -> list[Item]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        published = datetime.fromisoformat(d["published"].replace("Z", "+00:00"))
        text = d["text"]
        entry = ParsedEntry(
            guid=None,
            link=d["link"],
            title=d["title"],
            summary_html=f"<p>{text}</p>" if text else "",
            content_html=f"<p>{text}</p>" if text else "",
            text=text,
            authors=(),
            published=published,
            updated=published,
            date_from_fetch=False,
            categories=(),
        )
        items.append(Item(d["cluster"], f"https://{d['feed']}.example/feed", entry))
    return sorted(items, key=lambda i: i.entry.published)


def run(db_url: str, items: Iterable[Item], policy: dedup.Policy) -> tuple[dict[str, str], float]:
    """Save every item as its own poll; link -> story uid, and seconds per item."""
    repo = open_repository(db_url)
    n = 0
    t0 = time.perf_counter()
    try:
        for item in items:
            stored = repo.entry_hashes(item.feed_url, [])
            intents = dedup.plan(
                [item.entry], item.feed_url, stored, None, tracking=policy.tracking
            )
            result = PollResult(item.feed_url, "ok", 200, None, 1, 0, 0, 0)
            repo.save_poll(
                item.feed_url,
                PollSave(
                    result=result,
                    started_at=item.entry.published + timedelta(minutes=5),
                    intents=tuple(intents),
                    matcher=policy.story_matcher,
                ),
            )
            n += 1
        elapsed = time.perf_counter() - t0
        return {link: uid for _f, _i, link, uid in repo.entry_stories() if link}, elapsed / max(
            n, 1
        )
    finally:
        repo.close()


def score(items: list[Item], story_of: dict[str, str], seconds: float) -> Scores:
    tp = fp = fn = 0
    false_merges: list[tuple[str, str]] = []
    missed: list[tuple[str, str, str]] = []
    for a, b in itertools.combinations(items, 2):
        same_truth = a.cluster == b.cluster
        same_pred = story_of[a.entry.link or ""] == story_of[b.entry.link or ""]
        if same_truth and same_pred:
            tp += 1
        elif same_pred:
            fp += 1
            false_merges.append((a.cluster, b.cluster))
        elif same_truth:
            fn += 1
            missed.append((a.cluster, a.entry.title, b.entry.title))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp + fn, tp + fp, false_merges, missed, seconds)


def evaluate(db_url: str, policy: dedup.Policy | None = None) -> Scores:
    items = load()
    story_of, seconds = run(db_url, items, policy or dedup.DEFAULT_POLICY)
    return score(items, story_of, seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-url", help="a fresh, empty store (default: a temporary SQLite file)")
    ap.add_argument("--threshold", type=float, default=dedup.DEFAULT_POLICY.matcher.threshold)
    ap.add_argument("--title-threshold", type=float, default=Matcher.title_threshold)
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()
    items = load()
    clusters = {i.cluster for i in items}
    print(f"set: {len(items)} items, {len(clusters)} stories, from {DATA.relative_to(ROOT)}")
    runs = [
        ("canonical URL only (bar)", dedup.Policy(near_duplicates=False)),
        (
            f"near-duplicates threshold={args.threshold} title={args.title_threshold}",
            dedup.Policy(
                matcher=Matcher(threshold=args.threshold, title_threshold=args.title_threshold)
            ),
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, policy) in enumerate(runs):
            url = args.db_url if args.db_url and n == len(runs) - 1 else None
            url = url or f"sqlite:///{Path(tmp) / f'eval{n}.db'}"
            story_of, seconds = run(url, items, policy)
            s = score(items, story_of, seconds)
            print(
                f"{name:52} precision={s.precision:.3f} recall={s.recall:.3f} f1={s.f1:.3f} "
                f"pairs true={s.true_pairs} predicted={s.predicted_pairs} "
                f"ms/item={s.seconds_per_item * 1000:.1f}"
            )
            if args.show_errors and policy.near_duplicates:
                for pair in s.false_merges:
                    print("  false merge:", *pair)
                for cluster, ta, tb in s.missed:
                    print(f"  missed [{cluster}]: {ta!r} / {tb!r}")


if __name__ == "__main__":
    main()
