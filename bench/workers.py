"""Feeds polled per second by 1, 2, 3 ``aggregator worker`` processes sharing PostgreSQL.

    python bench/workers.py [--feeds 600] [--items 5] [--workers 1,2,3] [--database-url URL]

Each round: a fresh database, the feeds on a local HTTP server (distinct items per feed),
N real worker processes started together. The clock runs from the first request the
server sees (start-up and migrations left out) to the moment every feed's first poll is
saved. Prints feeds/s and items/s per worker count, the ratio to one worker, and the CPU
count: the workers are CPU-bound (parse, dedup, tag), so they scale with free cores, not
beyond. Without --database-url a throwaway PostgreSQL cluster is started (initdb/pg_ctl,
as the tests do).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from builders import config_yaml, news_items, rss  # noqa: E402
from conftest import FeedServer  # noqa: E402

from storage import open_repository  # noqa: E402


def one_round(db_url: str, config: Path, server: FeedServer, feeds: int, workers: int) -> float:
    """Seconds from the first request to every feed saved, with ``workers`` processes."""
    open_repository(db_url).close()  # migrated before the clock starts
    env = {**os.environ, "AGGREGATOR_DATABASE_URL": db_url, "NO_COLOR": "1"}
    earlier = len(server.times)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aggregator", "worker", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(workers)
    ]
    repo = open_repository(db_url, run_migrations=False)
    try:
        deadline = time.monotonic() + 1800
        while True:
            done = sum(h.last_status is not None for h in repo.feed_health())
            if done >= feeds:
                end = time.time()  # the server notes wall-clock times
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"workers={workers}: stuck at {done}/{feeds} feeds")
            time.sleep(0.05)
        bad = [h.url for h in repo.feed_health() if h.last_status != "ok"]
        if bad:
            raise SystemExit(f"workers={workers}: {len(bad)} polls failed, e.g. {bad[0]}")
    finally:
        repo.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    return end - server.times[earlier][1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=600)
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--database-url", help="a PostgreSQL server URL (its databases are made)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    bodies = {
        f"/f/{i}.rss": rss(news_items(args.items, site=f"https://s{i}.example.org", start=i * 100))
        for i in range(args.feeds)
    }
    server = FeedServer()  # the tests' server; every feed new in every round (no 304s)
    for path, body in bodies.items():
        server.serve(path, body, conditional=False)
    server.thread.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    config = tmp / "feeds.yaml"
    feeds = [{"url": f"http://127.0.0.1:{server.port}{p}", "interval": "1h"} for p in bodies]
    config.write_text(
        config_yaml(feeds, {"per_host_concurrency": 16}, max_concurrency=16)
        + "workers:\n  lease: 1m\n  claim_every: 0.5s\n"
    )

    cluster = None
    if args.database_url:
        base = args.database_url
    else:
        from pg import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        base = cluster.url()
    print(
        f"{args.feeds} feeds x {args.items} items, PostgreSQL, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    try:
        first: float | None = None
        for n, workers in enumerate(counts):
            db_url = _database(base, f"bench_workers_{os.getpid()}_{n}")
            seconds = one_round(db_url, config, server, args.feeds, workers)
            rate = args.feeds / seconds
            first = first or rate
            print(
                f"workers={workers}  seconds={seconds:7.2f}  feeds/s={rate:7.1f}  "
                f"items/s={rate * args.items:8.1f}  ratio to {counts[0]} = {rate / first:.2f}"
            )
    finally:
        if cluster is not None:
            cluster.stop()


def _database(server_url: str, name: str) -> str:
    """CREATE DATABASE name on the server of ``server_url``; its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    with psycopg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


if __name__ == "__main__":
    main()
