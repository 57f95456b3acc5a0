"""The real console script, run as a subprocess on temporary feeds.yaml files."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from ruamel.yaml import YAML

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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "feeds.yaml:1:1: the file is empty"),
        (b"# only a comment\n\n", "feeds.yaml:1:1: the file is empty"),
        (b"\x00\xff\xfe", "feeds.yaml: cannot read"),
        (b"\x00", "feeds.yaml: not a YAML file"),
        (b"settings:\n  default_interval: 99999999999d\n", "is too long"),
        (b"settings:\n  default_interval: .inf\n", "invalid duration"),
    ],
    ids=["empty", "comments", "nul-bom", "nul", "overflow", "inf"],
)
def test_validate_refuses_empty_and_unreadable_files(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Issue 22.1 and 22.2: `ok: 0 feeds` for an empty file, tracebacks for the others."""
    (tmp_path / "feeds.yaml").write_bytes(content)
    r = run("validate", cwd=tmp_path)
    assert r.returncode == 1, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    assert message in r.stderr, r.stderr


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
    assert r.returncode == 1, r.stderr  # a feed failed: cron and scripts can tell (22.13)
    assert "2 feeds polled, 1 failed" in r.stdout
    assert "HTTP 500" in r.stdout
    repo = open_repository(f"sqlite:///{tmp_path / 'storage' / 'aggregator.db'}")
    try:
        assert repo.count_entries(good) == 20
    finally:
        repo.close()


