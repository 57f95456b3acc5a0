"""Ingest in worker processes: the same store as in a thread; a dead worker costs one poll."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from live import poll_all
from prometheus_client import REGISTRY

from aggregator.config import TopicConfig, TopicRules
from aggregator.exceptions import ParseError
from aggregator.parsepool import ParsePool
from aggregator.service import Aggregator
from aggregator.types import PollResult

FEEDS = [
    ("/bbc.rss", "bbc_world.rss", "application/rss+xml"),
    ("/verge.atom", "verge_tech.atom", "application/atom+xml"),
    ("/npr.json", "npr_news.json", "application/feed+json"),
]


def _die() -> None:
    os._exit(3)  # what a segfault in a C parser or the OOM killer looks like to the pool


def make_agg(
    tmp_path: Path, name: str, urls: list[str], processes: int, db_url: str | None = None
) -> Aggregator:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        config_yaml(
            [{"url": u} for u in urls],
            database_url=db_url or f"sqlite:///{tmp_path}/{name}.db",
            parse_processes=processes,
        )
    )
    return Aggregator.from_file(path)


Entry = tuple[str, str, str | None, tuple[str, ...]]  # feed, title, language, topics


def _stored(agg: Aggregator) -> tuple[set[Entry], set[frozenset[tuple[str, str]]]]:
    """Every stored entry (feed, title, language, topics), and the stories as sets of
    entries: which feed's entry started a story depends on which poll ends first."""
    entries = agg.repo.entry_batch(0, 10_000)
    stories: dict[str, set[tuple[str, str]]] = {}
    for e in entries:
        stories.setdefault(e.story_uid, set()).add((e.feed_url, e.entry.title))
    return (
        {
            (e.feed_url, e.entry.title, e.language, tuple(sorted(t.topic for t in e.tags)))
            for e in entries
        },
        {frozenset(members) for members in stories.values()},
    )


def _tags_metric() -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "aggregator_tags"
        for s in m.samples
        if s.name == "aggregator_tags_total"
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_ingest_workers_store_what_a_thread_stores(
    tmp_path: Path, feed_server: FeedServer, db_url: str, processes: int
) -> None:
    """Worker processes parse, dedup, tag and save (SQLite, PostgreSQL): the store ends
    as a thread leaves it; the poller still logs, counts and sees the change. With one
    worker, busy, the poller parses bodies too, and the worker saves them: the poller
    never builds a near-duplicate index of its own."""
    urls = [feed_server.serve_file(path, name, content_type=ct) for path, name, ct in FEEDS]
    news = rss(news_items(30))
    # The same stories under two feeds: the second's entries join the first's stories.
    urls += [feed_server.serve("/news.rss", news), feed_server.serve("/mirror.rss", news)]
    html = feed_server.serve_file("/page", "not_a_feed.html", content_type="text/html")
    pooled = make_agg(tmp_path, "pooled", [*urls, html], processes, db_url)
    threaded = make_agg(tmp_path, "threaded", [*urls, html], 0)

    async def poll_pooled() -> tuple[dict[str, PollResult], int]:
        try:
            results = await pooled.poll_all()
            # stop() drops the context: its count is read first.
            return {r.feed_url: r for r in results}, pooled._context().parsed_here
        finally:
            await pooled.stop()

    try:
        tags_before = _tags_metric()
        got, parsed_here = asyncio.run(poll_pooled())
        tags_pooled = _tags_metric() - tags_before
        want = poll_all(threaded)
        entries, stories = _stored(pooled)
        assert (entries, stories) == _stored(threaded)
        local_changes = pooled.repo.local_changes
    finally:
        pooled.close()
        threaded.close()
    assert {u: (r.status, r.new, r.error) for u, r in got.items()} == {
        u: (r.status, r.new, r.error) for u, r in want.items()
    }
    assert got[html].status == "error" and "HTML page" in (got[html].error or "")
    assert all(got[u].status == "ok" and got[u].new > 0 for u in urls)
    assert sum(r.merged for r in got.values()) == sum(r.merged for r in want.values()) >= 30
    assert len(entries) > 60
    assert sum(len(members) == 2 for members in stories) >= 30  # the mirrored stories
    # Tags counted here, in the poller, though the workers saved them.
    assert tags_pooled == sum(len(topics) for _, _, _, topics in entries) > 0
    # The web layer of the poller's process learns of the workers' commits at once.
    assert local_changes > 0
    assert pooled._ctx is None  # stop() ended the worker processes
    if processes == 1:
        assert parsed_here > 0  # bodies the poller parsed while the worker was busy
    assert pooled.repo._buckets._start is None  # only the workers looked up near-duplicates


