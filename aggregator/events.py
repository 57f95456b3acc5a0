"""Events: the same news event covered by several outlets, one item in a topic feed.

Stories (aggregator/neardup.py) group *copies*: one text under several URLs. An event
groups *coverage*: the stories that different newsrooms wrote about one happening. Each
new story is compared with the entries of the events that were active within ``window``
of it, and joins the event of its best match when

    score = cosine + NAMES * names + TITLE * title - DECAY * days >= threshold

(without an embedding model: cosine = 0, the ``LEXICAL`` weights and ``lexical_threshold``)

* ``cosine``: the sentence embeddings (aggregator/embed.py) of headline + lead;
* ``names``: the share of the smaller set of names and numbers (capitalised words of the
  lead, numbers) that the other item also has;
* ``title``: the Jaccard similarity of the two headlines' terms (words; CJK text as
  character bigrams, as it has no spaces);
* ``days``: how far apart the two were published.

Two rules come before the score. An identical or near-identical headline (title Jaccard
>= ``same_title``, at least ``MIN_TITLE_TERMS`` terms) joins whatever the summaries say;
headlines whose numbers disagree ("Magnitude 6.4" / "Magnitude 7.1") never join; within
one feed only the headline rule joins (briefings and market wraps read alike every day).

The window counts from each entry of the event, so the latest one keeps a developing
story open; ``cap`` bounds how long after its first entry an event can still grow.
docs/stories.md explains the formula and how the defaults were fitted.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

import numpy as np

from .embed import item_text, shared_embedder
from .neardup import _STOP, _lede, _names, _words
from .types import EventCandidate, EventSignature, ParsedEntry

MIN_TITLE_TERMS = 4


class Weights(NamedTuple):
    names: float
    title: float
    decay: float  # per day apart


# Fitted on half of the Giveme5W1H events with the project's own set as hard negatives
# (docs/stories.md); the thresholds are settings (feeds.yaml dedup.event_*). Beside the
# embeddings the shared names added only false merges (0 was best); without them the
# names carry the decision.
MODEL = Weights(names=0.0, title=0.5, decay=0.06)
LEXICAL = Weights(names=0.5, title=0.5, decay=0.06)

# Han, Hiragana, Katakana, Hangul: scripts written without spaces between words.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")


_KANA = re.compile(r"[\u3040-\u309f]+")  # Hiragana: particles and endings, not content


def cjk_terms(text: str) -> list[str]:
    """Character bigrams of each CJK run (a lone character as itself), but those of
    Hiragana alone: in Japanese they are particles and verb endings (は, を, した)."""
    out: list[str] = []
    for run in _CJK_RUN.findall(unicodedata.normalize("NFKC", text)):
        grams = [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]
        out.extend(g for g in grams if not _KANA.fullmatch(g))
    return out


@functools.lru_cache(maxsize=1 << 14)
def title_terms(title: str) -> tuple[str, ...]:
    """A headline's terms: folded words without stop words, and CJK bigrams."""
    words = {
        w
        for w, number, _ in _words(_CJK_RUN.sub(" ", title))
        if w not in _STOP and (len(w) > 1 or number)
    }
    return tuple(sorted(words | set(cjk_terms(title))))


def name_terms(title: str, text: str) -> tuple[str, ...]:
    """Names and numbers of an item: capitalised words and numbers of its lead, the
    numbers of its headline, and its CJK bigrams when it is written in CJK."""
    lede = _lede(text) if text.strip() and text.strip() != title.strip() else title
    found = _names(_words(_CJK_RUN.sub(" ", lede)))
    found |= {w for w, number, _ in _words(title) if number}
    if _CJK.search(lede):
        found |= set(cjk_terms(lede[:200]))
    return tuple(sorted(found))


KEY_TERMS = 16  # headline terms indexed per entry (the longest first)
KEY_NAMES = 8  # names and numbers indexed per entry


def lookup_keys(sig: EventSignature) -> tuple[int, ...]:
    """The keys under which an entry is found as an event candidate: signed 64-bit hashes
    of its longest headline terms and names. Coverage of one event shares a headline term
    or a name (a place, a person, a number) nearly always; the decision reads the rest."""

    def pick(terms: Sequence[str], n: int) -> list[str]:
        return sorted(terms, key=lambda t: (-len(t), t))[:n]

    chosen = [f"t:{t}" for t in pick(sig.title, KEY_TERMS)]
    chosen += [f"n:{t}" for t in pick(sig.terms, KEY_NAMES)]
    return tuple(
        sorted(
            {
                int.from_bytes(
                    hashlib.blake2b(c.encode(), digest_size=8).digest(), "little", signed=True
                )
                for c in chosen
            }
        )
    )


def signature(entry: ParsedEntry, vector: np.ndarray | None) -> EventSignature:
    return EventSignature(
        published=entry.published,
        vector=None if vector is None else vector.astype(np.float16).tobytes(),
        terms=name_terms(entry.title, entry.text),
        title=title_terms(entry.title),
    )


def _overlap(a: Sequence[str], b: Sequence[str]) -> tuple[float, int]:
    sa, sb = set(a), set(b)
    shared = len(sa & sb)
    smaller = min(len(sa), len(sb))
    return (shared / smaller if smaller else 0.0), shared


def _jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def _numbers_disagree(a: Sequence[str], b: Sequence[str]) -> bool:
    na = {w for w in a if w[0].isdigit()}
    nb = {w for w in b if w[0].isdigit()}
    return bool(na and nb and not (na <= nb or nb <= na))


