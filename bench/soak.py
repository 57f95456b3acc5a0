"""Soak: a deployment's half hour, compressed: feeds changing, workers polling, readers reading.

    python bench/soak.py [--feeds 5000] [--minutes 30] [--speed 20] [--workers 2]
                         [--readers 4] [--items 10] [--pg]

A driven clock: simulated time runs ``--speed`` times faster than real time, the same in
every process (each computes it from the shared start instant), so 30 simulated minutes at
20x take 90 real seconds. Processes, all started here:

* a feed server (uvicorn) with ``--feeds`` RSS feeds, each changing at its own realistic
  rate in simulated time (10% every 5 min, 30% every 30 min, 40% every 2 h, 20% every 12 h,
  random phases), ``--items`` items each, ETags so unchanged feeds answer 304;
* ``--workers`` workers (the real ``ClaimLoop``: leases, claims by simulated time) over one
  store (SQLite WAL in a temp dir, or a throwaway PostgreSQL with ``--pg``);
* one web process (the real app, ``poll=False``) under read load from ``--readers`` threads
  here (topic feeds in every format, the stories feed, pages, conditional GETs);
* workers and web share ``PROMETHEUS_MULTIPROC_DIR``, so the web's ``/metrics`` (scraped at
  the end) counts every worker's polls and items.

Prints: polls by outcome, items ingested per real second, poll duration p50/p99 (the
metrics histogram), queue lag (sampled every real second from the store: max, p99, and
over the second half), read requests/s and p99, and each process's memory (RSS) after the
first tenth of the run and at the end, with the growth (target: within 10%). The worker
and web processes cap their malloc arenas as the ``aggregator`` CLI does
(aggregator/arenas.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from newstext import WORDS, sentence  # noqa: E402

SIM_START = datetime(2026, 11, 24, 6, 0, tzinfo=UTC).timestamp()
PERIODS = ((300, 0.1), (1800, 0.3), (7200, 0.4), (43200, 0.2))  # seconds, share of feeds


def make_clock(real_start: float, speed: float) -> Callable[[], datetime]:
    def clock() -> datetime:
        return datetime.fromtimestamp(SIM_START + (time.time() - real_start) * speed, UTC)

    return clock


def shared_clock(start_file: Path, speed: float) -> Callable[[], datetime]:
    """The driven clock once the orchestrator has written its start instant; until then
    simulated time stands at SIM_START (every process reads the same file)."""
    started: list[Callable[[], datetime]] = []

    def clock() -> datetime:
        if not started:
            try:
                started.append(make_clock(float(start_file.read_text()), speed))
            except (OSError, ValueError):
                return datetime.fromtimestamp(SIM_START, UTC)
        return started[0]()

    return clock


def plan(n: int) -> tuple[int, float]:
    """Feed n's change period (simulated seconds) and phase."""
    rng = random.Random(n)
    x, acc = rng.random(), 0.0
    for period, share in PERIODS:
        acc += share
        if x < acc:
            return period, rng.uniform(0, period)
    return PERIODS[-1][0], rng.uniform(0, PERIODS[-1][0])


# ----------------------------------------------------------------------------- roles


def run_feeds(state: dict[str, float | int | str]) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    clock = shared_clock(Path(str(state["start_file"])), float(state["speed"]))
    items = int(state["items"])

    @functools.lru_cache(maxsize=20_000)
    def body(n: int, version: int) -> bytes:
        period, phase = plan(n)
        parts = [
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>',
            f"<title>Soak feed {n}</title><link>https://site{n % 400}.example/</link>",
            "<description>changes on its own schedule</description><language>en</language>",
        ]
        for k in range(version, version - items, -1):
            rng = random.Random(n * 1_000_003 + k)
            title = sentence(rng, 7)
            when = datetime.fromtimestamp(k * period - phase, UTC)
            parts.append(
                f"<item><title>{title} ({n}/{k})</title><guid>urn:soak:{n}:{k}</guid>"
                f"<link>https://site{n % 400}.example/{n}/{k}</link>"
                f"<pubDate>{format_datetime(when)}</pubDate>"
                f"<category>{rng.choice(WORDS)}</category>"
                f"<description>&lt;p&gt;{title}. {sentence(rng, 40)}"
                "&lt;/p&gt;</description></item>"
            )
        parts.append("</channel></rss>")
        return "".join(parts).encode()

    async def feed(request: Request) -> Response:
        n = int(request.path_params["n"])
        period, phase = plan(n)
        version = int((clock().timestamp() + phase) // period)
        etag = f'"{n}-{version}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body(n, version), media_type="application/rss+xml", headers={"ETag": etag})

    app = Starlette(routes=[Route("/f/{n:int}.rss", feed)])
    uvicorn.run(app, host="127.0.0.1", port=int(state["feed_port"]), log_level="error")


def run_worker(state: dict[str, float | int | str]) -> None:
    import asyncio
    import logging

    # Skipped ticks while a claim is still running, and the cancelled polls at the stop,
    # are APScheduler's to mention, not the figures'.
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)

    from aggregator.service import Aggregator

    start_file = Path(str(state["start_file"]))
    clock = shared_clock(start_file, float(state["speed"]))
    agg = Aggregator.from_file(str(state["config"]))
    (start_file.parent / f"ready-{os.getpid()}").touch()
    while not start_file.exists():
        time.sleep(0.05)

    async def main() -> None:
        agg.start_worker(clock=clock)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await agg.stop()

    try:
        asyncio.run(main())
    finally:
        agg.close()


