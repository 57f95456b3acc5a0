"""The per-topic classifiers: a calibrated logistic-regression head on sentence embeddings.

Each topic with a ``classifier:`` section learns one head from texts embedded by the shared
model (embed.py): its description and examples are positives; its ``negative_examples`` and
every other topic's description and examples are negatives (unless they are the topic's
own examples too); and what the store teaches (learn.py: admins' corrections, publishers'
categories and feed tags) joins them, as a positive or a negative of its one topic only.
The head is an L2-regularised logistic regression fitted by Newton's method, then
calibrated by Platt scaling on out-of-fold scores (five folds in a fixed order), so a
topic's ``threshold`` is a probability: 0.5 means "more likely in than not". Training is
deterministic: stable ordering, no random draws.

Everything needs the embedding runtime (the ``classifier`` extra); ``load_classifier``
returns None, with the reason logged, when it is not installed, and the tagger then uses
rules alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .embed import ITEM_CHARS, Embedder, embedder_unavailable, shared_embedder

log = logging.getLogger("aggregator.classify")

# Heavier than sklearn's default (C=1 on a few hundred rows): with 8-20 examples per topic,
# a lighter penalty fits the examples' wording rather than their subject.
L2 = 1.0
# The vectors of one model sit in a narrow cone (cosines 0.7-0.9 between any two news
# texts); centred and scaled, the head's penalty acts alike on every direction.
SCALE = 8.0
FOLDS = 5

# Everyday items that belong to none of the usual news topics: with only the topics' own
# examples, a head learns "sport, not foreign relations" and then takes a soup recipe for
# sport. These are negatives for every head (off with tagging.background: false, e.g.
# for a feeds.yaml whose topics are food, weather or travel).
BACKGROUND: tuple[str, ...] = (
    "A quick weeknight recipe for tomato soup",
    "Five houseplants that survive a dark flat",
    "Weekend weather: showers clearing to sunshine",
    "How to get a stubborn stain out of a carpet",
    "The best hiking boots for beginners, tested",
    "Our crossword for Saturday",
    "Readers' letters: the joy of a long walk",
    "How to train a puppy to sleep through the night",
    "Ten easy ways to declutter your kitchen",
    "Horoscope for the week ahead",
    "A guide to baking sourdough bread at home",
    "What to pack for a beach holiday with children",
    "Gardening: when to prune roses",
    "Obituary: a beloved local baker dies at 91",
    "Traffic delays expected on the ring road this weekend",
    "How much sleep do you really need?",
    "Pictures of the day: autumn leaves in the park",
    "A couple renovates a farmhouse on a shoestring",
)


class Example(NamedTuple):
    """A text from the store that is in ``topic`` or not; ``vector``: its stored embedding
    (float16 bytes), so training does not embed it again."""

    text: str
    topic: str
    inside: bool
    vector: bytes | None = None
    filed_by: str = ""  # the feed whose publisher's category put it in ``topic``, if one did


@dataclass(frozen=True)
class TopicProfile:
    slug: str
    description: str
    examples: tuple[str, ...]
    threshold: float
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Head:
    """One topic's trained decision: p = sigmoid(a * (w . x + b) + c)."""

    slug: str
    w: np.ndarray
    b: float
    a: float
    c: float
    positives: int
    negatives: int

    def probability(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * (x @ self.w + self.b) + self.c)


@dataclass(frozen=True)
class Training:
    """What the heads were fitted on, in a fixed order: (text, topic slug, in or not)."""

    rows: tuple[tuple[str, str, bool], ...] = field(default=())
    # Texts from the store: putting an item in politics says nothing of foreign relations,
    # so they are no negatives of the other topics the way a topic's own examples are.
    learned: frozenset[str] = frozenset()
    vectors: Mapping[str, bytes] = field(default_factory=dict)  # stored embeddings by text


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))
    return out


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float | None = None, iters: int = 25
) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression by Newton's method; the bias is not penalised."""
    l2 = L2 if l2 is None else l2
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))]).astype(np.float64)
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 1e-6
    for _ in range(iters):
        p = _sigmoid(xb @ theta)
        grad = xb.T @ (weight * (p - y)) + penalty * theta
        hess = (xb * (weight * p * (1 - p))[:, None]).T @ xb + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-7:
            break
    return theta[:-1], float(theta[-1])


def fit_platt(z: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """Platt's sigmoid on scores, with his smoothed targets (no 0 or 1 from a few rows)."""
    pos, neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y > 0, (pos + 1) / (pos + 2), 1 / (neg + 2))
    a, c = 1.0, 0.0
    for _ in range(iters):
        p = _sigmoid(a * z + c)
        r = p - t
        s = np.maximum(p * (1 - p), 1e-12)
        g = np.array([(r * z).sum(), r.sum()])
        h = np.array([[(s * z * z).sum() + 1e-6, (s * z).sum()], [(s * z).sum(), s.sum() + 1e-6]])
        step = np.linalg.solve(h, g)
        a, c = a - float(step[0]), c - float(step[1])
        if float(np.abs(step).max()) < 1e-9:
            break
    # A head whose folds disagree would get a <= 0: keep the order of its scores.
    return max(a, 1e-3), c


