"""Parsing in parser processes: same results as in a thread; a dead worker costs one poll."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from live import poll_all

from aggregator.exceptions import ParseError
from aggregator.parsepool import ParsePool
from aggregator.service import Aggregator

FEEDS = [
    ("/bbc.rss", "bbc_world.rss", "application/rss+xml"),
    ("/verge.atom", "verge_tech.atom", "application/atom+xml"),
    ("/npr.json", "npr_news.json", "application/feed+json"),
]


def _die() -> None:
    os._exit(3)  # what a segfault in a C parser or the OOM killer looks like to the pool


def make_agg(tmp_path: Path, name: str, urls: list[str], processes: int) -> Aggregator:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        config_yaml(
            [{"url": u} for u in urls],
            database_url=f"sqlite:///{tmp_path}/{name}.db",
            parse_processes=processes,
        )
    )
    return Aggregator.from_file(path)


def test_parser_processes_store_what_a_thread_stores(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    urls = [feed_server.serve_file(path, name, content_type=ct) for path, name, ct in FEEDS]
    urls.append(feed_server.serve("/news.rss", rss(news_items(30))))
    html = feed_server.serve_file("/page", "not_a_feed.html", content_type="text/html")
    pooled = make_agg(tmp_path, "pooled", [*urls, html], 2)
    threaded = make_agg(tmp_path, "threaded", [*urls, html], 0)
    got, want = poll_all(pooled), poll_all(threaded)
    assert {u: (r.status, r.new, r.error) for u, r in got.items()} == {
        u: (r.status, r.new, r.error) for u, r in want.items()
    }
    assert got[html].status == "error" and "HTML page" in (got[html].error or "")
    assert all(got[u].status == "ok" and got[u].new > 0 for u in urls)
    assert pooled.repo.count_entries() == threaded.repo.count_entries() > 30
    # stop() ended the parser processes.
    assert pooled._ctx is None


def test_a_dead_parser_fails_one_call_and_the_next_gets_a_new_pool() -> None:
    pool = ParsePool(1)

    async def run() -> tuple[int, list[int]]:
        with pytest.raises(ParseError, match="parser process died"):
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
