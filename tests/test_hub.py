"""The WebSub hub with a real local subscriber: subscribe, verify, push on ingest, HMAC,
retries, unsubscribe, lease expiry; on SQLite and PostgreSQL, ingest in another "process"."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import feedparser
import httpx
import pytest
from builders import config_yaml, news_items, rss
from conftest import FeedServer
from live import live_server
from test_pipeline import poll_all

from aggregator import hub
from aggregator.service import Aggregator
from aggregator.web import create_app
from storage import HubStore

SITE = "https://news.example.com"
SECRET = "s3cret-for-hmac"


class Subscriber:
    """A downstream site: echoes challenges (unless told not to) and records pushes."""

    def __init__(self) -> None:
        self.verifications: list[dict[str, str]] = []
        self.pushes: list[tuple[dict[str, str], bytes]] = []
        self.fail_next = 0  # answer this many pushes with 500
        self.echo = True
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                owner.verifications.append(q)
                body = q.get("hub.challenge", "").encode() if owner.echo else b"no"
                self.send_response(200 if owner.echo else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if owner.fail_next > 0:
                    owner.fail_next -= 1
                    status = 500
                else:
                    owner.pushes.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/push?site=1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    s = Subscriber()
    yield s
    s.close()


@pytest.fixture
def config(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Path:
    feed_server.serve("/a.rss", rss(news_items(5, site=SITE), site=SITE))
    path = tmp_path / "feeds.yaml"
    path.write_text(
        config_yaml([{"url": feed_server.url("/a.rss"), "tags": ["world"]}], database_url=db_url)
        # news_items repeats six texts; near-duplicate merging (test_stories.py) would fold them.
        + "dedup:\n  near_duplicates: false\n"
    )
    return path


def wait_for(what: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_subscribe_verify_push_hmac_retry_unsubscribe(
    config: Path, feed_server: FeedServer, subscriber: Subscriber
) -> None:
    web_agg = Aggregator.from_file(config)
    # The ingest runs in a separate Aggregator with its own engines, as a worker process would.
    worker = Aggregator.from_file(config)
    try:
        poll_all(worker)
        app = create_app(web_agg, poll=False)
        app.state.hub.retry_base = 0.2
        with live_server(web_agg, app=app) as base:
            topic = f"{base}/topics/world.atom"
            # Every format advertises the hub and itself.
            for fmt in ("atom", "rss", "json"):
                r = httpx.get(f"{base}/topics/world.{fmt}")
                assert f'<{base}/websub/hub>; rel="hub"' in r.headers["link"]
                assert f'<{base}/topics/world.{fmt}>; rel="self"' in r.headers["link"]
                if fmt == "json":
                    assert json.loads(r.content)["hubs"] == [
                        {"type": "WebSub", "url": f"{base}/websub/hub"}
                    ]
                else:
                    links = {link.rel: link.href for link in feedparser.parse(r.content).feed.links}
                    assert links["hub"] == f"{base}/websub/hub"
                    assert links["self"] == f"{base}/topics/world.{fmt}"

            def post(**fields: str) -> httpx.Response:
                return httpx.post(
                    f"{base}/websub/hub", data={f"hub.{k}": v for k, v in fields.items()}
                )

            # Refusals say what is wrong.
            r = post(
                mode="subscribe", topic="https://elsewhere.example/x.atom", callback=subscriber.url
            )
            assert r.status_code == 400 and "not a feed of this hub" in r.text
            r = post(mode="subscribe", topic=f"{base}/topics/nope.atom", callback=subscriber.url)
            assert r.status_code == 400 and "nope" in r.text
            r = post(
                mode="subscribe",
                topic=f"{base}/topics/world.atom?since=yesterday",
                callback=subscriber.url,
            )
            assert r.status_code == 400 and "since" in r.text
            assert post(mode="watch", topic=topic, callback=subscriber.url).status_code == 400
            assert post(mode="subscribe", topic=topic, callback="ftp://x/y").status_code == 400
            assert subscriber.verifications == []

            r = post(
                mode="subscribe",
                topic=topic,
                callback=subscriber.url,
                secret=SECRET,
                lease_seconds="3600",
            )
            assert r.status_code == 202
            store = HubStore(web_agg.repo)
            subs = wait_for(lambda: store.subscriptions(datetime.now(UTC)))
            v = subscriber.verifications[-1]
            assert v["hub.mode"] == "subscribe" and v["hub.topic"] == topic
            assert v["hub.lease_seconds"] == "3600" and v["site"] == "1"  # callback query kept
            assert subs[0].callback == subscriber.url and subs[0].lease_seconds == 3600
            time.sleep(1.5)
            assert subscriber.pushes == []  # nothing new yet: nothing pushed

            # New stories arrive (ingested by the other store handle); the first push fails.
            subscriber.fail_next = 1
            feed_server.serve("/a.rss", rss(news_items(7, site=SITE, start=-2), site=SITE))
            started = time.monotonic()
            poll_all(worker)
            headers, body = wait_for(lambda: subscriber.pushes and subscriber.pushes[0])
            assert time.monotonic() - started < 10
            assert headers["content-type"].startswith("application/atom+xml")
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-hub-signature"] == expected
            assert f'<{topic}>; rel="self"' in headers["link"]
            titles = [e.title for e in feedparser.parse(body).entries]
            assert any("(-2)" in t for t in titles) and any("(-1)" in t for t in titles)
            assert body == httpx.get(topic, headers={"Accept-Encoding": "identity"}).content
            assert store.pending() == []
            time.sleep(1.5)
            assert len(subscriber.pushes) == 1  # one change, one push

            # Unsubscribe: verified, removed, and the next change is not pushed.
            assert post(mode="unsubscribe", topic=topic, callback=subscriber.url).status_code == 202
            wait_for(lambda: not store.subscriptions(datetime.now(UTC)))
            assert subscriber.verifications[-1]["hub.mode"] == "unsubscribe"
            feed_server.serve("/a.rss", rss(news_items(8, site=SITE, start=-3), site=SITE))
            poll_all(worker)
            time.sleep(2)
            assert len(subscriber.pushes) == 1

            # A callback that does not echo the challenge is not subscribed.
            subscriber.echo = False
            assert post(mode="subscribe", topic=topic, callback=subscriber.url).status_code == 202
            wait_for(lambda: subscriber.verifications[-1]["hub.mode"] == "subscribe")
            time.sleep(0.5)
            assert store.subscriptions(datetime.now(UTC)) == []
    finally:
        worker.close()
        web_agg.close()


def test_store_publishes_once_expires_leases_and_gives_up(config: Path) -> None:
    agg = Aggregator.from_file(config)
    try:
        store = HubStore(agg.repo)
        now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        topic = "http://agg.test/topics/world.atom"
        store.subscribe(topic, "http://a.test/cb", None, timedelta(minutes=10), now)
        store.subscribe(topic, "http://b.test/cb", "k", timedelta(hours=1), now)
        store.remember_topic(topic, '"v1"', now)
        # Two processes notice the same change: only the first queues deliveries.
        assert store.publish(topic, '"v1"', '"v2"', "application/atom+xml", b"<feed/>", now) == 2
        assert store.publish(topic, '"v1"', '"v2"', "application/atom+xml", b"<feed/>", now) == 0
        # A claimed delivery is leased: a second claimer gets nothing until the lease ends.
        first = store.claim(now, timedelta(minutes=2), 10)
        assert {d.callback for d in first} == {"http://a.test/cb", "http://b.test/cb"}
        assert store.claim(now, timedelta(minutes=2), 10) == []
        again = store.claim(now + timedelta(minutes=3), timedelta(minutes=2), 10)
        assert len(again) == 2
        # Failures back off; after MAX_ATTEMPTS the delivery is dropped.
        d = again[0]
        store.failed(d.id, "HTTP 500", now + timedelta(minutes=5))
        assert not any(
            x.id == d.id for x in store.claim(now + timedelta(minutes=4), timedelta(0), 10)
        )
        assert hub.retry_delay(1, 5.0) == timedelta(seconds=5)
        assert hub.retry_delay(3, 5.0) == timedelta(seconds=20)
        assert hub.retry_delay(hub.MAX_ATTEMPTS) is None
        store.failed(d.id, "HTTP 500", None)
        assert len(store.pending()) == 1
        # Leases expire: the 10-minute subscriber (and its delivery) go, the hour one stays.
        assert store.expire(now + timedelta(minutes=11)) == 1
        assert [s.callback for s in store.subscriptions(now)] == ["http://b.test/cb"]
        store.subscribe(topic, "http://b.test/cb", None, timedelta(days=1), now)  # renewal
        assert store.expire(now + timedelta(hours=2)) == 0
        assert store.subscriptions(now + timedelta(hours=2))[0].secret is None
    finally:
        agg.close()


def test_parse_request_clamps_leases_and_checks_secrets() -> None:
    ours = lambda url: None  # noqa: E731
    form = {
        "hub.mode": "subscribe",
        "hub.topic": "http://x/topics/a.atom",
        "hub.callback": "http://cb/",
    }
    assert hub.parse_request(form, ours).lease == hub.DEFAULT_LEASE
    assert hub.parse_request({**form, "hub.lease_seconds": "5"}, ours).lease == hub.MIN_LEASE
    assert hub.parse_request({**form, "hub.lease_seconds": "99999999"}, ours).lease == hub.MAX_LEASE
    with pytest.raises(hub.HubError, match="lease_seconds"):
        hub.parse_request({**form, "hub.lease_seconds": "soon"}, ours)
    with pytest.raises(hub.HubError, match="secret"):
        hub.parse_request({**form, "hub.secret": "x" * 200}, ours)
    with pytest.raises(hub.HubError, match="not a feed of this hub: gone"):
        hub.parse_request(form, lambda url: "gone")


class EndlessCallback:
    """A hostile callback: answers verification with an endless body, fast or one byte at a
    time; counts what it managed to send before the hub hung up (at most ``limit`` bytes)."""

    def __init__(self, trickle: bool, limit: int = 128 * 1024 * 1024) -> None:
        self.sent = 0
        self.hung_up = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                chunk = b"x" if trickle else b"x" * 65536
                deadline = time.monotonic() + 60
                try:
                    while owner.sent < limit and time.monotonic() < deadline:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        owner.sent += len(chunk)
                        if trickle:
                            time.sleep(0.1)
                except OSError:
                    owner.hung_up.set()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cb"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("trickle", [False, True], ids=["flood", "trickle"])
def test_a_callback_answer_is_read_bounded_in_size_and_time(config: Path, trickle: bool) -> None:
    """Issue 22.5: a callback streaming 600 MB took the web process from 254 to 791 MB."""
    agg = Aggregator.from_file(config)
    callback = EndlessCallback(trickle)
    try:
        app = create_app(agg, poll=False)
        app.state.hub.timeout = 2.0
        with live_server(agg, app=app) as base:
            r = httpx.post(
                f"{base}/websub/hub",
                data={
                    "hub.mode": "subscribe",
                    "hub.topic": f"{base}/topics/world.atom",
                    "hub.callback": callback.url,
                },
            )
            assert r.status_code == 202
            started = time.monotonic()
            assert callback.hung_up.wait(15), f"still reading after {callback.sent} bytes"
            assert time.monotonic() - started < 8
            # Socket buffers hold a few MB at most; the answer itself is cut at 4 KB.
            assert callback.sent < 16 * 1024 * 1024
            assert HubStore(agg.repo).subscriptions(datetime.now(UTC)) == []
    finally:
        callback.close()
        agg.close()


def test_subscriptions_are_limited_per_client_and_per_callback_host(
    config: Path, subscriber: Subscriber
) -> None:
    """Issue 22.6: one client made 300 verified subscriptions to one host in 3.6 s."""
    agg = Aggregator.from_file(config)
    try:
        app = create_app(agg, poll=False)
        websub: hub.Hub = app.state.hub
        with live_server(agg, app=app) as base:
            topic = f"{base}/topics/world.atom"

            def subscribe(i: int) -> httpx.Response:
                seen = len(subscriber.verifications)
                r = httpx.post(
                    f"{base}/websub/hub",
                    data={
                        "hub.mode": "subscribe",
                        "hub.topic": topic,
                        "hub.callback": f"{subscriber.url}&n={i}",
                    },
                )
                if r.status_code == 202:
                    wait_for(lambda: len(subscriber.verifications) > seen)
                return r

            # One client address: 30 requests in ten minutes, then 429 with Retry-After.
            answers = [subscribe(i) for i in range(35)]
            assert [r.status_code for r in answers] == [202] * hub.CLIENT_REQUESTS + [429] * 5
            assert "Retry-After" in answers[-1].headers
            assert "subscription requests from 127.0.0.1" in answers[-1].text
            store = HubStore(agg.repo)
            wait_for(lambda: len(store.subscriptions(datetime.now(UTC))) == 30)

            # One callback host, whoever asks: 50 live subscriptions; renewals still pass.
            websub.clients.limit = 1000
            answers = [subscribe(i) for i in range(30, 60)]
            codes = [r.status_code for r in answers]
            assert codes == [202] * 20 + [429] * 10, codes
            assert "callback host 127.0.0.1 has 50 subscriptions" in answers[-1].text
            wait_for(lambda: len(store.subscriptions(datetime.now(UTC))) == 50)
            assert subscribe(3).status_code == 202  # a renewal
            assert len(store.subscriptions(datetime.now(UTC))) == 50
    finally:
        agg.close()


def test_deliveries_waiting_for_one_subscriber_are_coalesced(config: Path) -> None:
    """Issue 22.6: each change queued one more full copy per subscriber (3,841 in 20 s)."""
    agg = Aggregator.from_file(config)
    try:
        store = HubStore(agg.repo)
        now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        topic = "http://agg.test/topics/world.atom"
        for n in range(3):
            store.subscribe(topic, f"http://down.test/cb{n}", None, timedelta(days=1), now)
        store.remember_topic(topic, '"v0"', now)
        for v in range(1, 6):
            body = f"<feed>version {v}</feed>".encode()
            queued = store.publish(
                topic, f'"v{v - 1}"', f'"v{v}"', "application/atom+xml", body, now
            )
            assert queued == 3
        assert len(store.pending()) == 3  # one per subscriber, not one per change
        claimed = store.claim(now, timedelta(minutes=2), 10)
        assert {d.body for d in claimed} == {b"<feed>version 5</feed>"}
        # While one is being sent, the next change waits beside it, and only one does.
        store.publish(topic, '"v5"', '"v6"', "application/atom+xml", b"<feed>6</feed>", now)
        store.publish(topic, '"v6"', '"v7"', "application/atom+xml", b"<feed>7</feed>", now)
        assert len(store.pending()) == 6
        # A failed one keeps its backoff when newer content replaces its body.
        store.failed(claimed[0].id, "HTTP 500", now + timedelta(minutes=5))
        store.publish(topic, '"v7"', '"v8"', "application/atom+xml", b"<feed>8</feed>", now)
        assert len(store.pending()) == 6
        assert (claimed[0].callback, 1, "HTTP 500") in store.pending()
    finally:
        agg.close()
