"""Storage: the only package that talks to the database (SQLAlchemy 2)."""

from .repository import Repository, migrate, open_repository
from .websub_hub import HubStore

__all__ = ["HubStore", "Repository", "migrate", "open_repository"]
