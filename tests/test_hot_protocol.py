"""The uvicorn protocol that answers current feed GETs itself (aggregator/hot_protocol.py),
over real sockets: the same bytes as the ASGI path, in order, and never a stale answer.

Each test serves the app behind :class:`_AsgiRefuses`, which answers every HTTP request
503 after warm-up but still exposes the app's hot table: whatever comes back right was
answered by the protocol, without an ASGI request.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from live import uvicorn_server
from test_web import agg  # noqa: F401  (fixture: a store polled from four real feeds)

from aggregator.feed_http import HotTable
from aggregator.hot_protocol import HotHttpProtocol
from aggregator.service import Aggregator
from aggregator.web import create_app

FEED = "/topics/world.atom"
# Self links (so ETags too) follow Host: one name for every server in a test.
HOST = "feeds.example"


class _AsgiRefuses:
    """The app until ``refuse`` is set; then 503 for every HTTP request it is given."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hot: HotTable = app.hot
        self.refuse = False
        self.asgi_requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.asgi_requests += 1
            if self.refuse:
                body = b"asked the ASGI app"
                headers = [(b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _app(store: Aggregator) -> Any:
    """The app with its minute pinned: a rendering is current only within its minute, and
    a test that crossed a minute boundary would see its warm answers go stale."""
    app = create_app(store, poll=False)
    now = time.time()
    app.hot.clock = lambda: now
    return app


@contextmanager
def _serve(app: Any, protocol: Any = HotHttpProtocol, **options: Any) -> Iterator[int]:
    with uvicorn_server(app, protocol, **options) as server:
        yield server.config.port


def _request(path: str = FEED, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` responses from the socket, each (status, headers without Date, body)."""
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    sock.settimeout(10)
    while len(out) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            if len(buf) >= head_end + 4 + length:
                body = buf[head_end + 4 : head_end + 4 + length]
                buf = buf[head_end + 4 + length :]
                headers.pop("date", None)
                out.append((int(head[0].split()[1]), headers, body))
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} of {count} responses")
        buf += chunk
    return out


def _exchange(port: int, *requests: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"".join(requests))  # pipelined: all at once
        return _read_responses(sock, len(requests))


def _variants(etag: str, gz_etag: str, lm: str) -> list[bytes]:
    return [
        _request(FEED, h)
        for h in (
            {"Accept-Encoding": "identity"},
            {"Accept-Encoding": "gzip, deflate"},
            {"If-None-Match": etag, "Accept-Encoding": "identity"},
            {"If-None-Match": gz_etag, "Accept-Encoding": "gzip"},
            {"If-None-Match": f'"other", W/{etag}'},
            {"If-Modified-Since": lm, "Accept-Encoding": "identity"},
            {"If-None-Match": '"stale"', "Accept-Encoding": "gzip"},
        )
    ]


def test_the_protocol_gives_the_asgi_paths_answers_byte_for_byte(agg: Aggregator) -> None:  # noqa: F811
    wrapped = _AsgiRefuses(_app(agg))
    with _serve(wrapped) as port, _serve(_app(agg), protocol="httptools") as ref:
        warm = _exchange(port, _request(FEED, {"Accept-Encoding": "identity"}))[0]
        gz = _exchange(port, _request(FEED, {"Accept-Encoding": "gzip"}))[0]
        assert warm[0] == 200 and gz[0] == 200
        wrapped.refuse = True
        seen_by_asgi = wrapped.asgi_requests
        etag, gz_etag, lm = warm[1]["etag"], gz[1]["etag"], warm[1]["last-modified"]
        ours = _exchange(port, *_variants(etag, gz_etag, lm))
        assert wrapped.asgi_requests == seen_by_asgi  # none of them reached the app

        # The plain uvicorn protocol on the same store, through the routed handler.
        _exchange(ref, _request(FEED))
        theirs = _exchange(ref, *_variants(etag, gz_etag, lm))

    assert [r[0] for r in ours] == [200, 200, 304, 304, 304, 304, 200]
    assert ours == theirs
    assert ours[0][2] == warm[2] and ours[0][1]["server"] == "uvicorn"


def test_pipelined_requests_are_answered_in_order(agg: Aggregator) -> None:  # noqa: F811
    app = _app(agg)
    with _serve(app) as port:
        _exchange(port, _request())  # warm
        healthz = _request("/healthz")
        got = _exchange(port, healthz, _request(), healthz, _request(), _request())
    assert [s for s, _, _ in got] == [200] * 5
    assert [h["content-type"].split(";")[0] for _, h, _ in got] == [
        "application/json",
        "application/atom+xml",
        "application/json",
        "application/atom+xml",
        "application/atom+xml",
    ]
    assert got[1][2] == got[3][2] == got[4][2] and got[1][2].startswith(b"<?xml")


def test_http_1_0_gets_connection_close(agg: Aggregator) -> None:  # noqa: F811
    wrapped = _AsgiRefuses(_app(agg))
    with _serve(wrapped) as port:
        _exchange(port, _request())
        wrapped.refuse = True
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(_request().replace(b"HTTP/1.1", b"HTTP/1.0"))
            [(status, headers, body)] = _read_responses(sock, 1)
            assert status == 200 and headers["connection"] == "close" and body
            sock.settimeout(5)
            assert sock.recv(1) == b""  # and closes it


def test_a_changed_store_is_never_answered_from_the_table(agg: Aggregator) -> None:  # noqa: F811
    wrapped = _AsgiRefuses(_app(agg))
    with _serve(wrapped) as port:
        _exchange(port, _request())
        wrapped.refuse = True
        assert _exchange(port, _request())[0][0] == 200
        agg.repo.local_changes += 1  # what a commit by this process does
        [(status, _, body)] = _exchange(port, _request())
    assert (status, body) == (503, b"asked the ASGI app")


@pytest.mark.parametrize("proto", ["https", "http"])
def test_a_trusted_proxys_scheme_keys_the_answer(agg: Aggregator, proto: str) -> None:  # noqa: F811
    """Behind a proxy on 127.0.0.1 (uvicorn's default trusted host), X-Forwarded-Proto
    sets the scheme of the self links; an answer for one scheme never serves the other."""
    app = _app(agg)
    with _serve(app) as port:
        other = "http" if proto == "https" else "https"
        first = _exchange(port, _request(FEED, {"X-Forwarded-Proto": proto}))[0]
        again = _exchange(port, _request(FEED, {"X-Forwarded-Proto": proto}))[0]
        crossed = _exchange(port, _request(FEED, {"X-Forwarded-Proto": other}))[0]
    self_link = f'href="{proto}://{HOST}{FEED}"'.encode()
    assert self_link in first[2] and again == first
    assert self_link not in crossed[2]
    assert f'href="{other}://{HOST}{FEED}"'.encode() in crossed[2]


def test_a_client_that_does_not_read_cannot_fill_our_memory(agg: Aggregator) -> None:  # noqa: F811
    """Thousands of pipelined GETs, never read: once the socket's write buffer is full,
    uvicorn's own path takes over and waits for the reader, so the buffer stays bounded."""
    requests = 3000
    with uvicorn_server(_app(agg)) as server:
        port = server.config.port
        _exchange(port, _request())  # warm: 23 KB answers from here on
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(5)
            with contextlib.suppress(TimeoutError):
                sock.sendall(_request(FEED, {"Accept-Encoding": "identity"}) * requests)
            time.sleep(1)
            buffered = max(
                c.transport.get_write_buffer_size() for c in server.server_state.connections
            )
    # Unbounded, it would hold every answer: 3,000 x 23 KB = 69 MB.
    assert buffered < 4_000_000, f"{buffered:,} bytes waiting for a client that never reads"


def test_keep_alive_times_out_after_our_answers_not_before(agg: Aggregator) -> None:  # noqa: F811
    """uvicorn's keep-alive timeout (1 s here) counts from the last answer, ours or its own."""
    wrapped = _AsgiRefuses(_app(agg))
    with _serve(wrapped, timeout_keep_alive=1) as port:
        _exchange(port, _request())
        wrapped.refuse = True
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(4):  # 2.4 s in all, never 1 s idle: stays open
                sock.sendall(_request())
                assert _read_responses(sock, 1)[0][0] == 200
                time.sleep(0.6)
            started = time.monotonic()
            sock.settimeout(5)
            assert sock.recv(1) == b""  # then closed, about 1 s after the last answer
            assert 0.2 < time.monotonic() - started < 2.5
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(_request("/healthz"))  # uvicorn's path, then ours, then idle
            assert _read_responses(sock, 1)[0][0] == 503
            sock.sendall(_request())
            assert _read_responses(sock, 1)[0][0] == 200
            started = time.monotonic()
            sock.settimeout(5)
            assert sock.recv(1) == b""
            assert time.monotonic() - started < 2.5
