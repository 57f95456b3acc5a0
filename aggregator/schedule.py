"""When to poll: pure timing functions, and the APScheduler jobs that follow them.

The timing is plain arithmetic on a ``now`` passed in, so tests drive a clock:

* after a success: ``now + interval``, with up to 10% jitter (at most 2 minutes) so feeds
  configured alike drift apart instead of polling in lockstep;
* after ``n`` consecutive errors: ``now + min(interval * 2**n, MAX_BACKOFF)``, jittered;
* at start: a stored ``next_poll_at`` in the future is kept (a restart resumes the plan);
  otherwise feeds are spread evenly over ``min(interval, STARTUP_SPREAD)`` so a restart does
  not poll every feed in the same second.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("aggregator.schedule")

MAX_BACKOFF = timedelta(hours=24)
STARTUP_SPREAD = timedelta(seconds=60)
JITTER_FRACTION = 0.1
MAX_JITTER = timedelta(minutes=2)


def next_poll_at(
    now: datetime,
    interval: timedelta,
    consecutive_errors: int = 0,
    rand: Callable[[], float] = random.random,
) -> datetime:
    """When to poll a feed next, given its interval and how many polls in a row failed."""
    delay = interval
    if consecutive_errors > 0:
        # Cap the exponent too: 2**n overflows timedelta long before n is absurd.
        factor = 2 ** min(consecutive_errors, 20)
        delay = min(interval * factor, max(MAX_BACKOFF, interval))
    jitter = min(delay * JITTER_FRACTION, MAX_JITTER) * rand()
    return now + delay + jitter


def first_poll_at(
    now: datetime,
    interval: timedelta,
    stored_next: datetime | None,
    index: int,
    count: int,
) -> datetime:
    """When to poll a feed first after a (re)start."""
    if stored_next is not None and stored_next > now:
        # Never further out than one interval: the interval may have been shortened.
        return min(stored_next, now + interval)
    spread = min(interval, STARTUP_SPREAD)
    return now + spread * (index / max(count, 1))


PollFn = Callable[[str], Awaitable[datetime | None]]


class PollScheduler:
    """One APScheduler job per enabled feed; each poll says when the next one is due.

    A poll returning None means the feed is not to be polled again (e.g. 410 Gone): its
    job is removed.
    """

    def __init__(self, poll: PollFn) -> None:
        self._poll = poll
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._jobs: set[str] = set()

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @property
    def feed_urls(self) -> set[str]:
        return set(self._jobs)

    def schedule(
        self,
        feeds: Sequence[tuple[str, timedelta, datetime | None]],
        now: datetime | None = None,
    ) -> None:
        """Make the jobs match ``feeds`` (url, interval, stored next poll): add, change, drop."""
        now = now or datetime.now(UTC)
        wanted = {url for url, _, _ in feeds}
        for url in self._jobs - wanted:
            self._scheduler.remove_job(url)
        for i, (url, interval, stored_next) in enumerate(feeds):
            first = first_poll_at(now, interval, stored_next, i, len(feeds))
            trigger = IntervalTrigger(seconds=interval.total_seconds(), timezone=UTC)
            self._scheduler.add_job(
                self._run,
                trigger=trigger,
                args=[url],
                id=url,
                name=url,
                next_run_time=first,
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        self._jobs = wanted

    async def _run(self, url: str) -> None:
        try:
            next_at = await self._poll(url)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The pipeline records its own errors; this is a last line so one feed's bug
            # never stops the scheduler or the other feeds.
            log.exception("poll crashed feed=%s", url)
            return
        job: Any = self._scheduler.get_job(url)
        if job is None:
            return
        if next_at is None:
            job.remove()
            self._jobs.discard(url)
        else:
            job.modify(next_run_time=next_at)
