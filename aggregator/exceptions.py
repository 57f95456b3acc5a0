"""Exceptions raised by the aggregator.

One root, so callers can catch everything we raise in one place::

    AggregatorError
    ├── FetchError            the feed could not be fetched (network, HTTP status, limits)
    │   └── NotModified       the server answered 304: nothing to do
    ├── ParseError            the body is not a feed we can read
    ├── ConfigError           feeds.yaml is invalid (also a ValueError)
    └── StorageError          the database failed

Foreign exceptions are wrapped with ``raise ... from e`` so the cause is kept.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Root of every exception the aggregator raises on purpose."""


class FetchError(AggregatorError):
    """A feed could not be fetched; ``status`` is the HTTP status if there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotModified(FetchError):
    """The server answered 304 Not Modified to a conditional GET."""

    def __init__(self) -> None:
        super().__init__("not modified", status=304)


class ParseError(AggregatorError):
    """The fetched body is not a feed (or a feed too broken to use)."""


class ConfigError(AggregatorError, ValueError):
    """feeds.yaml is invalid. ``errors`` holds one human-readable line per problem."""

    def __init__(self, errors: list[str], path: str | None = None) -> None:
        self.errors = errors
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + ("\n" + where).join(errors))


class StorageError(AggregatorError):
    """The database failed; the wrapped SQLAlchemy error is the ``__cause__``."""
