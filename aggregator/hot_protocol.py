"""uvicorn's HTTP protocol, answering a reader's repeat feed GET without an ASGI request.

Most of a busy aggregator's traffic is readers polling unchanged feeds. The app already
answers those from :class:`~aggregator.feed_http.HotTable` before its routing, but
under uvicorn every request still costs a scope, a request cycle, an asyncio task and
two ASGI messages: about half of a 304's time (bench/serve.py: 24,000 304s/s for a bare
ASGI handler, 48,000-55,000 from here, one process). This protocol asks the same table as
soon as a GET's headers are parsed and writes the same answer straight to the socket;
anything else (not a GET, not current in the table, a pipelined request behind one still
running, a client not reading its answers, access logging on) goes through uvicorn
unchanged. ``aggregator serve``/``web`` run uvicorn with it (``http=HotHttpProtocol``).

It leans on uvicorn's ``HttpToolsProtocol`` internals (its parser callbacks and
per-connection state), so pyproject.toml bounds uvicorn's version and
tests/test_hot_protocol.py checks the answers byte for byte against the ASGI path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from . import metrics
from .feed_http import Answer, HotTable


def _find(app: Any) -> tuple[HotTable | None, ProxyHeadersMiddleware | None]:
    """The hot table inside uvicorn's wrapping of our app, and the proxy-headers layer."""
    proxy = None
    for _ in range(8):  # uvicorn wraps at most a few middleware layers around the app
        if isinstance(app, ProxyHeadersMiddleware):
            proxy = app
        hot = getattr(app, "hot", None)
        if isinstance(hot, HotTable):
            return hot, proxy
        app = getattr(app, "app", None)
        if app is None:
            break
    return None, proxy


def _raw(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % pair for pair in headers)


class HotHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hot, self._proxy = _find(self.app)
        self._answered = False
        # Header blocks of the answers in use, by identity: hot answers are reused.
        self._blocks: dict[int, tuple[Answer, bytes]] = {}
        # uvicorn's Date and Server lines: a new list each second.
        self._defaults: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")
        # Keep-alive after our answers: one timer per idle spell, not one per request.
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self._idle_since = None  # uvicorn's own timing applies until we answer again
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._answered = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if (
            self._hot is not None
            and not self.access_log
            and (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
            # A reader that does not read its answers is served by uvicorn, which waits.
            and not self.flow.write_paused
            and self.parser.get_method() == b"GET"
            and not self.parser.should_upgrade()
            and self._answer_hot()
        ):
            return
        super().on_headers_complete()

    def _scheme(self) -> str:
        # What uvicorn's ProxyHeadersMiddleware would set: a trusted proxy's
        # X-Forwarded-Proto; the self links in the feed depend on it.
        scheme: str = self.scheme or "http"
        if self._proxy is not None and self.client and self.client[0] in self._proxy.trusted_hosts:
            for name, value in self.headers:
                if name == b"x-forwarded-proto":
                    proto = value.decode("latin-1").strip()
                    if proto in ("http", "https"):
                        scheme = proto
        return scheme

    def _answer_hot(self) -> bool:
        assert self._hot is not None
        t0 = time.perf_counter()
        url = httptools.parse_url(self.url)
        if b"%" in url.path:
            return False  # uvicorn unquotes; leave the rare escaped path to it
        path = self.root_path + url.path.decode("ascii")
        a = self._hot.answer(
            {
                "path": path,
                "query_string": url.query or b"",
                "headers": self.headers,
                "root_path": self.root_path,
                "scheme": self._scheme(),
            }
        )
        if a is None:
            return False
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        block = self._blocks.get(id(a))
        if block is None or block[0] is not a:
            if len(self._blocks) >= 64:
                self._blocks.clear()
            block = (a, _raw(a.headers))
            self._blocks[id(a)] = block
        defaults = self.server_state.default_headers
        if self._defaults[0] is not defaults:
            self._defaults = (defaults, _raw(defaults))
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[a.status],
                    self._defaults[1],
                    block[1],
                    b"" if keep_alive else b"connection: close\r\n",
                    b"\r\n",
                    a.body,
                )
            )
        )
        self._answered = True
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        else:
            # uvicorn arms a timer per response and cancels it at the next request (about
            # a tenth of a 304's time here); ours is re-armed only when it fires.
            self._idle_since = self.loop.time()
            if self._idle_timer is None:
                self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle)
        metrics.observe_request(path, "GET", a.status, time.perf_counter() - t0)
        return True

    def _idle(self) -> None:
        """Close the connection once idle for uvicorn's keep-alive timeout since our answer."""
        self._idle_timer = None
        if self._idle_since is None or self.transport.is_closing():
            return  # a request came since: the next answer, ours or uvicorn's, times it
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._idle)
        else:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._answered:
            super().on_message_complete()
