"""Made-up news text for the benchmarks, with the word statistics of real news.

News text has a large vocabulary with a few very common words (Zipf): the common news
words below first, then 20,000 made-up ones. Two generated stories then share words the
way two real ones do, not all of theirs, which would make every item a near-duplicate of
every other and turn a whole benchmark run into a handful of enormous stories.
"""

from __future__ import annotations

import itertools
import random

WORDS = (
    "minister council budget election storm flood coast power market shares bank rates "
    "inflation striker goal league club season museum gallery exhibition bronze chip "
    "processor accelerator software startup funding court judge ruling appeal hospital "
    "doctors nurses strike vaccine study researchers climate emissions carbon wind solar "
    "railway station delays commuters airport flights border talks treaty summit leaders "
    "embassy sanctions ambassador diplomats "
    "village residents council housing rents mortgage energy prices winter heating school "
    "teachers pupils exams university students fees festival music album concert film "
    "director actor award novel author prize police arrest investigation fraud company "
    "profits jobs factory workers union wages harvest farmers drought river bridge road"
).split()


def _vocabulary() -> tuple[list[str], list[float]]:
    rng = random.Random(0)
    syllables = "ka ro min ta ve lo sen dar pi cu bel mor tan gri fe nu sol ad ex ian".split()
    made = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(24_000)}
    words = WORDS + sorted(made - set(WORDS))[:20_000]
    weights = [1 / (rank + 100) for rank in range(len(words))]
    return words, list(itertools.accumulate(weights))


_VOCAB, _CUM_WEIGHTS = _vocabulary()


def sentence(rng: random.Random, n: int) -> str:
    """``n`` words drawn with news-like frequencies, capitalised."""
    words = rng.choices(_VOCAB, cum_weights=_CUM_WEIGHTS, k=n)
    return " ".join(words).capitalize()
