"""Polling manners and limits against real local servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import brotli
import pytest
from builders import config_yaml, news_items, rss

from aggregator.exceptions import FetchError, NotModified
from aggregator.fetch import (
    ACCEPT_ENCODING,
    FetchLimits,
    _refusal,
    check_address,
    fetch,
    make_client,
    retry_after,
)
from aggregator.service import Aggregator
from aggregator.types import PollResult

FEED = rss(news_items(20))
Handler = Callable[[BaseHTTPRequestHandler], None]


class ScriptServer:
    """A real threaded HTTP server whose routes are small functions of the request.

    It counts requests in flight (now and at most), so tests can see concurrency.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.peers: list[tuple[str, int]] = []  # the client's address of each request
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with server.lock:
                    server.requests.append((self.path, dict(self.headers.items())))
                    server.peers.append(self.client_address)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    route = server.routes.get(self.path)
                try:
                    if route is None:
                        send(self, 404, b"not found", "text/plain")
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up on us, as it should
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer((host, 0), H)
        self.httpd.daemon_threads = True
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def hits(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(
    h: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    ctype: str = "application/rss+xml",
    headers: dict[str, str] | None = None,
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def feed(body: bytes = FEED, **headers: str) -> Handler:
    return lambda h: send(h, 200, body, headers=headers)


def redirect(status: int, to: str) -> Handler:
    return lambda h: send(h, status, b"", "text/plain", {"Location": to})


@pytest.fixture
def srv() -> Iterator[ScriptServer]:
    s = ScriptServer()
    try:
        yield s
    finally:
        s.close()


def make_agg(
    tmp_path: Path,
    urls: list[str],
    db_url: str | None = None,
    polling: dict[str, object] | None = None,
    **settings: object,
) -> Aggregator:
    path = tmp_path / "feeds.yaml"
    db = db_url or f"sqlite:///{tmp_path / 'store.db'}"
    path.write_text(
        config_yaml([{"url": u} for u in urls], polling=polling, database_url=db, **settings)
    )
    return Aggregator.from_file(path)


def poll(agg: Aggregator, urls: list[str] | None = None) -> dict[str, PollResult]:
    async def run() -> list[PollResult]:
        try:
            return await agg.poll_all(urls)
        finally:
            await agg.stop()

    return {r.feed_url: r for r in asyncio.run(run())}


def get(url: str, limits: FetchLimits | None = None, **kw: str) -> object:
    """fetch() once with its own client; the Fetched, or the exception it raised."""
    limits = limits or FetchLimits(allow_private=True, timeout=5)

    async def run() -> object:
        async with make_client(limits) as client:
            try:
                return await fetch(client, url, limits=limits, **kw)
            except FetchError as e:
                return e

    return asyncio.run(run())


# ------------------------------------------------------------------------ HTTP manners


def test_user_agent_and_compression_are_sent_and_decoded(srv: ScriptServer) -> None:
    encoders = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}
    for name, encode in encoders.items():
        srv.route(f"/{name}", feed(encode(FEED), **{"Content-Encoding": name}))
        got = get(srv.url(f"/{name}"))
        assert not isinstance(got, Exception), (name, got)
        assert got.content == FEED, name
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = raw_deflate.compress(FEED) + raw_deflate.flush()
    srv.route("/raw", feed(body, **{"Content-Encoding": "deflate"}))
    assert get(srv.url("/raw")).content == FEED
    _, headers = srv.requests[0]
    assert headers["Accept-Encoding"] == ACCEPT_ENCODING == "gzip, deflate, br"
    assert headers["User-Agent"].startswith("aggregator/")
    assert "+http" in headers["User-Agent"]


def test_a_304_leaves_the_connection_to_the_next_poll(srv: ScriptServer) -> None:
    """Three conditional GETs answered 304 ride one connection: a 304 read to its end
    gives the connection back to the pool (closed unread, each poll opened a new one)."""
    url = srv.route("/same", lambda h: send(h, 304, headers={"ETag": '"v1"'}))
    limits = FetchLimits(allow_private=True, timeout=5)

    async def run() -> list[object]:
        async with make_client(limits) as client:
            out: list[object] = []
            for _ in range(3):
                try:
                    out.append(await fetch(client, url, etag='"v1"', limits=limits))
                except NotModified as e:
                    out.append(e)
            return out

    got = asyncio.run(run())
    assert all(isinstance(g, NotModified) for g in got)
    assert len(srv.peers) == 3 and len(set(srv.peers)) == 1


def test_permanent_redirect_moves_the_feed_temporary_does_not(
    tmp_path: Path, db_url: str, srv: ScriptServer
) -> None:
    new = srv.route("/new.rss", feed())
    old = srv.route("/old.rss", redirect(301, "/hop.rss"))
    srv.route("/hop.rss", redirect(308, new))
    temp = srv.route("/temp.rss", redirect(302, "/elsewhere.rss"))
    srv.route("/elsewhere.rss", feed(rss(news_items(3, site="https://b.example"))))
    agg = make_agg(tmp_path, [old, temp], db_url=db_url)
    results = poll(agg)
    assert results[old].status == "ok" and results[old].new == 20
    assert results[temp].status == "ok" and results[temp].new == 3

    health = {h.url: h for h in agg.repo.feed_health()}
    assert health[old].moved_to == new
    assert health[temp].moved_to is None
    # Next time the moved feed is fetched from its new home; the temporary one is not.
    poll(agg)
    assert (srv.hits("/old.rss"), srv.hits("/new.rss")) == (1, 2)
    assert (srv.hits("/temp.rss"), srv.hits("/elsewhere.rss")) == (2, 2)
    agg.close()


def test_permanent_redirect_to_a_304_is_recorded_too(srv: ScriptServer) -> None:
    srv.route("/a", redirect(301, "/b"))
    srv.route("/b", lambda h: send(h, 304, headers={"Cache-Control": "max-age=600"}))
    got = get(srv.url("/a"), etag='"x"')
    assert isinstance(got, NotModified)
    assert got.moved_to == srv.url("/b")
    assert got.headers["cache-control"] == "max-age=600"


def test_redirect_loops_chains_and_bad_locations_are_errors(srv: ScriptServer) -> None:
    srv.route("/loop1", redirect(302, "/loop2"))
    srv.route("/loop2", redirect(301, "/loop1"))
    for i in range(8):
        srv.route(f"/chain{i}", redirect(301, f"/chain{i + 1}"))
    srv.route("/chain8", feed())
    srv.route("/file", redirect(301, "file:///etc/passwd"))
    srv.route("/nowhere", lambda h: send(h, 302, b""))

    assert "redirect loop" in str(get(srv.url("/loop1")))
    assert "too many redirects (more than 5)" in str(get(srv.url("/chain0")))
    limits = FetchLimits(allow_private=True, max_redirects=8)
    assert get(srv.url("/chain0"), limits).moved_to == srv.url("/chain8")
    assert "non-http(s) URL 'file:///etc/passwd'" in str(get(srv.url("/file")))
    assert "without a Location header" in str(get(srv.url("/nowhere")))


def test_gone_disables_the_feed_until_the_admin_reenables_it(
    tmp_path: Path, srv: ScriptServer
) -> None:
    gone = srv.route("/gone.rss", lambda h: send(h, 410, b"gone", "text/plain"))
    ok = srv.route("/ok.rss", feed())
    agg = make_agg(tmp_path, [gone, ok])
    result = poll(agg)[gone]
    assert (result.status, result.http_status) == ("error", 410)
    health = {h.url: h for h in agg.repo.feed_health()}
    assert health[gone].disabled_reason is not None
    assert "410 Gone" in health[gone].disabled_reason
    assert [f.url for f in agg.enabled_feeds()] == [ok]
    poll(agg)
    assert srv.hits("/gone.rss") == 1
    agg.close()

    # Setting `enabled: false` acknowledges it; enabling again polls it again.
    path = tmp_path / "feeds.yaml"
    db = f"sqlite:///{tmp_path / 'store.db'}"
    for enabled in (False, True):
        path.write_text(
            config_yaml([{"url": gone, "enabled": enabled}, {"url": ok}], database_url=db)
        )
        agg = Aggregator.from_file(path)
        agg.close()
    agg = Aggregator.from_file(path)
    assert {f.url for f in agg.enabled_feeds()} == {gone, ok}
    agg.close()


def test_retry_after_sets_the_next_poll(tmp_path: Path, srv: ScriptServer) -> None:
    later = datetime.now(UTC) + timedelta(hours=3)
    busy = srv.route("/429", lambda h: send(h, 429, b"", "text/plain", {"Retry-After": "7200"}))
    down = srv.route(
        "/503",
        lambda h: send(h, 503, b"", "text/plain", {"Retry-After": format_datetime(later, True)}),
    )
    agg = make_agg(tmp_path, [busy, down], default_interval="10m")
    before = datetime.now(UTC)
    results = poll(agg)
    assert results[busy].http_status == 429 and results[down].http_status == 503
    states = agg.repo.feed_states()
    busy_next, down_next = states[busy].next_poll_at, states[down].next_poll_at
    assert busy_next is not None and down_next is not None
    # Without Retry-After one error would mean 20 minutes (2 x 10m, plus jitter).
    assert busy_next >= before + timedelta(hours=2)
    assert down_next >= later - timedelta(seconds=2)
    agg.close()


def test_retry_after_values() -> None:
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert retry_after("120", now) == timedelta(minutes=2)
    assert retry_after("Wed, 25 Nov 2026 10:30:00 GMT", now) == timedelta(minutes=90)
    assert retry_after("Wed, 25 Nov 2026 08:00:00 GMT", now) == timedelta(0)
    assert retry_after("99999999999", now) == timedelta(days=7)
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_one_host_gets_at_most_two_requests_at_once(tmp_path: Path) -> None:
    a, b = ScriptServer("127.0.0.1"), ScriptServer("127.0.0.2")
    both = {"now": 0, "max": 0}
    lock = threading.Lock()

    def slow(h: BaseHTTPRequestHandler) -> None:
        with lock:
            both["now"] += 1
            both["max"] = max(both["max"], both["now"])
        time.sleep(0.1)  # long enough for requests to overlap if we let them
        with lock:
            both["now"] -= 1
        send(h, 200, FEED)

    try:
        urls = [s.route(f"/f{i}.rss", slow) for s in (a, b) for i in range(8)]
        agg = make_agg(tmp_path, urls, max_concurrency=16)
        results = poll(agg)
        assert {r.status for r in results.values()} == {"ok"}
        assert a.max_in_flight == 2
        assert b.max_in_flight == 2
        # ... while the two hosts were polled side by side.
        assert both["max"] == 4
        agg.close()
    finally:
        a.close()
        b.close()


def test_poll_all_starts_a_bounded_number_of_polls_one_host_after_another(
    tmp_path: Path,
) -> None:
    """Polling many feeds starts at most 4 x max_concurrency polls at a time (not one per
    feed), taking the hosts in turn: a list sorted by host does not make the second host
    wait for the first one's slots. The results come in the order of the feeds."""
    a, b = ScriptServer("127.0.0.1"), ScriptServer("127.0.0.2")
    seen: list[str] = []
    lock = threading.Lock()

    def slow(h: BaseHTTPRequestHandler) -> None:
        with lock:
            seen.append(h.server.server_address[0])  # type: ignore[index]
        time.sleep(0.05)
        send(h, 200, FEED)

    try:
        urls = [s.route(f"/f{i}.rss", slow) for s in (a, b) for i in range(20)]
        agg = make_agg(tmp_path, urls, max_concurrency=2)
        polling = {"now": 0, "max": 0}
        poll_one = agg.poll

        async def counted(url: str) -> PollResult:
            polling["now"] += 1
            polling["max"] = max(polling["max"], polling["now"])
            try:
                return await poll_one(url)
            finally:
                polling["now"] -= 1

        agg.poll = counted  # type: ignore[method-assign]

        async def run() -> list[PollResult]:
            try:
                return await agg.poll_all()
            finally:
                await agg.stop()

        results = asyncio.run(run())
        agg.close()
    finally:
        a.close()
        b.close()
    assert [r.feed_url for r in results] == urls
    assert {r.status for r in results} == {"ok"}
    assert polling["max"] == 8  # 4 x max_concurrency, of 40 feeds
    assert set(seen[:2]) == {"127.0.0.1", "127.0.0.2"}


def test_per_host_limit_is_configurable(tmp_path: Path, srv: ScriptServer) -> None:
    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(0.05)
        send(h, 200, FEED)

    urls = [srv.route(f"/f{i}.rss", slow) for i in range(6)]
    agg = make_agg(tmp_path, urls, polling={"per_host_concurrency": 1})
    poll(agg)
    assert srv.max_in_flight == 1
    agg.close()


# ------------------------------------------------------------------------ hostile servers


def test_trickling_server_is_cut_off_at_the_total_limit(tmp_path: Path, srv: ScriptServer) -> None:
    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", str(len(FEED)))
        h.end_headers()
        for byte in FEED:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.1)

    slow = srv.route("/trickle.rss", trickle)
    fine = srv.route("/fine.rss", feed())
    agg = make_agg(tmp_path, [slow, fine], fetch_timeout="1s", polling={"read_timeout": "1s"})
    results = poll(agg)
    assert results[slow].status == "error"
    assert results[slow].error == "timed out after 1s (total time limit)"
    assert results[fine].status == "ok"
    agg.close()


