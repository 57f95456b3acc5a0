"""The aggregator beside the library a user would pick instead: lemon24/reader, same feeds.

    python bench/peer.py [--feeds 500] [--hosts 100] [--items 20] [--new 2] [--pairs 1]
                         [--reader-spec 'reader sgmllib3k'] [--reader-workers 16] [--stored 0]

bench/poll.py's feed server (a child process) serves --feeds distinct feeds of --items
items on --hosts loopback addresses, with ETag and Last-Modified. Two engines poll them,
each in a process of its own (its memory and CPU are its own), the same rounds in the
same run, in turns (the first engine alternates round by round and pair by pair):

* ``first``: a first fetch into an empty store (every item new);
* ``304``: every feed answers 304;
* ``new``: every feed has --new new items (the server shifts each feed by --new items:
  its newest ones new, the rest the same bytes as before).

With --stored N, each engine's store is first filled with N more entries (feeds of
their own, not timed), and the three rounds are measured against it.

The engines: the aggregator (``Aggregator.poll_all()``, SQLite, the shipped topics: rules
only, default processes, the CLI's collector pace) and reader (``make_reader`` +
``update_feeds(workers=--reader-workers)``, SQLite), installed with pip into a throwaway
venv under ~/.cache/aggregator-bench (made on first use; --reader-python uses another
interpreter that has it). Beside them, the bars of bench/poll.py in this process: bare
httpx (200 and 304 rounds) and bare feedparser on one process per core.

Prints, per round, wall time and CPU time (of the engine's whole process tree) for each
engine with the load average at its start, the ratio aggregator/reader of items (or
feeds) per second (above 1: the aggregator is faster), and each engine's peak resident
memory (sum over its processes, sampled every 50 ms, and each process's own peak).
Targets (issue 25): first fetch and the new-items round >= 1.5x reader, 304 round >= 1.2x
reader and >= 0.9x bare httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aggregator-bench"
ROUNDS = ("first", "304", "new")

# ----------------------------------------------------------------------------- engines
# What runs in an engine's process. The reader process runs in reader's venv, where only
# the standard library and reader are installed: nothing from this repository is imported
# at the top of this module.


class Tree:
    """Resident memory and CPU time of this process and its descendants, sampled."""

    def __init__(self) -> None:
        self.peak = 0
        self.by_pid: dict[int, int] = {}
        self.cpu_by_pid: dict[int, float] = {}  # the last CPU seconds seen of each process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)

    def pids(self) -> list[int]:
        out, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                kids = []
            todo += [int(k) for k in kids]
        return out

    def sample(self) -> None:
        total = 0
        for pid in self.pids():
            rss, cpu = _proc(pid)
            total += rss
            self.by_pid[pid] = max(self.by_pid.get(pid, 0), rss)
            if cpu:
                self.cpu_by_pid[pid] = cpu
        self.peak = max(self.peak, total)

    def cpu(self) -> float:
        """CPU seconds used so far by every process of the tree, gone ones included."""
        self.sample()
        return sum(self.cpu_by_pid.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _proc(pid: int) -> tuple[int, float]:
    rss, cpu = 0, 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    return rss, cpu


class AggregatorEngine:
    def __init__(self, tmp: Path, feeds: list[str], filler: list[str], args: Any) -> None:
        sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]
        from poll import write_config

        from aggregator.collector import pace_collector
        from aggregator.service import Aggregator

        self.loop = asyncio.new_event_loop()
        self.feeds, self.filler = feeds, filler
        cfg = write_config(tmp, feeds + filler, args.concurrency, f"sqlite:///{tmp}/agg.db")
        self.agg = Aggregator.from_file(cfg)
        pace_collector()  # as the CLI does for its processes

    def round(self, fill: bool = False) -> tuple[int, int]:
        """Polls every measured feed (or the filler) once: (new items, feeds not modified)."""
        results = self.loop.run_until_complete(
            self.agg.poll_all(self.filler if fill else self.feeds)
        )
        bad = [r for r in results if r.status not in ("ok", "not_modified")]
        assert not bad, f"{len(bad)} polls failed: {bad[:3]}"
        return sum(r.new for r in results), sum(r.status == "not_modified" for r in results)

    def close(self) -> None:
        self.loop.run_until_complete(self.agg.stop())
        self.agg.close()


class ReaderEngine:
    def __init__(self, tmp: Path, feeds: list[str], filler: list[str], args: Any) -> None:
        from reader import make_reader

        self.reader = make_reader(str(tmp / "reader.sqlite"))
        self.workers = args.reader_workers
        # Tags keep the measured feeds' rounds apart from the filler's.
        for tag, urls in (("measured", feeds), ("filler", filler)):
            for url in urls:
                self.reader.add_feed(url)
                self.reader.set_tag(url, tag)

    def round(self, fill: bool = False) -> tuple[int, int]:
        from reader import UpdateError

        new = not_modified = 0
        tag = "filler" if fill else "measured"
        # scheduled=False: every feed now, as the aggregator's poll_all does.
        updates = self.reader.update_feeds_iter(tags=[tag], workers=self.workers, scheduled=False)
        for result in updates:
            if isinstance(result.value, UpdateError):
                raise AssertionError(f"reader failed on {result.url}: {result.value!r}")
            if result.value is None:
                not_modified += 1
            else:
                new += result.value.new
        return new, not_modified

    def close(self) -> None:
        self.reader.close()


def engine_main(args: argparse.Namespace) -> None:
    """An engine's process: one JSON line per command read on stdin."""
    tree = Tree()
    urls = json.loads(Path(args.urls).read_text())
    with tempfile.TemporaryDirectory() as tmpdir:
        cls = AggregatorEngine if args.engine == "aggregator" else ReaderEngine
        engine = cls(Path(tmpdir), urls["feeds"], urls["filler"], args)
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            load = os.getloadavg()[0]
            cpu0, t0 = tree.cpu(), time.perf_counter()
            new, not_modified = engine.round(fill=command == "fill")
            seconds, cpu = time.perf_counter() - t0, tree.cpu() - cpu0
            out = {"seconds": seconds, "cpu": cpu, "new": new, "not_modified": not_modified}
            print(json.dumps(out | {"load": load}), flush=True)
        engine.close()
    tree.stop()
    each = {str(pid): size for pid, size in tree.by_pid.items()}
    print(json.dumps({"peak": tree.peak, "each": each, "self": os.getpid()}), flush=True)


