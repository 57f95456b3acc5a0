"""Shared fixtures: a real HTTP server on 127.0.0.1 serving feed files, temp stores."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser import chromium_driver
from pg import PostgresCluster
from selenium import webdriver

FEEDS = Path(__file__).parent / "data" / "feeds"


@dataclass
class Route:
    body: bytes
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    conditional: bool = True  # honour If-None-Match / If-Modified-Since
    last_modified: str = field(default_factory=lambda: formatdate(usegmt=True))
    delay: float = 0.0  # seconds before answering: a slow publisher

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(self.body).hexdigest() + '"'


class FeedServer:
    """A real threaded HTTP server; tests change routes while it runs."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.times: list[tuple[str, float]] = []  # (path, wall-clock time.time()) per request
        self.active: dict[str, int] = {}  # requests in progress per path
        self.max_active: dict[str, int] = {}  # most requests ever in progress at once per path
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with server._lock:
                    server.requests.append((self.path, dict(self.headers.items())))
                    server.times.append((self.path, time.time()))
                    route = server.routes.get(self.path)
                    n = server.active[self.path] = server.active.get(self.path, 0) + 1
                    server.max_active[self.path] = max(server.max_active.get(self.path, 0), n)
                try:
                    if route is not None and route.delay:
                        time.sleep(route.delay)
                    self._answer(route)
                finally:
                    with server._lock:
                        server.active[self.path] -= 1

            def _answer(self, route: Route | None) -> None:
                if route is None:
                    self._send(404, b"not found", "text/plain")
                    return
                if route.status != 200:
                    self._send(route.status, b"error", "text/plain")
                    return
                if route.conditional and (
                    self.headers.get("If-None-Match") == route.etag
                    or (
                        self.headers.get("If-None-Match") is None
                        and self.headers.get("If-Modified-Since") == route.last_modified
                    )
                ):
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                extra = {}
                if route.conditional:
                    extra = {"ETag": route.etag, "Last-Modified": route.last_modified}
                self._send(200, route.body, route.content_type, extra)

            def _send(
                self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes | str, **kw: object) -> str:
        if isinstance(body, str):
            body = body.encode()
        self.routes[path] = Route(body=body, **kw)  # type: ignore[arg-type]
        return self.url(path)

    def serve_file(self, path: str, name: str, **kw: object) -> str:
        return self.serve(path, (FEEDS / name).read_bytes(), **kw)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if p == path)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    srv = FeedServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


_db_counter = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a real SQLite file, then a real PostgreSQL database."""
    return store_url(request, tmp_path)


def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of the kind ``request.param`` names ("sqlite" or "postgresql").

    For fixtures of a wider scope than ``db_url``'s, which share one store between tests.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"test_{next(_db_counter)}")


ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture
def admin_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """Configure the admin token for this test ($AGGREGATOR_ADMIN_TOKEN) and return it."""
    monkeypatch.delenv("AGGREGATOR_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.setenv("AGGREGATOR_ADMIN_TOKEN", ADMIN_TOKEN)
    return ADMIN_TOKEN


@pytest.fixture
def admin_headers(admin_token: str) -> dict[str, str]:
    """Headers that pass the /admin guard: ``client.get("/admin/x", headers=admin_headers)``."""
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium (Selenium WebDriver) with an empty profile; fails if not installed."""
    with chromium_driver() as driver:
        yield driver
