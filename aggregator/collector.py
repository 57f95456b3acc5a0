"""The pace of the cyclic garbage collector in our long-running processes.

CPython collects its youngest generation every 700 net container allocations (its
default), and every tenth such collection also walks the next generation; survivors age
towards the full collections that walk every object the process holds. asyncio, anyio
and httpx allocate hundreds of containers for each request, so a poller collected all the
time: 7-8 full collections in two 304 rounds of 2,000 feeds. bench/poll.py's server and
bare httpx 304 loop, 2,000 feeds, with the collector on and off: it took 17% of the loop's
CPU in a fresh process and 27-32% after a first fetch (140,000 objects alive, a service's
steady state).

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
