"""Every route under /admin needs the admin token: bearer header or login cookie (+ CSRF)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from builders import config_yaml
from live import live_server
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from aggregator import admin_guard
from aggregator.service import Aggregator
from aggregator.web import create_app


@pytest.fixture
def agg(tmp_path: Path) -> Iterator[Aggregator]:
    path = tmp_path / "feeds.yaml"
    path.write_text(config_yaml([], database_url=f"sqlite:///{tmp_path / 'store.db'}"))
    a = Aggregator.from_file(path)
    yield a
    a.close()


def admin_routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, set[str]]]:
    """(path with dummy parameters, methods) of every route registered under /admin."""
    found: list[tuple[str, set[str]]] = []
    for r in routes:
        if isinstance(r, Mount):
            found += admin_routes(list(r.routes), prefix + r.path)
        elif isinstance(r, Route):
            path = re.sub(r"\{([^}:]+)(:[^}]+)?\}", "x", prefix + r.path)
            if path == "/admin" or path.startswith("/admin/"):
                found.append((path, set(r.methods or {"GET"}) - {"HEAD"}))
    return found


def call(app: Starlette, method: str, path: str, **kw: object) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
            return await c.request(method, path, **kw)  # type: ignore[arg-type]

    return asyncio.run(run())


def test_no_admin_route_is_reachable_without_the_token(
    agg: Aggregator, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(agg, poll=False)
    # Every probe from one address: more wrong tokens than the login throttle lets through.
    app.state.login_failures.throttle.limit = 10_000
    routes = admin_routes(list(app.routes))
    assert ("/admin/config", {"GET"}) in routes
    # Also paths no route claims: the guard answers before routing.
    probes = [*routes, ("/admin", {"GET", "POST"}), ("/admin/no/such/route", {"GET", "DELETE"})]
    for path, methods in probes:
        for method in methods:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-wrong-token-123"},
                {"Authorization": f"Basic {admin_token}"},
                {"Authorization": "Bearer "},
                {"Cookie": f"{admin_guard.COOKIE}=123.abc"},
                {"Cookie": f"{admin_guard.COOKIE}={admin_token}"},
            ):
                r = call(app, method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert "admin_token" not in r.text and admin_token not in r.text
                assert r.headers["www-authenticate"].startswith("Bearer")
    # With no token configured at all, /admin is refused outright, even with a "token".
    monkeypatch.delenv("AGGREGATOR_ADMIN_TOKEN")
    for path, methods in probes:
        for method in methods:
            r = call(app, method, path, headers={"Authorization": f"Bearer {admin_token}"})
            assert r.status_code == 403, (method, path)
            assert "AGGREGATOR_ADMIN_TOKEN" in r.json()["error"]


def test_right_token_passes_and_security_headers_are_set(
    agg: Aggregator, admin_headers: dict[str, str]
) -> None:
    app = create_app(agg, poll=False)
    r = call(app, "GET", "/admin/config", headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["path"] == str(agg.config_path)
    assert r.json()["last_error"] is None
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    # Routes outside /admin are untouched.
    assert call(app, "GET", "/healthz").status_code == 200
    assert call(app, "GET", "/administrator").status_code == 404


def test_token_from_a_secrets_file(
    agg: Aggregator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGGREGATOR_ADMIN_TOKEN", raising=False)
    secret = tmp_path / "admin_token"
    secret.write_text("file-secret-0123456789abcdef\n")
    monkeypatch.setenv("AGGREGATOR_ADMIN_TOKEN_FILE", str(secret))
    app = create_app(agg, poll=False)
    ok = {"Authorization": "Bearer file-secret-0123456789abcdef"}
    assert call(app, "GET", "/admin/config", headers=ok).status_code == 200
    assert call(app, "GET", "/admin/config").status_code == 401
    # Rotated secret: takes effect at once, the old one stops working.
    secret.write_text("rotated-secret-0123456789abcdef")
    assert call(app, "GET", "/admin/config", headers=ok).status_code == 401
    # Unreadable file or a too-short token: refused as misconfigured, saying why.
    secret.unlink()
    r = call(app, "GET", "/admin/config", headers=ok)
    assert r.status_code == 403 and "cannot be read" in r.json()["error"]
    secret.write_text("short")
    r = call(app, "GET", "/admin/config", headers={"Authorization": "Bearer short"})
    assert r.status_code == 403 and "too short" in r.json()["error"]


def test_login_cookie_session_and_csrf(agg: Aggregator, admin_token: str) -> None:
    app = create_app(agg, poll=False)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
            assert (await c.get("/login")).status_code == 200
            bad = await c.post("/login", data={"token": "nope"})
            assert bad.status_code == 401 and admin_guard.COOKIE not in c.cookies
            r = await c.post("/login", data={"token": admin_token})
            assert r.status_code == 303 and r.headers["location"] == "/admin"
            set_cookie = r.headers["set-cookie"]
            assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
            assert "secure" not in set_cookie.lower()  # plain http in this test
            session = c.cookies[admin_guard.COOKIE]
            assert admin_token not in session
            assert admin_guard.check_session(admin_token, session)
            assert (await c.get("/admin/config")).status_code == 200
            # A state-changing request on the cookie alone is refused without the CSRF token.
            r = await c.post("/admin/config", data={"x": "1"})
            assert r.status_code == 403 and "CSRF" in r.json()["error"]
            r = await c.post("/admin/config", data={"csrf": "0" * 64})
            assert r.status_code == 403
            csrf = admin_guard.csrf_token(admin_token, session)
            # With it, the request reaches routing (405: /admin/config is GET-only).
            r = await c.post("/admin/config", data={"csrf": csrf})
            assert r.status_code == 405
            r = await c.post("/admin/config", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 405
            await c.post("/logout")
            assert (await c.get("/admin/config")).status_code == 401

    asyncio.run(run())


def test_session_expires_and_is_bound_to_the_token(admin_token: str) -> None:
    issued = 1_700_000_000
    value = admin_guard.session_value(admin_token, now=issued)
    assert admin_guard.check_session(admin_token, value, now=issued + 60)
    assert not admin_guard.check_session(admin_token, value, now=issued + 13 * 3600)
    assert not admin_guard.check_session("another-token-0123456789", value, now=issued + 60)
    assert not admin_guard.check_session(admin_token, value[:-1] + "0", now=issued + 60)


def test_wrong_tokens_are_throttled_per_client_logged_and_listed(
    agg: Aggregator, admin_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 22.4: 300 wrong POST /login in 1.1 s, all plain 401, and no log line."""
    guess = "guess-guess-guess-0001"
    with live_server(agg) as base, httpx.Client(base_url=base, timeout=5) as c:
        started = time.monotonic()
        codes = [c.post("/login", data={"token": f"{guess}{i}"}).status_code for i in range(300)]
        assert time.monotonic() - started < 30
        assert codes[: admin_guard.MAX_FAILURES] == [401] * admin_guard.MAX_FAILURES
        assert set(codes[admin_guard.MAX_FAILURES :]) == {429}
        r = c.post("/login", data={"token": admin_token})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0  # even the right one
        r = c.get("/admin/config", headers={"Authorization": f"Bearer {guess}"})
        assert r.status_code == 429 and "too many wrong admin tokens" in r.json()["error"]
    failures = [r.getMessage() for r in caplog.records if "admin login failed" in r.getMessage()]
    assert len(failures) == admin_guard.MAX_FAILURES
    assert all("client=127.0.0.1 via=login" in m for m in failures), failures
    assert not any(guess in r.getMessage() for r in caplog.records)

    # Bearer guesses count the same way, and the admin page lists the recent failures.
    app = create_app(agg, poll=False)
    with live_server(agg, app=app) as base, httpx.Client(base_url=base, timeout=5) as c:
        for _ in range(3):
            r = c.get("/admin/config", headers={"Authorization": f"Bearer {guess}"})
            assert r.status_code == 401
        page = c.get("/admin", headers={"Authorization": f"Bearer {admin_token}"})
        assert page.status_code == 200
        assert "Failed logins (3 recent)" in page.text
        assert page.text.count("from <code>127.0.0.1</code> (bearer)") == 3
        assert guess not in page.text


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_without_a_session_is_sent_to_login_and_api_clients_get_401(
    agg: Aggregator, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(agg, poll=False)
    r = call(app, "GET", "/admin", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    api = call(app, "GET", "/admin", headers={"Accept": "application/json"})
    assert api.status_code == 401 and "log in at /login" in api.json()["error"]
    # A wrong bearer token is a mistake to report, not a reason to show the login form.
    wrong = {"Accept": BROWSER_ACCEPT, "Authorization": "Bearer wrong-token-wrong-token-1"}
    assert call(app, "GET", "/admin", headers=wrong).status_code == 401
    form = call(app, "POST", "/admin", headers={"Accept": BROWSER_ACCEPT}, data={"do": "x"})
    assert form.status_code == 401
    # No token configured: a browser reads why, in HTML.
    monkeypatch.delenv("AGGREGATOR_ADMIN_TOKEN")
    none = call(app, "GET", "/admin", headers={"Accept": BROWSER_ACCEPT})
    assert none.status_code == 403 and none.headers["content-type"].startswith("text/html")
    assert "AGGREGATOR_ADMIN_TOKEN" in none.text
