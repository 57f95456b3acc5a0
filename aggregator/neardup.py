"""Near-duplicate stories: the same news rewritten by different outlets.

Two steps, so the cost of one item does not depend on how many are stored:

1. **Lookup** (indexed): every entry gets a MinHash signature (datasketch's scheme) of its features,
   cut into LSH bands; each band is hashed to a 64-bit *bucket* key. The store keeps
   (bucket, entry) rows under an index, so finding the entries that share a bucket with a
   new item is a handful of index probes, whatever the table size. A second, small signature
   of the title alone gives short (title-only) items their own buckets.
2. **Decision** (exact, on the few candidates): the Jaccard similarity of the two feature
   sets, compared with the configured threshold. The feature sets are kept (as 32-bit
   hashes), so the decision is exact and the MinHash estimate only has to find candidates.

Features are the words of the title and the first words of the text, lower-cased, with
stop words dropped and plurals folded; names (capitalised words) and numbers count three
times, because rewrites keep the who/where/how-many and reword the rest, while two
different earthquakes share every word but those. See docs/dev.md for the measurements
behind these choices (vs. SimHash, shingles, weights).

Rules on top of the score:

* **short items** (no text beyond the title) merge only when the titles match closely
  (overlap >= ``title_threshold``, at least 3 shared words) *and* a second signal agrees:
  the same link host, or publication within 24 hours of each other;
* **one feed** rarely carries the same story twice, but recurring items (daily briefings,
  market wraps, local templates) look alike: two entries of the same feed merge only when
  their titles match as well (Jaccard >= ``title_threshold``), as a correction re-issued
  under the same title does;
* when a title is all there is to compare (short items, or two entries of one feed), titles
  whose numbers disagree (dates, magnitudes, counts, episode numbers) are different items;
* only entries published within ``window`` of each other are compared.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import numpy as np

from .types import Fingerprint, NearCandidate, ParsedEntry

# Changing any of these changes every stored bucket: a new index must then be built
# (a migration), so they are constants, not settings.
TEXT_PERM, TEXT_ROWS = 144, 3  # 48 bands of 3 rows: see docs/dev.md (recall vs crowding)
TITLE_PERM, TITLE_ROWS = 16, 2  # 8 bands over title words
SEED = 4
TEXT_WORDS = 150  # the lede: where rewrites agree; long bodies add only noise and cost
ENTITY_WEIGHT = 3
SHORT_WORDS = 8  # fewer words of text than this (beyond the title): a short item
MIN_SHARED_TITLE_WORDS = 3
SAME_DAY = timedelta(hours=24)

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)?")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|[\"“]\s*)")
_STOP = frozenset(
    """a about after again against all also am an and any are as at be because been before
    being between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my no nor not now of off on once only or other our ours out over own
    same say said says she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours new one two three first last
    year years week day days people according told""".split()
)
_NOT_NAMES = frozenset(
    """monday tuesday wednesday thursday friday saturday sunday january february march
    april may june july august september october november december""".split()
)


def _fold(word: str) -> str:
    w = unicodedata.normalize("NFKC", word).casefold().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def _words(text: str) -> list[tuple[str, bool, bool]]:
    """(folded word, is a number, is written capitalised) for each word of ``text``."""
    return [_word(t) for t in _TOKEN.findall(text)]


# News repeats its words (Zipf): most of them were read before, in this process.
@functools.lru_cache(maxsize=1 << 16)
def _word(token: str) -> tuple[str, bool, bool]:
    if token[0].isdigit():
        return token.replace(",", ""), True, False
    return _fold(token), False, token[0].isupper()


def _names(words: Sequence[tuple[str, bool, bool]]) -> set[str]:
    """Capitalised words of running text that are not stop words or dates: likely names."""
    return {
        w
        for w, number, capital in words
        if number or (capital and w not in _STOP and w not in _NOT_NAMES)
    }


def _hash32(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8"))


def title_words(title: str) -> tuple[str, ...]:
    return _title_words(_words(title))


def _title_words(words: Sequence[tuple[str, bool, bool]]) -> tuple[str, ...]:
    # Numbers of one digit too: "Briefing (3)" and "Briefing (4)" differ only by them.
    return tuple(sorted({w for w, number, _ in words if w not in _STOP and (len(w) > 1 or number)}))


def _numbers_disagree(a: Sequence[str], b: Sequence[str]) -> bool:
    """Both titles carry numbers and neither's numbers are all in the other's.

    "Killed 12" and "7.1 quake killed 12" agree; "Briefing, 24 November" and "Briefing,
    25 November", or "Magnitude 6.4" and "Magnitude 7.1", are different items.
    """
    na = {w for w in a if w[0].isdigit()}
    nb = {w for w in b if w[0].isdigit()}
    return bool(na and nb and not (na <= nb or nb <= na))


def features(title: str, text: str) -> tuple[int, ...]:
    """The sorted 32-bit hashes of the weighted word features of title + lede."""
    return _features(_words(title), _words(_lede(text)))


def _lede(text: str) -> str:
    return " ".join(text.split()[:TEXT_WORDS])


def _features(
    title: Sequence[tuple[str, bool, bool]], lede: Sequence[tuple[str, bool, bool]]
) -> tuple[int, ...]:
    names = _names(lede)
    out: set[int] = set()
    for w, number, _ in (*title, *lede):
        if w in _STOP or (len(w) < 2 and not number):
            continue
        out.update(_feature_hashes(w, number or w in names))
    return tuple(sorted(out))


@functools.lru_cache(maxsize=1 << 16)
def _feature_hashes(word: str, entity: bool) -> tuple[int, ...]:
    """A word's feature hashes: one, or ``ENTITY_WEIGHT`` for a name or number."""
    if not entity:
        return (_hash32(word),)
    return (_hash32(word), *(_hash32(f"{word}#{i}") for i in range(1, ENTITY_WEIGHT)))