def run_web(state: dict[str, float | int | str]) -> None:
    import uvicorn

    from aggregator.service import Aggregator
    from aggregator.web import create_app

    agg = Aggregator.from_file(str(state["config"]))
    try:
        uvicorn.run(
            create_app(agg, poll=False),
            host="127.0.0.1",
            port=int(state["web_port"]),
            log_level="error",
        )
    finally:
        agg.close()


# ----------------------------------------------------------------------------- orchestration


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def warmed_up(base: str, polls: int) -> bool:
    """Whether the workers have made ``polls`` polls (the web's /metrics counts them all)."""
    import httpx

    try:
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.HTTPError:
        return False
    done = 0.0
    for line in text.splitlines():
        if line.startswith("aggregator_polls_total{"):
            done += float(line.rsplit(" ", 1)[1])
    return done >= polls


def quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """q-quantile from cumulative (upper bound, count) buckets, linear within a bucket."""
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    target = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return prev_le
            share = (target - prev_count) / (count - prev_count) if count > prev_count else 1
            return prev_le + (le - prev_le) * share
        prev_le, prev_count = le, count
    return prev_le


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", type=int, default=5000)
    ap.add_argument("--minutes", type=float, default=30, help="simulated minutes")
    ap.add_argument("--speed", type=float, default=20, help="simulated seconds per real one")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL instead of SQLite")
    ap.add_argument("--role", choices=("feeds", "worker", "web"), help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        from aggregator.arenas import limit_malloc_arenas

        if args.role != "feeds":
            limit_malloc_arenas()  # as the aggregator CLI does for its processes
        state = json.loads(Path(args.state).read_text())
        {"feeds": run_feeds, "worker": run_worker, "web": run_web}[args.role](state)
        return
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak(args, Path(tmp))


def soak(args: argparse.Namespace, tmp: Path) -> None:
    import httpx
    from builders import config_yaml
    from prometheus_client.parser import text_string_to_metric_families

    from storage import open_repository

    cluster = None
    if args.pg:
        from pg import PostgresCluster

        cluster = PostgresCluster()
        cluster.start()
        db = cluster.create_database("soak")
    else:
        db = f"sqlite:///{tmp / 'store.db'}"
    feed_port, web_port = free_port(), free_port()
    feeds = []
    for n in range(args.feeds):
        period, _ = plan(n)
        interval = min(max(period // 2, 300), 3600)
        feeds.append({"url": f"http://127.0.0.1:{feed_port}/f/{n}.rss", "interval": f"{interval}s"})
    config = tmp / "feeds.yaml"
    config.write_text(
        config_yaml(
            feeds,
            polling={"per_host_concurrency": 100},
            database_url=db,
            max_concurrency=32,
        )
        + "workers:\n  lease: 10m\n  claim_every: 1s\n"
    )
    from aggregator.service import Aggregator

    Aggregator.from_file(config).close()  # migrate and list the feeds once, before the clock
    prom = tmp / "prom"
    prom.mkdir()
    start_file = tmp / "start"
    state = {
        "start_file": str(start_file),
        "speed": args.speed,
        "items": args.items,
        "feed_port": feed_port,
        "web_port": web_port,
        "config": str(config),
    }
    (tmp / "state.json").write_text(json.dumps(state))
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    env.pop("AGGREGATOR_DATABASE_URL", None)

    def start(role: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, __file__, "--role", role, "--state", str(tmp / "state.json")]
        return subprocess.Popen(cmd, env=env, cwd=tmp)

    procs: dict[str, subprocess.Popen[bytes]] = {"feeds": start("feeds"), "web": start("web")}
    try:
        wait_http(f"http://127.0.0.1:{feed_port}/f/0.rss", procs["feeds"])
        base = f"http://127.0.0.1:{web_port}"
        wait_http(f"{base}/healthz", procs["web"])
        for i in range(args.workers):
            procs[f"worker{i + 1}"] = start("worker")
        deadline = time.monotonic() + 120
        while len(list(tmp.glob("ready-*"))) < args.workers:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not get ready in 120 s")
            time.sleep(0.1)
        # The clock starts now, for every process at once.
        real_start = time.time()
        start_file.write_text(repr(real_start))
        clock = make_clock(real_start, args.speed)
        real_seconds = args.minutes * 60 / args.speed

        stop = threading.Event()
        reads: list[float] = []
        read_errors = [0]
        slugs = ["foreign-relations", "politics", "world", "business", "sport"]

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            etags: dict[str, str] = {}
            with httpx.Client(base_url=base, timeout=30) as client:
                while not stop.is_set():
                    path = rng.choice(
                        [
                            f"/topics/{rng.choice(slugs)}.{rng.choice(['rss', 'atom', 'json'])}",
                            "/stories.json?limit=50",
                            f"/topics/{rng.choice(slugs)}",
                            "/",
                        ]
                    )
                    headers = {"If-None-Match": etags[path]} if path in etags else {}
                    t0 = time.perf_counter()
                    try:
                        r = client.get(path, headers=headers)
                        if r.status_code not in (200, 304):
                            read_errors[0] += 1
                        elif "etag" in r.headers:
                            etags[path] = r.headers["etag"]
                    except httpx.HTTPError:
                        read_errors[0] += 1
                    reads.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.readers)]
        for t in threads:
            t.start()
        repo = open_repository(db)
        lags: list[tuple[float, float]] = []  # (real seconds in, lag seconds)
        mem_start: dict[str, float] = {}
        mem_at = 0.0
        warm = min(args.feeds, 50 * args.workers)
        t_end = real_start + real_seconds
        while time.time() < t_end:
            into = time.time() - real_start
            try:
                lags.append((into, repo.queue_lag(clock()).total_seconds()))
            except Exception as e:  # the store busy: the sample is missing, not the run
                print(f"  (queue lag sample failed: {type(e).__name__})", file=sys.stderr)
            if not mem_start and (into >= real_seconds / 2 or warmed_up(base, warm)):
                # After the first polls (models and caches loaded), or half-way at the latest.
                mem_start = {name: rss_mb(p.pid) for name, p in procs.items() if name != "feeds"}
                mem_at = into
            for name, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"{name} died with {p.returncode} during the run")
            time.sleep(min(1.0, max(0.0, t_end - time.time())))
        mem_end = {name: rss_mb(p.pid) for name, p in procs.items() if name != "feeds"}
        stop.set()
        for t in threads:
            t.join(30)
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
        entries = repo.count_entries()
        repo.close()
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if cluster is not None:
            cluster.stop()

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def metric(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "aggregator_poll_duration_seconds_bucket"
    )
    polls = {s: metric("aggregator_polls_total", status=s) for s in ("ok", "not_modified", "error")}
    new = metric("aggregator_items_ingested_total", action="new")
    updated = metric("aggregator_items_ingested_total", action="updated")
    lag_values = [lag for _, lag in lags]
    late = [lag for into, lag in lags if into >= real_seconds / 2]
    store = "postgresql" if args.pg else "sqlite"
    print(
        f"soak: {args.feeds} feeds, {args.minutes:g} simulated minutes at {args.speed:g}x "
        f"({real_seconds:.0f} s real), {args.workers} workers, 1 web, {args.readers} readers, "
        f"{store}"
    )
    print(
        f"polls          : {sum(polls.values()):.0f} (ok {polls['ok']:.0f}, not_modified "
        f"{polls['not_modified']:.0f}, error {polls['error']:.0f}) = "
        f"{sum(polls.values()) / real_seconds:.1f} polls/s"
    )
    print(
        f"items ingested : {new:.0f} new + {updated:.0f} updated = "
        f"{(new + updated) / real_seconds:.1f} items/s (entries stored: {entries})"
    )
    print(
        f"feed latency   : poll duration p50 {histogram_quantile(buckets, 0.5) * 1000:.0f} ms, "
        f"p99 {histogram_quantile(buckets, 0.99) * 1000:.0f} ms"
    )
    print(
        f"queue lag      : max {max(lag_values, default=0):.0f} s, p99 "
        f"{quantile(lag_values, 0.99):.0f} s, second half max {max(late, default=0):.0f} s "
        f"(simulated seconds, {len(lag_values)} samples)"
    )
    print(
        f"web reads      : {len(reads)} = {len(reads) / real_seconds:.1f} req/s, p50 "
        f"{quantile(reads, 0.5) * 1000:.1f} ms, p99 {quantile(reads, 0.99) * 1000:.1f} ms, "
        f"errors {read_errors[0]}"
    )
    growth = []
    for name in sorted(mem_end):
        before, after = mem_start.get(name, 0.0), mem_end[name]
        pct = (after - before) / before * 100 if before else 0.0
        growth.append(pct)
        print(
            f"memory {name:8s}: {before:.0f} MB after warm-up ({mem_at:.0f} s in) -> "
            f"{after:.0f} MB at the end ({pct:+.1f}%)"
        )
    ok = all(g <= 10 for g in growth)
    print(f"memory growth within 10%: {'yes' if ok else 'no'}")


if __name__ == "__main__":
    main()
