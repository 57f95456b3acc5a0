"""Several workers share one store: leases keep a feed from being polled twice at once.

On a real SQLite file and a real PostgreSQL; the feeds come from a real local HTTP server
that counts the requests per feed and how many of them ever ran at once.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from builders import config_yaml, news_items, rss
from conftest import FeedServer
from live import spawn, stop

from aggregator.service import Aggregator
from aggregator.types import FeedSpec, PollResult, PollSave
from aggregator.worker import ClaimLoop
from storage import Repository, open_repository

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def _feeds(repo: Repository, n: int) -> list[str]:
    urls = [f"https://example.com/{i}.rss" for i in range(n)]
    repo.sync_feeds([FeedSpec(url=u, title=None, tags=(), enabled=True) for u in urls])
    return urls


def _saved(repo: Repository, url: str, at: datetime, next_at: datetime) -> None:
    result = PollResult(url, "not_modified", 304, None, 0, 0, 0, 1)
    repo.save_poll(url, PollSave(result, at, next_poll_at=next_at))


def test_claims_never_overlap_and_skip_leased_and_not_due_feeds(db_url: str) -> None:
    repo = open_repository(db_url)
    try:
        urls = _feeds(repo, 10)
        _saved(repo, urls[0], NOW, NOW + timedelta(hours=1))  # not due
        a = repo.claim_due_feeds("a", NOW, LEASE, 4)
        b = repo.claim_due_feeds("b", NOW, LEASE, 100)
        assert len(a) == 4 and len(b) == 5
        assert not set(a) & set(b)
        assert set(a) | set(b) == set(urls[1:])
        assert repo.claim_due_feeds("c", NOW + timedelta(minutes=4), LEASE, 100) == []
    finally:
        repo.close()


def test_an_expired_lease_is_taken_over_and_a_save_gives_the_lease_back(db_url: str) -> None:
    repo = open_repository(db_url)
    try:
        urls = _feeds(repo, 3)
        assert len(repo.claim_due_feeds("dead", NOW, LEASE, 100)) == 3
        # The dead worker saved one of them before it died: that one is no longer due.
        _saved(repo, urls[0], NOW, NOW + timedelta(hours=1))
        later = NOW + LEASE + timedelta(seconds=1)
        assert sorted(repo.claim_due_feeds("alive", later, LEASE, 100)) == sorted(urls[1:])
        # A save releases the lease: due again later, the feed is claimable at once.
        _saved(repo, urls[1], later, later + timedelta(minutes=1))
        again = later + timedelta(minutes=2)
        assert repo.claim_due_feeds("other", again, LEASE, 100) == [urls[1]]
    finally:
        repo.close()


def _busy_worker(repo: Repository, clock: list[datetime], release: asyncio.Event) -> ClaimLoop:
    """A worker whose polls wait for ``release``, on a driven clock."""

    async def slow_poll(url: str) -> None:
        await release.wait()

    return ClaimLoop(
        repo,
        slow_poll,
        lease=LEASE,
        claim_every=timedelta(seconds=2),
        capacity=2,
        owner="busy",
        clock=lambda: clock[0],
    )


Scenario = Callable[
    [Repository, ClaimLoop, list[datetime], asyncio.Event, list[str]], Awaitable[None]
]


def _with_busy_worker(db_url: str, feeds: int, scenario: Scenario) -> None:
    """Run ``scenario(repo, worker, clock, release, urls)`` with ``feeds`` feeds due."""
    repo = open_repository(db_url)
    clock = [NOW]
    release = asyncio.Event()
    try:
        urls = _feeds(repo, feeds)

        async def run() -> None:
            await scenario(repo, _busy_worker(repo, clock, release), clock, release, urls)

        asyncio.run(run())
    finally:
        repo.close()


def test_a_busy_worker_renews_its_leases_and_only_a_dead_ones_lapse(db_url: str) -> None:
    """Polls stuck behind the per-host limit outlive a lease: the live worker keeps them."""

    async def scenario(
        repo: Repository,
        busy: ClaimLoop,
        clock: list[datetime],
        release: asyncio.Event,
        urls: list[str],
    ) -> None:
        assert sorted(await busy.tick()) == sorted(urls)
        for _ in range(12):  # an hour of ticks, two minutes apart, the polls still waiting
            clock[0] += timedelta(minutes=2)
            await busy.tick()
            assert repo.claim_due_feeds("other", clock[0], LEASE, 100) == []
        # The busy worker dies: no more renewals, and its feeds go after one lease.
        clock[0] += LEASE + timedelta(seconds=1)
        assert sorted(repo.claim_due_feeds("other", clock[0], LEASE, 100)) == sorted(urls)
        release.set()
        await busy.drain()
        await busy.stop()

    _with_busy_worker(db_url, 2, scenario)


def test_renewals_do_not_wait_behind_the_polls_store_work(db_url: str) -> None:
    """Every thread of the shared pool busy (polls saving): leases are renewed all the same."""

    async def scenario(
        repo: Repository,
        busy: ClaimLoop,
        clock: list[datetime],
        release: asyncio.Event,
        urls: list[str],
    ) -> None:
        assert sorted(await busy.tick()) == sorted(urls)
        gate = threading.Event()
        blockers = [asyncio.create_task(asyncio.to_thread(gate.wait)) for _ in range(64)]
        await asyncio.sleep(0.1)
        try:
            clock[0] += LEASE / 2
            await asyncio.wait_for(busy.tick(), timeout=10)
        finally:
            gate.set()
            await asyncio.gather(*blockers)
        assert {lease.until for lease in repo.leases()} == {clock[0] + LEASE}
        release.set()
        await busy.drain()
        await busy.stop()

    _with_busy_worker(db_url, 2, scenario)


def test_a_worker_stopped_during_a_claim_starts_nothing_after_it(db_url: str) -> None:
    """A stop that lands while a tick is claiming: that tick's polls are finished inside the
    stop, and nothing claims afterwards (a late tick found the lease thread shut down and
    its error went unretrieved, once per finished poll, at every worker shutdown)."""

    async def scenario(
        repo: Repository,
        busy: ClaimLoop,
        clock: list[datetime],
        release: asyncio.Event,
        urls: list[str],
    ) -> None:
        release.set()  # polls finish at once
        gate = threading.Event()
        claim = repo.claim_due_feeds

        def slow_claim(*args: object) -> list[str]:
            gate.wait(10)
            return claim(*args)  # type: ignore[arg-type]

        repo.claim_due_feeds = slow_claim  # type: ignore[method-assign]
        errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
        ticking = asyncio.create_task(busy.tick())
        await asyncio.sleep(0.2)  # the tick waits inside its claim
        stopping = asyncio.create_task(busy.stop())
        await asyncio.sleep(0.2)
        gate.set()
        await stopping
        polled = await ticking
        assert len(polled) == 2  # capacity 2: two of the four claimed, and polled
        assert not busy.in_flight
        await asyncio.sleep(0.2)
        gc.collect()
        assert errors == []
        assert await busy.tick() == []
        # No late tick claimed the other two (these fake polls save nothing: the two polled
        # keep their leases).
        assert sorted(claim("other", NOW, LEASE, 100)) == sorted(set(urls) - set(polled))

    _with_busy_worker(db_url, 4, scenario)


def test_disabled_feeds_are_never_claimed(db_url: str) -> None:
    repo = open_repository(db_url)
    try:
        urls = _feeds(repo, 2)
        repo.sync_feeds([FeedSpec(url=urls[0], title=None, tags=(), enabled=True)])
        assert repo.claim_due_feeds("a", NOW, LEASE, 100) == [urls[0]]
    finally:
        repo.close()


def test_queue_lag_is_the_age_of_the_most_overdue_feed(db_url: str) -> None:
    repo = open_repository(db_url)
    try:
        urls = _feeds(repo, 2)
        assert repo.queue_lag(NOW) == timedelta(0)
        _saved(repo, urls[0], NOW, NOW - timedelta(seconds=90))
        _saved(repo, urls[1], NOW, NOW + timedelta(seconds=90))
        assert repo.queue_lag(NOW) == timedelta(seconds=90)
    finally:
        repo.close()


def _write_config(
    path: Path, server: FeedServer, n: int, items: int, lease: str, per_host: int = 2
) -> list[str]:
    feeds = []
    for i in range(n):
        server.serve(f"/w/{i}.rss", rss(news_items(items, site=f"https://s{i}.example.org")))
        feeds.append({"url": server.url(f"/w/{i}.rss"), "interval": "1h"})
    text = config_yaml(feeds, {"per_host_concurrency": per_host}, max_concurrency=4)
    text += f"workers:\n  lease: {lease}\n  claim_every: 0.2s\n"
    path.write_text(text)
    return [f["url"] for f in feeds]


def test_two_workers_in_one_process_poll_every_feed_exactly_once(
    db_url: str, feed_server: FeedServer, tmp_path: Path
) -> None:
    n, items = 24, 5
    config = tmp_path / "feeds.yaml"
    urls = _write_config(config, feed_server, n, items, "1m")
    for route in feed_server.routes.values():
        route.delay = 0.05
    os.environ["AGGREGATOR_DATABASE_URL"] = db_url
    try:
        aggs = [Aggregator.from_file(config), Aggregator.from_file(config)]
    finally:
        del os.environ["AGGREGATOR_DATABASE_URL"]

    async def run() -> None:
        loops = [agg.start_worker(owner=f"w{i}") for i, agg in enumerate(aggs)]
        deadline = time.monotonic() + 60
        while sum(feed_server.hits(f"/w/{i}.rss") for i in range(n)) < n:
            assert time.monotonic() < deadline, "the workers did not poll every feed"
            await asyncio.sleep(0.05)
        for loop in loops:
            await loop.drain()
        await asyncio.sleep(0.5)  # more ticks: nothing is due, nothing is polled again
        for agg in aggs:
            await agg.stop()

    try:
        asyncio.run(run())
        assert [feed_server.hits(f"/w/{i}.rss") for i in range(n)] == [1] * n
        assert set(feed_server.max_active.values()) == {1}
        assert aggs[0].repo.count_entries() == n * items
        health = {h.url: h for h in aggs[0].repo.feed_health()}
        assert all(health[u].last_status == "ok" for u in urls)
    finally:
        for agg in aggs:
            agg.close()


def test_three_worker_processes_poll_1000_feeds_once_and_take_over_a_killed_ones(
    pg_cluster: object, feed_server: FeedServer, tmp_path: Path
) -> None:
    """3 `aggregator worker` processes, 1,000 feeds, one worker SIGKILLed mid-run.

    The server's request log proves each feed was fetched once for its due time, but for
    the feeds the dead worker held: those are fetched again, by a survivor, only after
    their lease ran out. The store ends with exactly the unique items.
    """
    from pg import PostgresCluster

    assert isinstance(pg_cluster, PostgresCluster)
    db_url = pg_cluster.create_database("workers_kill")
    n, items = 1000, 2
    config = tmp_path / "feeds.yaml"
    urls = _write_config(config, feed_server, n, items, "5s", per_host=4)
    paths = {u: u.split(str(feed_server.port), 1)[1] for u in urls}
    for route in feed_server.routes.values():
        route.delay = 0.02  # slow enough that the victim surely holds leases when killed
    open_repository(db_url).close()  # migrate once, before the workers race to
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    procs = [spawn(["worker", "--config", str(config)], db_url, log) for log in logs]
    repo = open_repository(db_url)
    try:
        # About two minutes on a 2-core machine shared with other work; the margin is for
        # a heavily loaded one (a cap against hanging, not a speed target).
        deadline = time.monotonic() + 480
        while len(feed_server.times) < n // 3:
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.05)
        victim = procs[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed_at = time.time()
        # What the victim held when it died: host:pid:random, so its pid tells them apart.
        held = {
            lease.url: lease.until.timestamp()
            for lease in repo.leases()
            if lease.owner.split(":")[-2] == str(victim.pid)
        }
        assert held, "the victim held no lease when killed; the test proved nothing"
        while True:
            health = repo.feed_health()
            if sum(h.last_status == "ok" for h in health) == n:
                break
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
        fetches: dict[str, list[float]] = {}
        for path, at in feed_server.times:
            fetches.setdefault(path, []).append(at)
        once = [u for u in urls if u not in held]
        assert [len(fetches[paths[u]]) for u in once] == [1] * len(once)
        for url, until in held.items():
            times = fetches[paths[url]]
            assert len(times) in (1, 2), (url, times)  # the victim had fetched it, or not yet
            after = [t for t in times if t > killed_at]
            assert len(after) == 1, (url, times, killed_at)  # a survivor polled it, once
            assert after[0] >= until - 0.05, "taken over before the dead worker's lease ended"
        assert set(feed_server.max_active.values()) == {1}
        assert repo.count_entries() == n * items
        assert all(h.entries == items for h in health)
        assert {h.url for h in health} == set(urls)
        assert repo.leases() == []
        for p in procs[1:]:
            assert p.poll() is None, "a surviving worker died"
    finally:
        repo.close()
        stop(procs)


def test_the_lease_migration_upgrades_a_store_holding_data(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import text

    from storage.repository import make_engine, migrate

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent.parent / "storage/migrations"))
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.execute(
                text(
                    "INSERT INTO feeds (url, title, tags, enabled, consecutive_errors) "
                    "VALUES ('https://example.com/old.rss', 'Old', '[]', true, 0)"
                )
            )
    finally:
        engine.dispose()
    migrate(db_url)
    repo = Repository(db_url)
    try:
        assert repo.claim_due_feeds("a", NOW, LEASE, 10) == ["https://example.com/old.rss"]
    finally:
        repo.close()


def test_processes_starting_together_on_a_new_database_migrate_it_once(
    pg_cluster: object, tmp_path: Path
) -> None:
    """`aggregator migrate` x4 at once: an advisory lock makes them take turns, none fails."""
    from pg import PostgresCluster

    assert isinstance(pg_cluster, PostgresCluster)
    db_url = pg_cluster.create_database("migrate_race")
    config = tmp_path / "feeds.yaml"
    config.write_text(config_yaml([{"url": "https://example.com/a.rss"}]))
    env = {**os.environ, "AGGREGATOR_DATABASE_URL": db_url, "NO_COLOR": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aggregator", "migrate", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert all("database schema is up to date" in out for out in outs), outs
    repo = open_repository(db_url, run_migrations=False)
    try:
        repo.sync_feeds(
            [FeedSpec(url="https://example.com/a.rss", title=None, tags=(), enabled=True)]
        )
        assert repo.claim_due_feeds("a", NOW, LEASE, 10) == ["https://example.com/a.rss"]
    finally:
        repo.close()
