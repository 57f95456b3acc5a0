"""The hostile-server matrix: every misbehaviour through the real pipeline, and its record.

Each case is a real local server that misbehaves on purpose; the feeds are polled by the
real poller (fetch -> parse -> store) and the test reads back what the store recorded
(feed health: last status, error text, consecutive errors, next poll, disabled reason,
moved URL). The last test polls hostile and normal feeds together and shows the normal
ones finish on their own time.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from builders import news_items, rss
from test_fetch import (
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    FEED,
    ScriptServer,
    feed,
    make_agg,
    poll,
    redirect,
    send,
)

from aggregator.filters import StoryQuery
from aggregator.service import Aggregator
from aggregator.types import FeedHealth, PollResult

INTERVAL = timedelta(minutes=10)
CAP = 1_000_000  # max_body_bytes in these tests
TOTAL = 2  # fetch_timeout (seconds) in these tests

PAGE = (
    b"<!doctype html><html><head><title>News</title>"
    b'<link rel="alternate" type="application/rss+xml" href="/feeds/all.rss">'
    b'<link rel="alternate" type="application/atom+xml" href="https://x.example/a.atom">'
    b"</head><body><p>Hello</p></body></html>"
)


def trickle(h: BaseHTTPRequestHandler) -> None:
    """A valid feed, one byte every 0.1 s: every read succeeds, the whole never ends."""
    h.send_response(200)
    h.send_header("Content-Type", "application/rss+xml")
    h.send_header("Content-Length", str(len(FEED)))
    h.end_headers()
    for byte in FEED:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        time.sleep(0.1)


def endless(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/rss+xml")
    h.end_headers()  # no length: the body ends when the connection does (never, here)
    h.close_connection = True
    h.wfile.write(b'<?xml version="1.0"?><rss version="2.0"><channel>')
    while True:
        h.wfile.write(b"<item><title>again</title></item>" * 1000)


def latin1_declared_utf8_sent(h: BaseHTTPRequestHandler) -> None:
    # A very common mistake: the server (or the XML prolog) says ISO-8859-1, the bytes
    # are UTF-8. Read as declared, every "é" would become "Ã©".
    body = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel>'
        "<title>Café Society</title><link>https://cafe.example/</link>"
        "<item><title>Résumé of the week — déjà vu</title><guid>r1</guid>"
        "<link>https://cafe.example/r1</link></item></channel></rss>"
    ).encode()
    send(h, 200, body, "text/xml; charset=iso-8859-1")


def utf8_declared_latin1_sent(h: BaseHTTPRequestHandler) -> None:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        "<title>Crème Brûlée</title><link>https://creme.example/</link>"
        "<item><title>Noël à Paris</title><guid>n1</guid>"
        "<link>https://creme.example/n1</link></item></channel></rss>"
    ).encode("latin-1")
    send(h, 200, body, "application/rss+xml; charset=utf-8")


class Expect:
    """What the store must say about a feed after one poll."""

    def __init__(
        self,
        status: str,
        error: str | None = None,
        http: int | None = None,
        *,
        entries: int = 0,
        errors: int | None = None,
        next_after: timedelta | None = None,
        disabled: str | None = None,
        moved_to: str | None = None,
        not_before: datetime | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.http = http
        self.entries = entries
        self.errors = errors if errors is not None else int(status == "error")
        # The earliest next poll, from the poll's start. Default: the interval after a
        # success, one backed-off interval (2 x) after an error.
        self.next_after = next_after or INTERVAL * (2 if status == "error" else 1)
        self.not_before = not_before  # an absolute earliest next poll (Retry-After date)
        self.disabled = disabled
        self.moved_to = moved_to


def _setup_cases(srv: ScriptServer, normal: ScriptServer) -> dict[str, Expect]:
    """Route every case on ``srv`` and return path -> expected record."""
    u = srv.url
    later = datetime.now(UTC) + timedelta(hours=3)
    srv.route("/trickle", trickle)
    srv.route("/endless", endless)
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)
    srv.route("/gzip-bomb", feed(bomb, **{"Content-Encoding": "gzip"}))
    srv.route("/loop-a", redirect(301, "/loop-b"))
    srv.route("/loop-b", redirect(302, "/loop-a"))
    srv.route("/moved", redirect(301, "/moved-2"))
    srv.route("/moved-2", redirect(308, "/moved-3"))
    srv.route("/moved-3", redirect(301, normal.url("/home.rss")))
    normal.route("/home.rss", feed())
    srv.route("/found", redirect(302, "/found-target"))
    srv.route("/found-target", feed(rss(news_items(3, site="https://f.example"))))
    srv.route("/temporary", redirect(307, "/temporary-target"))
    srv.route("/temporary-target", feed(rss(news_items(4, site="https://t.example"))))
    srv.route("/gone", lambda h: send(h, 410, b"gone", "text/plain"))
    srv.route("/busy", lambda h: send(h, 429, b"", "text/plain", {"Retry-After": "7200"}))
    srv.route(
        "/down",
        lambda h: send(h, 503, b"", "text/plain", {"Retry-After": format_datetime(later, True)}),
    )
    srv.route(
        "/busy-date",
        lambda h: send(h, 429, b"", "text/plain", {"Retry-After": format_datetime(later, True)}),
    )
    srv.route("/down-seconds", lambda h: send(h, 503, b"", "text/plain", {"Retry-After": "5400"}))
    srv.route("/broken", lambda h: send(h, 500, b"oops", "text/plain"))
    srv.route("/page", lambda h: send(h, 200, PAGE, "text/html; charset=utf-8"))
    srv.route("/laughs", feed(BILLION_LAUGHS))
    srv.route("/xxe", feed(EXTERNAL_ENTITY))
    srv.route("/charset-utf8", latin1_declared_utf8_sent)
    srv.route("/charset-latin1", utf8_declared_latin1_sent)
    too_large = f"body too large: more than {CAP} bytes (decompressed)"
    return {
        "/trickle": Expect("error", f"timed out after {TOTAL}s (total time limit)"),
        "/endless": Expect("error", too_large, 200),
        "/gzip-bomb": Expect("error", too_large, 200),
        "/loop-a": Expect("error", f"redirect loop: {u('/loop-a')} was already visited", 302),
        "/moved": Expect("ok", None, 200, entries=20, moved_to=normal.url("/home.rss")),
        "/found": Expect("ok", None, 200, entries=3),
        "/temporary": Expect("ok", None, 200, entries=4),
        "/gone": Expect(
            "error",
            f"HTTP 410 Gone: the publisher removed the feed at {u('/gone')}",
            410,
            disabled="HTTP 410 Gone",
        ),
        "/busy": Expect("error", "HTTP 429 Too Many Requests", 429, next_after=timedelta(hours=2)),
        "/down": Expect(
            "error",
            "HTTP 503 Service Unavailable",
            503,
            # The HTTP date is to the second: allow for the part of a second it drops.
            not_before=later - timedelta(seconds=1),
        ),
        "/busy-date": Expect(
            "error",
            "HTTP 429 Too Many Requests",
            429,
            not_before=later - timedelta(seconds=1),
        ),
        "/down-seconds": Expect(
            "error", "HTTP 503 Service Unavailable", 503, next_after=timedelta(minutes=90)
        ),
        "/broken": Expect("error", "HTTP 500 Internal Server Error", 500),
        "/page": Expect(
            "error",
            "looks like an HTML page, not a feed; the page links to "
            f"{u('/feeds/all.rss')}, https://x.example/a.atom",
            200,
        ),
        "/laughs": Expect(
            "error",
            "refused: entity 'lol1' expands other entities (lol): "
            "entity expansion ('billion laughs') is not allowed",
            200,
        ),
        "/xxe": Expect(
            "error", "refused: the document declares an external entity 'secret' (XXE)", 200
        ),
        "/charset-utf8": Expect("ok", None, 200, entries=1),
        "/charset-latin1": Expect("ok", None, 200, entries=1),
    }


def _agg(
    tmp_path: Path, urls: list[str], db_url: str, total: int = TOTAL, **polling: object
) -> Aggregator:
    return make_agg(
        tmp_path,
        urls,
        db_url=db_url,
        polling={"read_timeout": "1s", "adaptive": False, **polling},
        fetch_timeout=f"{total}s",
        max_body_bytes=CAP,
        default_interval="10m",
    )


def _titles(agg: Aggregator, url: str) -> list[str]:
    return [s.title for s in agg.repo.stories(StoryQuery(feed_urls=(url,))).items]


def test_every_hostile_case_ends_with_its_recorded_outcome(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv, normal = ScriptServer("127.0.0.1"), ScriptServer("127.0.0.2")
    try:
        expected = _setup_cases(srv, normal)
        urls = [srv.url(p) for p in expected]
        # Every case at once: the per-host limit would otherwise queue them one by one.
        agg = _agg(tmp_path, urls, db_url, per_host_concurrency=len(urls))
        started = datetime.now(UTC)
        with caplog.at_level(logging.INFO, logger="aggregator.pipeline"):
            results = poll(agg)
        finished = datetime.now(UTC)
        health = {h.url: h for h in agg.repo.feed_health()}
        for path, want in expected.items():
            url = srv.url(path)
            _check(path, results[url], health[url], want, started, finished)
            assert agg.repo.count_entries(url) == want.entries, path

        # 301/308 chain: said in the log, and the next poll goes straight to the new home.
        moved_logs = [r.getMessage() for r in caplog.records if "moved permanently" in r.message]
        assert moved_logs == [
            f"feed moved permanently feed={srv.url('/moved')} to={normal.url('/home.rss')}"
        ]
        # 410: no longer among the feeds to poll.
        assert srv.url("/gone") not in {f.url for f in agg.enabled_feeds()}
        # Wrong charset declarations: the text reads as written, not as mojibake.
        assert _titles(agg, srv.url("/charset-utf8")) == ["Résumé of the week — déjà vu"]
        assert health[srv.url("/charset-utf8")].title == "Café Society"
        assert _titles(agg, srv.url("/charset-latin1")) == ["Noël à Paris"]

        # A second round of the temporary redirects and 500s: the redirects are asked
        # again at the old URL, the 500 backs off further (2 errors: 4 x the interval).
        again = [srv.url(p) for p in ("/moved", "/found", "/temporary", "/broken")]
        second = datetime.now(UTC)
        poll(agg, again)
        assert srv.hits("/moved") == 1 and normal.hits("/home.rss") == 2
        assert srv.hits("/found") == 2 and srv.hits("/temporary") == 2
        broken = {h.url: h for h in agg.repo.feed_health()}[srv.url("/broken")]
        assert broken.consecutive_errors == 2
        assert broken.next_poll_at is not None
        assert broken.next_poll_at >= second + 4 * INTERVAL
        assert broken.next_poll_at <= datetime.now(UTC) + 4 * INTERVAL + timedelta(minutes=2)
        agg.close()
    finally:
        srv.close()
        normal.close()


def _check(
    path: str,
    result: PollResult,
    h: FeedHealth,
    want: Expect,
    started: datetime,
    finished: datetime,
) -> None:
    assert (result.status, result.error) == (want.status, want.error), path
    assert h.last_status == want.status, path
    assert h.last_error == want.error, path
    assert h.last_http_status == want.http, path
    assert h.consecutive_errors == want.errors, path
    assert h.moved_to == want.moved_to, path
    if want.disabled is None:
        assert h.disabled_reason is None, path
    else:
        assert h.disabled_reason is not None and want.disabled in h.disabled_reason, path
    assert h.last_attempt_at is not None and started <= h.last_attempt_at <= finished, path
    if want.status == "ok":
        assert h.last_success_at == h.last_attempt_at, path
    else:
        assert h.last_success_at is None, path
    assert h.next_poll_at is not None, path
    if want.not_before is not None:
        assert h.next_poll_at >= want.not_before, (path, h.next_poll_at)
        return
    # Jitter adds at most 10% of the delay, capped at 2 minutes.
    assert h.next_poll_at >= started + want.next_after, (path, h.next_poll_at)
    if want.next_after <= INTERVAL * 2:
        assert h.next_poll_at <= finished + want.next_after + timedelta(minutes=2), path


def test_hostile_servers_do_not_delay_the_other_feeds(tmp_path: Path) -> None:
    """Hostile feeds on one host, normal feeds on two others, all polled in one round.

    The normal feeds finish on their own time (their server answers at once), long
    before the hostile ones reach their limits; the hostile ones end at their limits.
    """
    bad = ScriptServer("127.0.0.1")
    good = [ScriptServer("127.0.0.2"), ScriptServer("127.0.0.3")]
    try:
        hostile = [bad.route(f"/trickle{i}", trickle) for i in range(3)]
        normal = [s.route(f"/news{i}.rss", feed()) for s in good for i in range(6)]
        limit = 3  # seconds, the hostile feeds' total time limit
        agg = _agg(tmp_path, hostile + normal, f"sqlite:///{tmp_path / 'store.db'}", limit)
        # The first items tagged in a process load the language and place data (seconds
        # on a busy machine); that start-up cost is not what is measured here.
        poll(agg, normal[:1])
        done: dict[str, float] = {}
        t0 = time.monotonic()

        async def run() -> list[PollResult]:
            try:
                return await agg.poll_all(
                    on_done=lambda r: done.setdefault(r.feed_url, time.monotonic() - t0)
                )
            finally:
                await agg.stop()

        results = {r.feed_url: r for r in asyncio.run(run())}
        assert all(results[u].status == "ok" for u in normal)
        assert all(results[u].status == "error" for u in hostile)
        slowest_normal = max(done[u] for u in normal)
        # Every normal feed was done before the first hostile one hit its total limit...
        assert slowest_normal < min(done[u] for u in hostile)
        assert slowest_normal < limit
        # ... and each trickling feed was cut off at that limit, not later: two at a time
        # on their host (the per-host limit), so the third ends after two limits.
        trickles = sorted(done[u] for u in hostile)
        assert limit <= trickles[0] and trickles[1] < limit + 1.5
        assert 2 * limit <= trickles[2] < 2 * limit + 2
        agg.close()
    finally:
        bad.close()
        for s in good:
            s.close()
