"""The app on a real 127.0.0.1 socket (uvicorn in a thread), for readers, browsers and hubs;
one poll of every feed, as a test drives it; and ``aggregator`` commands as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from test_cli import free_port

from aggregator.hot_protocol import HotHttpProtocol
from aggregator.service import Aggregator
from aggregator.types import PollResult
from aggregator.web import create_app


@contextmanager
def live_server(
    agg: Aggregator, *, poll: bool = False, app: Starlette | None = None
) -> Iterator[str]:
    """Serve ``app`` (default ``create_app(agg)``) until the block ends; yields the base URL."""
    with uvicorn_server(app or create_app(agg, poll=poll)) as server:
        yield f"http://127.0.0.1:{server.config.port}"


@contextmanager
def uvicorn_server(
    app: Any, protocol: Any = HotHttpProtocol, **options: Any
) -> Iterator[uvicorn.Server]:
    """uvicorn on a free 127.0.0.1 port in a thread, by default as `aggregator serve` runs
    it (repeat feed GETs answered by the protocol itself); ``options`` go to its Config."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        log_level="error",
        access_log=False,
        http=protocol,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        yield server
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


def spawn(args: list[str], db_url: str, log: Path) -> subprocess.Popen[bytes]:
    """``python -m aggregator *args`` on the store ``db_url``, its output appended to ``log``."""
    env = {**os.environ, "AGGREGATOR_DATABASE_URL": db_url, "NO_COLOR": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aggregator", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process still running (a graceful stop), SIGKILL after 20 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def running(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """``stop(procs)`` when the block ends, however it ends."""
    try:
        yield
    finally:
        stop(procs)
