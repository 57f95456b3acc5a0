"""When to poll: pure timing functions, and the APScheduler jobs that follow them.

The timing is plain arithmetic on a ``now`` passed in, so tests drive a clock. The formula
(docs/polling.md has the reasoning)::

    base  = interval                                   # the feed's configured interval
    if adaptive and the feed's dated items show a rate:
        base = clamp(item_gap, min_interval, max_interval)
    floor = max(Cache-Control max-age, Expires - now, <ttl>, sy:updatePeriod/Frequency)
    base  = max(base, min(floor, max_interval))        # never sooner than the feed asks
    delay = base                                       # after a success (or a 304)
    delay = min(base * 2**errors, max(MAX_BACKOFF, base))   # after consecutive errors
    next  = now + delay + rand() * min(delay * 10%, 2 min)  # jitter
    next  = max(next, now + Retry-After)               # 429/503 (pipeline)
    next  = the start of the next hour outside <skipHours>/<skipDays> (UTC), if inside

``item_gap`` is ``(now - oldest) / n`` over the ``n`` dated items published in the last 7
days: the mean time between new items, with the quiet time since the last one counted.
A feed with no item in a week has no rate and polls at ``max_interval`` when adaptive.

At start, a stored ``next_poll_at`` in the future is kept (a restart resumes the plan);
otherwise feeds are spread evenly over ``min(interval, STARTUP_SPREAD)`` so a restart does
not poll every feed in the same second.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("aggregator.schedule")

MAX_BACKOFF = timedelta(hours=24)
STARTUP_SPREAD = timedelta(seconds=60)
JITTER_FRACTION = 0.1
MAX_JITTER = timedelta(minutes=2)
RATE_WINDOW = timedelta(days=7)
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Policy:
    """The admin's bounds on adaptation (``polling:`` in feeds.yaml)."""

    min_interval: timedelta = timedelta(minutes=5)
    max_interval: timedelta = timedelta(hours=24)
    adaptive: bool = True


@dataclass(frozen=True)
class Hints:
    """What the feed and its server said about polling it, all optional."""

    max_age: timedelta | None = None  # Cache-Control: max-age
    expires: datetime | None = None  # Expires
    ttl: timedelta | None = None  # RSS <ttl>
    update_period: timedelta | None = None  # sy:updatePeriod / sy:updateFrequency
    skip_hours: frozenset[int] = frozenset()  # UTC hours
    skip_days: frozenset[int] = frozenset()  # weekdays, Monday = 0
    item_gap: timedelta | None = None  # mean time between new items (see item_gap())


NO_HINTS = Hints()
DEFAULT_POLICY = Policy()


class Effective(NamedTuple):
    """The delay the formula gives before jitter, and what set it, for people to read."""

    delay: timedelta
    reason: str  # "configured", "adaptive rate", "feed hint (ttl)", "backoff (3 errors)"


