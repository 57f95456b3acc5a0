"""Request body limits: a body over its endpoint's cap is a 413, before any handler reads it.

Starlette's ``request.form()`` and ``request.json()`` read a body whole, however long, so
the endpoints that take one are capped here, in front of them:

    /admin, /admin/...     1 MiB   (forms and the JSON API)
    /login                 16 KiB  (a token field)
    /websub/hub            64 KiB  (hub.* fields: two URLs, a secret, a lease)

(``/websub/callback/{id}`` reads its stream itself, capped at ``settings.max_body_bytes``.)
A declared ``Content-Length`` over the cap is refused without reading anything; a body
without one (chunked) is read up to the cap and refused as soon as it passes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ADMIN_MAX = 1 << 20
LOGIN_MAX = 16 << 10
HUB_MAX = 64 << 10
LIMITS: tuple[tuple[str, int], ...] = (
    ("/admin", ADMIN_MAX),
    ("/login", LOGIN_MAX),
    ("/websub/hub", HUB_MAX),
)


def cap_for(path: str, limits: Sequence[tuple[str, int]] = LIMITS) -> int | None:
    """The body cap of ``path`` (a listed path or anything below it), or None."""
    for prefix, cap in limits:
        if path == prefix or path.startswith(prefix + "/"):
            return cap
    return None


class BodyLimit:
    """ASGI middleware: 413 for a request body over its path's cap."""

    def __init__(self, app: ASGIApp, limits: Sequence[tuple[str, int]] = LIMITS) -> None:
        self.app = app
        self.limits = tuple(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = cap_for(scope["path"], self.limits) if scope["type"] == "http" else None
        if cap is None or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _too_large(send, cap, 400, "malformed Content-Length")
                    return
                if declared > cap:
                    await _too_large(send, cap)
                    return
        messages, over = await read_capped(receive, cap)
        if over:
            await _too_large(send, cap)
            return
        await self.app(scope, replayer(messages, receive), send)


async def read_capped(receive: Receive, cap: int) -> tuple[list[Message], bool]:
    """Receive a request's messages until its body ends or passes ``cap`` bytes.

    Returns the messages received, to hand on with ``replayer``, and whether the body went
    over ``cap``; reading stops there, so an endless body is never buffered whole.
    """
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, False
        size += len(message.get("body", b""))
        if size > cap:
            return messages, True
        if not message.get("more_body", False):
            return messages, False


def replayer(messages: Sequence[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then goes on with ``receive``."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _too_large(send: Send, cap: int, status: int = 413, text: str | None = None) -> None:
    body = json.dumps({"error": text or f"request body over {cap} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
