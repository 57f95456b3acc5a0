"""HTTP: the only module that talks to the network.

``fetch()`` does one conditional GET (ETag / Last-Modified sent back) and returns a
``Fetched`` for a 200. Everything else is an exception: ``NotModified`` for a 304,
``Gone`` for a 410, ``FetchError`` (with the HTTP status and any ``Retry-After``) for the
rest. Against servers that are broken or hostile it keeps these limits:

* redirects are followed by hand, at most ``max_redirects``, loops refused; each hop's
  address is checked by the SSRF guard before connecting. A chain that starts with
  301/308 reports the permanent target as ``moved_to``; 302/307 are followed but not kept;
* the SSRF guard (on unless ``allow_private``) resolves the host and refuses it when
  any address is loopback, private, link-local, multicast, reserved or otherwise not
  global;
* time: connect and per-read timeouts from httpx, plus one total limit over the whole
  exchange, so a server trickling a byte a second is cut off;
* size: the body is decompressed here, not by httpx, in bounded steps, so the cap counts
  decompressed bytes and a gzip or brotli bomb stops at the cap without being inflated;
* politeness: a User-Agent naming us, gzip/deflate/br, and at most ``per_host`` requests
  in flight to one host (``HostLimiter``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import brotli
import httpx

from . import USER_AGENT
from .exceptions import FetchError, Gone, NotModified
from .types import Fetched

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
ACCEPT_ENCODING = "gzip, deflate, br"
PERMANENT = frozenset({301, 308})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A Retry-After further out than this is a broken or hostile header, not a plan.
MAX_RETRY_AFTER = timedelta(days=7)
# Decompress at most this much per step, so a bomb never inflates far past the cap.
_STEP = 256 * 1024


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = 30.0  # seconds for the whole exchange, redirects and body included
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # longest silence between two reads
    max_body_bytes: int = 10 * 1024 * 1024  # decompressed
    max_redirects: int = 5
    user_agent: str = USER_AGENT
    allow_private: bool = False  # the SSRF guard is on unless an admin says otherwise
    allowed_networks: tuple[Network, ...] = ()  # allowed even while the guard is on
    per_host: int = 2


class HostLimiter:
    """At most ``per_host`` requests in flight to one host, however many feeds it has."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        sem = self._slots.get(host)
        if sem is None:
            sem = self._slots[host] = asyncio.Semaphore(self.per_host)
        # Counted so the table holds only hosts in use: tens of thousands of hosts polled
        # once a day should not leave tens of thousands of semaphores behind.
        self._users[host] = self._users.get(host, 0) + 1
        try:
            async with sem:
                yield
        finally:
            self._users[host] -= 1
            if not self._users[host]:
                del self._users[host]
                del self._slots[host]


