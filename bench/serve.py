"""Serving figures over real sockets: our cached topic feed against nginx, in the same run.

    python bench/serve.py [--stories 200] [--seconds 5] [--connections 64] [--processes 1,2]

Builds a store whose topic has --stories stories, starts `aggregator web --processes N`
for each N of --processes, and measures requests/s and p99 latency for the cached
50-item Atom feed answered 200 and answered 304 (If-None-Match). The bars, measured the
same way in the same run: nginx serving the same bytes as a static file with as many
worker processes (when an `nginx` binary is installed: `apt-get install nginx-light`),
and a bare Starlette handler that returns the same bytes from memory under one uvicorn
process. Each ratio is to nginx with the same number of processes. The load generator
is wrk when installed (`apt-get install wrk`), else a small asyncio keep-alive client.
Targets (issue 6): 200s >= 0.3x nginx, 304s >= 0.5x nginx, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from builders import config_yaml, news_items, rss  # noqa: E402

FEED_PATH = "/topics/business.atom"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def build_store(tmp: Path, stories: int) -> Path:
    from aggregator.pipeline import ingest
    from aggregator.service import Aggregator
    from aggregator.types import Fetched

    per_feed = 50
    feeds = []
    for i in range(max(1, -(-stories // per_feed))):
        site = f"https://site{i}.example.com"
        n = min(per_feed, stories - i * per_feed)
        feeds.append((f"{site}/feed.rss", rss(news_items(n, site=site), site=site)))
    cfg = tmp / "feeds.yaml"
    cfg.write_text(
        config_yaml(
            [{"url": u, "tags": ["business"]} for u, _ in feeds],
            database_url=f"sqlite:///{tmp}/serve.db",
        )
    )
    agg = Aggregator.from_file(cfg)
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    for url, body in feeds:
        fetched = Fetched(
            url, url, 200, body, {"content-type": "application/rss+xml"}, None, None, 0
        )
        ingest(agg.repo, agg.tagger, url, ("business",), fetched, now, timedelta(minutes=30))
    agg.close()
    return cfg


def run_bare(arg: str, port: int) -> None:
    """The child process of the bare bar: Starlette answering ``arg``'s bytes."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    body = Path(arg).read_bytes()
    etag = '"bare"'

    async def feed(request: Request) -> Response:
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/atom+xml", headers=headers)

    app = Starlette(routes=[Route(FEED_PATH, feed)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_nginx(tmp: Path, body: bytes, port: int, workers: int) -> subprocess.Popen[bytes] | None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        return None
    tmp = tmp / f"nginx{workers}"
    root = tmp / "www"
    (root / "topics").mkdir(parents=True)
    (root / FEED_PATH.lstrip("/")).write_bytes(body)
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user}
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    # nginx closes a keep-alive connection after 1,000 requests by default; the load clients
    # (like wrk) reuse theirs for the whole run.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    types {{ application/atom+xml atom; }}
    client_body_temp_path {tmp}/nginx_tmp;
    server {{ listen 127.0.0.1:{port}; root {root}; etag on; }}
}}
"""
    )
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE)
    wait_up(port, proc)
    return proc


def load_wrk(url: str, headers: dict[str, str], seconds: float, conns: int) -> tuple[float, float]:
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", url]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert m, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    if re.search(r"Non-2xx or 3xx responses", out):
        raise SystemExit(f"wrk saw errors:\n{out}")
    return rps, float(m.group(1)) * scale


async def _client(
    port: int, path: str, headers: dict[str, str], stop: float, lat: list[float], status: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    # The same Host as httpx sent for the ETag: our self links (and so the ETag) follow Host.
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
    try:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            got = int(head[9:12])
            if got != status:
                raise SystemExit(f"expected {status}, got {head[:200]!r}")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m:
                await reader.readexactly(int(m.group(1)))
            lat.append(time.perf_counter() - t)
    finally:
        writer.close()


def load_python(
    port: int, headers: dict[str, str], seconds: float, conns: int, status: int
) -> tuple[float, float]:
    async def run() -> list[float]:
        lat: list[float] = []
        stop = time.perf_counter() + seconds
        await asyncio.gather(
            *(_client(port, FEED_PATH, headers, stop, lat, status) for _ in range(conns))
        )
        return lat

    t = time.perf_counter()
    lat = asyncio.run(run())
    took = time.perf_counter() - t
    lat.sort()
    return len(lat) / took, lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stories", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--processes", default="1,2", help="web process counts to measure")
    ap.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--_bare", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._bare:
        run_bare(args._bare[0], int(args._bare[1]))
        return
    counts = [int(n) for n in args.processes.split(",")]
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk") is not None)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cfg = build_store(tmp, args.stories)
        try:
            # (label, processes, port, etag): ours for each count, then the bars.
            targets: list[tuple[str, int, int, str]] = []
            body = b""
            for n in counts:
                port = free_port()
                procs.append(app_server(cfg, port, n))
                first = httpx.get(
                    f"http://127.0.0.1:{port}{FEED_PATH}", headers={"Accept-Encoding": "identity"}
                )
                first.raise_for_status()
                body = first.content
                targets.append(("aggregator topic feed", n, port, first.headers["etag"]))
            n_items = body.count(b"<entry>")
            (tmp / "feed.atom").write_bytes(body)
            bare_port = free_port()
            procs.append(bare_server(tmp / "feed.atom", bare_port))
            targets.append(("bare starlette+uvicorn", 1, bare_port, '"bare"'))
            have_nginx = False
            for n in counts:
                port = free_port()
                nginx = start_nginx(tmp, body, port, n)
                if nginx is None:
                    break
                have_nginx = True
                procs.append(nginx)
                etag = httpx.get(f"http://127.0.0.1:{port}{FEED_PATH}").headers["etag"]
                targets.append(("nginx static file", n, port, etag))

            print(
                f"cached topic feed: {n_items} items, {len(body):,} bytes; {args.connections} "
                f"connections, {args.seconds:g}s each, load from "
                f"{'wrk' if use_wrk else 'an asyncio client'} on the same {os.cpu_count()} cores"
            )
            results: dict[tuple[str, int, int], tuple[float, float]] = {}
            for status in (200, 304):
                for label, n, port, etag in targets:
                    hdrs = {"If-None-Match": etag} if status == 304 else {}
                    url = f"http://127.0.0.1:{port}{FEED_PATH}"
                    # Warm up: connections, caches, the first render in every process.
                    for _ in range(4 * n):
                        httpx.get(url, headers=hdrs)
                    if use_wrk:
                        rps, p99 = load_wrk(url, hdrs, args.seconds, args.connections)
                    else:
                        rps, p99 = load_python(port, hdrs, args.seconds, args.connections, status)
                    results[(label, n, status)] = (rps, p99)
            bar = "nginx static file" if have_nginx else "bare starlette+uvicorn"
            if not have_nginx:
                print("nginx not installed: ratios are to the bare starlette+uvicorn handler")
            print(
                f"{'target':<26}{'procs':>6}{'status':>7}{'req/s':>11}{'p99 ms':>9}"
                f"  ratio to {bar} ({'same processes' if have_nginx else '1 process'})"
            )
            for status in (200, 304):
                for label, n, _, _ in targets:
                    rps, p99 = results[(label, n, status)]
                    base = results[(bar, n if have_nginx else 1, status)][0]
                    print(
                        f"{label:<26}{n:>6}{status:>7}{rps:>11,.0f}{p99:>9.1f}  {rps / base:.2f}x"
                    )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def app_server(cfg: Path, port: int, processes: int) -> subprocess.Popen[bytes]:
    """`aggregator web` itself, as an admin would start it."""
    cmd = [sys.executable, "-m", "aggregator", "web", "--config", str(cfg)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--processes", str(processes)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    wait_up(port, proc)
    return proc


def bare_server(body: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--_bare", str(body), str(port)],
        cwd=ROOT,
    )
    wait_up(port, proc)
    return proc


if __name__ == "__main__":
    main()
