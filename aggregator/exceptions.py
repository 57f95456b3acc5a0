"""Exceptions raised by the aggregator.

One root, so callers can catch everything we raise in one place::

    AggregatorError
    ├── FetchError            the feed could not be fetched (network, HTTP status, limits)
    │   ├── NotModified       the server answered 304: nothing to do
    │   └── Gone              the server answered 410: the feed is disabled
    ├── ParseError            the body is not a feed we can read
    ├── ConfigError           feeds.yaml is invalid (also a ValueError)
    │   └── ConfigEditError   an edit names a feed/topic that is missing or already there
    ├── StorageError          the database failed
    └── StoryError            a story operation was refused (unknown story, bad split)

Foreign exceptions are wrapped with ``raise ... from e`` so the cause is kept.
"""

from __future__ import annotations

from datetime import timedelta


class AggregatorError(Exception):
    """Root of every exception the aggregator raises on purpose."""


class FetchError(AggregatorError):
    """A feed could not be fetched; ``status`` is the HTTP status if there was one.

    ``retry_after`` is the delay a 429 or 503 asked for (its ``Retry-After``), if any.
    """

    def __init__(
        self, message: str, status: int | None = None, *, retry_after: timedelta | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class NotModified(FetchError):
    """The server answered 304 Not Modified to a conditional GET.

    ``moved_to`` is the new URL when a permanent redirect led to the 304; ``headers``
    (lower-cased names) carry the caching hints the scheduler reads.
    """

    def __init__(
        self, *, moved_to: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__("not modified", status=304)
        self.moved_to = moved_to
        self.headers = headers or {}


class Gone(FetchError):
    """The server answered 410 Gone: the feed is removed for good, so it is disabled."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=410)


class ParseError(AggregatorError):
    """The fetched body is not a feed (or a feed too broken to use)."""


class ConfigError(AggregatorError, ValueError):
    """feeds.yaml is invalid. ``errors`` holds one human-readable line per problem."""

    def __init__(self, errors: list[str], path: str | None = None) -> None:
        self.errors = errors
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + ("\n" + where).join(errors))


class ConfigEditError(ConfigError):
    """An edit of feeds.yaml cannot be applied; ``status`` is the matching HTTP status."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__([message])
        self.status = status


class StorageError(AggregatorError):
    """The database failed; the wrapped SQLAlchemy error is the ``__cause__``."""


class StoryError(AggregatorError, ValueError):
    """A story operation was refused: unknown story or entries, or nothing left to split."""
