"""The WebSub hub's state: subscriptions, what each topic URL last looked like, deliveries.

    websub_subscriptions   (topic, callback) unique; secret, lease, expires_at
    websub_topics          topic URL -> ETag of the content last pushed (or first seen)
    websub_deliveries      one pending POST per subscriber: body, attempts, next try, lease

Several web processes may run the hub loop against one store. Two things keep a change
from being pushed twice: a topic's new content is queued by a compare-and-set on
``websub_topics.etag`` (only the process whose UPDATE matched the old ETag inserts the
deliveries, in the same transaction), and a delivery is claimed with a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import (
    ColumnElement,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime

if TYPE_CHECKING:
    from .repository import Repository


class SubscriptionRow(Base):
    __tablename__ = "websub_subscriptions"
    __table_args__ = (UniqueConstraint("topic", "callback", name="uq_websub_topic_callback"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(2000), index=True)
    callback: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_seconds: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HubTopicRow(Base):
    __tablename__ = "websub_topics"

    topic: Mapped[str] = mapped_column(String(2000), primary_key=True)
    etag: Mapped[str] = mapped_column(String(100))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeliveryRow(Base):
    __tablename__ = "websub_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("websub_subscriptions.id", ondelete="CASCADE"), index=True
    )
    content_type: Mapped[str] = mapped_column(String(200))
    link: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[bytes] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Subscription:
    topic: str
    callback: str
    secret: str | None
    lease_seconds: int
    expires_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: int
    topic: str
    callback: str
    secret: str | None
    content_type: str
    link: str
    body: bytes
    attempts: int


class HubStore:
    """The hub's queries, on the repository's engines and transactions."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    def subscribe(
        self, topic: str, callback: str, secret: str | None, lease: timedelta, now: datetime
    ) -> None:
        """Add or renew (new secret, new lease) the subscription of ``callback`` to ``topic``."""
        with self._repo._writing() as s:
            row = s.scalar(
                select(SubscriptionRow).where(
                    SubscriptionRow.topic == topic, SubscriptionRow.callback == callback
                )
            )
            if row is None:
                row = SubscriptionRow(topic=topic, callback=callback, created_at=now)
                s.add(row)
            row.secret = secret
            row.lease_seconds = int(lease.total_seconds())
            row.expires_at = now + lease

    def unsubscribe(self, topic: str, callback: str) -> bool:
        with self._repo._writing() as s:
            gone = s.execute(
                delete(SubscriptionRow).where(
                    SubscriptionRow.topic == topic, SubscriptionRow.callback == callback
                )
            )
            return bool(getattr(gone, "rowcount", 0))

    def remember_topic(self, topic: str, etag: str, now: datetime) -> None:
        """Record ``topic``'s current content if the hub has not seen it yet."""
        with self._repo._writing() as s:
            if s.get(HubTopicRow, topic) is None:
                s.add(HubTopicRow(topic=topic, etag=etag, changed_at=now))

    def subscriptions(self, now: datetime, topic: str | None = None) -> list[Subscription]:
        """Live (unexpired) subscriptions, of one topic or all."""
        q = select(SubscriptionRow).where(SubscriptionRow.expires_at > now)
        if topic is not None:
            q = q.where(SubscriptionRow.topic == topic)
        with self._repo._reading() as s:
            return [
                Subscription(r.topic, r.callback, r.secret, r.lease_seconds, r.expires_at)
                for r in s.scalars(q.order_by(SubscriptionRow.id))
            ]

    def callbacks_on_host(self, host: str, now: datetime) -> set[tuple[str, str]]:
        """(topic, callback) of the live subscriptions whose callback is on ``host``."""
        q = select(SubscriptionRow.topic, SubscriptionRow.callback).where(
            SubscriptionRow.expires_at > now,
            SubscriptionRow.callback.like(f"%{host}%"),
        )
        with self._repo._reading() as s:
            return {
                (t, c)
                for t, c in s.execute(q).all()
                if (urlsplit(c).hostname or "").lower() == host
            }

    def topics(self, now: datetime) -> dict[str, str | None]:
        """Topic URLs with live subscriptions -> the ETag last pushed (None: never seen)."""
        with self._repo._reading() as s:
            q = (
                select(SubscriptionRow.topic, HubTopicRow.etag)
                .outerjoin(HubTopicRow, HubTopicRow.topic == SubscriptionRow.topic)
                .where(SubscriptionRow.expires_at > now)
                .distinct()
            )
            return {t: e for t, e in s.execute(q).all()}

    def publish(
        self,
        topic: str,
        old_etag: str | None,
        new_etag: str,
        content_type: str,
        body: bytes,
        now: datetime,
        link: str = "",
    ) -> int:
        """Queue ``body`` for every live subscriber of ``topic`` if it still had ``old_etag``.

        Returns the number of deliveries queued; 0 when another process got there first.
        """
        with self._repo._writing() as s:
            if old_etag is None:
                if s.get(HubTopicRow, topic) is not None:
                    return 0
                s.add(HubTopicRow(topic=topic, etag=new_etag, changed_at=now))
                s.flush()
            else:
                moved = s.execute(
                    update(HubTopicRow)
                    .where(HubTopicRow.topic == topic, HubTopicRow.etag == old_etag)
                    .values(etag=new_etag, changed_at=now)
                    .execution_options(synchronize_session=False)
                )
                if not getattr(moved, "rowcount", 0):
                    return 0
            subs = s.scalars(
                select(SubscriptionRow.id).where(
                    SubscriptionRow.topic == topic, SubscriptionRow.expires_at > now
                )
            ).all()
            # One waiting delivery per subscriber: a newer content replaces the body of one
            # not yet sent (keeping its attempts and backoff), so a subscriber that is down
            # holds one copy of the feed, not one per change. One being sent is left alone.
            waiting = set(
                s.scalars(
                    select(DeliveryRow.subscription_id).where(
                        DeliveryRow.subscription_id.in_(subs),
                        or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now),
                    )
                ).all()
            )
            if waiting:
                s.execute(
                    update(DeliveryRow)
                    .where(
                        DeliveryRow.subscription_id.in_(waiting),
                        or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now),
                    )
                    .values(content_type=content_type, link=link, body=body, lease_until=None)
                    .execution_options(synchronize_session=False)
                )
            s.add_all(
                DeliveryRow(
                    subscription_id=sid,
                    content_type=content_type,
                    link=link,
                    body=body,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                for sid in subs
                if sid not in waiting
            )
            return len(subs)

    def has_due(self, now: datetime) -> bool:
        """Whether a delivery waits: a cheap read, so idle ticks take no write lock."""
        with self._repo._reading() as s:
            q = select(DeliveryRow.id).where(*_due(now)).limit(1)
            return s.scalar(q) is not None

    def claim(self, now: datetime, lease: timedelta, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries to the caller."""
        with self._repo._writing() as s:
            ids = s.scalars(
                select(DeliveryRow.id)
                .where(*_due(now))
                .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not ids:
                return []
            s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(ids))
                .values(lease_until=now + lease)
                .execution_options(synchronize_session=False)
            )
            rows = s.execute(
                select(DeliveryRow, SubscriptionRow)
                .join(SubscriptionRow, SubscriptionRow.id == DeliveryRow.subscription_id)
                .where(DeliveryRow.id.in_(ids))
                .order_by(DeliveryRow.id)
            ).all()
            return [
                Delivery(
                    d.id,
                    sub.topic,
                    sub.callback,
                    sub.secret,
                    d.content_type,
                    d.link,
                    d.body,
                    d.attempts,
                )
                for d, sub in rows
            ]

    def delivered(self, delivery_id: int) -> None:
        with self._repo._writing() as s:
            s.execute(delete(DeliveryRow).where(DeliveryRow.id == delivery_id))

    def failed(self, delivery_id: int, error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt; ``retry_at`` None drops the delivery (gave up)."""
        with self._repo._writing() as s:
            if retry_at is None:
                s.execute(delete(DeliveryRow).where(DeliveryRow.id == delivery_id))
                return
            s.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id == delivery_id)
                .values(
                    attempts=DeliveryRow.attempts + 1,
                    next_attempt_at=retry_at,
                    lease_until=None,
                    last_error=error[:2000],
                )
                .execution_options(synchronize_session=False)
            )

    def expire(self, now: datetime) -> int:
        """Delete expired subscriptions (and their pending deliveries)."""
        with self._repo._writing() as s:
            expired = select(SubscriptionRow.id).where(SubscriptionRow.expires_at <= now)
            # Explicit, not only ON DELETE CASCADE: SQLite enforces it only with foreign_keys on.
            s.execute(delete(DeliveryRow).where(DeliveryRow.subscription_id.in_(expired)))
            gone = s.execute(delete(SubscriptionRow).where(SubscriptionRow.expires_at <= now))
            return int(getattr(gone, "rowcount", 0) or 0)

    def pending(self) -> list[tuple[str, int, str | None]]:
        """(callback, attempts, last error) of every queued delivery: for status and tests."""
        with self._repo._reading() as s:
            q = (
                select(SubscriptionRow.callback, DeliveryRow.attempts, DeliveryRow.last_error)
                .join(SubscriptionRow, SubscriptionRow.id == DeliveryRow.subscription_id)
                .order_by(DeliveryRow.id)
            )
            return [(c, a, e) for c, a, e in s.execute(q).all()]


def _due(now: datetime) -> list[ColumnElement[bool]]:
    return [
        DeliveryRow.next_attempt_at <= now,
        or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now),
    ]
