"""The real console script, run as a subprocess on temporary feeds.yaml files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from builders import config_yaml, news_items, rss
from conftest import FeedServer

from storage import open_repository


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_answer(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> httpx.Response:
    """The first HTTP answer of a server process that is starting (it must not exit first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert proc.poll() is None, f"the server exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout:g} s"
            time.sleep(0.2)


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("AGGREGATOR_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_validate_reports_every_error_and_exits_nonzero(tmp_path: Path) -> None:
    (tmp_path / "feeds.yaml").write_text(
        "feeds:\n  - url: https://example.com/feed\n    interval: never\n"
        "topics:\n  - name: X\n    slug: 'not a slug'\n    rules: {regex: ['(a', b]}\n"
    )
    r = run("validate", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith("feeds.yaml:3:5: feeds[0].interval: invalid duration 'never'")
    assert lines[1].startswith("feeds.yaml:6:5: topics[0].slug")
    assert lines[2].startswith(
        'feeds.yaml:7:21: topics[0].rules.regex[0] (topic "X"): invalid regular'
    )
    assert "3 error(s)" in lines[3]


def test_validate_accepts_the_shipped_file() -> None:
    root = Path(__file__).parent.parent
    r = run("validate", "--config", str(root / "feeds.yaml"), cwd=root)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and "topics" in r.stdout


def test_serve_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "feeds.yaml").write_text("feeds:\n  - url: nope\n")
    r = run("serve", cwd=tmp_path)
    assert r.returncode == 2
    assert "feeds.yaml:2:5: feeds[0].url" in r.stderr
    assert not (tmp_path / "storage").exists()


def test_poll_once_prints_a_table_and_stores(tmp_path: Path, feed_server: FeedServer) -> None:
    good = feed_server.serve("/good.rss", rss(news_items(20)))
    bad = feed_server.serve("/bad.rss", b"", status=500)
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": good}, {"url": bad}]))
    r = run("poll", "--once", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 feeds polled, 1 failed" in r.stdout
    assert "HTTP 500" in r.stdout
    repo = open_repository(f"sqlite:///{tmp_path / 'storage' / 'aggregator.db'}")
    try:
        assert repo.count_entries(good) == 20
    finally:
        repo.close()


def test_serve_py_polls_serves_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    good = feed_server.serve("/good.rss", rss(news_items(20)))
    port = free_port()
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": good}], port=port))
    root = Path(__file__).parent.parent
    proc = subprocess.Popen(
        [sys.executable, str(root / "serve.py"), "--config", str(tmp_path / "feeds.yaml")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        stories = 0
        while time.monotonic() < deadline:
            try:
                doc = httpx.get(f"http://127.0.0.1:{port}/topics", timeout=2).json()
                stories = {t["slug"]: t["stories"] for t in doc["topics"]}["business"]
                if stories:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert stories > 0, "the feed was not polled and served within 60 s"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "Application shutdown complete" in out


def test_web_processes_share_one_port(tmp_path: Path, feed_server: FeedServer) -> None:
    good = feed_server.serve("/good.rss", rss(news_items(20)))
    port = free_port()
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": good}], port=port))
    refused = run("serve", "--processes", "2", cwd=tmp_path)
    assert refused.returncode == 2 and "--no-poll" in refused.stderr  # N schedulers otherwise
    assert run("poll", "--once", cwd=tmp_path).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "web", "--processes", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/topics/business.atom"
    try:
        first = first_answer(url, proc)
        assert first.status_code == 200 and b"<entry>" in first.content
        # New connections each: the processes take turns; they all render the same bytes.
        for _ in range(20):
            r = httpx.get(url, headers={"If-None-Match": first.headers["etag"]})
            assert r.status_code == 304
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert out.count("Started server process") == 2, out