def host_key(url: str) -> str:
    """What the per-host limit counts by: the host name, lower-cased, without the port."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def make_client(limits: FetchLimits, max_connections: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        # Redirects are followed in fetch(), one checked hop at a time.
        follow_redirects=False,
        timeout=httpx.Timeout(
            limits.read_timeout, connect=limits.connect_timeout, pool=limits.timeout
        ),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
        headers={
            "User-Agent": limits.user_agent,
            "Accept": ACCEPT,
            "Accept-Encoding": ACCEPT_ENCODING,
        },
        # Proxies from the environment would change who we are talking to behind our back.
        trust_env=False,
    )


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    limits: FetchLimits | None = None,
    hosts: HostLimiter | None = None,
    held_host: str | None = None,
) -> Fetched:
    """GET ``url``; ``held_host`` is a host whose slot in ``hosts`` the caller already holds."""
    limits = limits or FetchLimits()
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    started = time.monotonic()
    try:
        # httpx's timeouts are per read; a server trickling a byte at a time needs a total.
        async with asyncio.timeout(limits.timeout):
            return await _follow(client, url, headers, limits, hosts, held_host, started)
    except TimeoutError as e:
        raise FetchError(f"timed out after {limits.timeout:g}s (total time limit)") from e
    except httpx.TimeoutException as e:
        kind = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: f"no data for {limits.read_timeout:g}s",
            httpx.PoolTimeout: "waiting for a connection",
        }.get(type(e), type(e).__name__)
        raise FetchError(f"timed out: {kind}") from e
    except httpx.HTTPError as e:
        raise FetchError(f"{type(e).__name__}: {e}".rstrip(": ")) from e


async def _follow(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    limits: FetchLimits,
    hosts: HostLimiter | None,
    held_host: str | None,
    started: float,
) -> Fetched:
    current = url
    moved_to: str | None = None
    permanent = True  # every hop so far was 301/308
    seen = {url}
    for _hop in range(limits.max_redirects + 1):
        await check_address(current, limits.allow_private, limits.allowed_networks)
        host = host_key(current)
        if hosts is None or host == held_host:
            response = await _request(client, current, headers, limits, started, moved_to)
        else:
            async with hosts.slot(host):
                response = await _request(client, current, headers, limits, started, moved_to)
        if isinstance(response, Fetched):
            return response._replace(url=url)
        status, location = response
        target = _redirect_target(current, location, status)
        if target in seen:
            raise FetchError(f"redirect loop: {target} was already visited", status)
        seen.add(target)
        permanent = permanent and status in PERMANENT
        if permanent:
            moved_to = target
        current = target
    raise FetchError(f"too many redirects (more than {limits.max_redirects})")


def _redirect_target(current: str, location: str | None, status: int) -> str:
    if not location:
        raise FetchError(f"HTTP {status} redirect without a Location header", status)
    try:
        target = urljoin(current, location.strip())
        parts = urlsplit(target)
    except ValueError as e:
        raise FetchError(f"HTTP {status} redirect to an invalid URL {location!r}", status) from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"HTTP {status} redirect to a non-http(s) URL {location!r}", status)
    # The fragment is ours, never the server's business.
    return target.split("#", 1)[0]


async def _request(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    limits: FetchLimits,
    started: float,
    moved_to: str | None,
) -> Fetched | tuple[int, str | None]:
    """One hop: a ``Fetched``, or ``(status, Location)`` for a redirect to follow."""
    async with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status in REDIRECTS:
            return status, response.headers.get("location")
        if status == 304:
            # A 304 has no body, but the connection goes back to the pool only once the
            # response has been read to its end; closed unread, it is closed, and every
            # poll of the host would open a new one.
            await response.aread()
            raise NotModified(moved_to=moved_to, headers=_lower(response.headers))
        if status == 410:
            raise Gone(f"HTTP 410 Gone: the publisher removed the feed at {url}")
        if status >= 400 or status < 200:
            phrase = response.reason_phrase or ""
            retry = None
            if status in (429, 503):
                retry = retry_after(response.headers.get("retry-after"), datetime.now(UTC))
            raise FetchError(f"HTTP {status} {phrase}".strip(), status, retry_after=retry)
        if status != 200:
            raise FetchError(f"HTTP {status}: expected 200 with a feed body", status)
        content = await _read_body(response, limits.max_body_bytes)
        hdrs = _lower(response.headers)
        return Fetched(
            url=url,
            final_url=url,
            status=status,
            content=content,
            headers=hdrs,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            elapsed_ms=int((time.monotonic() - started) * 1000),
            moved_to=moved_to,
        )


def _lower(headers: httpx.Headers) -> dict[str, str]:
    # The body is handed on decoded: its encoding and length headers no longer describe it.
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    }


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """``Retry-After`` (delta-seconds or an HTTP date) as a delay from ``now``, capped."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        delay = timedelta(seconds=int(value[:9]))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = when - now
    return max(timedelta(0), min(delay, MAX_RETRY_AFTER))


# ----------------------------------------------------------------------------- body