def _cosine(a: bytes | None, b: bytes | None) -> float | None:
    if a is None or b is None or len(a) != len(b):
        return None
    va = np.frombuffer(a, dtype=np.float16).astype(np.float32)
    vb = np.frombuffer(b, dtype=np.float16).astype(np.float32)
    return float(va @ vb)


@dataclass(frozen=True)
class Reason:
    """Why two items are (or are not) one event: the parts of the score."""

    score: float
    cosine: float | None
    names: float
    shared_names: tuple[str, ...]
    title: float
    days: float
    rule: str  # "same headline", "score", or why not: "numbers differ", "below threshold"

    @property
    def joins(self) -> bool:
        return self.rule in ("same headline", "score")

    def __str__(self) -> str:
        cos = "none" if self.cosine is None else f"{self.cosine:.2f}"
        w = LEXICAL if self.cosine is None else MODEL
        names = ", ".join(self.shared_names[:8]) or "none"
        return (
            f"{self.rule}: score {self.score:.2f} = cosine {cos} + {w.names} x names "
            f"{self.names:.2f} ({names}) + {w.title} x headline {self.title:.2f} "
            f"- {w.decay} x {self.days:.1f} days"
        )


@dataclass(frozen=True)
class EventMatcher:
    """Decides which event a new story joins, from its first entry's signature."""

    threshold: float = 0.94
    lexical_threshold: float = 0.54
    same_title: float = 0.8
    window: timedelta = timedelta(days=3)
    cap: timedelta = timedelta(days=14)
    # Off: lexical signals only (tests, or a deployment without the model's extra).
    use_model: bool = True

    def signatures(self, entries: Sequence[ParsedEntry]) -> list[EventSignature]:
        """Each entry's signature; the model runs once for all of them (and not at all
        for texts it embedded before in this process, e.g. for tagging)."""
        embedder = shared_embedder() if self.use_model and entries else None
        vectors: Sequence[np.ndarray | None]
        if embedder is None:
            vectors = [None] * len(entries)
        else:
            vectors = list(embedder.encode([item_text(e.title, e.text) for e in entries]))
        return [signature(e, v) for e, v in zip(entries, vectors, strict=True)]

    def _plausible(
        self, new: EventSignature, candidates: Sequence[EventCandidate]
    ) -> list[EventCandidate]:
        """The candidates that can pass: a headline sharing enough terms for the headline
        rule, or a cosine from which the best headline could reach the threshold. All
        cosines in one product, so thousands of candidates cost a few milliseconds."""
        mine = set(new.title)
        with_vectors = [
            c for c in candidates if new.vector is not None and c.signature.vector is not None
        ]
        ok: set[int] = set()
        if with_vectors and new.vector is not None and len(with_vectors) > 64:
            v = np.frombuffer(new.vector, dtype=np.float16).astype(np.float32)
            width = len(new.vector)
            rows = [c for c in with_vectors if len(c.signature.vector or b"") == width]
            m = np.frombuffer(
                b"".join(c.signature.vector or b"" for c in rows), dtype=np.float16
            ).reshape(len(rows), -1)
            cos = m.astype(np.float32) @ v
            # The most a headline can add; the day decay can only take away.
            reach = cos + MODEL.title
            ok = {id(c) for c, r in zip(rows, reach, strict=True) if r >= self.threshold}
            return [
                c
                for c in candidates
                if id(c) in ok
                or c.signature.vector is None
                or len(c.signature.vector) != width
                or len(mine.intersection(c.signature.title)) >= MIN_TITLE_TERMS
            ]
        return list(candidates)

    def compare(self, new: EventSignature, old: EventSignature) -> Reason:
        days = abs((new.published - old.published).total_seconds()) / 86400
        title = _jaccard(new.title, old.title)
        names, _ = _overlap(new.terms, old.terms)
        shared = tuple(sorted(set(new.terms) & set(old.terms)))
        cosine = _cosine(new.vector, old.vector)
        w = LEXICAL if cosine is None else MODEL
        score = (cosine or 0.0) + w.names * names + w.title * title - w.decay * days

        def reason(rule: str) -> Reason:
            return Reason(score, cosine, names, shared, title, days, rule)

        if days > self.window.total_seconds() / 86400:
            return reason("too far apart")
        if _numbers_disagree(new.title, old.title):
            return reason("numbers differ")
        if title >= self.same_title and min(len(new.title), len(old.title)) >= MIN_TITLE_TERMS:
            return reason("same headline")
        bar = self.threshold if cosine is not None else self.lexical_threshold
        return reason("score" if score >= bar else "below threshold")

    def choose(
        self,
        new: EventSignature,
        story_id: int,
        feed_id: int,
        candidates: Sequence[EventCandidate],
    ) -> tuple[int, Reason] | None:
        """The event (lead story id) of the best-matching candidate, with why; None when
        none matches. ``candidates`` carry their event's first date (for the cap) and
        nothing else: what admins split or joined is already in the stored events, which
        matching never changes."""
        best: tuple[float, int, Reason] | None = None
        for c in self._plausible(new, candidates):
            if c.story_id == story_id or c.event_id == story_id:
                continue
            if (new.published - c.event_first).total_seconds() > self.cap.total_seconds():
                continue
            r = self.compare(new, c.signature)
            # One outlet's recurring items (briefings, market wraps, templates) read alike:
            # within a feed only the headline rule joins.
            if not r.joins or (c.feed_id == feed_id and r.rule != "same headline"):
                continue
            # A headline rule beats any score; then the highest score; the oldest event on ties.
            key = (2.0 + r.score if r.rule == "same headline" else r.score, -c.event_id)
            if best is None or key > (best[0], -best[1]):
                best = (key[0], c.event_id, r)
        return (best[1], best[2]) if best else None
