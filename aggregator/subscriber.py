"""WebSub subscriber: feeds that advertise a hub are pushed to us instead of only polled.

The flow (W3C WebSub, sections 5-8)::

    poll parses a feed with <link rel="hub"> and rel="self"     (pipeline -> after_poll)
      no subscription, another hub/topic, or the lease ends soon:
        POST hub: hub.mode=subscribe, hub.topic=self, hub.callback=base_url/websub/callback/{id},
                  hub.secret=<new random secret>, hub.lease_seconds   -> row "pending"
    hub GET callback?hub.mode=subscribe&hub.topic&hub.challenge&hub.lease_seconds
        pending/active row with that topic -> echo the challenge, row "active" until now+lease
        anything else                      -> 404, nothing echoed
    hub POST callback (the new content), X-Hub-Signature: sha256=HMAC(secret, raw body)
        valid   -> ingested at once through the pipeline (parse, dedup, tag, store)
        invalid -> ignored (2xx all the same, as the spec asks, so the hub learns nothing)
    while a subscription is active the feed is still polled, at websub.fallback_interval

``{id}`` is a random token per subscription, so a callback URL cannot be guessed, and the
secret is new with every request. Without ``settings.base_url`` the hub could not reach us,
so nothing is subscribed (logged once). The routes are in websub_subscriber.py, the SQL in
storage/push_subscriptions.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import httpx

from storage.push_subscriptions import PushStore

from .exceptions import FetchError
from .fetch import FetchLimits, check_address
from .types import PushSubscription

log = logging.getLogger("aggregator.websub")

CALLBACK_PATH = "/websub/callback/"
SIGNATURES = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
# A request the hub never verified is asked again after this long.
PENDING_RETRY = timedelta(hours=1)
# A hub that denied us is asked again after this long (it may have changed its mind).
DENIED_RETRY = timedelta(days=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PushSettings:
    """``websub:`` in feeds.yaml, plus ``settings.base_url``."""

    base_url: str | None
    enabled: bool = True
    lease: timedelta = timedelta(days=10)
    fallback_interval: timedelta = timedelta(hours=6)

    @property
    def renew_before(self) -> timedelta:
        # Two fallback polls before the end, so a missed one still renews in time.
        return min(2 * self.fallback_interval, self.lease / 2)


def sign(secret: str, body: bytes, method: str = "sha256") -> str:
    """The X-Hub-Signature value a hub sends for ``body``."""
    return f"{method}={hmac.new(secret.encode(), body, SIGNATURES[method]).hexdigest()}"


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` (X-Hub-Signature) is the HMAC of ``body`` with ``secret``."""
    if not header or "=" not in header:
        return False
    method, _, given = header.strip().partition("=")
    algorithm = SIGNATURES.get(method.strip().lower())
    if algorithm is None:
        return False
    expected = hmac.new(secret.encode(), body, algorithm).hexdigest()
    return hmac.compare_digest(expected, given.strip().lower())


