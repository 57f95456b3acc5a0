"""Storage: the only package that talks to the database (SQLAlchemy 2)."""

from .repository import Repository, open_repository

__all__ = ["Repository", "open_repository"]