async def _read_body(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length", "")
    encodings = [
        e.strip().lower()
        for e in response.headers.get("content-encoding", "").split(",")
        if e.strip() and e.strip().lower() != "identity"
    ]
    if not encodings and declared.isdigit() and int(declared) > cap:
        raise FetchError(f"body too large: Content-Length {declared} > {cap} bytes", 200)
    decoders = [_decoder(e) for e in reversed(encodings)]
    out = bytearray()

    def add(data: bytes) -> None:
        out.extend(data)
        if len(out) > cap:
            raise FetchError(f"body too large: more than {cap} bytes (decompressed)", 200)

    async for raw in response.aiter_raw():
        _push(decoders, raw, add)
    _push(decoders, None, add)
    return bytes(out)


def _push(decoders: list[_Decoder], data: bytes | None, sink: Callable[[bytes], None]) -> None:
    """Feed ``data`` (None: end of body) through the decoders, step by step, into ``sink``."""
    if not decoders:
        if data:
            sink(data)
        return
    first, rest = decoders[0], decoders[1:]
    # Lazily: the sink enforces the cap after each bounded step, before the next is made.
    for piece in first.decode(data):
        _push(rest, piece, sink)
    if data is None:
        _push(rest, None, sink)


class _Decoder:
    def decode(self, data: bytes | None) -> Iterator[bytes]:
        raise NotImplementedError


class _Zlib(_Decoder):
    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._d = zlib.decompressobj(wbits)
        self._started = False

    def decode(self, data: bytes | None) -> Iterator[bytes]:
        if data is None:
            try:
                tail = self._d.flush()
            except zlib.error as e:
                raise FetchError(f"bad compressed body: {e}", 200) from e
            if tail:
                yield tail
            return
        buf = data
        while buf and not self._d.eof:
            try:
                piece = self._d.decompress(buf, _STEP)
            except zlib.error as e:
                if not self._started and self._wbits == zlib.MAX_WBITS:
                    # "deflate" servers often send raw deflate without the zlib wrapper.
                    self._wbits = -zlib.MAX_WBITS
                    self._d = zlib.decompressobj(self._wbits)
                    self._started = True
                    continue
                raise FetchError(f"bad compressed body: {e}", 200) from e
            self._started = True
            if piece:
                yield piece
            buf = self._d.unconsumed_tail


class _Brotli(_Decoder):
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decode(self, data: bytes | None) -> Iterator[bytes]:
        try:
            piece = self._d.process(data or b"", output_buffer_limit=_STEP)
            if piece:
                yield piece
            while not self._d.can_accept_more_data():
                piece = self._d.process(b"", output_buffer_limit=_STEP)
                if not piece:
                    break
                yield piece
        except brotli.error as e:
            raise FetchError(f"bad brotli body: {e}", 200) from e


def _decoder(encoding: str) -> _Decoder:
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Zlib(zlib.MAX_WBITS)
    if encoding == "br":
        return _Brotli()
    raise FetchError(f"unsupported Content-Encoding {encoding!r}", 200)


# ----------------------------------------------------------------------------- SSRF guard


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a poller must not connect to ``ip``, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 one are judged by it: mapped, and 6to4 (2002::/16,
        # routed to the embedded address by a relay). Teredo is refused as private below.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return _refusal(embedded)
        if ip.is_site_local:
            return "site-local"  # fec0::/10: deprecated, still routed inside some networks
    for attr, name in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return name
    if not ip.is_global:
        return "non-public"
    return None


async def check_address(url: str, allow_private: bool, allowed: tuple[Network, ...] = ()) -> None:
    """Refuse ``url`` if its host resolves to an address a feed has no business on."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise FetchError(f"no host in URL {url!r}")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as e:
            raise FetchError(f"cannot resolve host {host!r}: {e}") from e
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for ip in addresses:
        if any(ip.version == net.version and ip in net for net in allowed):
            continue
        why = _refusal(ip)
        if why:
            raise FetchError(
                f"refused: {host} resolves to {ip}, a {why} address (SSRF guard; "
                "set polling.allow_private_addresses: true in feeds.yaml to allow it)"
            )
