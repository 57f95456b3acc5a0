"""Logging setup: one format for every process, and no secret in any line.

Lines are ``time LEVEL logger message``, the message as ``key=value`` pairs
(``poll feed=... status=ok http=200 new=3 updated=0 unchanged=12 merged=1 ms=41 tag_ms=5``).

:class:`RedactSecrets` is a filter on the root handlers (and uvicorn logs through them), so
it sees every line whoever logs it. It masks, in the message, its arguments and any
traceback:

* the admin token (``$AGGREGATOR_ADMIN_TOKEN`` or its file) and any value given to
  :func:`add_secret`, wherever it appears;
* the userinfo of URLs (``https://user:password@host/`` -> ``https://***@host/``), which is
  also how a PostgreSQL URL carries its password;
* values of ``name=value`` pairs (query parameters, form fields, our own log pairs) whose
  name ends in token, key, secret, password, pwd, auth, signature, sig, session or
  credential(s): ``?api_key=...``, ``hub.secret=...``, ``access_token=...``;
* ``Bearer``/``Basic`` credentials.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

MASK = "***"
_USERINFO = re.compile(r"(?<=://)[^/@\s?#'\"<>]+@")
_PAIR = re.compile(
    r"(?i)(?<![\w.-])([\w.-]*(?:token|key|secret|password|passwd|pwd|auth|signature|sig"
    r"|session|credentials?)(?:%3d|=))(?!\*\*\*)[^&\s#'\",;)]+"
)
_AUTH = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]+")
_MIN_SECRET = 6  # shorter known values would mask ordinary words

_lock = threading.Lock()
_known: set[str] = set()


def add_secret(value: str) -> None:
    """Mask ``value`` in every later log line (e.g. a token read from a file)."""
    value = value.strip()
    if len(value) >= _MIN_SECRET:
        with _lock:
            _known.add(value)


def _secrets() -> list[str]:
    from .admin_guard import TOKEN_ENV  # late: admin_guard logs through this module

    token = os.environ.get(TOKEN_ENV, "").strip()
    with _lock:
        known = set(_known)
    if len(token) >= _MIN_SECRET:
        known.add(token)
    # Longest first, so a secret containing another is masked whole.
    return sorted(known, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every secret it holds masked."""
    for value in _secrets() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, MASK)
    text = _USERINFO.sub(MASK + "@", text)
    text = _PAIR.sub(lambda m: m.group(1) + MASK, text)
    return _AUTH.sub(lambda m: m.group(1) + m.group(2) + MASK, text)


def _redact_arg(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if value is None or isinstance(value, int | float | bool):
        return value  # keeps %d and friends working
    text = str(value)  # an exception or URL object: what %s would print
    masked = redact(text, secrets)
    return value if masked == text else masked


class RedactSecrets(logging.Filter):
    """Mask secrets in a record before any handler formats it (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _secrets()
        if isinstance(record.msg, str):
            record.msg = redact(record.msg, secrets)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a, secrets) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v, secrets) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the handler's to report
            return True
        masked = redact(message, secrets)
        if masked != message:
            # A secret split across the format and its arguments: keep the masked whole.
            record.msg, record.args = masked, ()
        return True


HTTP_LOG_ENV = "AGGREGATOR_LOG_HTTP"


def setup(verbose: bool = False) -> None:
    """Configure the root logger for a command: format, level, the redacting filter.

    Verbose means one INFO line per poll, ours: APScheduler's job lines, Alembic's and httpx's
    ``HTTP Request: GET ...`` lines stay at WARNING unless ``$AGGREGATOR_LOG_HTTP`` is set
    (then httpx's request lines show too, beside ours).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    install()
    if verbose:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        http = logging.INFO if os.environ.get(HTTP_LOG_ENV) else logging.WARNING
        logging.getLogger("httpx").setLevel(http)
        logging.getLogger("httpcore").setLevel(max(http, logging.INFO))


def install(logger: logging.Logger | None = None) -> None:
    """Put the redacting filter on every handler of ``logger`` (default: root), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