def test_piped_tables_print_one_record_per_line_and_plurals_agree(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    # A URL longer than 80 columns: rich folds it over several lines when it draws a table.
    long = feed_server.serve(
        "/" + "section/" * 12 + "world-news-in-english.rss", rss(news_items(3))
    )
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": long, "title": "World"}]))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "AGGREGATOR_DATABASE_URL")}
    r = subprocess.run(
        [sys.executable, "-m", "aggregator", "poll", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["feed", "status", "http"]
    record = lines[1].split("\t")
    assert record[:4] == [long, "ok", "200", "3"], lines
    assert lines[-1] == "1 feed polled, 0 failed"
    r = subprocess.run(
        [sys.executable, "-m", "aggregator", "feeds", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert any(line.startswith(long + "\tWorld\t") for line in r.stdout.splitlines()), r.stdout
    assert r.stdout.splitlines()[-1] == "1 feed (1 enabled)"


def test_feeds_list_shows_the_next_interval_and_why(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    slow = feed_server.serve(
        "/slow.rss", rss(news_items(3)).replace(b"<language>", b"<ttl>240</ttl><language>")
    )
    down = feed_server.serve("/down.rss", b"", status=503)
    (tmp_path / "feeds.yaml").write_text(
        config_yaml([{"url": slow}, {"url": down}], default_interval="45m")
    )
    listed = run("feeds", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}
    assert rows[slow][3:5] == ["45m", "45m (configured)"], listed.stdout
    assert run("poll", "--once", cwd=tmp_path).returncode == 1  # one feed failed (issue 22.13)
    listed = run("feeds", "list", cwd=tmp_path)
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()}
    assert rows[slow][3:5] == ["45m", "4h (feed hint (ttl))"], listed.stdout
    assert rows[down][3:5] == ["45m", "90m (backoff (1 error))"], listed.stdout


def test_verbose_poll_logs_one_line_per_poll_not_httpx_lines(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    url = feed_server.serve("/world.rss", rss(news_items(2)))
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": url}]))
    quiet = run("poll", "--once", "-v", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    mentions = [line for line in quiet.stderr.splitlines() if url in line]
    assert [m for m in mentions if " aggregator.pipeline poll " in m], mentions
    assert not [m for m in mentions if " httpx " in m or " httpcore" in m], mentions
    os.environ["AGGREGATOR_LOG_HTTP"] = "1"
    try:
        asked = run("poll", "--once", "-v", cwd=tmp_path)
    finally:
        del os.environ["AGGREGATOR_LOG_HTTP"]
    assert any(" httpx HTTP Request: GET " + url in line for line in asked.stderr.splitlines())


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


def test_a_catastrophic_topic_regex_does_not_hang_a_poll(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """Issue 22.3: (a+)+$ on 'a'*29 + '!' took a one-feed poll 61 s, doubling per 'a'."""
    items = news_items(6)
    # For the stdlib's re both patterns backtrack exponentially: 28 letters take (a+)+$
    # about 30 s, 40 take (a|aa)+$ hours.
    items[0].title = "a" * 28 + "!"
    items[1].title = "a" * 40 + "!"
    url = feed_server.serve("/a.rss", rss(items))
    topic = {
        "name": "Letters",
        "slug": "letters",
        "description": "A topic whose regex backtracks exponentially.",
        "rules": {"regex": ["(a+)+$", "(a|aa)+$"]},
    }
    doc = YAML(typ="safe").load(config_yaml([{"url": url}]))
    doc["topics"].append(topic)
    YAML(typ="safe").dump(doc, tmp_path / "feeds.yaml")
    started = time.monotonic()
    r = run("poll", "--once", "-v", cwd=tmp_path, timeout=60)
    assert time.monotonic() - started < 20, "the poll waited on the regex"
    assert "1 feed polled, 0 failed" in r.stdout, r.stdout + r.stderr
    assert "took over 100 ms" in r.stderr
    # The poll's line says how long tagging took.
    assert re.search(rf"poll feed={re.escape(url)} status=ok .* tag_ms=\d+", r.stderr), r.stderr
    repo = open_repository(f"sqlite:///{tmp_path / 'storage' / 'aggregator.db'}")
    try:
        assert repo.count_entries(url) == 6  # every item stored, tagged by the other topics
    finally:
        repo.close()


def test_poll_once_on_sigterm_saves_the_polls_in_progress_and_exits_143(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """Issue 22.13: SIGTERM ended `poll --once` at once (rc -15), losing fetched bodies."""
    slow = feed_server.serve("/slow.rss", rss(news_items(5)), delay=3.0)
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": slow}]))
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("AGGREGATOR_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "poll", "--once"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while feed_server.hits("/slow.rss") == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "the poll never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, (proc.returncode, out, err)
    assert "1 feed polled, 0 failed" in out
    repo = open_repository(f"sqlite:///{tmp_path / 'storage' / 'aggregator.db'}")
    try:
        assert repo.count_entries(slow) == 5  # the poll in progress finished and was saved
    finally:
        repo.close()


def test_poll_feed_refuses_a_url_not_in_feeds_yaml(tmp_path: Path, feed_server: FeedServer) -> None:
    """Issue 22.14: it was polled and left a permanent "not in feeds.yaml" row in status."""
    listed = feed_server.serve("/listed.rss", rss(news_items(3)))
    stray = feed_server.serve("/stray.rss", rss(news_items(3, site="https://stray.example")))
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": listed}]))
    r = run("poll", "--feed", stray, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{stray} is not in feeds.yaml" in r.stderr and "aggregator feeds add" in r.stderr
    assert feed_server.hits("/stray.rss") == 0
    assert run("poll", "--feed", listed, cwd=tmp_path).returncode == 0
    status = json.loads(run("status", "--json", cwd=tmp_path).stdout)
    assert [row["url"] for row in status] == [listed]


def test_retag_an_unknown_topic_is_an_error(tmp_path: Path) -> None:
    """Issue 22.14: `retag --topic nope` said "its stored tags are removed" and exited 0."""
    (tmp_path / "feeds.yaml").write_text(config_yaml([]))
    r = run("retag", "--topic", "nope", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no topic 'nope'" in r.stderr and "stored tags are removed" not in r.stdout
    assert run("retag", "--topic", "sport", cwd=tmp_path).returncode == 0


def test_opml_import_keeps_the_good_outlines_and_lists_the_refused(tmp_path: Path) -> None:
    """Issue 22.14: one bad outline refused the whole file, citing a line of feeds.yaml."""
    (tmp_path / "feeds.yaml").write_text(config_yaml([]))
    (tmp_path / "reader.opml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0"><head><title>Reader'
        "</title></head><body>\n"
        '<outline text="News">\n'
        '  <outline type="rss" text="World" xmlUrl="https://news.example.com/world.rss"/>\n'
        '  <outline type="rss" text="Gopher" xmlUrl="gopher://old.example.net/feed"/>\n'
        '  <outline type="rss" text="Sport" xmlUrl="https://news.example.com/sport.rss"/>\n'
        '  <outline type="rss" text="Script" xmlUrl="javascript:alert(1)"/>\n'
        "</outline>\n</body></opml>\n"
    )
    r = run("opml", "import", "reader.opml", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "imported 2 feeds" in r.stdout
    assert "refused 2 outline(s)" in r.stderr
    assert "'Gopher' (xmlUrl='gopher://old.example.net/feed'): not an http(s) URL" in r.stderr
    assert "'Script' (xmlUrl='javascript:alert(1)')" in r.stderr
    assert "feeds.yaml:" not in r.stderr  # no line of a file that was never written
    text = (tmp_path / "feeds.yaml").read_text()
    assert "world.rss" in text and "sport.rss" in text and "gopher" not in text


def test_opml_export_names_untitled_feeds_by_their_stored_title(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """Issue 22.14: a feed without `title:` was exported as its URL."""
    url = feed_server.serve("/harbour.rss", rss(news_items(2), title="Harbour Gazette"))
    named = feed_server.serve("/named.rss", rss(news_items(2), title="Its Own Name"))
    (tmp_path / "feeds.yaml").write_text(
        config_yaml([{"url": url}, {"url": named, "title": "Chosen Name"}])
    )
    before = run("opml", "export", cwd=tmp_path)
    assert before.returncode == 0 and f'text="{url}"' in before.stdout  # nothing stored yet
    assert not (tmp_path / "storage").exists()
    assert run("poll", "--once", cwd=tmp_path).returncode == 0
    r = run("opml", "export", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f'text="Harbour Gazette" xmlUrl="{url}" title="Harbour Gazette"' in r.stdout
    assert 'text="Chosen Name"' in r.stdout and "Its Own Name" not in r.stdout
