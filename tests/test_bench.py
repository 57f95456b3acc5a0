"""Keep the benchmark scripts runnable: each one runs on a tiny input and prints its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        (
            "admin.py",
            ["--feeds", "30", "--rounds", "1"],
            ["GET /admin", "one edit", "preview"],
        ),
        (
            "ingest.py",
            ["--feeds", "3", "--items", "5", "--requests", "20"],
            ["bare feedparser", "ingest first poll", " req "],
        ),
        (
            "serve.py",
            ["--stories", "12", "--seconds", "1", "--connections", "4"],
            ["aggregator topic feed", "bare starlette+uvicorn", "304", "ratio to"],
        ),
        (
            "poll.py",
            [
                "--feeds",
                "12",
                "--hosts",
                "3",
                "--items",
                "4",
                "--concurrency",
                "4",
                "--workers",
                "1",
            ],
            [
                "bare httpx          200",
                "bare httpx          304",
                "bare feedparser",
                "ratio to bare feedparser",
                "ratio to bare httpx 304",
                "peak memory",
            ],
        ),
        (
            "peer.py",
            ["--feeds", "6", "--hosts", "2", "--items", "3", "--concurrency", "4"]
            + ["--workers", "1", "--reader-workers", "2", "--stored", "6", "--pairs", "2"],
            [
                "bare httpx       304",
                "bare feedparser",
                "first fetch",
                "all-304",
                "2 new items a feed",
                "to bare httpx 304",
                "peak memory aggregator",
                "peak memory reader",
                "load ",
            ],
        ),
        ("tag_eval.py", ["--modes", "rules", "--limit", "40"], ["macro-F1 rules:"]),
        (
            "soak.py",
            ["--feeds", "20", "--minutes", "3", "--speed", "20", "--readers", "1", "--items", "3"],
            ["polls          :", "items/s", "p99", "queue lag", "web reads", "memory worker1"],
        ),
        (
            "tag_speed.py",
            ["--items", "200", "--topics", "20", "--classifier-items", "16"],
            ["rules only (one core)", "rules + classifier", "classifier extra adds"],
        ),
        (
            "workers.py",
            ["--feeds", "20", "--items", "2", "--workers", "1,2"],
            ["PostgreSQL", "workers=1 ", "workers=2 ", "feeds/s=", "ratio to 1 = "],
        ),
        (
            "dedup_scale.py",
            ["--sizes", "200,400", "--rounds", "1"],
            ["stored=      200", "stored=      400", "median_ms=", "ratio 400/200 = "],
        ),
    ],
)
def test_bench_script_runs(script: str, args: list[str], expected: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for word in expected:
        assert word in done.stdout, done.stdout
