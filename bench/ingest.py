"""Ingest and serve figures, with bare feedparser as the bar, measured in the same run.

    python bench/ingest.py [--feeds 200] [--items 25]

Prints: bare feedparser items/s; our parse() items/s; full ingest (parse, dedup, tag, one
transaction per feed into SQLite) items/s for a first poll and for an unchanged re-poll
(server without validators); the ratio of each against bare feedparser; and requests/s for
a cached 50-item topic feed (200 and 304) through the ASGI app in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from builders import config_yaml, news_items, rss  # noqa: E402

from aggregator.parse import parse  # noqa: E402
from aggregator.pipeline import ingest  # noqa: E402
from aggregator.service import Aggregator  # noqa: E402
from aggregator.types import Fetched  # noqa: E402
from aggregator.web import create_app  # noqa: E402


def bodies(feeds: int, items: int) -> list[tuple[str, bytes]]:
    return [
        (
            f"https://site{i}.example.com/feed.rss",
            rss(news_items(items, site=f"https://site{i}.example.com"), title=f"Site {i}"),
        )
        for i in range(feeds)
    ]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--items", type=int, default=25)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    docs = bodies(args.feeds, args.items)
    n_items = args.feeds * args.items
    now = datetime.now(UTC)
    headers = {"content-type": "application/rss+xml"}

    t = time.perf_counter()
    for _, body in docs:
        feedparser.parse(body)
    bare = time.perf_counter() - t
    print(f"bare feedparser.parse        {rate(n_items, bare):>10} items")

    t = time.perf_counter()
    for url, body in docs:
        parse(body, url, headers, now)
    ours = time.perf_counter() - t
    print(
        f"aggregator parse()           {rate(n_items, ours):>10} items  ({bare / ours:.2f}x bare)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "feeds.yaml"
        cfg.write_text(
            config_yaml([{"url": u} for u, _ in docs], database_url=f"sqlite:///{tmp}/b.db")
        )
        agg = Aggregator.from_file(cfg)
        interval = timedelta(minutes=30)
        for label in ("first poll (all new)", "re-poll (all unchanged)"):
            t = time.perf_counter()
            for url, body in docs:
                fetched = Fetched(url, url, 200, body, headers, None, None, 0)
                r = ingest(agg.repo, agg.tagger, url, (), fetched, now, interval)
                assert r.status == "ok", r
            took = time.perf_counter() - t
            print(
                f"ingest {label:<22}{rate(n_items, took):>10} items  "
                f"({bare / took:.2f}x bare feedparser)"
            )
        assert agg.repo.count_entries() == n_items
        asyncio.run(serve(agg, args.requests))
        agg.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS                     {rss_mb:>10.0f} MB")


async def serve(agg: Aggregator, n: int) -> None:
    transport = httpx.ASGITransport(app=create_app(agg, poll=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
        first = await c.get("/topics/business.atom")
        assert first.status_code == 200
        for label, hdrs, status in (
            ("topic feed 200 (cached)", {}, 200),
            ("topic feed 304", {"If-None-Match": first.headers["etag"]}, 304),
        ):
            t = time.perf_counter()
            for _ in range(n):
                r = await c.get("/topics/business.atom", headers=hdrs)
                assert r.status_code == status
            took = time.perf_counter() - t
            print(f"{label:<29}{rate(n, took):>10} req (in-process, one client)")


if __name__ == "__main__":
    main()
