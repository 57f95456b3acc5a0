"""Database faults: PostgreSQL restarted under load, SQLite read while written.

Real processes throughout: ``aggregator worker`` and ``aggregator web`` against a
PostgreSQL cluster of this test's own (it is stopped and started with pg_ctl, so it is not
the shared one), feeds published on a real local server while it is down.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from live import running, spawn
from pg import PostgresCluster, _free_port

from aggregator.pipeline import ingest
from aggregator.service import Aggregator
from aggregator.types import Fetched
from storage import open_repository, repository

SITE = "https://desk{}.example.org"


def _status(url: str) -> tuple[int, str]:
    try:
        r = httpx.get(url, timeout=15)
    except httpx.HTTPError as e:
        return 0, str(e)
    return r.status_code, r.text


def _wait_for(what: str, ok: object, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not ok():  # type: ignore[operator]
        assert time.monotonic() < deadline, (what, [log.read_text()[-1500:] for log in logs])
        time.sleep(0.1)


class Publishers:
    """Every feed gains an item every ``every`` seconds, kept in the feed (none drops off)."""

    def __init__(self, server: FeedServer, n: int, start: int, every: float) -> None:
        self.server, self.n, self.every = server, n, every
        self.items = [start] * n
        self._stop = threading.Event()
        for i in range(n):
            self._publish(i)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _publish(self, i: int) -> None:
        body = rss(news_items(self.items[i], site=SITE.format(i)), site=SITE.format(i))
        self.server.serve(f"/desk/{i}.rss", body)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for i in range(self.n):
                self.items[i] += 1
                self._publish(i)

    def stop(self) -> int:
        self._stop.set()
        self.thread.join()
        return sum(self.items)


def test_postgresql_restart_under_load_is_survived_without_a_restart_or_a_loss(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    cluster = PostgresCluster()  # our own: this test stops it
    cluster.start()
    try:
        _restart_under_load(cluster, feed_server, tmp_path)
    finally:
        cluster.stop()


def _restart_under_load(cluster: PostgresCluster, server: FeedServer, tmp_path: Path) -> None:
    db_url = cluster.create_database("faults")
    n = 20
    pubs = Publishers(server, n, start=5, every=0.5)
    feeds = [{"url": server.url(f"/desk/{i}.rss"), "interval": "1s"} for i in range(n)]
    config = tmp_path / "feeds.yaml"
    config.write_text(
        config_yaml(feeds, {"min_interval": "1s", "adaptive": False, "per_host_concurrency": 8})
        + "workers:\n  lease: 3s\n  claim_every: 0.2s\n"
    )
    open_repository(db_url).close()
    web_port, health_ports = _free_port(), [_free_port(), _free_port()]
    logs = [tmp_path / "web.log", tmp_path / "worker0.log", tmp_path / "worker1.log"]
    web = spawn(["web", "-c", str(config), "--port", str(web_port)], db_url, logs[0])
    workers = [
        spawn(["worker", "-c", str(config), "--health-port", str(p)], db_url, log)
        for p, log in zip(health_ports, logs[1:], strict=True)
    ]
    procs = [web, *workers]
    base = f"http://127.0.0.1:{web_port}"
    healths = [f"{base}/healthz"] + [f"http://127.0.0.1:{p}/healthz" for p in health_ports]
    feed_url = f"{base}/topics/world.rss"
    answers: Counter[int] = Counter()
    bad: list[str] = []
    stop_load = threading.Event()

    def read_load() -> None:
        # Readers keep coming while the database goes away and comes back.
        while not stop_load.is_set():
            code, body = _status(feed_url)
            answers[code] += 1
            if code not in (200, 503) or "Traceback" in body:
                bad.append(f"{code}: {body[:300]}")
            time.sleep(0.02)

    with running(procs):
        _wait_for("all healthy", lambda: all(_status(h)[0] == 200 for h in healths), 90, logs)
        repo = open_repository(db_url, run_migrations=False)
        try:
            pubs.thread.start()
            _wait_for("first items in", lambda: repo.count_entries() >= n * 6, 60, logs)
            loader = threading.Thread(target=read_load, daemon=True)
            loader.start()
            stored_before = set(repo.entry_stories())
            pids = [p.pid for p in procs]

            cluster.pause()
            down_at = time.monotonic()
            # Every process says it is unhealthy, and the web answers 503, not a stack trace.
            _wait_for("unhealthy", lambda: all(_status(h)[0] == 503 for h in healths), 30, logs)
            code, body = _status(feed_url)
            assert code == 503, body
            assert "error" in json.loads(body) and "Traceback" not in body
            worker_health = json.loads(_status(healths[1])[1])
            assert worker_health["status"] == "unhealthy", worker_health
            time.sleep(max(0.0, 4 - (time.monotonic() - down_at)))  # publishers go on
            cluster.resume()

            # They recover by themselves: the same processes, healthy again, catching up.
            _wait_for("healthy again", lambda: all(_status(h)[0] == 200 for h in healths), 60, logs)
            assert [p.pid for p in procs] == pids and all(p.poll() is None for p in procs)
            code, _ = _status(feed_url)
            assert code == 200
            total = pubs.stop()
            _wait_for("caught up", lambda: repo.count_entries() == total, 60, logs)
            stop_load.set()
            loader.join()

            assert stored_before <= set(repo.entry_stories())  # nothing ingested was lost
            check = repo.check()
            assert check.problems == () and check.counts["entries"] == total
            health = {h.url: h for h in repo.feed_health()}
            assert [health[f["url"]].entries for f in feeds] == pubs.items
            assert bad == [], bad[:5]
            assert answers[503] > 0 and answers[200] > 0, answers
            worker_logs = "".join(log.read_text() for log in logs[1:])
            assert "claim failed" in worker_logs and "claims work again" in worker_logs
        finally:
            repo.close()


def test_sqlite_store_uses_wal_and_waits_for_a_busy_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    repo = open_repository(f"sqlite:///{path}")
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # Another process's write transaction holds the lock for a while: a save waits its
        # turn (busy timeout) instead of failing with "database is locked".
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE content_version SET version = version")
        release = threading.Timer(1.5, lambda: other.execute("COMMIT"))
        t0 = time.monotonic()
        release.start()
        # Readers are not blocked by the writer meanwhile (WAL).
        assert repo.count_entries() == 0 and time.monotonic() - t0 < 1.0
        from aggregator.types import FeedSpec

        repo.sync_feeds(
            [FeedSpec(url="https://example.com/a.rss", title=None, tags=(), enabled=True)]
        )
        assert time.monotonic() - t0 >= 1.4
        release.join()
        other.close()
        assert list(repo.feed_states()) == ["https://example.com/a.rss"]
    finally:
        repo.close()


def test_a_web_process_reads_sqlite_while_a_poller_writes(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """Real processes: `aggregator web` answers every read while `aggregator poll` saves."""
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    feeds = []
    for i in range(4):
        body = rss(news_items(400, site=SITE.format(i), start=i * 1000), site=SITE.format(i))
        feeds.append({"url": feed_server.serve(f"/big/{i}.rss", body)})
    config = tmp_path / "feeds.yaml"
    config.write_text(config_yaml(feeds))
    open_repository(db_url).close()
    port = _free_port()
    logs = [tmp_path / "web.log", tmp_path / "poll.log"]
    web = spawn(["web", "-c", str(config), "--port", str(port)], db_url, logs[0])
    with running([web]):
        _wait_for("web up", lambda: _status(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, logs)
        poller = spawn(["poll", "--once", "-c", str(config)], db_url, logs[1])
        with running([poller]):
            repo = open_repository(db_url, run_migrations=False)
            try:
                codes: Counter[int] = Counter()
                slowest, seen_partial = 0.0, False
                while poller.poll() is None:
                    t0 = time.monotonic()
                    code, _ = _status(f"http://127.0.0.1:{port}/topics/world.rss")
                    slowest = max(slowest, time.monotonic() - t0)
                    codes[code] += 1
                    seen_partial |= 0 < repo.count_entries() < 1600
                assert poller.returncode == 0, logs[1].read_text()[-2000:]
                assert set(codes) == {200}, codes
                assert seen_partial, "no read happened between the saves; the test proved nothing"
                assert slowest < 5.0, slowest
                assert repo.count_entries() == 1600
            finally:
                repo.close()


def test_the_wal_is_restarted_while_readers_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers that overlap without a gap (a web process under load, other pollers) starve
    SQLite's own checkpoints, which copy back only what no reader still sees and never
    restart the WAL: it grew by every write, to a gigabyte in bench/soak.py's half hour.
    A writer that finds the WAL past the limit checkpoints it fully and truncates it."""
    monkeypatch.setattr(repository, "WAL_RESTART_BYTES", 2 << 20, raising=False)
    path = tmp_path / "store.db"
    wal = tmp_path / "store.db-wal"
    bodies = {
        f"https://wal{i}.example.org/feed.rss": rss(
            news_items(30, site=f"https://wal{i}.example.org", start=i * 100),
            site=f"https://wal{i}.example.org",
        )
        for i in range(40)
    }
    config = tmp_path / "feeds.yaml"
    config.write_text(config_yaml([{"url": u} for u in bodies], database_url=f"sqlite:///{path}"))
    agg = Aggregator.from_file(config)
    stop = threading.Event()
    reads = [0]

    def reader(offset: float) -> None:
        # Each reader holds a snapshot for 20 ms; the two are out of step, so at every
        # instant one of them is inside a read transaction.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        time.sleep(offset)
        while not stop.is_set():
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM entries").fetchone()
            time.sleep(0.02)
            conn.execute("COMMIT")
            reads[0] += 1
        conn.close()

    threads = [threading.Thread(target=reader, args=(d,)) for d in (0.0, 0.01)]
    for t in threads:
        t.start()
    largest = last = step = restarts = 0
    try:
        now = datetime.now(UTC)
        for url, body in bodies.items():
            fetched = Fetched(
                url, url, 200, body, {"content-type": "application/rss+xml"}, None, None, 0
            )
            assert (
                ingest(agg.repo, agg.tagger, url, (), fetched, now, timedelta(hours=1)).status
                == "ok"
            )
            size = wal.stat().st_size
            if size < last:
                restarts += 1
            else:
                step = max(step, size - last)
            largest, last = max(largest, size), size
    finally:
        stop.set()
        for t in threads:
            t.join()
        agg.close()
    assert reads[0] > 50, "the readers did not overlap the writes; the test proved nothing"
    # Without the restart the WAL holds every page written: 77 MB here, where one poll adds
    # at most ``step`` (1.5-2 MB). With it, the WAL passes the limit by a poll, or by a few
    # when checkpoints gave way to the readers (they wait 200 ms) until a later save's made it.
    assert restarts >= 3, (restarts, largest)
    assert largest <= (2 << 20) + 5 * step, (largest, step)
    assert open_repository(f"sqlite:///{path}").count_entries() == 40 * 30
