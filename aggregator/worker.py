"""The claim loop of ``aggregator worker``: lease due feeds from the shared store, poll them.

Any number of workers (processes, machines) run this against one database::

    every claim_every (APScheduler), and again whenever a poll ends while feeds were waiting:
        urls = repo.claim_due_feeds(me, now, lease, free slots)   # leases, SKIP LOCKED
        for url in urls: start poll(url)        # its save sets next_poll_at, drops the lease

A worker never holds more feeds than it polls at once, so the rest stay free for the
others. Every tick past a third of a lease it renews the leases of its polls still in flight
(a poll may wait behind the per-host limit or a slow server for longer than a lease), so
only a dead worker's leases expire (the lease must be longer than three claim_every ticks).
Claims and renewals go through a thread of their own: queued behind the polls' store work
in the shared thread pool, a renewal came late on a loaded machine and a live worker's
feed was taken over and fetched twice.

When the store is down the claim fails; the worker logs it, waits (doubling up to
``MAX_CLAIM_BACKOFF``) and carries on by itself once the store answers again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .exceptions import StorageError

log = logging.getLogger("aggregator.worker")

MAX_CLAIM_BACKOFF = timedelta(seconds=60)


class LeaseStore(Protocol):
    def claim_due_feeds(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[str]: ...

    def release_leases(self, owner: str, urls: list[str]) -> None: ...

    def renew_leases(self, owner: str, urls: list[str], until: datetime) -> int: ...


def worker_id() -> str:
    """host:pid:random, so a restarted process never mistakes an old lease for its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class ClaimLoop:
    def __init__(
        self,
        store: LeaseStore,
        poll: Callable[[str], Awaitable[object]],
        *,
        lease: timedelta,
        claim_every: timedelta,
        capacity: int,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.owner = owner or worker_id()
        self._poll = poll
        self.lease = lease
        self.claim_every = claim_every
        self.capacity = capacity
        self.clock = clock
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.claim_failures = 0
        self._retry_at: datetime | None = None
        self._renewed_at: datetime | None = None
        self._more_waiting = False
        self._stopping = False
        self._lock = asyncio.Lock()
        self._scheduler: AsyncIOScheduler | None = None
        self._leases = ThreadPoolExecutor(1, thread_name_prefix="leases")

    async def _store(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A lease call (claim, renew, release) on this loop's own store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._leases, functools.partial(fn, *args))

    def start(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.tick,
            trigger=IntervalTrigger(seconds=self.claim_every.total_seconds(), timezone=UTC),
            id="claim",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()
        log.info(
            "worker started owner=%s capacity=%d lease=%s", self.owner, self.capacity, self.lease
        )

    async def tick(self) -> list[str]:
        """Claim what this worker has room for and start polling it; the URLs claimed."""
        if self._stopping or self._lock.locked():
            return []
        async with self._lock:
            now = self.clock()
            if self._retry_at is not None and now < self._retry_at:
                return []
            await self._renew(now)
            free = self.capacity - len(self.in_flight)
            if free <= 0:
                self._more_waiting = True
                return []
            try:
                urls: list[str] = await self._store(
                    self.store.claim_due_feeds, self.owner, now, self.lease, free
                )
            except StorageError as e:
                self.claim_failures += 1
                wait = min(self.claim_every * 2 ** min(self.claim_failures, 10), MAX_CLAIM_BACKOFF)
                self._retry_at = now + wait
                log.warning(
                    "claim failed owner=%s failures=%d retry_in=%ds error=%s",
                    self.owner,
                    self.claim_failures,
                    wait.total_seconds(),
                    str(e).splitlines()[0][:200],
                )
                return []
            if self.claim_failures:
                log.info("claims work again owner=%s", self.owner)
            self.claim_failures, self._retry_at = 0, None
            self._more_waiting = len(urls) == free
            for url in urls:
                self.in_flight[url] = asyncio.create_task(self._run(url), name=f"poll {url}")
            return urls

    async def _renew(self, now: datetime) -> None:
        if not self.in_flight:
            self._renewed_at = None
            return
        if self._renewed_at is not None and now - self._renewed_at < self.lease / 3:
            return
        # Claims set lease_until = claim time + lease, so the oldest in-flight lease has
        # about two thirds of a lease left here: room for a tick that comes late.
        try:
            await self._store(
                self.store.renew_leases, self.owner, list(self.in_flight), now + self.lease
            )
            self._renewed_at = now
        except StorageError as e:
            log.warning("could not renew leases owner=%s error=%s", self.owner, e)

    async def _run(self, url: str) -> None:
        try:
            await self._poll(url)
        except asyncio.CancelledError:
            raise
        except Exception:
            # poll_feed never raises; this keeps a bug from stopping the worker all the same.
            log.exception("poll crashed feed=%s", url)
        finally:
            self.in_flight.pop(url, None)
            if self._more_waiting and not self._stopping:
                # Do not leave a slot idle until the next tick while feeds are due.
                asyncio.get_running_loop().create_task(self.tick())

    async def drain(self) -> None:
        """Wait for the polls in flight (tests, and a clean stop)."""
        while self.in_flight:
            await asyncio.gather(*self.in_flight.values(), return_exceptions=True)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let running polls finish for ``grace`` s, give back the rest."""
        self._stopping = True
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._scheduler = None
        # A tick in progress may still be claiming: its polls are ours to finish or give back.
        async with self._lock:
            pass
        tasks = list(self.in_flight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        left = list(self.in_flight)
        for task in self.in_flight.values():
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if left:
            try:
                await self._store(self.store.release_leases, self.owner, left)
            except StorageError as e:
                log.warning("could not give back leases owner=%s error=%s", self.owner, e)
        self._leases.shutdown(wait=False)
