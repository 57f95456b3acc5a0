"""Tagging quality on the labelled set: precision, recall and F1 per topic, and macro-F1.

    python bench/tag_eval.py [--modes rules,classifier,both] [--sweep] [--limit N]
    python bench/tag_eval.py --real [../shared/data] [--sets nyt,agnews,bbc] [--sample N]

The set is tests/data/tagging/items.txt (topics | title | summary), the topics
tests/data/tagging/topics.yaml. Modes: ``rules`` (rules alone), ``classifier`` (the
semantic classifier alone, at each topic's threshold), ``both`` (a tag from either, as the
aggregator runs). ``--sweep`` also prints, per topic, the classifier threshold that would
maximise F1 on this set (to choose thresholds, knowing it fits them to this set).
tests/test_tag_eval.py fails if ``both`` drops below the macro-F1 recorded there.

``--real`` runs the real development sets instead (``topics/`` of the shared data; see
real_sets below): NYT with the shipped feeds.yaml topics, categories present and stripped;
AG News and BBC with topics written the way an admin would.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:1] = [str(ROOT), str(ROOT / "bench")]

from aggregator.classify import Classifier, classifier_unavailable, load_classifier  # noqa: E402
from aggregator.config import Config, load_config  # noqa: E402
from aggregator.tag import Mode, Tagger, profiles  # noqa: E402
from aggregator.topicconfig import TaggingSettings  # noqa: E402
from aggregator.types import ParsedEntry  # noqa: E402

DATA = ROOT / "tests" / "data" / "tagging"
WHEN = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Labelled:
    title: str
    summary: str
    topics: frozenset[str]


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    support: int


def load_items(path: Path = DATA / "items.txt", limit: int | None = None) -> list[Labelled]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ")]
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected 'topics | title | summary'")
        topics = frozenset(t.strip() for t in parts[0].split(","))
        out.append(Labelled(parts[1], parts[2], topics))
    return out[:limit] if limit else out


def entry(item: Labelled) -> ParsedEntry:
    return ParsedEntry(
        guid=None,
        link=None,
        title=item.title,
        summary_html=item.summary,
        content_html=item.summary,
        text=item.summary,
        authors=(),
        published=WHEN,
        updated=WHEN,
        date_from_fetch=False,
        categories=(),
    )


def predict(tagger: Tagger, items: list[Labelled]) -> list[set[str]]:
    results = tagger.analyse_many([entry(i) for i in items])
    return [{t.topic for t in r.tags if ":" not in t.topic} for r in results]


def score(slugs: list[str], items: list[Labelled], predicted: list[set[str]]) -> dict[str, Scores]:
    out = {}
    for slug in slugs:
        tp = sum(slug in p and slug in i.topics for i, p in zip(items, predicted, strict=True))
        fp = sum(slug in p and slug not in i.topics for i, p in zip(items, predicted, strict=True))
        fn = sum(slug not in p and slug in i.topics for i, p in zip(items, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[slug] = Scores(precision, recall, f1, tp + fn)
    return out


def macro_f1(scores: dict[str, Scores]) -> float:
    return sum(s.f1 for s in scores.values()) / len(scores) if scores else 0.0


def tagger_for(config: Config, mode: Mode, classifier: Classifier | None) -> Tagger:
    # Language detection and place tags do not change topic tags here; off to save time.
    settings = TaggingSettings(detect_language=False, place_tags=False)
    return Tagger(
        config.topics,
        config.category_synonyms,
        settings=settings,
        classifier=classifier if mode != "rules" else None,
        mode=mode,
    )


def evaluate(
    modes: list[Mode], limit: int | None = None
) -> tuple[dict[Mode, dict[str, Scores]], Classifier | None]:
    config = load_config(DATA / "topics.yaml")
    items = load_items(limit=limit)
    slugs = [t.slug for t in config.topics]
    classifier = None
    if any(m != "rules" for m in modes):
        classifier = load_classifier(profiles(config.topics), batch_size=64)
    results: dict[Mode, dict[str, Scores]] = {}
    for mode in modes:
        if mode != "rules" and classifier is None:
            continue
        results[mode] = score(slugs, items, predict(tagger_for(config, mode, classifier), items))
    return results, classifier


def sweep(classifier: Classifier, limit: int | None) -> None:
    items = load_items(limit=limit)
    all_scores = classifier.scores([i.title + ". " + i.summary for i in items])
    print("\nclassifier threshold that maximises F1 on this set (per topic):")
    for topic in classifier.topics:
        best = (0.0, 0.0)
        for step in range(15, 71):
            th = step / 100
            predicted = [{topic.slug} if s[topic.slug] >= th else set() for s in all_scores]
            f1 = score([topic.slug], items, predicted)[topic.slug].f1
            best = max(best, (f1, th))
        print(f"  {topic.slug:20s} threshold {best[1]:.2f}  F1 {best[0]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", nargs="?", const=str(ROOT.parent / "shared" / "data"), default=None)
    ap.add_argument("--sets", default="nyt,agnews,bbc")
    ap.add_argument("--sample", type=int, default=0, help="--real: at most N items per part")
    ap.add_argument("--modes", default="rules,classifier,both")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="only the first N items")
    args = ap.parse_args()
    if args.real is not None:
        from real_sets import run

        run(Path(args.real), args.sets.split(","), args.sample or None)
        return
    modes: list[Mode] = [m for m in args.modes.split(",") if m in ("rules", "classifier", "both")]  # type: ignore[misc]
    t0 = time.perf_counter()
    results, classifier = evaluate(modes, args.limit)
    n = len(load_items(limit=args.limit))
    print(f"labelled set: {n} items, {DATA / 'items.txt'}")
    if "classifier" in modes and classifier is None:
        print(f"classifier: not run ({classifier_unavailable() or 'no topic defines one'})")
    for mode, scores in results.items():
        print(f"\n== {mode}")
        print(f"  {'topic':20s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'items':>6s}")
        for slug, s in scores.items():
            print(f"  {slug:20s} {s.precision:9.3f} {s.recall:7.3f} {s.f1:6.3f} {s.support:6d}")
        print(f"  macro-F1 {mode}: {macro_f1(scores):.3f}")
    if args.sweep and classifier is not None:
        sweep(classifier, args.limit)
    print(f"\n({time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