def test_a_body_waits_for_room_in_the_pool_or_for_the_poller_thread(tmp_path: Path) -> None:
    """With its worker busy and one body waiting for it, the next body waits: for the
    poller's thread (parsed there, then saved by the worker) or for room in the pool
    (sent whole), whichever frees first. Never a longer queue at the worker while the
    thread could parse."""
    agg = make_agg(tmp_path, "placing", [], 1)
    pool = ParsePool(1)  # only its size is read: no process is started
    ctx = agg._context()

    async def scenario() -> list[tuple[str, bool]]:
        got: list[tuple[str, bool]] = []

        async def place(name: str) -> None:
            got.append((name, await ctx.parse_here(pool)))

        assert await ctx.parse_here(pool) is False  # room: the worker is idle
        ctx.in_pool = 2  # one body running in the worker, one waiting for it
        assert await ctx.parse_here(pool) is True  # no room, but the thread is free
        lane = threading.Event()
        busy = asyncio.create_task(ctx.here(lane.wait, 10))  # the thread, busy
        await asyncio.sleep(0.05)
        assert ctx.ingesting_here == 1
        first = asyncio.create_task(place("first"))
        await asyncio.sleep(0.05)
        assert got == []  # neither is free
        ctx.in_pool = 1  # the worker took the waiting body: room for one
        await ctx._freed()
        await first
        assert got == [("first", False)]
        ctx.in_pool = 2
        second = asyncio.create_task(place("second"))
        await asyncio.sleep(0.05)
        assert got == [("first", False)]
        lane.set()
        await busy  # the thread is free again
        await second
        return got

    try:
        assert asyncio.run(scenario()) == [("first", False), ("second", True)]
    finally:
        agg.close()


def test_a_reloaded_tagger_reaches_the_ingest_workers(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """After a topic edit, the same worker processes tag with the new topics."""
    first = feed_server.serve("/first.rss", rss(news_items(6)))
    second = feed_server.serve("/second.rss", rss(news_items(6, site="https://other.example")))
    agg = make_agg(tmp_path, "reload", [first, second], 1)

    def topics_of(url: str) -> set[str]:
        return {t.topic for e in agg.repo.entry_batch(0, 1000) if e.feed_url == url for t in e.tags}

    async def run() -> tuple[list[int], list[int]]:
        try:
            await agg.poll(first)
            pids = agg._context().parsers.pids()  # type: ignore[union-attr]
            cfg = agg.config
            museums = TopicConfig(
                name="Museums", slug="museums", rules=TopicRules(keywords=("museum",))
            )
            # retag=False: the stored entries keep their topics, so the old ones show who tagged.
            await agg.reload(cfg.model_copy(update={"topics": (*cfg.topics, museums)}), retag=False)
            await agg.poll(second)
            return pids, agg._context().parsers.pids()  # type: ignore[union-attr]
        finally:
            await agg.stop()

    try:
        before, after = asyncio.run(run())
        first_topics, second_topics = topics_of(first), topics_of(second)
    finally:
        agg.close()
    assert before == after and len(before) == 1  # a topic edit keeps the workers
    assert "museums" not in first_topics
    assert "museums" in second_topics  # "Museum returns looted bronzes to Nigeria"


def test_a_dead_parser_fails_one_call_and_the_next_gets_a_new_pool() -> None:
    pool = ParsePool(1)

    async def run() -> tuple[int, list[int]]:
        with pytest.raises(ParseError, match="ingest process died"):
            await pool.run(_die)
        return await pool.run(len, b"four"), pool.pids()

    try:
        n, pids = asyncio.run(run())
    finally:
        pool.shutdown()
    assert n == 4 and len(pids) == 1
    assert pool.pids() == []


def test_zero_processes_parse_in_a_thread() -> None:
    pool = ParsePool(0)
    assert asyncio.run(pool.run(len, b"abc")) == 3
    assert pool.pids() == []


def test_parsers_exit_when_the_process_that_started_them_is_killed() -> None:
    """A SIGKILLed poller leaves no parser processes behind (the crash tests kill dozens)."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import asyncio\n"
        "from aggregator.parsepool import ParsePool\n"
        "pool = ParsePool(2)\n"
        "async def main():\n"
        "    await pool.run(len, b'x')\n"
        "    await pool.run(len, b'y')\n"
        "    print(*pool.pids(), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(Path(f"/proc/{p}").exists() for p in pids)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "parser processes outlived their parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its (dead) parent could reap it