class Subscriber:
    def __init__(
        self,
        store: PushStore,
        client: httpx.AsyncClient,
        limits: FetchLimits,
        settings: PushSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.client = client
        self.limits = limits
        self.settings = settings
        self.clock = clock
        self._said_why = False

    # ------------------------------------------------------------------ polling side

    async def fallback(self, feed_url: str) -> timedelta | None:
        """The slower polling interval while ``feed_url`` is pushed to us, else None."""
        if not self.settings.enabled or not self.settings.base_url:
            return None  # nothing can be pushed to us; and no query on every poll
        until = await asyncio.to_thread(self.store.active_until, feed_url)
        if until is None or until <= self.clock():
            return None
        return self.settings.fallback_interval

    async def after_poll(
        self, feed_url: str, parsed: bool, hub: str | None, topic: str | None
    ) -> None:
        """Subscribe, renew or leave a feed's hub after a poll (``parsed``: a body was read).

        Never raises: push is an optimisation, polling goes on whatever happens here.
        """
        if not self.settings.enabled:
            return
        if not self.settings.base_url:
            if hub and topic:
                self._no_base_url(feed_url, hub)
            return  # and no query on every poll
        try:
            await self._after_poll(feed_url, parsed, hub, topic)
        except Exception as e:  # a hub that misbehaves must not cost the poll
            log.warning("websub failed feed=%s error=%s", feed_url, e)

    async def _after_poll(
        self, feed_url: str, parsed: bool, hub: str | None, topic: str | None
    ) -> None:
        sub = await asyncio.to_thread(self.store.for_feed, feed_url)
        if parsed and not (hub and topic):
            if sub is not None and sub.state in ("active", "pending"):
                await self.unsubscribe(feed_url)  # the feed no longer offers a hub
            return
        if not parsed:
            if sub is None or sub.state == "unsubscribing":
                return
            hub, topic = sub.hub, sub.topic  # a 304: the feed is as it was
        assert hub is not None and topic is not None
        if self._due(sub, hub, topic):
            if sub is not None and sub.state == "active" and (sub.hub, sub.topic) != (hub, topic):
                await self.unsubscribe(feed_url)
            await self.subscribe(feed_url, hub, topic)

    def _due(self, sub: PushSubscription | None, hub: str, topic: str) -> bool:
        now = self.clock()
        if sub is None or (sub.hub, sub.topic) != (hub, topic):
            return True
        if sub.state == "active":
            return sub.expires_at is None or sub.expires_at - now < self.settings.renew_before
        if sub.state == "denied":
            return now - sub.requested_at > DENIED_RETRY
        return now - sub.requested_at > PENDING_RETRY  # pending, or an unsubscribe left over

    async def subscribe(self, feed_url: str, hub: str, topic: str) -> PushSubscription | None:
        """Ask ``hub`` to push ``topic`` to us; the row is pending until the hub verifies."""
        if not self.settings.base_url:
            self._no_base_url(feed_url, hub)
            return None
        old = await asyncio.to_thread(self.store.for_feed, feed_url)
        sub = PushSubscription(
            feed_url=feed_url,
            # Kept across renewals, so the hub's subscription (keyed by callback) is renewed,
            # not doubled; new when the hub or topic changes.
            callback_id=(
                old.callback_id
                if old is not None and (old.hub, old.topic) == (hub, topic)
                else secrets.token_urlsafe(18)
            ),
            hub=hub,
            topic=topic,
            secret=secrets.token_hex(32),
            # A renewal keeps the verified lease until the hub verifies the new request.
            state="active" if old is not None and old.state == "active" else "pending",
            lease_seconds=old.lease_seconds if old is not None else None,
            requested_at=self.clock(),
            expires_at=old.expires_at if old is not None else None,
        )
        await asyncio.to_thread(self.store.requested, sub)
        error = await self._ask(hub, "subscribe", topic, sub.callback_id, sub.secret)
        if error:
            log.warning("websub subscribe refused feed=%s hub=%s error=%s", feed_url, hub, error)
            if old is not None and old.state == "active" and old.callback_id == sub.callback_id:
                # A failed renewal: the hub still pushes with the secret it has.
                sub = replace(old, requested_at=sub.requested_at, last_error=error)
            else:
                sub = replace(sub, last_error=error)
            await asyncio.to_thread(self.store.requested, sub)
            return sub
        log.info("websub subscribe requested feed=%s hub=%s topic=%s", feed_url, hub, topic)
        return sub

    def _no_base_url(self, feed_url: str, hub: str) -> None:
        if not self._said_why:
            log.info(
                "websub: not subscribing to hubs: settings.base_url is not set, so a hub "
                "could not reach our callback (feed=%s hub=%s)",
                feed_url,
                hub,
            )
            self._said_why = True

    async def unsubscribe(self, feed_url: str) -> None:
        sub = await asyncio.to_thread(self.store.for_feed, feed_url)
        if sub is None:
            return
        await asyncio.to_thread(self.store.set_state, sub.callback_id, "unsubscribing")
        error = await self._ask(sub.hub, "unsubscribe", sub.topic, sub.callback_id, None)
        if error:
            # The hub will let the lease run out; we no longer answer for this callback.
            log.warning(
                "websub unsubscribe failed feed=%s hub=%s error=%s", feed_url, sub.hub, error
            )
            await asyncio.to_thread(self.store.delete, sub.callback_id)
        else:
            log.info("websub unsubscribe requested feed=%s hub=%s", feed_url, sub.hub)

    async def _ask(
        self, hub: str, mode: str, topic: str, callback_id: str, secret: str | None
    ) -> str | None:
        """POST a (un)subscription request to ``hub``; an error text, or None if accepted."""
        form = {
            "hub.mode": mode,
            "hub.topic": topic,
            "hub.callback": f"{self.settings.base_url}{CALLBACK_PATH}{callback_id}",
        }
        if secret is not None:
            form["hub.secret"] = secret
            form["hub.lease_seconds"] = str(int(self.settings.lease.total_seconds()))
        try:
            # The hub URL comes from a feed: the same SSRF guard as any feed URL.
            await check_address(hub, self.limits.allow_private, self.limits.allowed_networks)
            async with asyncio.timeout(self.limits.timeout):
                response = await self.client.post(hub, data=form)
        except FetchError as e:
            return str(e)
        except (TimeoutError, httpx.HTTPError) as e:
            return f"{type(e).__name__}: {e}".rstrip(": ")
        if response.status_code not in (202, 204, 200):
            return f"hub answered HTTP {response.status_code}: {response.text[:200]}"
        return None

    # ------------------------------------------------------------------ callback side

    def verify(self, callback_id: str, params: Mapping[str, str]) -> str | None:
        """The challenge to echo for a hub's verification of intent, or None to refuse it."""
        sub = self.store.by_callback(callback_id)
        mode = params.get("hub.mode", "")
        if sub is None or params.get("hub.topic") != sub.topic:
            return None
        if mode == "denied":
            reason = params.get("hub.reason", "")
            log.warning("websub denied feed=%s hub=%s reason=%r", sub.feed_url, sub.hub, reason)
            self.store.set_state(callback_id, "denied", error=f"denied by the hub: {reason}")
            return ""
        challenge = params.get("hub.challenge")
        if not challenge:
            return None
        if mode == "subscribe" and sub.state in ("pending", "active"):
            lease = _lease(params.get("hub.lease_seconds"), self.settings.lease)
            self.store.set_state(
                callback_id,
                "active",
                lease_seconds=lease,
                expires_at=self.clock() + timedelta(seconds=lease),
            )
            log.info("websub subscribed feed=%s hub=%s lease=%ds", sub.feed_url, sub.hub, lease)
            return challenge
        if mode == "unsubscribe" and sub.state == "unsubscribing":
            self.store.delete(callback_id)
            log.info("websub unsubscribed feed=%s hub=%s", sub.feed_url, sub.hub)
            return challenge
        return None

    def accept_push(
        self, callback_id: str, body: bytes, signature: str | None
    ) -> PushSubscription | None:
        """The subscription a pushed body belongs to, if its signature is right; else None."""
        sub = self.store.by_callback(callback_id)
        if sub is None or sub.state not in ("active", "pending"):
            return None
        if not signature_ok(sub.secret, body, signature):
            log.warning("websub push ignored: bad or missing X-Hub-Signature feed=%s", sub.feed_url)
            return None
        self.store.pushed(callback_id, self.clock())
        return sub

    def known(self, callback_id: str) -> bool:
        return self.store.by_callback(callback_id) is not None


def _lease(value: str | None, default: timedelta) -> int:
    if value and value.strip().isdigit():
        return max(1, int(value.strip()[:9]))
    return int(default.total_seconds())