def effective_interval(
    interval: timedelta,
    consecutive_errors: int = 0,
    hints: Hints = NO_HINTS,
    policy: Policy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> Effective:
    """The formula of the module docstring up to ``delay``, with the term that decided it."""
    base, reason = interval, "configured"
    if policy.adaptive and hints.item_gap is not None:
        adapted = min(max(hints.item_gap, policy.min_interval), policy.max_interval)
        if adapted != base:
            base, reason = adapted, "adaptive rate"
    asked = [
        (h, name)
        for h, name in (
            (hints.max_age, "max-age"),
            (hints.ttl, "ttl"),
            (hints.update_period, "sy:updatePeriod"),
        )
        if h is not None
    ]
    if hints.expires is not None and now is not None:
        asked.append((hints.expires - now, "Expires"))
    if asked:
        longest, name = max(asked, key=lambda a: a[0])
        floor = min(longest, policy.max_interval)
        if floor > base:
            base, reason = floor, f"feed hint ({name})"
    delay = base
    if consecutive_errors > 0:
        # Cap the exponent too: 2**n overflows timedelta long before n is absurd.
        factor = 2 ** min(consecutive_errors, 20)
        delay = min(base * factor, max(MAX_BACKOFF, base))
        errors = "1 error" if consecutive_errors == 1 else f"{consecutive_errors} errors"
        reason = f"backoff ({errors})"
    return Effective(delay, reason)


def next_poll_at(
    now: datetime,
    interval: timedelta,
    consecutive_errors: int = 0,
    rand: Callable[[], float] = random.random,
    hints: Hints = NO_HINTS,
    policy: Policy = DEFAULT_POLICY,
) -> datetime:
    """When to poll a feed next (the formula is in the module docstring)."""
    delay = effective_interval(interval, consecutive_errors, hints, policy, now).delay
    jitter = min(delay * JITTER_FRACTION, MAX_JITTER) * rand()
    return skip(now + delay + jitter, hints.skip_hours, hints.skip_days)


def skip(when: datetime, hours: frozenset[int], days: frozenset[int]) -> datetime:
    """``when``, or the start of the first later UTC hour outside the skipped hours/days."""
    if not hours and not days:
        return when
    t = when.astimezone(UTC)
    for step in range(7 * 24 + 1):
        if t.hour not in hours and t.weekday() not in days:
            return t if step == 0 else t.replace(minute=0, second=0, microsecond=0)
        t = t.replace(minute=0, second=0, microsecond=0) + _HOUR
    return when  # every hour of the week skipped: the feed is confused, not asleep


def item_gap(published: Sequence[datetime], now: datetime) -> timedelta | None:
    """Mean time between items over the last week, counting the quiet since the last one."""
    recent = [p for p in published if now - RATE_WINDOW < p <= now]
    if not recent:
        return None
    return (now - min(recent)) / len(recent)


def header_hints(
    headers: Mapping[str, str], now: datetime
) -> tuple[timedelta | None, datetime | None]:
    """``(max_age, expires)`` from response headers (lower-cased names)."""
    max_age = None
    for directive in headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() == "max-age" and value.strip().strip('"').isdigit():
            max_age = timedelta(seconds=min(int(value.strip().strip('"')), 10**9))
    expires = None
    if raw := headers.get("expires"):
        try:
            expires = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            expires = None  # "0" and "-1" are common and mean "already expired"
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
    return max_age, expires


def to_json(hints: Hints) -> dict[str, Any]:
    """The body's hints as stored between polls (header hints come with every response)."""
    out: dict[str, Any] = {}
    for key in ("ttl", "update_period", "item_gap"):
        value = getattr(hints, key)
        if value is not None:
            out[key] = value.total_seconds()
    if hints.skip_hours:
        out["skip_hours"] = sorted(hints.skip_hours)
    if hints.skip_days:
        out["skip_days"] = sorted(hints.skip_days)
    return out


def from_json(data: Mapping[str, Any] | None) -> Hints:
    data = data or {}

    def seconds(key: str) -> timedelta | None:
        value = data.get(key)
        return timedelta(seconds=float(value)) if isinstance(value, int | float) else None

    return Hints(
        ttl=seconds("ttl"),
        update_period=seconds("update_period"),
        item_gap=seconds("item_gap"),
        skip_hours=frozenset(int(h) for h in data.get("skip_hours", ())),
        skip_days=frozenset(int(d) for d in data.get("skip_days", ())),
    )


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
        self.update(feeds, self._jobs - wanted, now)

    def update(
        self,
        feeds: Sequence[tuple[str, timedelta, datetime | None]],
        remove: Iterable[str] = (),
        now: datetime | None = None,
    ) -> None:
        """(Re)schedule only ``feeds`` and drop ``remove``; every other job keeps its time.

        A hot reload uses this, so an edit of one feed does not move the others' polls.
        """
        now = now or datetime.now(UTC)
        for url in remove:
            if url in self._jobs:
                self._jobs.discard(url)
                if self._scheduler.get_job(url) is not None:
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
            self._jobs.add(url)

    def interval(self, url: str) -> timedelta | None:
        """The interval ``url`` is scheduled with (None: not scheduled)."""
        job: Any = self._scheduler.get_job(url)
        if job is None:
            return None
        return job.trigger.interval  # type: ignore[no-any-return]

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
