"""HTTP: the only module that talks to the network.

``fetch()`` does one conditional GET (ETag / Last-Modified sent back), follows redirects,
stops at a total time limit and at a body-size cap counted on decompressed bytes, and
returns a ``Fetched`` for a 200. Everything else is an exception: ``NotModified`` for a
304, ``FetchError`` (with the HTTP status when there is one) for the rest.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from . import USER_AGENT
from .exceptions import FetchError, NotModified
from .types import Fetched

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = 30.0  # seconds for the whole request, body included
    connect_timeout: float = 10.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    user_agent: str = USER_AGENT


def make_client(limits: FetchLimits, max_connections: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=limits.max_redirects,
        timeout=httpx.Timeout(limits.timeout, connect=limits.connect_timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
        headers={"User-Agent": limits.user_agent, "Accept": ACCEPT},
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
) -> Fetched:
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
            return await _get(client, url, headers, limits, started)
    except TimeoutError as e:
        raise FetchError(f"timed out after {limits.timeout:g}s") from e
    except httpx.TooManyRedirects as e:
        raise FetchError(f"too many redirects (more than {limits.max_redirects})") from e
    except httpx.TimeoutException as e:
        raise FetchError(f"timed out: {type(e).__name__}") from e
    except httpx.HTTPError as e:
        raise FetchError(f"{type(e).__name__}: {e}".rstrip(": ")) from e


async def _get(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    limits: FetchLimits,
    started: float,
) -> Fetched:
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 304:
            raise NotModified()
        if response.status_code >= 400 or response.status_code < 200:
            phrase = response.reason_phrase or ""
            raise FetchError(f"HTTP {response.status_code} {phrase}".strip(), response.status_code)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise FetchError(
                f"body too large: Content-Length {declared} > {limits.max_body_bytes} bytes",
                response.status_code,
            )
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise FetchError(
                    f"body too large: more than {limits.max_body_bytes} bytes",
                    response.status_code,
                )
            chunks.append(chunk)
        # The body is already decoded: its encoding and length headers no longer describe it.
        hdrs = {
            k.lower(): v
            for k, v in response.headers.items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        }
        return Fetched(
            url=url,
            final_url=str(response.url),
            status=response.status_code,
            content=b"".join(chunks),
            headers=hdrs,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            elapsed_ms=int((time.monotonic() - started) * 1000),
        )
