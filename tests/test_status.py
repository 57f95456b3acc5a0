"""`aggregator status`: the real console script after a real poll of a local server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from builders import config_yaml, news_items, rss
from conftest import FeedServer

# The console script pip installed beside this interpreter, as an admin runs it.
AGGREGATOR = Path(sys.executable).parent / "aggregator"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def aggregator(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    assert AGGREGATOR.exists(), f"no console script at {AGGREGATOR}: pip install -e ."
    environ = {**os.environ, "COLUMNS": "250", **env}
    environ.pop("AGGREGATOR_DATABASE_URL", None)
    if "FORCE_COLOR" not in env:
        environ["NO_COLOR"] = "1"
    return subprocess.run(
        [str(AGGREGATOR), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=environ
    )


def test_status_shows_every_feeds_health_after_a_poll(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    good = feed_server.serve("/good.rss", rss(news_items(14)))
    broken = feed_server.serve("/broken.rss", b"<html>Server error</html>", status=503)
    paused = feed_server.serve("/paused.rss", rss(news_items(3, site="https://p.example")))
    (tmp_path / "feeds.yaml").write_text(
        config_yaml(
            [
                {"url": good, "title": "Good News"},
                {"url": broken, "title": "Broken Wire"},
                {"url": paused, "enabled": False},
            ]
        )
    )
    polled = aggregator("poll", "--once", cwd=tmp_path)
    # A failed feed makes `poll --once` exit 1 (issue 22.13); the others are still saved.
    assert polled.returncode == 1 and "2 feeds polled, 1 failed" in polled.stdout, polled

    r = aggregator("status", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["url"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {good, broken, paused}
    now = datetime.now(UTC)
    ok = rows[good]
    assert ok["last_status"] == "ok" and ok["last_http_status"] == 200
    assert ok["consecutive_errors"] == 0 and not ok["failing"] and ok["entries"] == 14
    assert abs((datetime.fromisoformat(ok["last_success_at"]) - now).total_seconds()) < 120
    assert datetime.fromisoformat(ok["next_poll_at"]) > now
    assert ok["items_per_day"] >= 0
    bad = rows[broken]
    assert bad["failing"] and bad["consecutive_errors"] == 1 and bad["last_success_at"] is None
    assert bad["last_http_status"] == 503 and "503" in bad["last_error"]
    assert rows[paused]["enabled"] is False and rows[paused]["last_attempt_at"] is None

    table = aggregator("status", cwd=tmp_path, FORCE_COLOR="1", TERM="xterm-256color")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "3 feeds: 1 ok, 1 failing, 1 disabled or removed" in ANSI.sub("", table.stdout)

    def line_of(text: str) -> str:
        return next(line for line in lines if text in ANSI.sub("", line))

    # Failing in red, disabled dim, healthy plain.
    assert "\x1b[31m" in line_of("Broken Wire")
    assert "\x1b[2m" in line_of(paused)
    assert "\x1b[31m" not in line_of("Good News") and "\x1b[2m" not in line_of("Good News")
    plain = ANSI.sub("", table.stdout)
    assert "ok (200)" in plain and "error (503)" in plain
