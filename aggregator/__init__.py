"""RSS/Atom/JSON Feed aggregator: poll, parse, deduplicate, tag, republish."""

__version__ = "0.1.0"
USER_AGENT = f"aggregator/{__version__} (+https://github.com/aggregator/aggregator)"
