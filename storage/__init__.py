"""Storage: the only package that talks to the database (SQLAlchemy 2)."""

from .repository import Repository, open_repository
from .websub_hub import HubStore

__all__ = ["HubStore", "Repository", "open_repository"]
