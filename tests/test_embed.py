"""The shared embedder: one model per process, unit vectors, each text through the model once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aggregator.embed import ITEM_CHARS, CachedEmbedder, item_text, shared_embedder


class Counting:
    """The real model's batch encoder, counting the texts it is asked to embed."""

    def __init__(self, encode: Any) -> None:
        self.encode = encode
        self.seen: list[str] = []

    def __call__(self, texts: Sequence[str]) -> Any:
        self.seen.extend(texts)
        return self.encode(list(texts))


def test_the_process_shares_one_embedder() -> None:
    a = shared_embedder()
    assert a is not None
    assert shared_embedder() is a


def test_vectors_are_unit_rows_in_order_and_similar_texts_are_close() -> None:
    e = shared_embedder()
    assert e is not None
    texts = [
        "Foreign ministers meet to revive stalled peace talks",
        "Diplomats gather to restart the frozen peace negotiations",
        "Striker scores twice as champions stay top of the league",
    ]
    v = e.encode(texts)
    assert v.shape == (3, e.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    # e5's cosines are crowded (unrelated texts score ~0.75): a margin of 0.1.
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.1


def test_a_text_seen_before_is_not_embedded_again() -> None:
    base = shared_embedder()
    assert isinstance(base, CachedEmbedder)
    counting = Counting(base._encode)
    e = CachedEmbedder(counting, base.dim, cache_size=2)
    counting.seen.clear()  # the dimension probe
    first = e.encode(["alpha beta", "gamma delta", "alpha beta"])
    assert counting.seen == ["alpha beta", "gamma delta"]
    again = e.encode(["gamma delta", "alpha beta"])
    assert counting.seen == ["alpha beta", "gamma delta"]
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[1], first[0])
    e.encode(["epsilon"])  # the cache holds 2: the least recently used text goes
    e.encode(["alpha beta", "gamma delta"])
    assert counting.seen == ["alpha beta", "gamma delta", "epsilon", "gamma delta"]


def test_item_text_is_headline_then_lead_within_the_bound() -> None:
    assert item_text("Title", "Lead text") == "Title. Lead text"
    assert item_text(None, " only lead ") == "only lead"
    assert item_text("Only title", "") == "Only title"
    assert len(item_text("t", "x" * 5000)) == ITEM_CHARS
