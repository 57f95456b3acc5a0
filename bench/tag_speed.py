"""Tagging speed and install size, each beside a natural bar measured in the same run.

    python bench/tag_speed.py [--items 5000] [--topics 20] [--classifier-items 448]

Prints items/s for:
* rules only (topic rules, no places, no language), on one core, for ``--topics`` topics
  (the 8 of tests/data/tagging/topics.yaml, copied under new slugs up to the count), against
  the bar "one precompiled regex per topic of its keywords, searched in title and text";
* the full rule path as the pipeline runs it (rules + places gazetteer + language detection);
* the classifier (batched sentence embeddings on the CPU) against bare ``model.encode`` of
  the same texts in the same batches, the two taking turns for ``--rounds`` (median);
and the size on disk of the base install and of what the ``classifier`` extra adds.
Targets (issue 5): rules 5,000 items/s on one core for 20 topics, classifier 200/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from tag_eval import DATA, entry, load_items  # noqa: E402

from aggregator.classify import classifier_unavailable, load_classifier  # noqa: E402
from aggregator.config import TopicConfig, load_config  # noqa: E402
from aggregator.tag import Tagger, profiles  # noqa: E402
from aggregator.topicconfig import TaggingSettings  # noqa: E402
from aggregator.types import ParsedEntry  # noqa: E402


def topics(n: int) -> list[TopicConfig]:
    base = list(load_config(DATA / "topics.yaml").topics)
    out = []
    for i in range(n):
        t = base[i % len(base)]
        out.append(t if i < len(base) else t.model_copy(update={"slug": f"{t.slug}-{i}"}))
    return out


def entries(n: int) -> list[ParsedEntry]:
    items = load_items()
    return [entry(items[i % len(items)]) for i in range(n)]


class Clock:
    """Wall and CPU time of a block: on a shared machine, CPU time is the steadier figure."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def rate(n: int, c: Clock) -> str:
    return f"{n / c.wall:10,.0f} items/s ({n / c.cpu:,.0f} per CPU-second)"


def bar_rules(tps: list[TopicConfig], es: list[ParsedEntry]) -> Clock:
    """The simplest tagger there is: one keyword alternation per topic, title and text."""
    pats = [
        re.compile(r"\b(?:" + "|".join(map(re.escape, t.rules.keywords)) + r")\b", re.I)
        for t in tps
    ]
    with Clock() as c:
        for e in es:
            for p in pats:
                p.search(e.title) or p.search(e.text)
    return c


def timed(tagger: Tagger, es: list[ParsedEntry], batch: int) -> Clock:
    with Clock() as c:
        for i in range(0, len(es), batch):
            tagger.analyse_many(es[i : i + batch])
    return c


def _closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [n.lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            m = re.match(r"[A-Za-z0-9_.\-]+", req)
            if m:
                todo.append(m.group(0).lower().replace("_", "-"))
    return seen


def _size(names: set[str]) -> int:
    total = 0
    for name in names:
        dist = metadata.distribution(name)
        for f in dist.files or []:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                total += p.stat().st_size
    return total


def sizes() -> tuple[int, int]:
    base_reqs = [
        r.split(";")[0] for r in metadata.requires("aggregator") or [] if "extra ==" not in r
    ]
    extra_reqs = [
        r.split(";")[0]
        for r in metadata.requires("aggregator") or []
        if 'extra == "classifier"' in r
    ]
    name = re.compile(r"[A-Za-z0-9_.\-]+")
    base = _closure([m.group(0) for r in base_reqs if (m := name.match(r))])
    extra = _closure([m.group(0) for r in extra_reqs if (m := name.match(r))]) - base
    return _size(base), _size(extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--topics", type=int, default=20)
    ap.add_argument("--classifier-items", type=int, default=448)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="classifier rounds, taking turns")
    args = ap.parse_args()
    tps = topics(args.topics)
    es = entries(args.items)

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    bar = bar_rules(tps, es)
    print(f"bar: keyword regex per topic    {rate(len(es), bar)}  ({args.topics} topics)")
    rules_only = Tagger(tps, settings=TaggingSettings(detect_language=False, place_tags=False))
    rules_only.analyse_many(es[:50])  # warm caches
    t = timed(rules_only, es, args.batch)
    print(f"rules only (one core)           {rate(len(es), t)}  ratio to bar {bar.cpu / t.cpu:.2f}")
    full = Tagger(tps, settings=TaggingSettings(classifier=False))
    full.analyse_many(es[:50])
    t = timed(full, es, args.batch)
    print(f"rules + places + language       {rate(len(es), t)}  ratio to bar {bar.cpu / t.cpu:.2f}")

    why = classifier_unavailable()
    if why:
        print(f"classifier: not measured ({why})")
    else:
        clf = load_classifier(profiles(tps), batch_size=args.batch)
        assert clf is not None
        from aggregator.embed import MODEL_DIM, CachedEmbedder, _e5_encoder

        engine = _e5_encoder()
        ces = entries(args.classifier_items)
        texts = [e.title + ". " + e.text for e in ces]
        tagger = Tagger(tps, settings=TaggingSettings(), classifier=clf)
        engine(texts[:8])  # warm up
        tagger.analyse_many(ces[:8])

        def bare_encode() -> Clock:
            with Clock() as c:
                for i in range(0, len(texts), args.batch):
                    engine(texts[i : i + args.batch])
            return c

        def fresh() -> None:
            # An empty vector cache each round: the tagging path encodes every text too.
            clf.embedder = CachedEmbedder(engine, MODEL_DIM)

        # Taking turns, then the median of each: a busy moment of the machine (or torch
        # settling its kernels) hits both alike instead of whichever ran first.
        bares, ours = [], []
        for _ in range(args.rounds):
            bares.append(bare_encode())
            fresh()
            ours.append(timed(tagger, ces, args.batch))
        bare = sorted(bares, key=lambda c: c.wall)[len(bares) // 2]
        t = sorted(ours, key=lambda c: c.wall)[len(ours) // 2]
        print(
            f"bar: bare model.encode          {rate(len(ces), bare)}  "
            f"(same batches, median of {args.rounds})"
        )
        ratio = bare.wall / t.wall
        print(f"rules + classifier (all)        {rate(len(ces), t)}  ratio to bar {ratio:.2f}")

    base, extra = sizes()
    print(f"installed size: base {base / 1e6:,.0f} MB; classifier extra adds {extra / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