def train_head(slug: str, x: np.ndarray, y: np.ndarray) -> Head:
    """Fit one topic's head on rows ``x`` (already centred and scaled), labels ``y`` (0/1)."""
    pos = float(y.sum())
    neg = float(len(y) - pos)
    # Each side weighs the same in total: 10 examples against 60 others is not a prior.
    weight = np.where(y > 0, len(y) / (2 * max(pos, 1)), len(y) / (2 * max(neg, 1)))
    w, b = fit_logistic(x, y, weight)
    z = np.empty(len(y))
    folds = np.arange(len(y)) % FOLDS
    if min(pos, neg) >= FOLDS:
        for k in range(FOLDS):
            tr = folds != k
            wk, bk = fit_logistic(x[tr], y[tr], weight[tr])
            z[~tr] = x[~tr] @ wk + bk
        a, c = fit_platt(z, y)
    else:
        a, c = 1.0, 0.0  # too few rows to calibrate: the regression's own probability
    return Head(slug, w, b, a, c, int(pos), int(neg))


class Classifier:
    """Heads trained once from the topics (and learned examples); ``scores()`` batches items."""

    def __init__(
        self,
        embedder: Embedder,
        topics: Sequence[TopicProfile],
        batch_size: int = 64,
        learned: Sequence[Example] = (),
        background: bool = True,
    ) -> None:
        self.embedder = embedder
        self.topics = tuple(topics)
        self.batch_size = batch_size
        self.training = training_rows(self.topics, learned, background)
        texts = list(dict.fromkeys(t for t, _, _ in self.training.rows))
        vectors = self._vectors(texts)
        at = {t: i for i, t in enumerate(texts)}
        self.centre = (
            vectors.mean(axis=0).astype(np.float64) if len(texts) else np.zeros(embedder.dim)
        )
        x_all = (vectors.astype(np.float64) - self.centre) * SCALE
        self.heads: dict[str, Head] = {}
        for t in self.topics:
            labels: dict[str, bool] = {}
            for text, slug, inside in self.training.rows:
                if slug == t.slug:
                    labels[text] = inside
            # Another topic's texts are not this one's, unless this topic says they are.
            for text, slug, inside in self.training.rows:
                if slug != t.slug and inside and text not in self.training.learned:
                    labels.setdefault(text, False)
            if not labels or not any(labels.values()):
                continue
            order = [at[k] for k in labels]
            y = np.array([1.0 if v else 0.0 for v in labels.values()])
            if y.min() == 1.0:
                continue  # nothing to tell it apart from
            self.heads[t.slug] = train_head(t.slug, x_all[order], y)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """The embeddings of ``texts``: the stored ones as stored, the others computed."""
        out = np.zeros((len(texts), self.embedder.dim), np.float32)
        stored = self.training.vectors
        missing = []
        for i, text in enumerate(texts):
            raw = stored.get(text)
            if raw is not None and len(raw) == 2 * self.embedder.dim:
                out[i] = np.frombuffer(raw, np.float16)
            else:
                missing.append(i)
        if missing:
            out[missing] = self.embedder.encode([texts[i] for i in missing])
        return out

    def scores(self, items: Sequence[str]) -> list[dict[str, float]]:
        """For each item text: topic slug -> probability that the item is in the topic."""
        if not items or not self.heads:
            return [{} for _ in items]
        vectors = self.embedder.encode([t[:ITEM_CHARS] for t in items])
        x = (vectors.astype(np.float64) - self.centre) * SCALE
        probs = {slug: h.probability(x) for slug, h in self.heads.items()}
        return [{slug: float(p[i]) for slug, p in probs.items()} for i in range(len(items))]

    def threshold(self, slug: str) -> float:
        return next(t.threshold for t in self.topics if t.slug == slug)


def training_rows(
    topics: Sequence[TopicProfile],
    learned: Sequence[Example] = (),
    background: bool = True,
) -> Training:
    """Every (text, topic, in) the heads learn from, in the order of feeds.yaml then the store.

    A topic's description and examples are in it; its negative examples are not; another
    topic's description and examples are not in it either (added when the heads are built,
    unless the text is the topic's own example too).
    """
    rows: list[tuple[str, str, bool]] = []
    for t in topics:
        for text in (t.description, *t.examples):
            if text.strip():
                rows.append((text.strip(), t.slug, True))
        for text in t.negatives:
            if text.strip():
                rows.append((text.strip(), t.slug, False))
    own = {text for text, _, _ in rows}
    known = {t.slug for t in topics}
    store = [
        Example(e.text.strip()[:ITEM_CHARS], e.topic, e.inside, e.vector)
        for e in (Example(*x) for x in learned)
    ]
    store = [e for e in store if e.text and e.topic in known]
    rows.extend((e.text, e.topic, e.inside) for e in store)
    if background:
        rows.extend((text, t.slug, False) for t in topics for text in BACKGROUND)
    vectors = {e.text: e.vector for e in store if e.vector is not None and e.text not in own}
    return Training(tuple(dict.fromkeys(rows)), frozenset(e.text for e in store) - own, vectors)


def classifier_unavailable() -> str | None:
    """Why the classifier cannot run here (the extra is missing), or None if it can."""
    return embedder_unavailable()


def load_classifier(
    topics: Sequence[TopicProfile],
    batch_size: int = 64,
    learned: Sequence[Example] = (),
    embedder: Embedder | None = None,
    background: bool = True,
) -> Classifier | None:
    """A classifier for ``topics``, or None (logged) when there are none or it can't load."""
    if not topics:
        return None
    embedder = embedder or shared_embedder()
    if embedder is None:
        why = classifier_unavailable()
        log.warning("classifier off: %s; topics %s use rules only", why, [t.slug for t in topics])
        return None
    return Classifier(embedder, topics, batch_size, learned, background)


def head_summary(classifier: Classifier) -> Mapping[str, tuple[int, int]]:
    """topic -> (positive, negative) rows its head was fitted on."""
    return {s: (h.positives, h.negatives) for s, h in classifier.heads.items()}