def test_silent_server_hits_the_read_timeout(srv: ScriptServer) -> None:
    def silent(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.flush()
        time.sleep(1.5)

    srv.route("/silent", silent)
    got = get(srv.url("/silent"), FetchLimits(allow_private=True, read_timeout=0.3))
    assert str(got) == "timed out: no data for 0.3s"


def test_endless_body_and_compression_bombs_stop_at_the_cap(srv: ScriptServer) -> None:
    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.end_headers()  # no length: the body ends when the connection does
        h.close_connection = True
        for _ in range(2000):
            h.wfile.write(b"<item>" * 10_000)

    zeros = b"\0" * (64 * 1024 * 1024)
    srv.route("/endless", endless)
    srv.route("/gzip-bomb", feed(gzip.compress(zeros, 9), **{"Content-Encoding": "gzip"}))
    srv.route("/br-bomb", feed(brotli.compress(zeros), **{"Content-Encoding": "br"}))
    srv.route("/declared", lambda h: send(h, 200, b"x" * 2_000_000))
    limits = FetchLimits(allow_private=True, max_body_bytes=1_000_000)
    for path in ("/endless", "/gzip-bomb", "/br-bomb"):
        got = get(srv.url(path), limits)
        assert isinstance(got, FetchError), path
        assert str(got) == "body too large: more than 1000000 bytes (decompressed)", path
    assert str(get(srv.url("/declared"), limits)) == (
        "body too large: Content-Length 2000000 > 1000000 bytes"
    )


def test_html_page_is_an_error_that_offers_its_feeds(tmp_path: Path, srv: ScriptServer) -> None:
    page = (
        b"<!doctype html><html><head><title>News</title>"
        b'<link rel="alternate" type="application/rss+xml" href="/feeds/all.rss">'
        b'<link rel="alternate" type="application/atom+xml" href="https://x.example/a.atom">'
        b'<link rel="stylesheet" href="/s.css"></head><body><p>Hello</p></body></html>'
    )
    url = srv.route("/news", lambda h: send(h, 200, page, "text/html; charset=utf-8"))
    agg = make_agg(tmp_path, [url])
    result = poll(agg)[url]
    assert result.status == "error"
    assert result.error == (
        "looks like an HTML page, not a feed; the page links to "
        f"{srv.url('/feeds/all.rss')}, https://x.example/a.atom"
    )
    agg.close()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE rss [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<rss version="2.0"><channel><title>&lol3;</title><link>https://x.example/</link>
<item><title>&lol3;</title><guid>a</guid></item></channel></rss>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<rss version="2.0"><channel><title>t</title><link>https://x.example/</link>
<item><title>&secret;</title><guid>a</guid></item></channel></rss>"""


def test_entity_attacks_are_refused_with_a_clear_error(tmp_path: Path, srv: ScriptServer) -> None:
    laughs = srv.route("/laughs.rss", feed(BILLION_LAUGHS))
    xxe = srv.route("/xxe.rss", feed(EXTERNAL_ENTITY))
    normal = srv.route("/normal.rss", feed())  # declares &eacute; and &mdash; plainly
    agg = make_agg(tmp_path, [laughs, xxe, normal])
    results = poll(agg)
    assert results[laughs].error == (
        "refused: entity 'lol1' expands other entities (lol): "
        "entity expansion ('billion laughs') is not allowed"
    )
    assert results[xxe].error == (
        "refused: the document declares an external entity 'secret' (XXE)"
    )
    assert results[normal].status == "ok"
    assert agg.repo.count_entries(laughs) == agg.repo.count_entries(xxe) == 0
    agg.close()


# ------------------------------------------------------------------------ SSRF guard


def test_guard_refuses_loopback_by_default(tmp_path: Path, srv: ScriptServer) -> None:
    url = srv.route("/feed.rss", feed())
    agg = make_agg(tmp_path, [url], polling={"allow_private_addresses": False})
    result = poll(agg)[url]
    assert result.status == "error"
    assert result.error == (
        "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address (SSRF guard; "
        "set polling.allow_private_addresses: true in feeds.yaml to allow it)"
    )
    assert srv.hits("/feed.rss") == 0
    agg.close()


def test_guard_checks_every_redirect_hop(tmp_path: Path) -> None:
    inside, other = ScriptServer("127.0.0.1"), ScriptServer("127.0.0.2")
    try:
        target = other.route("/internal", feed())
        url = inside.route("/feed.rss", redirect(302, target))
        # One address allowed on purpose; the hop to another private one is still refused.
        agg = make_agg(
            tmp_path,
            [url],
            polling={"allow_private_addresses": False, "allowed_networks": ["127.0.0.1/32"]},
        )
        result = poll(agg)[url]
        assert result.error is not None
        assert result.error.startswith("refused: 127.0.0.2 resolves to 127.0.0.2, a loopback")
        assert (inside.hits("/feed.rss"), other.hits("/internal")) == (1, 0)
        agg.close()
    finally:
        inside.close()
        other.close()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "non-public"),
        ("240.0.0.1", "private"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
        # Issue 22.12: 6to4 and site-local got through.
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("2002:c0a8:1::", "private"),  # 6to4 of 192.168.0.1
        ("2002:5db8:d70e::", None),  # 6to4 of a public address
        ("fec0::1", "site-local"),
        ("fed0:1234::5", "site-local"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "private"),  # Teredo
    ],
)
def test_address_classes(address: str, why: str | None) -> None:
    assert _refusal(ipaddress.ip_address(address)) == why


def test_names_are_resolved_before_they_are_judged() -> None:
    with pytest.raises(FetchError, match=r"refused: localhost resolves to .*, a loopback"):
        asyncio.run(check_address("http://localhost:8080/feed", allow_private=False))
    with pytest.raises(FetchError, match="cannot resolve host"):
        asyncio.run(check_address("http://no-such-host.invalid/feed", allow_private=False))
    asyncio.run(check_address("http://127.0.0.1/feed", allow_private=True))


def test_polling_migration_upgrades_a_store_holding_data(
    tmp_path: Path, db_url: str, srv: ScriptServer
) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    import storage
    from storage.repository import make_engine, migrate

    old = srv.route("/old.rss", redirect(301, "/new.rss"))
    srv.route("/new.rss", feed())
    agg = make_agg(tmp_path, [old], db_url=db_url)
    poll(agg)
    agg.close()
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(storage.__file__).parent / "migrations"))
    engine = make_engine(db_url, immediate=True)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "i3_polling-1")
    finally:
        engine.dispose()
    migrate(db_url)
    agg = make_agg(tmp_path, [old], db_url=db_url)
    assert agg.repo.count_entries(old) == 20
    assert agg.repo.feed_states()[old].moved_to is None  # the column is back, empty
    poll(agg)
    assert agg.repo.feed_states()[old].moved_to == srv.url("/new.rss")
    agg.close()
