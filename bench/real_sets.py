"""Tagging quality on the real development sets (``topics/`` of the shared data).

    python bench/tag_eval.py --real [../shared/data] [--sets nyt,agnews,bbc] [--sample N]

Each set is split in two by a hash of the item's id (stable, no random draw): the *fit* half
is what anything tuned here may look at, the *report* half is what the figures printed are
measured on.

* NYT (nyt_us.jsonl): the shipped feeds.yaml's ``foreign-relations`` and ``politics``,
  labels from NYT's subject descriptors (the data's README). Nothing is fitted: the shipped
  topics were written from what the topics mean, so the report half is scored as is,
  once with the feed's categories and once with them stripped. Then "+ the store": the fit
  half is tagged with its categories as a store would hold it, the heads learn from what
  its category tags say (aggregator/learn.py), and the report half is scored again.
* AG News and BBC: topics as an admin would write them, below (a description and a few
  keywords each, written here from the label's meaning) plus 8 example headlines per topic
  drawn from the fit half (the first 8 by hash: never scored). One threshold, the same for
  every topic, is chosen on the rest of the fit half for the best macro-F1, then the report
  half is scored with it.

The data is read at run time and never copied anywhere (its README says why).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tag_eval import ROOT, WHEN, Labelled, Scores, macro_f1, score

from aggregator.classify import Example, load_classifier
from aggregator.config import Config, TopicConfig, load_config, parse_config
from aggregator.learn import trusted_examples
from aggregator.tag import Tagger, filings, profiles
from aggregator.topicconfig import TaggingSettings
from aggregator.types import FeedContext, ParsedEntry
from storage.tagging import TaggedText

# The admin's topics for the two few-shot sets: descriptions and keywords from the labels'
# meaning (AG News and BBC News as their papers define them), not from any item.
AGNEWS_TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "world": (
        "World news: international affairs, conflicts, diplomacy and events in other countries.",
        ("prime minister", "ceasefire", "rebels", "United Nations"),
    ),
    "sport": (
        "Sport: matches, teams, players, leagues, tournaments and results.",
        ("coach", "playoffs", "championship", "Olympic"),
    ),
    "business": (
        "Business: companies, markets, the economy, trade, oil prices and earnings.",
        ("shares", "profit", "stocks", "quarterly earnings"),
    ),
    "technology": (
        "Science and technology: computing, the internet, software, gadgets, space and research.",
        ("software", "internet", "Microsoft", "spacecraft"),
    ),
}
BBC_TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "business": (
        "Business: companies, markets, the economy, trade, jobs and interest rates.",
        ("shares", "profits", "economy", "interest rates"),
    ),
    "entertainment": (
        "Entertainment: film, music, television, celebrities, awards and the arts.",
        ("film", "album", "box office", "oscar"),
    ),
    "politics": (
        "Politics: government, parliament, parties, elections and ministers.",
        ("labour", "tories", "mps", "election"),
    ),
    "sport": (
        "Sport: football, rugby, tennis, athletics, cricket; matches, players and results.",
        ("coach", "match", "championship", "cup"),
    ),
    "tech": (
        "Technology: computers, the internet, mobile phones, games, software and gadgets.",
        ("software", "broadband", "mobile phone", "users"),
    ),
}
EXAMPLES_PER_TOPIC = 8
# Every item is polled from one feed (which, for NYT, files its topics by category).
FEED = "https://feeds.example/nyt-us.rss"
THRESHOLDS = [t / 100 for t in range(10, 95, 5)]


@dataclass(frozen=True)
class Item:
    key: str
    title: str
    text: str
    categories: tuple[str, ...]
    labels: frozenset[str]

    @property
    def labelled(self) -> Labelled:
        return Labelled(self.title, self.text, self.labels)


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def split(items: Sequence[Item], sample: int | None) -> tuple[list[Item], list[Item]]:
    """(fit half, report half), each in hash order, each cut to ``sample`` if given."""
    ordered = sorted(items, key=lambda i: _hash(i.key))
    fit = [i for i in ordered if _hash("half:" + i.key) % 2 == 0]
    report = [i for i in ordered if _hash("half:" + i.key) % 2 == 1]
    return (fit[:sample], report[:sample]) if sample else (fit, report)


def _jsonl(path: Path) -> Iterable[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_nyt(path: Path) -> list[Item]:
    out = []
    for r in _jsonl(path):
        cats = [c for c in r["categories"] if isinstance(c, dict)]  # type: ignore[attr-defined]
        des = [str(c["term"]) for c in cats if str(c["domain"]).endswith("/des")]
        labels = set()
        if any("International Relations" in t for t in des):
            labels.add("foreign-relations")
        if any("Politics and Government" in t or "Election" in t for t in des):
            labels.add("politics")
        out.append(
            Item(
                str(r["guid"]),
                str(r["title"]),
                str(r["description"] or ""),
                tuple(str(c["term"]) for c in cats),
                frozenset(labels),
            )
        )
    return out


def load_agnews(path: Path) -> list[Item]:
    return [
        Item(str(r["id"]), str(r["title"]), str(r["summary"]), (), frozenset({str(r["label"])}))
        for r in _jsonl(path)
    ]


def load_bbc(path: Path) -> list[Item]:
    out = []
    for r in _jsonl(path):
        text = str(r["text"])
        # The headline is fused into the first sentence: its first words stand as the title.
        words = text.split()
        out.append(
            Item(
                str(r["id"]),
                " ".join(words[:12]),
                " ".join(words[12:]),
                (),
                frozenset({str(r["label"])}),
            )
        )
    return out


def entry(item: Item, categories: bool) -> ParsedEntry:
    return ParsedEntry(
        guid=None,
        link=None,
        title=item.title,
        summary_html=item.text,
        content_html=item.text,
        text=item.text,
        authors=(),
        published=WHEN,
        updated=WHEN,
        date_from_fetch=False,
        categories=item.categories if categories else (),
    )


def tagger(
    config: Config, topics: Sequence[TopicConfig] | None = None, learned: Sequence[Example] = ()
) -> Tagger:
    topics = tuple(topics if topics is not None else config.topics)
    settings = TaggingSettings(detect_language=False, place_tags=False)
    classifier = load_classifier(profiles(topics), learned=learned)
    return Tagger(
        topics,
        config.category_synonyms,
        settings=settings,
        classifier=classifier,
        filed=filings(learned),
    )


def predict(t: Tagger, items: Sequence[Item], categories: bool = False) -> list[set[str]]:
    results = t.analyse_many([entry(i, categories) for i in items], FeedContext(url=FEED))
    return [{x.topic for x in r.tags if ":" not in x.topic} for r in results]


def show(title: str, scores: dict[str, Scores]) -> None:
    print(f"\n== {title}")
    print(f"  {'topic':20s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'items':>6s}")
    for slug, s in scores.items():
        print(f"  {slug:20s} {s.precision:9.3f} {s.recall:7.3f} {s.f1:6.3f} {s.support:6d}")
    print(f"  macro-F1: {macro_f1(scores):.3f}")


def run_nyt(data: Path, sample: int | None) -> None:
    config = load_config(ROOT / "feeds.yaml")
    wanted = [t for t in config.topics if t.slug in ("foreign-relations", "politics")]
    fit, report = split(load_nyt(data / "topics" / "nyt_us.jsonl"), sample)
    t = tagger(config, wanted)
    slugs = [x.slug for x in wanted]
    labelled = [i.labelled for i in report]
    print(f"\nNYT: report half {len(report)} items (fit half {len(fit)} unused: nothing fitted)")
    for cats in (True, False):
        scores = score(slugs, labelled, predict(t, report, cats))
        show(f"NYT, shipped topics, categories {'present' if cats else 'stripped'}", scores)
    tagged = t.analyse_many([entry(i, True) for i in fit])
    rows = [
        TaggedText(
            n,
            i.title,
            i.text,
            i.categories,
            {x.topic: x.reason for x in r.tags},
            False,
            None,
            FEED,
        )
        for n, (i, r) in enumerate(zip(fit, tagged, strict=True))
    ]
    learned = trusted_examples(rows, wanted)
    taught = tagger(config, wanted, learned)
    sides = {(e.topic, e.inside) for e in learned}
    counts = ", ".join(
        f"{slug} {sum(1 for e in learned if (e.topic, e.inside) == (slug, True))}+"
        f"/{sum(1 for e in learned if (e.topic, e.inside) == (slug, False))}-"
        for slug in slugs
        if (slug, True) in sides
    )
    print(f"\nlearned from the fit half's category tags: {counts}")
    for cats in (True, False):
        scores = score(slugs, labelled, predict(taught, report, cats))
        state = "present" if cats else "stripped"
        show(f"NYT, shipped topics + the store, categories {state}", scores)


def admin_topics(
    spec: dict[str, tuple[str, tuple[str, ...]]], examples: dict[str, list[str]], th: float
) -> Config:
    lines = ["topics:"]
    for slug, (description, keywords) in spec.items():
        lines += [
            f"  - name: {slug.title()}",
            f"    slug: {slug}",
            f"    description: {json.dumps(description)}",
            f"    rules:\n      keywords: {json.dumps(list(keywords))}",
            f"    classifier:\n      threshold: {th}\n      examples:",
            *[f"        - {json.dumps(e)}" for e in examples[slug]],
        ]
    return parse_config("\n".join(lines) + "\n")


def run_fewshot(
    name: str,
    items: list[Item],
    spec: dict[str, tuple[str, tuple[str, ...]]],
    sample: int | None,
) -> None:
    fit, report = split(items, sample)
    examples: dict[str, list[str]] = {slug: [] for slug in spec}
    rest = []
    for i in fit:
        (label,) = i.labels
        if len(examples[label]) < EXAMPLES_PER_TOPIC:
            examples[label].append(i.title)
        else:
            rest.append(i)
    slugs = list(spec)
    # Choosing the threshold on the rest of the fit half: rules once, model scores once.
    config = admin_topics(spec, examples, 0.5)
    t = tagger(config)
    assert t.classifier is not None, "the classifier extra is needed for the few-shot sets"
    rules = Tagger(config.topics, settings=TaggingSettings(detect_language=False, place_tags=False))
    ruled = predict(rules, rest)
    probs = t.classifier.scores([f"{i.title}. {i.text}" for i in rest])
    labelled = [i.labelled for i in rest]

    def at(th: float) -> list[set[str]]:
        return [
            r | {s for s, p in ps.items() if p >= th} for r, ps in zip(ruled, probs, strict=True)
        ]

    best = max(
        (
            macro_f1(
                score(
                    slugs,
                    labelled,
                    [
                        r | {s for s, p in ps.items() if p >= th}
                        for r, ps in zip(ruled, probs, strict=True)
                    ],
                )
            ),
            th,
        )
        for th in THRESHOLDS
    )
    print(
        f"\n{name}: fit half {len(fit)} items ({len(fit) - len(rest)} examples, "
        f"{len(rest)} to choose the threshold: {best[1]:.2f}, macro-F1 there {best[0]:.3f}); "
        f"report half {len(report)}"
    )
    t = tagger(admin_topics(spec, examples, best[1]))
    show(
        f"{name}, admin topics, threshold {best[1]:.2f}",
        score(slugs, [i.labelled for i in report], predict(t, report)),
    )


def run(data: Path, sets: Sequence[str], sample: int | None) -> None:
    t0 = time.perf_counter()
    if "nyt" in sets:
        run_nyt(data, sample)
    if "agnews" in sets:
        run_fewshot("AG News", load_agnews(data / "topics" / "agnews.jsonl"), AGNEWS_TOPICS, sample)
    if "bbc" in sets:
        run_fewshot("BBC", load_bbc(data / "topics" / "bbc.jsonl"), BBC_TOPICS, sample)
    print(f"\n({time.perf_counter() - t0:.0f}s)")