# MinHash as datasketch 2.x computes it by default ("affine32": the MurmurHash3 finalizer,
# then h -> a * h + b mod 2^32 with odd a, drawn from numpy's RandomState(SEED)); made here
# because importing datasketch loads its LSH classes and scipy with them, about 55 MB in
# every ingest process, for these few lines. tests/test_neardup.py checks the signatures
# against datasketch's own, so stored buckets stay valid.
_FMIX32 = tuple(np.uint32(c) for c in (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16))
_EMPTY = np.uint32(0xFFFFFFFF)


@functools.cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(SEED)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _minhash(values: Iterable[int], num_perm: int) -> np.ndarray:
    """The MinHash signature of 32-bit feature hashes: ``num_perm`` uint32 minima."""
    hv = np.fromiter(values, dtype=np.uint32)
    if not hv.size:
        return np.full(num_perm, _EMPTY, dtype=np.uint32)
    s1, m1, s2, m2, s3 = _FMIX32
    hv ^= hv >> s1
    hv *= m1
    hv ^= hv >> s2
    hv *= m2
    hv ^= hv >> s3
    a, b = _permutations(num_perm)
    out: np.ndarray = (hv.reshape(-1, 1) * a + b).min(axis=0)
    return out


def _bands(kind: bytes, sig: np.ndarray, rows: int) -> list[int]:
    # The bytes of the whole signature once, sliced per band: converting each band's rows
    # on their own cost more than hashing them.
    raw = sig.astype("<u8").tobytes()
    width = rows * 8
    return [
        int.from_bytes(
            hashlib.blake2b(
                raw[n * width : (n + 1) * width], digest_size=8, person=person
            ).digest(),
            "little",
            signed=True,
        )
        for n, person in enumerate(_persons(kind, -(-len(sig) // rows)))
    ]


@functools.cache
def _persons(kind: bytes, bands: int) -> tuple[bytes, ...]:
    return tuple(kind + struct.pack("<H", n) for n in range(bands))


def buckets(feats: Sequence[int], title: Sequence[str]) -> tuple[int, ...]:
    """LSH bucket keys (signed 64-bit): text bands, then title bands."""
    keys: list[int] = []
    if feats:
        keys += _bands(b"text", _minhash(feats, TEXT_PERM), TEXT_ROWS)
    if title:
        keys += _bands(b"title", _minhash((_hash32(w) for w in title), TITLE_PERM), TITLE_ROWS)
    return tuple(keys)


def fingerprint(entry: ParsedEntry, canonical_url: str | None) -> Fingerprint | None:
    """What near-duplicate matching needs to know of an entry; None if it has no words."""
    text = entry.text if entry.text.strip() != entry.title.strip() else ""
    # Each text is split into words once, for the title words, the features and the length.
    title_w, lede_w = _words(entry.title), _words(_lede(text))
    title = _title_words(title_w)
    feats = _features(title_w, lede_w)
    if not feats and not title:
        return None
    text_words = [w for w, _, _ in lede_w if w not in _STOP]
    title_set = set(title)
    short = sum(w not in title_set for w in text_words) < SHORT_WORDS
    host = None
    link = canonical_url or entry.link
    if link:
        try:
            host = urlsplit(link).hostname
        except ValueError:
            host = None
    if host and host.startswith("www."):
        host = host[4:]
    return Fingerprint(
        features=feats,
        title=title,
        short=short,
        host=host,
        published=entry.published,
        buckets=buckets(feats, title),
    )


def jaccard(a: Sequence[int] | Sequence[str], b: Sequence[int] | Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def _title_overlap(a: Sequence[str], b: Sequence[str]) -> tuple[float, int]:
    sa, sb = set(a), set(b)
    shared = len(sa & sb)
    smaller = min(len(sa), len(sb))
    return (shared / smaller if smaller else 0.0), shared


@dataclass(frozen=True)
class Matcher:
    """Decides whether a new entry is a near-duplicate of stored ones, and of which story."""

    threshold: float = 0.35
    title_threshold: float = 0.8
    window: timedelta = timedelta(days=3)

    def score(self, new: Fingerprint, old: Fingerprint, same_feed: bool) -> float | None:
        """The similarity of two entries when they are one story, else None."""
        return self._score(new, old, same_feed, set(new.features))

    def _score(
        self, new: Fingerprint, old: Fingerprint, same_feed: bool, mine: set[int]
    ) -> float | None:
        # ``mine``: the new entry's features as a set, made once for all its candidates.
        if abs(new.published - old.published) > self.window:
            return None
        if same_feed and jaccard(new.title, old.title) < self.title_threshold:
            return None
        # Titles alone are weak evidence; different numbers in them are strong evidence.
        if (same_feed or new.short or old.short) and _numbers_disagree(new.title, old.title):
            return None
        if new.short or old.short:
            overlap, shared = _title_overlap(new.title, old.title)
            if overlap < self.title_threshold or shared < MIN_SHARED_TITLE_WORDS:
                return None
            same_host = new.host is not None and new.host == old.host
            # "The same day" as a span, not a calendar date: news breaking at 23:30 UTC is
            # still the same day's news at 00:10.
            same_day = abs(new.published - old.published) <= SAME_DAY
            return overlap if same_host or same_day else None
        # Feature tuples hold distinct hashes: the union needs no second set.
        shared = len(mine.intersection(old.features))
        union = len(mine) + len(old.features) - shared
        score = shared / union if union else 0.0
        return score if score >= self.threshold else None

    def choose(
        self, new: Fingerprint, feed_id: int, candidates: Sequence[NearCandidate]
    ) -> int | None:
        """The story of the most similar candidate that is a match (the oldest on ties)."""
        best: tuple[float, int] | None = None
        mine = set(new.features)
        for c in candidates:
            s = self._score(new, c.fingerprint, c.feed_id == feed_id, mine)
            if s is None:
                continue
            key = (s, -c.story_id)
            if best is None or key > best:
                best = key
        return -best[1] if best else None
