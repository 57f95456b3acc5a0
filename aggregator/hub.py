"""A WebSub hub (W3C WebSub) for our own feeds: subscriptions, verification, push.

    POST /websub/hub   hub.mode=subscribe|unsubscribe, hub.topic (one of our feed URLs),
                       hub.callback, [hub.secret], [hub.lease_seconds]
        -> 400 saying what is wrong, or 202 and then, after the response:
           verify intent: GET callback?hub.mode&hub.topic&hub.challenge[&hub.lease_seconds]
           2xx with the challenge echoed as the body -> the subscription is stored / deleted

    HubLoop.tick(), in every web process, twice a second:
        content version changed?  -> render each subscribed topic URL (the web layer's cache);
                                     a new ETag -> HubStore.publish queues one delivery per
                                     live subscriber (compare-and-set: one process wins)
        deliveries due?           -> claim (lease) -> POST the topic's full content to the
                                     callback with Link rel=hub/self and, with a secret,
                                     X-Hub-Signature: sha256=HMAC(secret, body)
                                     2xx: done; 410: subscription ends; else retry with backoff
        once a minute             -> expired leases are deleted

The ingest may happen in another process (aggregator worker): the content version is in
the store, so any web process notices and pushes. Callback URLs go through the same SSRF
guard as feed fetches (``polling.allow_private_addresses``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import httpx

from storage.websub_hub import Delivery, HubStore

from .exceptions import AggregatorError, FetchError
from .feeds import Rendered
from .fetch import FetchLimits, check_address
from .throttle import Throttle

log = logging.getLogger("aggregator.hub")

HUB_PATH = "/websub/hub"
DEFAULT_LEASE = timedelta(days=10)
MIN_LEASE = timedelta(minutes=1)
MAX_LEASE = timedelta(days=30)
MAX_SECRET_BYTES = 200  # W3C WebSub 5.1: the secret MUST be less than 200 bytes
MAX_URL = 2000
TICK = 0.5
CLAIM_LEASE = timedelta(minutes=2)
CLAIM_BATCH = 20
RETRY_BASE = 5.0  # seconds before the first retry; doubled each time
RETRY_MAX = 3600.0
MAX_ATTEMPTS = 10  # about 1.5 hours of retrying, then the delivery is dropped
EXPIRE_EVERY = 60.0
TIMEOUT = 10.0  # the whole of one exchange with a callback: connect, send, read
# What is read of a callback's answer: a verification echoes a 32-character challenge, a
# delivery's body is ignored. More is cut off (a callback that streams without end).
MAX_ANSWER_BYTES = 4096
# Outsiders' budgets (answered 429): live subscriptions per callback host, subscription
# requests per client address (each makes us call a URL they chose), verifications in flight.
MAX_PER_CALLBACK_HOST = 50
CLIENT_REQUESTS = 30
CLIENT_WINDOW = 600.0
MAX_VERIFYING = 20


class HubError(AggregatorError, ValueError):
    """A subscription request we refuse; the message says why (answered 400)."""


class HubRequest(NamedTuple):
    mode: str  # "subscribe" or "unsubscribe"
    topic: str
    callback: str
    secret: str | None
    lease: timedelta


def parse_request(form: Mapping[str, str], check_topic: Callable[[str], str | None]) -> HubRequest:
    """A checked subscription request; ``check_topic`` says why a topic is not ours, or None."""
    mode = form.get("hub.mode", "")
    if mode not in ("subscribe", "unsubscribe"):
        raise HubError(f"hub.mode must be subscribe or unsubscribe, not {mode!r}")
    callback = form.get("hub.callback", "")
    parts = urlsplit(callback)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(callback) > MAX_URL:
        raise HubError(f"hub.callback must be an absolute http(s) URL, not {callback!r}")
    topic = form.get("hub.topic", "")
    if not topic:
        raise HubError("hub.topic is required: the URL of one of our feeds")
    problem = check_topic(topic) if len(topic) <= MAX_URL else "too long"
    if problem:
        raise HubError(f"hub.topic {topic!r} is not a feed of this hub: {problem}")
    secret = form.get("hub.secret") or None
    if secret is not None and len(secret.encode()) >= MAX_SECRET_BYTES:
        raise HubError(f"hub.secret must be shorter than {MAX_SECRET_BYTES} bytes")
    if secret is not None and parts.scheme != "https":
        # WebSub 5.1 says SHOULD only over HTTPS; refusing would shut out local subscribers.
        log.info("secret over plain http callback=%s", callback)
    lease = DEFAULT_LEASE
    raw = form.get("hub.lease_seconds")
    if raw:
        try:
            seconds = int(raw)
        except ValueError:
            raise HubError(f"hub.lease_seconds must be a whole number, not {raw!r}") from None
        if seconds <= 0:
            raise HubError("hub.lease_seconds must be positive")
        lease = min(MAX_LEASE, max(MIN_LEASE, timedelta(seconds=seconds)))
    return HubRequest(mode, topic, callback, secret, lease)


def callback_host(callback: str) -> str:
    """What the per-host budget counts by: the callback URL's host name."""
    return (urlsplit(callback).hostname or "").lower()


def signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(attempts: int, base: float = RETRY_BASE) -> timedelta | None:
    """Wait before the next try after ``attempts`` failures; None when we give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return timedelta(seconds=min(RETRY_MAX, base * 2 ** (attempts - 1)))


@dataclass
class Hub:
    """The hub of one web process. ``render`` gives a topic URL's current feed (or None)."""

    store: HubStore
    render: Callable[[str], Awaitable[Rendered | None]]
    version: Callable[[], Awaitable[int]]
    limits: FetchLimits
    retry_base: float = RETRY_BASE
    tick_seconds: float = TICK
    timeout: float = TIMEOUT

    max_per_host: int = MAX_PER_CALLBACK_HOST

    def __post_init__(self) -> None:
        self.clients = Throttle(CLIENT_REQUESTS, CLIENT_WINDOW)
        self._pending: dict[str, int] = {}  # callback host -> verifications in flight
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen_version: int | None = None
        self._expired_at = float("-inf")
        self._verifying: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT,
                follow_redirects=False,
                headers={"User-Agent": self.limits.user_agent},
            )
        return self._client

    # -- subscriptions --------------------------------------------------------------------

    async def admit(self, req: HubRequest, client: str) -> str | None:
        """Why ``req`` from ``client`` is refused for now (answered 429), or None; admitted
        requests must be followed by ``verify_and_apply``."""
        if sum(self._pending.values()) >= MAX_VERIFYING:
            return "too many verifications in progress; try again in a minute"
        if not self.clients.allow(client):
            return (
                f"more than {CLIENT_REQUESTS} subscription requests from {client} in "
                f"{int(CLIENT_WINDOW // 60)} minutes"
            )
        host = callback_host(req.callback)
        if req.mode == "subscribe":
            now = datetime.now(UTC)
            live = await asyncio.to_thread(self.store.callbacks_on_host, host, now)
            renewal = (req.topic, req.callback) in live
            if not renewal and len(live) + self._pending.get(host, 0) >= self.max_per_host:
                return f"callback host {host} has {self.max_per_host} subscriptions already"
        self._pending[host] = self._pending.get(host, 0) + 1
        return None

    async def verify_and_apply(self, req: HubRequest) -> bool:
        """Verification of intent, then store or delete the subscription (WebSub 5.3)."""
        host = callback_host(req.callback)
        try:
            return await self._verify_and_apply(req)
        finally:
            left = self._pending.get(host, 1) - 1
            if left > 0:
                self._pending[host] = left
            else:
                self._pending.pop(host, None)

    async def _verify_and_apply(self, req: HubRequest) -> bool:
        challenge = secrets.token_urlsafe(24)
        params = {"hub.mode": req.mode, "hub.topic": req.topic, "hub.challenge": challenge}
        if req.mode == "subscribe":
            params["hub.lease_seconds"] = str(int(req.lease.total_seconds()))
        sep = "&" if urlsplit(req.callback).query else "?"
        try:
            await check_address(
                req.callback, self.limits.allow_private, self.limits.allowed_networks
            )
            status, answer = await self._exchange("GET", req.callback + sep + urlencode(params))
        except (FetchError, httpx.HTTPError, TimeoutError) as e:
            log.warning("verify failed callback=%s error=%s", req.callback, e or "timed out")
            return False
        if not (200 <= status < 300) or answer.strip() != challenge.encode():
            log.info(
                "verify refused callback=%s mode=%s status=%d",
                req.callback,
                req.mode,
                status,
            )
            return False
        now = datetime.now(UTC)
        try:
            if req.mode == "subscribe":
                # The content as it is now is what the subscriber starts from: push changes.
                rendered = await self.render(req.topic)
                await asyncio.to_thread(
                    self.store.subscribe, req.topic, req.callback, req.secret, req.lease, now
                )
                if rendered is not None:
                    await asyncio.to_thread(
                        self.store.remember_topic, req.topic, rendered.etag, now
                    )
            else:
                await asyncio.to_thread(self.store.unsubscribe, req.topic, req.callback)
        except AggregatorError as e:
            # The subscriber was told 202 already; it renews or retries when it sees no push.
            log.error("subscription not saved callback=%s error=%s", req.callback, e)
            return False
        log.info("verified callback=%s topic=%s mode=%s", req.callback, req.topic, req.mode)
        return True

    async def _exchange(self, method: str, url: str, **kw: Any) -> tuple[int, bytes]:
        """One request to a callback, bounded: ``timeout`` in all, at most MAX_ANSWER_BYTES
        of its answer read (the rest is never read: the connection is closed)."""
        # Identity: a compressed answer could inflate a thousandfold past the cap.
        kw["headers"] = {**kw.get("headers", {}), "Accept-Encoding": "identity"}
        async with asyncio.timeout(self.timeout):
            async with self.client.stream(method, url, **kw) as r:
                answer = bytearray()
                async for chunk in r.aiter_raw():
                    answer += chunk
                    if len(answer) > MAX_ANSWER_BYTES:
                        break
                return r.status_code, bytes(answer[: MAX_ANSWER_BYTES + 1])

    # -- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="websub-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(datetime.now(UTC))
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store outage or a bug in one tick must not end pushing for good.
                log.exception("hub tick failed")
            await asyncio.sleep(self.tick_seconds)

    async def tick(self, now: datetime) -> None:
        """One round: notice changed topics, send due deliveries, expire leases."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = loop.time()
            gone = await asyncio.to_thread(self.store.expire, now)
            if gone:
                log.info("expired subscriptions=%d", gone)
        version = await self.version()
        if version != self._seen_version:
            await self._queue_changes(now)
            self._seen_version = version
        if await asyncio.to_thread(self.store.has_due, now):
            batch = await asyncio.to_thread(self.store.claim, now, CLAIM_LEASE, CLAIM_BATCH)
            await asyncio.gather(*(self._deliver(d) for d in batch))

    async def _queue_changes(self, now: datetime) -> None:
        topics = await asyncio.to_thread(self.store.topics, now)
        for topic, old_etag in topics.items():
            rendered = await self.render(topic)
            if rendered is None or rendered.etag == old_etag:
                continue
            queued = await asyncio.to_thread(
                self.store.publish,
                topic,
                old_etag,
                rendered.etag,
                rendered.media_type,
                rendered.body,
                now,
                rendered.link,
            )
            if queued:
                log.info("queued topic=%s deliveries=%d", topic, queued)

    async def _deliver(self, d: Delivery) -> None:
        headers = {"Content-Type": d.content_type}
        if d.link:
            headers["Link"] = d.link
        if d.secret:
            headers["X-Hub-Signature"] = signature(d.secret, d.body)
        try:
            await check_address(d.callback, self.limits.allow_private, self.limits.allowed_networks)
            status, _ = await self._exchange("POST", d.callback, content=d.body, headers=headers)
        except (FetchError, httpx.HTTPError, TimeoutError) as e:
            await self._failed(d, f"{type(e).__name__}: {e}")
            return
        if 200 <= status < 300:
            await asyncio.to_thread(self.store.delivered, d.id)
            log.info("delivered callback=%s topic=%s bytes=%d", d.callback, d.topic, len(d.body))
        elif status == 410:
            # WebSub 7: the subscriber says it no longer wants this topic.
            await asyncio.to_thread(self.store.unsubscribe, d.topic, d.callback)
            log.info("subscriber gone callback=%s topic=%s", d.callback, d.topic)
        else:
            await self._failed(d, f"HTTP {status}")

    async def _failed(self, d: Delivery, error: str) -> None:
        delay = retry_delay(d.attempts + 1, self.retry_base)
        retry_at = datetime.now(UTC) + delay if delay is not None else None
        await asyncio.to_thread(self.store.failed, d.id, error, retry_at)
        log.warning(
            "delivery failed callback=%s attempt=%d error=%s%s",
            d.callback,
            d.attempts + 1,
            error,
            "" if retry_at else " (giving up)",
        )


def _form_field(description: str, **schema: object) -> dict[str, object]:
    return {"type": "string", "description": description, **schema}


OPENAPI_PATHS = {
    HUB_PATH: {
        "post": {
            "tags": ["websub"],
            "summary": "Subscribe to or unsubscribe from one of our feeds (W3C WebSub hub)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["hub.mode", "hub.topic", "hub.callback"],
                            "properties": {
                                "hub.mode": _form_field(
                                    "subscribe or unsubscribe", enum=["subscribe", "unsubscribe"]
                                ),
                                "hub.topic": _form_field(
                                    "A feed URL of this server (its rel=self), first page"
                                ),
                                "hub.callback": _form_field("Where to POST new content"),
                                "hub.secret": _form_field(
                                    "Signs each delivery: X-Hub-Signature: sha256=HMAC",
                                    maxLength=MAX_SECRET_BYTES - 1,
                                ),
                                "hub.lease_seconds": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "description": "Requested lease (clamped to 60 s..30 days; "
                                    "default 10 days)",
                                },
                            },
                        }
                    }
                },
            },
            "responses": {
                "202": {
                    "description": "Accepted; intent is verified next with a GET to the "
                    "callback carrying hub.challenge, which must be echoed"
                },
                "400": {
                    "description": "The request is malformed or the topic is not ours",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            },
        }
    }
}
