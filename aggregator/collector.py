"""The pace of the cyclic garbage collector in our long-running processes.

CPython collects its youngest generation every 700 net container allocations (its
default), and every tenth such collection also walks the next generation; survivors age
towards the full collections that walk every object the process holds. asyncio, anyio,
httpx and feedparser allocate hundreds of containers for each request or item, so a
poller ran the collector several times a poll. bench/poll.py at 2,000 feeds, the same bare
httpx 304 loop with the collector on and off: it took 17% of the loop's CPU in a fresh
process and 26-32% after a first fetch (140,000 objects alive, a service's steady state).

Reference counting frees everything but cycles at once, so collecting the young generation
every 50,000 allocations only lets a cycle (an exception and its traceback, say) wait a
few hundred polls longer; older generations keep their pace.
"""

from __future__ import annotations

import gc

YOUNG = 50_000


def pace_collector(young: int = YOUNG) -> None:
    """Collect the young generation every ``young`` allocations, older ones as before."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
