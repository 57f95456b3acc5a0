"""The app on a real 127.0.0.1 socket (uvicorn in a thread), for readers, browsers and hubs;
and one poll of every feed, as a test drives it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from test_cli import free_port

from aggregator.service import Aggregator
from aggregator.types import PollResult
from aggregator.web import create_app


@contextmanager
def live_server(
    agg: Aggregator, *, poll: bool = False, app: Starlette | None = None
) -> Iterator[str]:
    """Serve ``app`` (default ``create_app(agg)``) until the block ends; yields the base URL."""
    port = free_port()
    app = app or create_app(agg, poll=poll)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def poll_all(agg: Aggregator) -> dict[str, PollResult]:
    async def run() -> list[PollResult]:
        try:
            return await agg.poll_all()
        finally:
            await agg.stop()

    return {r.feed_url: r for r in asyncio.run(run())}
