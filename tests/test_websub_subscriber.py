"""WebSub subscriber round trips against a small hub written here (a real local server).

The aggregator runs as two processes would: a poller (an ``Aggregator`` polling in this
thread) and the web app on a real socket (uvicorn in a thread, its own ``Aggregator``),
sharing one store. The hub verifies intent over HTTP and pushes signed bodies.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from builders import config_yaml
from live import live_server
from test_fetch import ScriptServer, send

from aggregator.service import Aggregator
from aggregator.subscriber import CALLBACK_PATH, sign, signature_ok
from aggregator.types import PushSubscription
from storage.push_subscriptions import PushStore


class Hub:
    """A minimal WebSub hub: takes (un)subscriptions, verifies intent, pushes."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.verified: list[tuple[str, int, bool]] = []  # mode, status, challenge echoed
        self.grant_lease = 3600
        hub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                hub.requests.append(form)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                # Verification of intent happens after the 202, as real hubs do it.
                threading.Thread(target=hub._verify, args=(form,), daemon=True).start()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hub"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _verify(self, form: dict[str, str]) -> None:
        challenge = secrets.token_hex(8)
        query = {
            "hub.mode": form["hub.mode"],
            "hub.topic": form["hub.topic"],
            "hub.challenge": challenge,
        }
        if form["hub.mode"] == "subscribe":
            query["hub.lease_seconds"] = str(self.grant_lease)
        r = httpx.get(form["hub.callback"] + "?" + urlencode(query))
        self.verified.append((form["hub.mode"], r.status_code, r.text == challenge))

    def wait(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.verified) < n:
            assert time.monotonic() < deadline, f"hub verified {self.verified}, expected {n}"
            time.sleep(0.02)

    def push(self, callback: str, body: bytes, signature: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/atom+xml"}
        if signature is not None:
            headers["X-Hub-Signature"] = signature
        return httpx.post(callback, content=body, headers=headers)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def atom(hub: str, self_url: str, ids: range) -> bytes:
    entries = "".join(
        f"<entry><id>urn:x:{i}</id><title>Pushed story number {i}</title>"
        f'<updated>2026-11-24T1{i % 10}:00:00Z</updated><link href="https://s.example/{i}"/>'
        f"<summary>Story {i} of the site.</summary></entry>"
        for i in ids
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>Pushed Site</title><id>urn:x:feed</id><updated>2026-11-24T19:00:00Z</updated>"
        f'<link rel="hub" href="{hub}"/><link rel="self" href="{self_url}"/>'
        f'<link href="https://s.example/"/>{entries}</feed>'
    ).encode()


@pytest.fixture
def srv() -> Iterator[ScriptServer]:
    s = ScriptServer()
    yield s
    s.close()


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub()
    yield h
    h.close()


def _agg(tmp_path: Path, db_url: str, feed_url: str, base_url: str | None) -> Aggregator:
    """An aggregator on the shared store; the poller needs base_url for its callbacks."""
    path = tmp_path / ("poller.yaml" if base_url else "web.yaml")
    settings: dict[str, object] = {"database_url": db_url, "default_interval": "10m"}
    if base_url:
        settings["base_url"] = base_url
    path.write_text(
        config_yaml([{"url": feed_url}], polling={"adaptive": False}, **settings)
        + "websub:\n  fallback_interval: 2h\n"
    )
    return Aggregator.from_file(path)


def _poll(agg: Aggregator, url: str) -> None:
    async def run() -> None:
        try:
            result = await agg.poll(url)
            assert result.status in ("ok", "not_modified"), result
        finally:
            await agg.stop()

    asyncio.run(run())


def _sub(agg: Aggregator, feed_url: str) -> PushSubscription:
    sub = PushStore(agg.repo).for_feed(feed_url)
    assert sub is not None
    return sub


def test_subscribe_verify_push_renew_unsubscribe(
    tmp_path: Path, db_url: str, hub: Hub, srv: ScriptServer
) -> None:
    feed_url = srv.url("/site.atom")
    body = atom(hub.url, feed_url, range(3))
    srv.route("/site.atom", lambda h: send(h, 200, body, "application/atom+xml"))
    web = _agg(tmp_path, db_url, feed_url, None)
    with live_server(web) as base:
        poller = _agg(tmp_path, db_url, feed_url, base)

        # A poll reads the hub link and subscribes; the hub verifies over HTTP.
        before = datetime.now(UTC)
        _poll(poller, feed_url)
        assert poller.repo.count_entries(feed_url) == 3
        hub.wait(1)
        assert hub.verified == [("subscribe", 200, True)]
        (asked,) = hub.requests
        sub = _sub(poller, feed_url)
        callback = f"{base}{CALLBACK_PATH}{sub.callback_id}"
        assert asked == {
            "hub.mode": "subscribe",
            "hub.topic": feed_url,
            "hub.callback": callback,
            "hub.secret": sub.secret,
            "hub.lease_seconds": str(10 * 86400),
        }
        assert len(sub.secret) == 64 and len(sub.callback_id) >= 24
        assert sub.state == "active" and sub.lease_seconds == 3600
        assert sub.expires_at is not None
        assert before + timedelta(seconds=3600) <= sub.expires_at
        assert sub.expires_at <= datetime.now(UTC) + timedelta(seconds=3600)

        # Verification is refused for another topic, an unknown id, or an unasked mode.
        def verify(cb: str, mode: str, topic: str) -> httpx.Response:
            q = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": "c123"}
            return httpx.get(cb + "?" + urlencode(q))

        assert verify(callback, "subscribe", srv.url("/other.atom")).status_code == 404
        assert verify(f"{base}{CALLBACK_PATH}nosuchid", "subscribe", feed_url).status_code == 404
        assert verify(callback, "unsubscribe", feed_url).status_code == 404
        assert _sub(poller, feed_url).state == "active"

        # A signed push is ingested at once; a badly signed or unsigned one is not.
        pushed = atom(hub.url, feed_url, range(3, 5))
        r = hub.push(callback, pushed, sign(sub.secret, pushed, "sha512"))
        assert r.status_code == 202
        assert poller.repo.count_entries(feed_url) == 5
        forged = atom(hub.url, feed_url, range(5, 9))
        for signature in (sign("not-the-secret", forged), None, "md5=abc", "sha256=zz"):
            assert hub.push(callback, forged, signature).status_code == 202
        tampered = sign(sub.secret, forged)
        assert hub.push(callback, forged + b" ", tampered).status_code == 202
        assert poller.repo.count_entries(feed_url) == 5
        assert _sub(poller, feed_url).last_push_at is not None

        # While pushed to, the feed is polled at the fallback interval (2h), not every 10m;
        # and as the lease (1h) ends before two more fallback polls, the poll renews it, on
        # the same callback with a new secret.
        hub.grant_lease = 7 * 86400
        started = datetime.now(UTC)
        _poll(poller, feed_url)
        next_at = poller.repo.feed_state(feed_url).next_poll_at  # type: ignore[union-attr]
        assert next_at is not None and next_at >= started + timedelta(hours=2)
        hub.wait(2)
        assert len(hub.requests) == 2
        renewed = _sub(poller, feed_url)
        assert hub.requests[1]["hub.callback"] == callback
        assert hub.requests[1]["hub.secret"] == renewed.secret != sub.secret
        assert hub.verified[1] == ("subscribe", 200, True)
        assert renewed.lease_seconds == 7 * 86400
        later = atom(hub.url, feed_url, range(9, 10))
        assert hub.push(callback, later, sign(sub.secret, later)).status_code == 202
        assert poller.repo.count_entries(feed_url) == 5  # the old secret no longer works
        assert hub.push(callback, later, sign(renewed.secret, later)).status_code == 202
        assert poller.repo.count_entries(feed_url) == 6
        # With a week's lease, polls leave it alone.
        _poll(poller, feed_url)
        assert len(hub.requests) == 2

        # Unsubscribe: the hub verifies, the row goes, later pushes are told 410 Gone.
        asyncio.run(poller.subscriber.unsubscribe(feed_url))
        asyncio.run(poller.stop())
        hub.wait(3)
        assert hub.requests[2]["hub.mode"] == "unsubscribe"
        assert hub.verified[2] == ("unsubscribe", 200, True)
        assert PushStore(poller.repo).for_feed(feed_url) is None
        assert hub.push(callback, later, sign(renewed.secret, later)).status_code == 410

        # A subscription for a feed we no longer follow: a signed push is refused with 410
        # (the hub drops it) and the subscription forgotten; a hub's denial is recorded.
        store = PushStore(poller.repo)
        for cid, url in (("dropped-feed-id", srv.url("/dropped.atom")), ("denied-id", feed_url)):
            store.requested(
                PushSubscription(url, cid, hub.url, url, "s3cret", "pending", None, started)
            )
        dropped = f"{base}{CALLBACK_PATH}dropped-feed-id"
        assert hub.push(dropped, later, sign("s3cret", later)).status_code == 410
        assert store.by_callback("dropped-feed-id") is None
        assert poller.repo.count_entries(srv.url("/dropped.atom")) == 0
        q = {"hub.mode": "denied", "hub.topic": feed_url, "hub.reason": "not allowed"}
        r = httpx.get(f"{base}{CALLBACK_PATH}denied-id?" + urlencode(q))
        assert r.status_code == 200
        denied = store.for_feed(feed_url)
        assert denied is not None and denied.state == "denied"
        assert denied.last_error == "denied by the hub: not allowed"
    web.close()
    poller.close()


def test_without_base_url_nothing_is_subscribed(
    tmp_path: Path, hub: Hub, srv: ScriptServer, caplog: pytest.LogCaptureFixture
) -> None:
    feed_url = srv.url("/site.atom")
    srv.route("/site.atom", lambda h: send(h, 200, atom(hub.url, feed_url, range(2))))
    poller = _agg(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", feed_url, None)
    with caplog.at_level(logging.INFO, logger="aggregator.websub"):
        _poll(poller, feed_url)
    assert poller.repo.count_entries(feed_url) == 2
    assert hub.requests == []
    assert PushStore(poller.repo).for_feed(feed_url) is None
    assert "settings.base_url is not set" in caplog.text
    poller.close()


def test_signatures() -> None:
    body = b"<feed/>"
    for method in ("sha1", "sha256", "sha384", "sha512"):
        assert signature_ok("s3cret", body, sign("s3cret", body, method))
        assert not signature_ok("other", body, sign("s3cret", body, method))
    assert signature_ok("s3cret", body, sign("s3cret", body).upper().replace("SHA", "sha"))
    assert not signature_ok("s3cret", body, None)
    assert not signature_ok("s3cret", body, "sha256")
    assert not signature_ok("s3cret", body, "md5=" + "0" * 32)


def test_hub_and_self_are_read_from_every_format() -> None:
    from aggregator.parse import parse

    now = datetime.now(UTC)
    rss = (
        b'<?xml version="1.0"?><rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">'
        b"<channel><title>T</title><link>https://s.example/</link>"
        b'<atom:link rel="hub" href="https://hub.example/"/>'
        b'<atom:link rel="self" type="application/rss+xml" href="/feed.rss"/>'
        b"<item><title>a</title><guid>1</guid></item></channel></rss>"
    )
    json_feed = (
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": [],'
        b' "feed_url": "https://s.example/feed.json",'
        b' "hubs": [{"type": "rssCloud", "url": "https://cloud.example/"},'
        b' {"type": "WebSub", "url": "https://hub.example/j"}]}'
    )
    atom_feed = atom("https://hub.example/a", "https://s.example/feed.atom", range(1))
    url = "https://s.example/feed.rss"

    def hints(body: bytes, headers: dict[str, str] | None = None) -> tuple[object, object]:
        h = parse(body, url, headers or {}, now).hints
        return h.hub, h.self_url

    assert hints(rss) == ("https://hub.example/", "https://s.example/feed.rss")
    assert hints(json_feed) == ("https://hub.example/j", "https://s.example/feed.json")
    assert hints(atom_feed) == ("https://hub.example/a", "https://s.example/feed.atom")
    # HTTP Link headers come first (WebSub 4).
    link = '<https://other.example/hub>; rel="hub", <https://s.example/x.rss>; rel=self'
    assert hints(rss, {"link": link}) == ("https://other.example/hub", "https://s.example/x.rss")
    assert hints(rss.replace(b"hub", b"nohub")) == (None, "https://s.example/feed.rss")
