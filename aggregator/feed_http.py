"""HTTP answers for rendered feeds: validators, 304s, gzip, and a hot path before routing.

:func:`answer` decides status, headers and body for a :class:`~aggregator.feeds.Rendered`
feed and a request's conditional and encoding headers; the routed handler in web.py and
the hot path both use it, so both give the same answer byte for byte.

The hot path: the app (web.py) asks :meth:`HotTable.answer` first, before any
middleware or routing; a GET for a URL whose rendering is current (same content
version, same minute, same configuration) is answered from precomputed answers. Anything
else (first request, a changed store, a HEAD, a new query string) goes through the app,
whose feed handler renders, answers and :meth:`HotTable.remember`\\s it for next time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from .feeds import ContentVersion, Rendered

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Any]
HOT_ENTRIES = 1024

# Downstream sites read feeds and the JSON endpoints from their own pages.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "ETag, Last-Modified, Link",
}


# A browser sends a preflight before a cross-origin GET that sets its own validators.
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Accept, Accept-Language, If-None-Match, If-Modified-Since",
    "Access-Control-Max-Age": "86400",
}
# Never readable cross-origin: the admin area and its way in.
_PRIVATE_PREFIXES = ("/admin", "/login", "/logout")


class Answer(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip()
            try:
                return not params or float(q) > 0
            except ValueError:
                return True
    return False


def not_modified(
    rendered: Rendered, if_none_match: str | None, if_modified_since: str | None
) -> bool:
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or rendered.etag_for(False) in tags or rendered.etag_for(True) in tags
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return rendered.last_modified.replace(microsecond=0) <= since
    return False


def answer(
    rendered: Rendered, gz: bool, if_none_match: str | None, if_modified_since: str | None
) -> Answer:
    headers = [
        (b"etag", rendered.etag_for(gz).encode()),
        (b"cache-control", f"public, max-age={rendered.max_age}".encode()),
        (b"vary", b"Accept-Encoding"),
        # A feed or OPML file is never to be sniffed into HTML by a browser that opens it.
        (b"x-content-type-options", b"nosniff"),
        *((k.lower().encode(), v.encode()) for k, v in CORS.items()),
    ]
    if not_modified(rendered, if_none_match, if_modified_since):
        # RFC 9110 15.4.5: a 304 repeats ETag, Cache-Control and Vary; other metadata
        # (Last-Modified, Link) stays in the client's stored copy. Fewer bytes per poll.
        return Answer(304, headers, b"")
    headers.insert(1, (b"last-modified", rendered.last_modified_http.encode()))
    if rendered.link:
        headers.append((b"link", rendered.link.encode()))
    body = rendered.gzipped if gz else rendered.body
    headers.append((b"content-type", rendered.media_type.encode()))
    if gz:
        headers.append((b"content-encoding", b"gzip"))
    headers.append((b"content-length", str(len(body)).encode()))
    return Answer(200, headers, body)


class _Hot(NamedTuple):
    rendered: Rendered
    minute: int
    config_id: int
    # answer() for the common requests, computed once: [gzip][304]
    answers: tuple[tuple[Answer, Answer], tuple[Answer, Answer]]
    etags: tuple[bytes, bytes]  # [gzip]


def _key(scope: Mapping[str, Any], host: bytes) -> tuple[str, bytes, bytes, str, str]:
    # Self links hold scheme, host and root path: an https reader behind a proxy and an
    # http one on the same host get different renderings.
    return (
        scope["path"],
        scope.get("query_string", b""),
        host,
        scope.get("root_path", ""),
        scope.get("scheme", "http"),
    )


def _header(headers: Iterable[tuple[bytes, bytes]], *names: bytes) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        name = name.lower()
        if name in names:
            found[name] = value
    return found


def _hot(rendered: Rendered, minute: int, config_id: int) -> _Hot:
    def pair(gz: bool) -> tuple[Answer, Answer]:
        return answer(rendered, gz, None, None), answer(rendered, gz, rendered.etag_for(gz), None)

    etags = (rendered.etag_for(False).encode(), rendered.etag_for(True).encode())
    return _Hot(rendered, minute, config_id, (pair(False), pair(True)), etags)


class HotTable:
    """Answers worth reusing, by request URL; filled by the feed handler, read by
    :meth:`answer` before any middleware or routing."""

    def __init__(self, versions: ContentVersion, config_id: Callable[[], int]) -> None:
        self._versions = versions
        self._config_id = config_id
        self._table: dict[tuple[str, bytes, bytes, str, str], _Hot] = {}
        self._gzip: dict[bytes, bool] = {}  # Accept-Encoding value -> accepts gzip
        # Renderings resolve relative times to the minute; the tests pin this clock so a
        # minute boundary cannot fall in the middle of a test.
        self.clock: Callable[[], float] = time.time

    def minute(self) -> int:
        """The minute renderings are made for now; a rendering of another is not current."""
        return int(self.clock() // 60)

    def remember(self, scope: MutableMapping[str, Any], rendered: Rendered, minute: int) -> None:
        host = _header(scope.get("headers", ()), b"host").get(b"host", b"")
        if len(self._table) >= HOT_ENTRIES:
            self._table.clear()  # rebuilt by the next requests; cheaper than LRU upkeep
        self._table[_key(scope, host)] = _hot(rendered, minute, self._config_id())

    def _current(self, scope: Mapping[str, Any], host: bytes) -> _Hot | None:
        hot = self._table.get(_key(scope, host))
        if (
            hot is None
            or self._versions.peek() != hot.rendered.version
            or hot.minute != self.minute()
            or hot.config_id != self._config_id()
        ):
            return None
        return hot

    def _accepts_gzip(self, value: bytes) -> bool:
        # Readers send a handful of distinct Accept-Encoding values; parse each once.
        known = self._gzip.get(value)
        if known is None:
            if len(self._gzip) >= HOT_ENTRIES:
                self._gzip.clear()
            known = self._gzip[value] = accepts_gzip(value.decode("latin-1"))
        return known

    def answer(self, scope: Mapping[str, Any]) -> Answer | None:
        """What a GET gets when its URL's rendering is current, or None (route it).

        Byte for byte what :func:`answer` gives (``tests/test_web.py`` compares them);
        the usual requests (none or the exact ETag as validator) reuse precomputed
        answers, so a reader's 304 costs a dict lookup and a comparison.
        """
        h = _header(
            scope["headers"], b"host", b"if-none-match", b"if-modified-since", b"accept-encoding"
        )
        hot = self._current(scope, h.get(b"host", b""))
        if hot is None:
            return None
        gz = self._accepts_gzip(h.get(b"accept-encoding", b""))
        inm = h.get(b"if-none-match")
        ims = h.get(b"if-modified-since")
        if inm is None and ims is None:
            return hot.answers[gz][0]
        if inm is not None and inm == hot.etags[gz]:
            return hot.answers[gz][1]
        return answer(
            hot.rendered,
            gz,
            inm.decode("latin-1") if inm is not None else None,
            ims.decode("latin-1") if ims is not None else None,
        )


class Preflight:
    """ASGI middleware answering a CORS preflight for a public path (anything else: the app)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        h = _header(scope["headers"], b"origin", b"access-control-request-method")
        path: str = scope["path"]
        if (
            b"origin" not in h
            or b"access-control-request-method" not in h
            or path.startswith(_PRIVATE_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        headers = [(k.lower().encode(), v.encode()) for k, v in PREFLIGHT.items()]
        headers.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
