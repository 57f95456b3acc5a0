"""Observability and request limits: /metrics over a real socket, the poll log line, no
secret in any log line of a real run, 413 on oversized admin/login/WebSub bodies."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from builders import Item, config_yaml, news_items, rss
from conftest import FeedServer
from live import live_server
from prometheus_client.parser import text_string_to_metric_families
from test_cli import first_answer, free_port
from test_fetch import make_agg, poll

from aggregator import logs
from aggregator.metrics import route_label
from aggregator.types import PollResult, PollSave
from storage import open_repository


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    r = httpx.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def diplomacy_items(n: int, site: str) -> list[Item]:
    return [
        Item(
            title=f"Foreign minister meets ambassador over sanctions treaty ({i})",
            link=f"{site}/diplomacy/{i}",
            guid=f"{site}/d/{i}",
            description=f"&lt;p&gt;Embassy talks, part {i} &amp;amp; more.&lt;/p&gt;",
            categories=["Diplomacy", "World"],
            published=datetime(2026, 11, 20, 12, tzinfo=UTC) - timedelta(hours=i),
        )
        for i in range(n)
    ]


def test_metrics_count_polls_items_merges_tags_latency_and_queue_lag(
    tmp_path: Path, feed_server: FeedServer, db_url: str
) -> None:
    site = "https://wire.example.org"
    a = feed_server.serve("/a.rss", rss(news_items(30) + diplomacy_items(5, site)))
    # Same links as /a.rss for the diplomacy items: one story each, the second entry merged.
    b = feed_server.serve("/b.rss", rss(diplomacy_items(5, site), title="Wire copy"))
    bad = feed_server.serve("/bad.rss", b"", status=500)
    agg = make_agg(tmp_path, [a, b, bad], db_url)
    try:
        with live_server(agg) as base:
            before = scrape(base)
            first = poll(agg)
            second = poll(agg, [a])  # 304: not modified
            hits = [httpx.get(f"{base}/topics/foreign-relations.rss") for _ in range(3)]
            assert all(h.status_code == 200 for h in hits)
            assert httpx.get(f"{base}/no/such/page").status_code == 404
            after = scrape(base)

            assert first[a].status == "ok" and first[b].status == "ok"
            assert first[bad].status == "error" and second[a].status == "not_modified"
            assert delta(after, before, "aggregator_polls_total", status="ok") == 2
            assert delta(after, before, "aggregator_polls_total", status="error") == 1
            assert delta(after, before, "aggregator_polls_total", status="not_modified") == 1
            assert delta(after, before, "aggregator_poll_duration_seconds_count") == 4
            assert delta(after, before, "aggregator_items_ingested_total", action="new") == 40
            merged = first[a].merged + first[b].merged
            assert merged == 5, first
            assert delta(after, before, "aggregator_dedup_merges_total") == 5
            assert delta(after, before, "aggregator_tags_total", topic="foreign-relations") >= 10, (
                "5 diplomacy entries in each of two feeds are tagged"
            )
            route = {"route": "/topics/{slug}.rss", "method": "GET", "status": "200"}
            # The second and third answers come from the hot path, timed all the same.
            count = "aggregator_http_request_duration_seconds_count"
            assert delta(after, before, count, **route) == 3
            assert delta(after, before, count, route="other", method="GET", status="404") == 1
            assert value(after, "aggregator_store_up") == 1
            assert value(after, "aggregator_queue_lag_seconds") == 0  # nothing overdue

            # A feed due 90 s ago and not yet polled: the queue is 90 s behind.
            now = datetime.now(UTC)
            agg.repo.save_poll(
                bad,
                PollSave(
                    PollResult(bad, "error", 500, "HTTP 500", 0, 0, 0, 1),
                    now - timedelta(minutes=5),
                    next_poll_at=now - timedelta(seconds=90),
                ),
            )
            lag = value(scrape(base), "aggregator_queue_lag_seconds")
            assert 89 <= lag <= 150
    finally:
        agg.close()


def test_metrics_from_other_processes_in_multiprocess_mode(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poller process and a web process sharing PROMETHEUS_MULTIPROC_DIR: the web's
    /metrics shows the polls the other process made."""
    good = feed_server.serve("/good.rss", rss(news_items(12)))
    bad = feed_server.serve("/bad.rss", b"", status=503)
    (tmp_path / "feeds.yaml").write_text(config_yaml([{"url": good}, {"url": bad}]))
    shared = tmp_path / "prom"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    env.pop("AGGREGATOR_DATABASE_URL", None)
    r = subprocess.run(
        [sys.executable, "-m", "aggregator", "poll", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode in (0, 1), r.stderr  # 1: a feed failed (issue 22.13)
    assert list(shared.glob("counter_*.db")), "the poller wrote no metric files"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    (tmp_path / "web").mkdir()
    agg = make_agg(tmp_path / "web", [good])
    try:
        with live_server(agg) as base:
            samples = scrape(base)
    finally:
        agg.close()
    assert value(samples, "aggregator_polls_total", status="ok") == 1
    assert value(samples, "aggregator_polls_total", status="error") == 1
    assert value(samples, "aggregator_items_ingested_total", action="new") == 12


def test_metrics_say_store_down_and_still_answer(tmp_path: Path, feed_server: FeedServer) -> None:
    agg = make_agg(tmp_path, [feed_server.serve("/a.rss", rss(news_items(3)))])
    try:
        with live_server(agg) as base:
            for f in tmp_path.glob("store.db*"):
                f.unlink()
            (tmp_path / "store.db").mkdir()  # a directory: SQLite cannot open it
            for _ in range(5):
                # A connection opened before the swap (a background reader) still reads
                # the unlinked file until the pool lets it go.
                agg.repo._read.dispose()
                agg.repo._write.dispose()
                samples = scrape(base)
                if value(samples, "aggregator_store_up") == 0:
                    break
            assert value(samples, "aggregator_store_up") == 0
            assert ("aggregator_queue_lag_seconds", ()) not in samples
    finally:
        agg.close()


def test_route_labels_are_templates_not_urls() -> None:
    assert route_label("/topics/sport.atom") == "/topics/{slug}.atom"
    assert route_label("/topics/sport.xyz") == "/topics/{slug}.{fmt}"
    assert route_label("/topics/sport") == "/topics/{slug}"
    assert route_label("/places/co.json") == "/places/{code}.json"
    assert route_label("/places/co") == "other"
    assert route_label("/admin/items/7/explain") == "/admin"
    assert route_label("/websub/callback/abc123") == "/websub/callback/{id}"
    assert route_label("/stories.rss") == "/stories.rss"
    assert route_label("/wp-login.php") == "other"
    assert route_label("/topics/a/b.rss") == "other"


# ------------------------------------------------------------------------ the poll line

POLL_LINE = re.compile(
    r"^(?P<kind>poll|push) feed=(?P<feed>\S+) status=(?P<status>ok|not_modified|error) "
    r"http=(?P<http>\d+|None) new=\d+ updated=\d+ unchanged=\d+ merged=\d+ ms=\d+ tag_ms=\d+"
    r"(?: error='.*')?$"
)


def test_exactly_one_structured_line_per_poll(
    tmp_path: Path, feed_server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = feed_server.serve("/good.rss", rss(news_items(25)))
    gone = feed_server.serve("/gone.rss", b"", status=410)
    broken = feed_server.serve("/broken.rss", b"<rss><channel><item><title>x", status=200)
    missing = feed_server.url("/missing.rss")
    urls = [good, gone, broken, missing]
    agg = make_agg(tmp_path, urls)
    try:
        with caplog.at_level(logging.INFO, logger="aggregator"):
            poll(agg)
            poll(agg, [good])
    finally:
        agg.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "aggregator.pipeline"]
    polls = [m for m in (POLL_LINE.match(line) for line in lines) if m]
    assert [p.group("feed") for p in polls].count(good) == 2
    for url in (gone, broken, missing):
        assert [p.group("feed") for p in polls].count(url) == 1, lines
    by_feed = {p.group("feed"): p for p in polls}
    assert by_feed[gone].group("status") == "error" and by_feed[gone].group("http") == "410"
    assert by_feed[missing].group("http") == "404"
    assert [p.group("status") for p in polls if p.group("feed") == good] == ["ok", "not_modified"]


# ------------------------------------------------------------------------ secrets in logs

SECRETS = {
    "admin": "admin-token-Zq81vXk0pLmN4rT7",
    "userinfo": "hunter2-feed-password",
    "query": "qtok-5c1f0e9a7b3d",
    "apikey": "apikey-77aa00bb11cc",
    "hub": "hub-secret-9f8e7d6c5b",
    "bearer": "wrong-token-but-still-secret-42",
    "pg": "pg-pass-3141592653",
}


def test_redact_masks_every_kind_of_secret() -> None:
    cases = {
        "fetch https://bob:hunter2@feeds.example/a.rss failed": "https://***@feeds.example/a.rss",
        "GET /feed?id=7&token=abc123&x=1": "token=***&x=1",
        "callback=https://c.example/cb?api_key=k-999 ok": "api_key=***",
        "hub.secret=s3cr3t-value&hub.mode=subscribe": "hub.secret=***&hub.mode",
        "Authorization: Bearer abc.def-ghi": "Bearer ***",
        "postgresql+psycopg://agg:pw-123456@db:5432/agg": "postgresql+psycopg://***@db:5432",
        "access_token%3Dzzz999": "access_token%3D***",
    }
    for text, masked in cases.items():
        out = logs.redact(text, [])
        assert masked in out, (text, out)
        assert "hunter2" not in out and "abc123" not in out and "k-999" not in out
    # Ordinary pairs stay readable.
    line = "poll feed=https://a.example/rss status=ok http=200 new=3 keyword=diplomacy"
    assert logs.redact(line, []) == line
    assert logs.redact("the value is Zq81vXk0pLmN", ["Zq81vXk0pLmN"]) == "the value is ***"


def test_no_secret_in_the_logs_of_a_real_run(tmp_path: Path, feed_server: FeedServer) -> None:
    """Poll with credentials in feed URLs, then serve and hit the admin, login and WebSub
    endpoints with tokens and secrets; nothing the processes print holds one of them."""
    s = SECRETS
    good = feed_server.serve("/private.rss", rss(news_items(8)))
    port = feed_server.port
    with_password = f"http://reader:{s['userinfo']}@127.0.0.1:{port}/private.rss"
    with_token = f"http://127.0.0.1:{port}/tokened.rss?token={s['query']}&x=1"
    with_key = f"http://127.0.0.1:{port}/keyed.rss?api_key={s['apikey']}"
    assert good  # served under the path every URL above names, or 404 for the others
    feed_server.serve("/tokened.rss", b"", status=500)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    web_port = free_port()
    (tmp_path / "feeds.yaml").write_text(
        config_yaml(
            [{"url": with_password}, {"url": with_token}, {"url": with_key}],
            database_url=db,
            port=web_port,
            base_url=f"http://127.0.0.1:{web_port}",
        )
    )
    env = {**os.environ, "AGGREGATOR_ADMIN_TOKEN": s["admin"], "NO_COLOR": "1"}
    env.pop("AGGREGATOR_DATABASE_URL", None)
    env.pop("AGGREGATOR_ADMIN_TOKEN_FILE", None)
    polled = subprocess.run(
        [sys.executable, "-m", "aggregator", "poll", "--once", "-v"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert polled.returncode in (0, 1), polled.stderr  # 1: a feed failed (22.13)
    assert polled.stderr.count(" poll feed=") == 3, polled.stderr

    web = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "web", "-v"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        assert first_answer(f"{base}/healthz", web).status_code == 200
        ok = {"Authorization": f"Bearer {s['admin']}"}
        assert httpx.get(f"{base}/admin/config", headers=ok).status_code == 200
        wrong = {"Authorization": f"Bearer {s['bearer']}"}
        assert httpx.get(f"{base}/admin/config", headers=wrong).status_code == 401
        assert httpx.post(f"{base}/login", data={"token": s["bearer"]}).status_code in (
            401,
            403,
            303,
            200,
        )
        hub = httpx.post(
            f"{base}/websub/hub",
            data={
                "hub.mode": "subscribe",
                "hub.topic": f"{base}/topics/sport.atom",
                "hub.callback": f"http://127.0.0.1:1/cb?key={s['apikey']}",
                "hub.secret": s["hub"],
            },
        )
        assert hub.status_code == 202, hub.text
        assert httpx.get(f"{base}/topics/sport.rss?token={s['query']}").status_code in (200, 400)
        time.sleep(1)  # the hub's verification of intent fails and is logged
    finally:
        web.send_signal(signal.SIGINT)
        out, err = web.communicate(timeout=30)
    text = polled.stdout + polled.stderr + out + err
    for kind, secret in s.items():
        assert secret not in text, f"{kind} secret in the logs:\n{text}"
    assert "***" in polled.stderr  # the feed URLs were logged, masked
    # What was logged, and that a store with a password in its URL would be masked too.
    repo = open_repository(db)
    try:
        assert repo.count_entries(with_password) == 8
    finally:
        repo.close()


# ------------------------------------------------------------------------ request size limits


def test_oversized_bodies_are_refused_with_413(
    tmp_path: Path, feed_server: FeedServer, admin_headers: dict[str, str]
) -> None:
    agg = make_agg(tmp_path, [feed_server.serve("/a.rss", rss(news_items(3)))])
    try:
        with live_server(agg) as base, httpx.Client(base_url=base, timeout=30) as c:
            big = "x" * (2 << 20)
            r = c.post("/admin/stories/1/split", headers=admin_headers, content=big)
            assert r.status_code == 413
            r = c.post("/login", data={"token": big[: 64 << 10]})
            assert r.status_code == 413
            r = c.post("/websub/hub", data={"hub.mode": "subscribe", "hub.topic": big})
            assert r.status_code == 413
            assert "request body over" in r.json()["error"]

            def chunks() -> object:
                for _ in range(40):
                    yield b"hub.mode=subscribe&" + b"y" * 4096

            # No Content-Length (chunked): refused once the body passes the cap.
            r = c.post("/websub/hub", content=chunks())  # type: ignore[arg-type]
            assert r.status_code == 413
            # Small bodies go through to the handlers as before.
            r = c.post("/websub/hub", data={"hub.mode": "subscribe"})
            assert r.status_code == 400
            r = c.post("/admin/stories/1/split", headers=admin_headers, json={"entries": []})
            assert r.status_code not in (413, 500)
            assert c.get("/healthz").status_code == 200
    finally:
        agg.close()
