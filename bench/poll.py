"""Polling figures: the real Aggregator polling a local server, with bare bars in the same run.

    python bench/poll.py [--feeds 10000] [--hosts 500] [--concurrency 64] [--items 20]

A server process (started here, asyncio + uvloop) serves --feeds distinct feeds, about
20 KB and --items items each (RSS 2.0 and Atom, HTML descriptions with entities, several
categories, dates in odd formats), spread over --hosts loopback addresses (127.1.x.y, so
the per-host limit applies as to real sites), gzip when asked, with ETag/Last-Modified so
a second round is all 304s. Rounds, all in this one run:

* bare httpx: a semaphore-bounded ``client.get`` loop (same concurrency, same client
  settings as the poller) over every feed: once plain (all 200), once with If-None-Match
  (all 304);
* bare feedparser: ``feedparser.parse`` of the same bodies in a process pool with one
  worker per core: the bar for a first fetch, whose cost is parsing;
* aggregator: ``Aggregator.poll_all()`` of a feeds.yaml listing every feed (SQLite store
  in a temp dir, or PostgreSQL with --pg), twice: first fetch (all new: fetch, parse,
  dedup, tag, store) and again (all 304). Before it, this process takes the garbage
  collector's pace the CLI sets for its processes (aggregator/collector.py);
* bare httpx again, 304 round, after the aggregator's rounds: the same loop in the same
  process as the aggregator's (its objects alive, the CLI's collector pace), printed as a
  second bar beside the first.

Prints feeds/s for each round, the ratios (targets: 304 round >= 1,000 feeds/s and >= 0.8x
bare httpx; first fetch >= 0.8x bare feedparser) and the peak memory of this process and
its pool children, sampled every 50 ms (target: < 500 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from newstext import WORDS, sentence  # noqa: E402

# ----------------------------------------------------------------------------- feeds

_CATEGORIES = (
    "Business",
    "Economy",
    "UK",
    "World/Europe",
    "World/Africa",
    "Sport",
    "Football",
    "Technology",
    "Politics",
    "Arts &amp; Culture",
    "Science",
    "Health",
    "Weather",
    "Education",
)
_BASE = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)


def feed_path(i: int) -> str:
    return f"/feeds/{i}.atom" if i % 3 == 2 else f"/feeds/{i}.rss"


def host_of(i: int, hosts: int) -> str:
    h = i % hosts
    return f"127.1.{h // 250}.{h % 250 + 1}"


def feed_body(i: int, items: int = 20, shift: int = 0) -> bytes:
    """Feed ``i``: the same bytes wherever it is made (the server, the bare parse).

    ``shift``: the feed ``shift`` items later, its ``shift`` newest items new and its
    oldest ones gone, every other item as it was (each item's text depends on its feed
    and number only).
    """
    site = f"https://site{i}.example.com"
    atom = i % 3 == 2
    entries = []
    for n in range(-shift, items - shift):
        rng = random.Random(f"{i}:{n}")
        title = f"{sentence(rng, 7)} &amp; {rng.choice(WORDS)} ({i}-{n})"
        paragraphs = "".join(
            f"<p>{sentence(rng, 18)}, said the <em>{rng.choice(WORDS)}</em> &mdash; "
            f'caf&eacute; <a href="/more/{n}?ref=rss">{rng.choice(WORDS)}</a>.</p>'
            for _ in range(2)
        )
        html = f'<img src="/img/{n}.jpg" alt="{rng.choice(WORDS)}"/>{paragraphs}'
        cats = rng.sample(_CATEGORIES, rng.randint(1, 3))
        when = _BASE - timedelta(minutes=37 * n + i % 60)
        link = f"{site}/2026/11/{n}/story?utm_source=rss&amp;utm_medium=feed"
        if atom:
            entries.append(
                f'<entry><title>{title}</title><link href="{link}"/>'
                f"<id>tag:site{i}.example.com,2026:{n}</id>"
                f"<updated>{when.isoformat()}</updated>"
                f"<published>{when.strftime('%Y-%m-%dT%H:%M:%S+00:00')}</published>"
                f"<author><name>Reporter {n % 4}</name></author>"
                + "".join(f'<category term="{c}"/>' for c in cats)
                + f'<summary type="html">{escape(html)}</summary></entry>'
            )
        else:
            # Odd but common dates: a named zone, a missing weekday, numeric offsets.
            date = (
                format_datetime(when)
                if n % 3
                else when.astimezone(UTC).strftime("%d %b %Y %H:%M:%S GMT")
            )
            entries.append(
                f"<item><title>{title}</title><link>{link}</link>"
                f'<guid isPermaLink="false">{site}/a/{n}</guid>'
                + "".join(f"<category>{c}</category>" for c in cats)
                + f"<pubDate>{date}</pubDate>"
                f"<author>reporter{n % 4}@example.com (Reporter {n % 4})</author>"
                f"<description>{escape(html)}</description></item>"
            )
    body = "\n".join(entries)
    if atom:
        doc = (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">'
            f"<title>Site {i} News</title><id>{site}/</id>"
            f'<link rel="alternate" href="{site}/"/>'
            f"<updated>{_BASE.isoformat()}</updated>\n{body}\n</feed>"
        )
    else:
        doc = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0"><channel>'
            f"<title>Site {i} News</title><link>{site}/</link>"
            "<description>Latest stories</description><language>en-gb</language>"
            f"<ttl>15</ttl>\n{body}\n</channel></rss>"
        )
    return doc.encode()


# ----------------------------------------------------------------------------- server

ETAG = '"v{}-{}"'


def serve(feeds: int, hosts: int, items: int) -> None:
    """The feed server (a child process): prints its port, serves until stdin closes.

    A line ``shift N`` on stdin makes every feed ``feed_body(i, items, N)`` from then on,
    with a new ETag and Last-Modified (bench/peer.py's round of new items); it answers
    ``ok`` on stdout once the new bodies are served.
    """
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    plain: list[bytes] = []
    gz: list[bytes] = []
    by_path = {feed_path(i).encode(): i for i in range(feeds)}
    common = ""
    shift = 0

    def generation(n: int) -> None:
        nonlocal common, shift, plain, gz
        plain = [feed_body(i, items, n) for i in range(feeds)]
        gz = [gzip.compress(b, compresslevel=6, mtime=0) for b in plain]
        modified = format_datetime(_BASE + timedelta(minutes=n), usegmt=True)
        common = f"Content-Type: application/xml\r\nLast-Modified: {modified}\r\n"
        shift = n

    generation(0)

    class Feed(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                self.answer(head)

        def answer(self, head: bytes) -> None:
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1]
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower()] = v.strip()
            i = by_path.get(path)
            if i is None:
                self.t.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            etag = ETAG.format(shift, i)
            if hdrs.get(b"if-none-match") == etag.encode():
                self.t.write(f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n{common}\r\n".encode())
                return
            zipped = b"gzip" in hdrs.get(b"accept-encoding", b"")
            body = gz[i] if zipped else plain[i]
            extra = "Content-Encoding: gzip\r\n" if zipped else ""
            self.t.write(
                f"HTTP/1.1 200 OK\r\nETag: {etag}\r\n{common}{extra}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        addresses = sorted({host_of(i, hosts) for i in range(min(feeds, hosts))})
        # Port 0 would give every address its own port: the first one picks it for all.
        first = await loop.create_server(Feed, addresses[0], 0, backlog=4096)
        port = first.sockets[0].getsockname()[1]
        rest = await loop.create_server(Feed, addresses[1:], port, backlog=4096)
        print(port, flush=True)
        # Until the parent closes our stdin (or dies).
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.startswith("shift "):
                generation(int(line.split()[1]))
                print("ok", flush=True)
        first.close()
        rest.close()

    asyncio.run(run())


# ----------------------------------------------------------------------------- bars


async def bare_httpx(urls: list[str], concurrency: int, etags: dict[str, str]) -> float:
    """Seconds for one round of plain GETs; fills ``etags`` (the next round sends them)."""
    from aggregator.fetch import FetchLimits, make_client

    client = make_client(FetchLimits(), max_connections=concurrency * 2)
    sem = asyncio.Semaphore(concurrency)
    expect = 304 if etags else 200

    async def one(url: str) -> None:
        async with sem:
            hdrs = {"If-None-Match": etags[url]} if url in etags else {}
            r = await client.get(url, headers=hdrs)
            assert r.status_code == expect, (url, r.status_code)
            if expect == 200:
                etags[url] = r.headers["etag"]
                assert len(r.content) > 1000

    t = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    took = time.perf_counter() - t
    await client.aclose()
    return took


def bare_feedparser(feeds: int, items: int, workers: int) -> float:
    """Seconds for ``feedparser.parse`` of every body, one pool worker per core."""
    bodies = [feed_body(i, items) for i in range(feeds)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(len, [b""] * workers))  # workers up before the clock starts
        t = time.perf_counter()
        total = sum(pool.map(_parse_count, bodies, chunksize=8))
        took = time.perf_counter() - t
    assert total == feeds * items, total
    return took


def _parse_count(body: bytes) -> int:
    import feedparser

    return len(feedparser.parse(body).entries)


# ----------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak resident memory of this process plus its children but ``exclude`` (the server)."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.peak = 0
        self.by_pid: dict[int, int] = {}  # each process's own peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(0.05)

    def sample(self) -> int:
        me = os.getpid()
        pids = [me]
        try:
            kids = Path(f"/proc/{me}/task/{me}/children").read_text().split()
        except OSError:
            kids = []
        pids += [int(k) for k in kids if int(k) not in self.exclude]
        sizes = {p: _rss(p) for p in pids}
        for p, size in sizes.items():
            self.by_pid[p] = max(self.by_pid.get(p, 0), size)
        return sum(sizes.values())


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------- main


def write_config(
    tmp: Path, urls: list[str], concurrency: int, db_url: str, parsers: int | None = None
) -> Path:
    from builders import config_yaml

    cfg = tmp / "feeds.yaml"
    cfg.write_text(
        config_yaml(
            [{"url": u} for u in urls],
            database_url=db_url,
            max_concurrency=concurrency,
            fetch_timeout="60s",
            parse_processes=parsers,  # None: the default, one per core
        )
    )
    return cfg


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>9,.0f} feeds/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=10_000)
    ap.add_argument("--hosts", type=int, default=500, help="distinct loopback hosts")
    ap.add_argument("--items", type=int, default=20, help="items per feed")
    ap.add_argument("--concurrency", type=int, default=64, help="settings.max_concurrency")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="bare parse pool")
    ap.add_argument(
        "--parse-processes", type=int, default=None, help="settings.parse_processes (0: a thread)"
    )
    ap.add_argument("--pg", action="store_true", help="PostgreSQL (a throwaway cluster)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.feeds, args.hosts, args.items)
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", *sys.argv[1:]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        run(args, port, server.pid)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)


def run(args: argparse.Namespace, port: int, server_pid: int) -> None:
    n, items = args.feeds, args.items
    urls = [f"http://{host_of(i, args.hosts)}:{port}{feed_path(i)}" for i in range(n)]
    print(
        f"{n} feeds x {items} items (~{len(feed_body(0, items)) // 1024} KB) on "
        f"{min(n, args.hosts)} hosts, concurrency {args.concurrency}, {os.cpu_count()} cores"
    )
    etags: dict[str, str] = {}
    bare_200 = asyncio.run(bare_httpx(urls, args.concurrency, etags))
    print(f"bare httpx          200 round  {rate(n, bare_200)}")
    bare_304 = asyncio.run(bare_httpx(urls, args.concurrency, etags))
    print(f"bare httpx          304 round  {rate(n, bare_304)}")
    with tempfile.TemporaryDirectory() as tmp, PeakMemory({server_pid}) as mem:
        pg = None
        if args.pg:
            from pg import PostgresCluster

            pg = PostgresCluster()
            pg.start()
            db_url = pg.url()
        else:
            db_url = f"sqlite:///{tmp}/poll.db"
        try:
            from aggregator.collector import pace_collector

            pace_collector()  # as the CLI does for its processes
            first, again = asyncio.run(aggregator_rounds(Path(tmp), urls, args, db_url))
            same_process_304 = asyncio.run(bare_httpx(urls, args.concurrency, etags))
        finally:
            if pg is not None:
                pg.stop()
    # After the aggregator's rounds: the bodies it holds would count in their memory.
    bare_parse = bare_feedparser(n, items, args.workers)
    print(
        f"bare feedparser     {args.workers} procs    {rate(n, bare_parse)}"
        f"  ({n * items / bare_parse:,.0f} items/s)"
    )

    print(
        f"aggregator   first fetch round  {rate(n, first)}  "
        f"({n * items / first:,.0f} items/s)  "
        f"ratio to bare feedparser {bare_parse / first:.2f} (target >= 0.8), "
        f"to bare httpx 200 {bare_200 / first:.2f}"
    )
    print(
        f"aggregator          304 round  {rate(n, again)}  "
        f"ratio to bare httpx 304 {bare_304 / again:.2f} (target >= 0.8; >= 1,000 feeds/s)"
    )
    print(
        f"bare httpx, after   304 round  {rate(n, same_process_304)}  (same loop, this process "
        f"after the aggregator's rounds); aggregator's ratio to it {same_process_304 / again:.2f}"
    )
    print(f"peak memory (this process + pool children): {mem.peak / 2**20:.0f} MB (target < 500)")
    each = ", ".join(
        f"{'this process' if pid == os.getpid() else pid} {size / 2**20:.0f}"
        for pid, size in sorted(mem.by_pid.items(), key=lambda kv: kv[0] != os.getpid())
    )
    print(f"  each process's own peak, MB: {each}")


async def aggregator_rounds(
    tmp: Path, urls: list[str], args: argparse.Namespace, db_url: str
) -> tuple[float, float]:
    from aggregator.service import Aggregator

    agg = Aggregator.from_file(
        write_config(tmp, urls, args.concurrency, db_url, args.parse_processes)
    )
    try:
        times = []
        for expect in ("ok", "not_modified"):
            t = time.perf_counter()
            results = await agg.poll_all()
            times.append(time.perf_counter() - t)
            bad = [r for r in results if r.status != expect]
            assert not bad, f"{len(bad)} polls were not {expect}: {bad[:3]}"
        assert agg.repo.count_entries() == len(urls) * args.items
        await agg.stop()
    finally:
        agg.close()
    return times[0], times[1]


if __name__ == "__main__":
    main()