# ----------------------------------------------------------------------------- driver


class Engine:
    """The driver's handle on an engine's process."""

    def __init__(self, name: str, python: str, urls_file: Path, args: argparse.Namespace) -> None:
        self.name = name
        cmd = [python, str(Path(__file__).resolve()), "--engine", name, "--urls", str(urls_file)]
        cmd += ["--concurrency", str(args.concurrency)]
        cmd += ["--reader-workers", str(args.reader_workers)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} exited with {self.proc.wait()} during {command!r}")
        result: dict[str, Any] = json.loads(line)
        return result

    def quit(self) -> dict[str, Any]:
        out = self.ask("quit")
        self.proc.wait(60)
        return out


def reader_python(spec: str) -> str:
    """A venv with ``spec`` pip-installed, made once under ~/.cache/aggregator-bench."""
    venv = CACHE / f"reader-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not (venv / "installed").exists():
        print(f"installing {spec} into {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + spec.split(),
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"pip could not install {spec}:\n{done.stdout}{done.stderr}")
        (venv / "installed").write_text(spec)
    return str(python)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=500)
    ap.add_argument("--hosts", type=int, default=100, help="distinct loopback hosts")
    ap.add_argument("--items", type=int, default=20, help="items per feed")
    ap.add_argument("--new", type=int, default=2, help="new items per feed in the 'new' round")
    ap.add_argument("--concurrency", type=int, default=64, help="the aggregator's and bare httpx's")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="bare parse pool")
    ap.add_argument("--reader-workers", type=int, default=16, help="update_feeds(workers=)")
    # reader's vendored feedparser imports sgmllib, which reader does not require.
    ap.add_argument(
        "--reader-spec", default="reader sgmllib3k", help="what pip installs for reader"
    )
    ap.add_argument("--reader-python", help="an interpreter with reader (no venv made)")
    ap.add_argument("--pairs", type=int, default=1, help="runs of every round per engine")
    ap.add_argument("--stored", type=int, default=0, help="entries stored before the rounds")
    ap.add_argument("--engine", choices=["aggregator", "reader"], help=argparse.SUPPRESS)
    ap.add_argument("--urls", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        engine_main(args)
        return
    python = args.reader_python or reader_python(args.reader_spec)
    total = args.feeds + -(-args.stored // args.items)  # filler feeds after the measured ones
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "poll.py"), "--serve", "--feeds", str(total)]
        + ["--hosts", str(args.hosts), "--items", str(args.items)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        run(args, port, python, server)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)


