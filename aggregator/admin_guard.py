"""The guard in front of every path under ``/admin``: a token, or no entry at all.

``AdminGuard`` is ASGI middleware wrapped around the whole app, so it covers every route whose
path is ``/admin`` or starts with ``/admin/``, including routes other modules register later;
nothing under that prefix can be reached without passing it. Two credentials are accepted:

* ``Authorization: Bearer <token>`` (scripts, the JSON API);
* the session cookie set by the login form at ``/login`` (the HTML admin page). The cookie
  holds ``<issued>.<HMAC(token, issued)>``, never the token itself, and expires after
  ``SESSION_MAX_AGE``. A request authenticated by cookie that changes something (any method
  but GET/HEAD/OPTIONS) must also carry the CSRF token, in an ``X-CSRF-Token`` header or a
  ``csrf`` form field, derived from the session (double-submit, checked here so that every
  form under /admin is covered without each handler remembering to).

The token comes from ``$AGGREGATOR_ADMIN_TOKEN`` or from the file named by
``$AGGREGATOR_ADMIN_TOKEN_FILE`` (a mounted secret), and is read per request so a rotated
secret takes effect at once. With neither set, /admin answers 403 and says how to set one;
a missing or wrong credential is 401. Comparisons use ``hmac.compare_digest``.

Wrong tokens (bearer or the login form) are logged with the client address (never the
token) and kept for the admin page (``LoginFailures``); after ``MAX_FAILURES`` in
``FAILURE_WINDOW`` seconds from one address, its tries are answered 429 until the window
has room again.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import logs
from .body_limit import read_capped, replayer
from .throttle import Throttle

log = logging.getLogger("aggregator.admin")

TOKEN_ENV = "AGGREGATOR_ADMIN_TOKEN"
TOKEN_FILE_ENV = "AGGREGATOR_ADMIN_TOKEN_FILE"
PREFIX = "/admin"
COOKIE = "aggregator_admin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE = 12 * 3600
MIN_TOKEN_LENGTH = 16
_MAX_FORM_BYTES = 1 << 20
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Sent with every /admin response: the admin pages need no script and no third-party origin.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# Wrong admin tokens (bearer or login form) per client address before it must wait (429).
MAX_FAILURES = 10
FAILURE_WINDOW = 300.0
RECENT_FAILURES = 50  # kept for the admin page


@dataclass
class LoginFailures:
    """Wrong admin tokens of one app: throttled per client address, logged, the recent ones
    kept for the admin page. The token tried is never kept or logged."""

    throttle: Throttle = field(default_factory=lambda: Throttle(MAX_FAILURES, FAILURE_WINDOW))
    recent: deque[tuple[float, str, str]] = field(
        default_factory=lambda: deque(maxlen=RECENT_FAILURES)
    )

    def wait(self, client: str) -> int:
        """Seconds ``client`` must wait before trying a token again (0: it may now)."""
        return self.throttle.retry_after(client)

    def failed(self, client: str, via: str) -> None:
        self.throttle.record(client)
        self.recent.append((time.time(), client, via))
        log.warning("admin login failed client=%s via=%s", client, via)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def too_many(seconds: int) -> tuple[str, dict[str, str]]:
    return (
        f"too many wrong admin tokens from this address; try again in {seconds} s",
        {"Retry-After": str(seconds)},
    )


@dataclass(frozen=True)
class TokenSource:
    """The configured admin token, or why there is none (``problem``)."""

    token: str | None
    problem: str | None = None


def admin_token(environ: Mapping[str, str] | None = None) -> TokenSource:
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    where = f"${TOKEN_ENV}"
    if not token and env.get(TOKEN_FILE_ENV):
        path = Path(env[TOKEN_FILE_ENV])
        where = f"{path} (${TOKEN_FILE_ENV})"
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            return TokenSource(None, f"the admin token file {path} cannot be read: {e}")
    if not token:
        return TokenSource(
            None,
            f"the admin interface is disabled: set ${TOKEN_ENV} to a secret of at least "
            f"{MIN_TOKEN_LENGTH} characters, or ${TOKEN_FILE_ENV} to a file holding one",
        )
    if len(token) < MIN_TOKEN_LENGTH:
        return TokenSource(
            None,
            f"the admin token in {where} is too short: use at least {MIN_TOKEN_LENGTH} "
            "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)",
        )
    logs.add_secret(token)  # a token from a file is not in the environment the filter reads
    return TokenSource(token)


def _sign(token: str, purpose: str, value: str) -> str:
    return hmac.new(token.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def check_token(token: str, candidate: str) -> bool:
    return hmac.compare_digest(token.encode(), candidate.encode())


def session_value(token: str, now: float | None = None) -> str:
    """The cookie value for a fresh session: when it was issued, signed with the token."""
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{_sign(token, 'session', issued)}"


def check_session(token: str, value: str, now: float | None = None) -> bool:
    issued, _, sig = value.partition(".")
    if not issued.isdigit():
        return False
    age = (time.time() if now is None else now) - int(issued)
    expected = _sign(token, "session", issued)
    return hmac.compare_digest(expected, sig) and -60 <= age <= SESSION_MAX_AGE


def csrf_token(token: str, session: str) -> str:
    """The CSRF token forms must echo back: bound to the session, useless without it."""
    return _sign(token, "csrf", session)


def is_admin_path(scope: Scope) -> bool:
    # Check both the raw path and the path below root_path: routing uses the latter.
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    candidates = {path, path[len(root) :] if root and path.startswith(root) else path}
    return any(p == PREFIX or p.startswith(PREFIX + "/") for p in candidates)


def _cookie(headers: Mapping[str, str]) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is just "no session"
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


class AdminGuard:
    """ASGI middleware: refuse every /admin request that does not carry the admin token."""

    def __init__(self, app: ASGIApp, failures: LoginFailures | None = None) -> None:
        self.app = app
        self.failures = failures or LoginFailures()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not is_admin_path(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            if not self._bearer_ok(scope):
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        source = admin_token()
        if source.token is None:
            assert source.problem is not None
            log.warning("admin refused path=%s reason=%r", scope["path"], source.problem)
            await _deny(scope, send, 403, source.problem, headers)
            return
        token = source.token
        auth = headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() == "bearer" and cred:
            client = client_address(scope)
            wait = self.failures.wait(client)
            if wait:
                message, extra = too_many(wait)
                await _deny(scope, send, 429, message, headers, extra)
                return
            if not check_token(token, cred.strip()):
                self.failures.failed(client, "bearer")
                await _deny(scope, send, 401, "wrong admin token", headers)
                return
            await self._forward(scope, receive, send, "bearer", None)
            return
        session = _cookie(headers)
        if session is None or not check_session(token, session):
            msg = "admin token required: send 'Authorization: Bearer <token>' or log in at /login"
            await _deny(scope, send, 401, msg, headers)
            return
        if scope["method"] not in _SAFE_METHODS:
            expected = csrf_token(token, session)
            given = headers.get(CSRF_HEADER)
            replay: list[Message] | None = None
            if given is None and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                replay, over = await read_capped(receive, _MAX_FORM_BYTES)
                if over:
                    await _deny(scope, send, 413, "form too large", headers)
                    return
                body = b"".join(m.get("body", b"") for m in replay)
                fields = parse_qs(body.decode("latin-1"))
                values = fields.get(CSRF_FIELD)
                given = values[0] if values else None
            if given is None or not hmac.compare_digest(expected, given):
                await _deny(
                    scope, send, 403, "missing or wrong CSRF token; reload the page", headers
                )
                return
            if replay is not None:
                receive = replayer(replay, receive)
        await self._forward(scope, receive, send, "cookie", session)

    def _bearer_ok(self, scope: Scope) -> bool:
        token = admin_token().token
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, _, cred = headers.get("authorization", "").partition(" ")
        return bool(token and scheme.lower() == "bearer" and check_token(token, cred.strip()))

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, how: str, session: str | None
    ) -> None:
        state = scope.setdefault("state", {})
        state["admin_auth"] = how
        state["admin_session"] = session

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", []))
                present = {k.lower() for k, _ in hdrs}
                for k, v in SECURITY_HEADERS.items():
                    if k.lower().encode() not in present:
                        hdrs.append((k.lower().encode(), v.encode()))
                message = {**message, "headers": hdrs}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _deny(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    headers: Mapping[str, str],
    more: Mapping[str, str] | None = None,
) -> None:
    wants_html = "text/html" in headers.get("accept", "")
    extra: list[tuple[bytes, bytes]] = [
        (k.lower().encode(), v.encode()) for k, v in {**SECURITY_HEADERS, **(more or {})}.items()
    ]
    if status == 401:
        extra.append((b"www-authenticate", b'Bearer realm="aggregator admin"'))
    if status == 401 and wants_html and scope["method"] in ("GET", "HEAD"):
        # A browser without a session goes to the login form; API clients keep the 401.
        if "authorization" not in headers:
            extra.append((b"location", b"/login"))
            status, message = 303, "log in at /login"
    if wants_html:
        link = '<p><a href="/login">Log in</a></p>' if status == 401 else ""
        body = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>Admin: {status}</title></head><body><h1>Admin</h1>"
            f"<p>{html.escape(message)}</p>{link}</body></html>"
        ).encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": message}).encode()
        ctype = b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
