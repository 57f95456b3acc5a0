"""Our WebSub subscriptions to other sites' hubs (push in): one row per feed.

    push_subscriptions   feed_url unique, callback_id unique (the secret path of our
                         callback URL), hub, topic, secret, state, lease, expiry

States: ``pending`` (asked, the hub has not verified yet), ``active`` (verified, until
``expires_at``), ``unsubscribing`` (we asked to stop), ``denied`` (the hub refused).
Not to be confused with storage/websub_hub.py, the subscriptions of others to *our* hub.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.types import PushSubscription

from .models import Base, UTCDateTime

if TYPE_CHECKING:
    from .repository import Repository


class PushSubscriptionRow(Base):
    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed_url: Mapped[str] = mapped_column(String(2048), unique=True)
    callback_id: Mapped[str] = mapped_column(String(64), unique=True)
    hub: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    lease_seconds: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_push_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


def _value(r: PushSubscriptionRow) -> PushSubscription:
    return PushSubscription(
        feed_url=r.feed_url,
        callback_id=r.callback_id,
        hub=r.hub,
        topic=r.topic,
        secret=r.secret,
        state=r.state,
        lease_seconds=r.lease_seconds,
        requested_at=r.requested_at,
        expires_at=r.expires_at,
        last_push_at=r.last_push_at,
        last_error=r.last_error,
    )


class PushStore:
    """The queries of the WebSub subscriber, on the aggregator's store."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    def for_feed(self, feed_url: str) -> PushSubscription | None:
        with self._repo._reading() as s:
            row = s.scalar(
                select(PushSubscriptionRow).where(PushSubscriptionRow.feed_url == feed_url)
            )
            return _value(row) if row else None

    def by_callback(self, callback_id: str) -> PushSubscription | None:
        with self._repo._reading() as s:
            row = s.scalar(
                select(PushSubscriptionRow).where(PushSubscriptionRow.callback_id == callback_id)
            )
            return _value(row) if row else None

    def active_until(self, feed_url: str) -> datetime | None:
        """When the feed's verified subscription ends, or None when it has none."""
        with self._repo._reading() as s:
            return s.scalar(
                select(PushSubscriptionRow.expires_at).where(
                    PushSubscriptionRow.feed_url == feed_url,
                    PushSubscriptionRow.state == "active",
                )
            )

    def requested(self, sub: PushSubscription) -> None:
        """Record a (re)subscription request: one row per feed, replaced in place."""
        with self._repo._writing() as s:
            row = s.scalar(
                select(PushSubscriptionRow).where(PushSubscriptionRow.feed_url == sub.feed_url)
            )
            if row is None:
                row = PushSubscriptionRow(feed_url=sub.feed_url)
                s.add(row)
            row.callback_id = sub.callback_id
            row.hub = sub.hub
            row.topic = sub.topic
            row.secret = sub.secret
            row.state = sub.state
            row.lease_seconds = sub.lease_seconds
            row.requested_at = sub.requested_at
            row.expires_at = sub.expires_at
            row.last_error = sub.last_error

    def set_state(
        self,
        callback_id: str,
        state: str,
        *,
        lease_seconds: int | None = None,
        expires_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        with self._repo._writing() as s:
            row = s.scalar(
                select(PushSubscriptionRow).where(PushSubscriptionRow.callback_id == callback_id)
            )
            if row is None:
                return
            row.state = state
            if lease_seconds is not None:
                row.lease_seconds = lease_seconds
            if expires_at is not None:
                row.expires_at = expires_at
            row.last_error = error

    def pushed(self, callback_id: str, now: datetime) -> None:
        with self._repo._writing() as s:
            row = s.scalar(
                select(PushSubscriptionRow).where(PushSubscriptionRow.callback_id == callback_id)
            )
            if row is not None:
                row.last_push_at = now

    def delete(self, callback_id: str) -> None:
        with self._repo._writing() as s:
            s.execute(
                delete(PushSubscriptionRow).where(PushSubscriptionRow.callback_id == callback_id)
            )