def load() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def run(args: argparse.Namespace, port: int, python: str, server: subprocess.Popen[str]) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]
    from poll import bare_feedparser, bare_httpx, feed_body, feed_path, host_of

    n, items = args.feeds, args.items
    total = n + -(-args.stored // items)
    every = [f"http://{host_of(i, args.hosts)}:{port}{feed_path(i)}" for i in range(total)]
    urls = every[:n]
    print(
        f"{n} feeds x {items} items (~{len(feed_body(0, items)) // 1024} KB) on "
        f"{min(n, args.hosts)} hosts, {args.stored:,} entries stored before the rounds, "
        f"aggregator concurrency {args.concurrency}, reader workers {args.reader_workers}, "
        f"{os.cpu_count()} cores"
    )
    etags: dict[str, str] = {}
    bars: dict[str, float] = {}
    print(f"bars ({load()}):")
    bars["httpx 200"] = asyncio.run(bare_httpx(urls, args.concurrency, etags))
    bars["httpx 304"] = asyncio.run(bare_httpx(urls, args.concurrency, etags))
    bars["feedparser"] = bare_feedparser(n, items, args.workers)
    print(f"  bare httpx       200 round {n / bars['httpx 200']:>9,.0f} feeds/s")
    print(f"  bare httpx       304 round {n / bars['httpx 304']:>9,.0f} feeds/s")
    print(
        f"  bare feedparser  {args.workers} procs  {n * items / bars['feedparser']:>9,.0f} items/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        urls_file = Path(tmp) / "urls.json"
        urls_file.write_text(json.dumps({"feeds": urls, "filler": every[n:]}))
        engines = {
            "aggregator": Engine("aggregator", sys.executable, urls_file, args),
            "reader": Engine("reader", python, urls_file, args),
        }
        try:
            results = rounds(args, engines, server)
        finally:
            peaks = {}
            for name, e in engines.items():
                try:
                    peaks[name] = e.quit()
                except (SystemExit, OSError, subprocess.TimeoutExpired):
                    e.proc.kill()
    report(args, results, peaks, bars)


def rounds(
    args: argparse.Namespace, engines: dict[str, Engine], server: subprocess.Popen[str]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    n, items = args.feeds, args.items
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if args.stored:
        for e in engines.values():
            got = e.ask("fill")
            print(f"  {e.name} filled its store: {got['new']:,} entries in {got['seconds']:.0f}s")
    names = list(engines)
    turn = shift = 0
    for pair in range(args.pairs):
        # A store is empty once: later pairs run the 304 and new-items rounds again.
        for name in ROUNDS if pair == 0 else ROUNDS[1:]:
            if name == "new":
                shift += args.new
                assert server.stdin is not None and server.stdout is not None
                server.stdin.write(f"shift {shift}\n")
                server.stdin.flush()
                assert server.stdout.readline().strip() == "ok"
            order = names if turn % 2 == 0 else names[::-1]
            turn += 1
            for e in (engines[k] for k in order):
                got = e.ask(name)
                want_new = {"first": n * items, "304": 0, "new": n * args.new}[name]
                assert got["new"] == want_new, (e.name, name, got, want_new)
                if name == "304":
                    assert got["not_modified"] == n, (e.name, got)
                out.setdefault((name, e.name), []).append(got)
                print(
                    f"  {name:<6} {e.name:<11} {got['seconds']:7.2f} s wall "
                    f"{got['cpu']:7.2f} s CPU  (load {got['load']:.1f})"
                )
    return out


def report(
    args: argparse.Namespace,
    results: dict[tuple[str, str], list[dict[str, Any]]],
    peaks: dict[str, dict[str, Any]],
    bars: dict[str, float],
) -> None:
    n, items = args.feeds, args.items
    print(
        f"{'round':<22}{'aggregator':>16}{'reader':>16}{'ratio':>8}{'CPU ratio':>11}"
        "  (ratio: aggregator's rate / reader's; CPU ratio: reader's CPU / aggregator's)"
    )
    for name, unit, count in (
        ("first", "items/s", n * items),
        ("304", "feeds/s", n),
        ("new", "items/s", n * args.new),
    ):
        agg, rdr = results.get((name, "aggregator"), []), results.get((name, "reader"), [])
        if not agg or not rdr:
            continue
        a = sum(r["seconds"] for r in agg) / len(agg)
        b = sum(r["seconds"] for r in rdr) / len(rdr)
        ca = sum(r["cpu"] for r in agg) / len(agg)
        cb = sum(r["cpu"] for r in rdr) / len(rdr)
        label = {"first": "first fetch", "304": "all-304", "new": f"{args.new} new items a feed"}
        print(
            f"{label[name]:<22}{count / a:>10,.0f} {unit:<5}{count / b:>10,.0f} {unit:<5}"
            f"{b / a:>7.2f}x{cb / ca:>10.2f}x"
        )
    agg304 = results.get(("304", "aggregator"))
    if agg304:
        a = sum(r["seconds"] for r in agg304) / len(agg304)
        print(f"aggregator 304 round to bare httpx 304: {bars['httpx 304'] / a:.2f}x (target 0.9)")
    first = results.get(("first", "aggregator"))
    if first:
        to_bare = bars["feedparser"] / first[0]["seconds"]
        print(f"aggregator first fetch to bare feedparser: {to_bare:.2f}x")
    for name, peak in peaks.items():
        each = sorted(peak["each"].items(), key=lambda kv: kv[0] != str(peak["self"]))
        parts = ", ".join(f"{size / 2**20:.0f}" for _, size in each)
        print(f"peak memory {name:<11} {peak['peak'] / 2**20:6.0f} MB  (each process: {parts})")
    print(load())


if __name__ == "__main__":
    main()
