"""What merged, and splitting a story: the admin API and ``aggregator stories``.

Real feeds on a local server, polled by the real pipeline into SQLite and PostgreSQL; the
admin API through the real app with its /admin guard; the CLI as a real subprocess.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FeedServer
from test_cli import run
from test_stories import eval_items, make, poll, serve_outlet, to_item

from aggregator.service import Aggregator
from aggregator.web import create_app

CLUSTERS = ("peru-quake", "chile-quake")


def shifted(d: dict[str, Any], to: datetime) -> dict[str, Any]:
    """The labelled item, published as much before ``to`` as it was before 2026-11-18."""
    then = datetime.fromisoformat(d["published"].replace("Z", "+00:00"))
    at = to - (datetime(2026, 11, 18, tzinfo=UTC) - then)
    return dict(d, published=at.isoformat())


def serve_all(server: FeedServer, now: datetime | None = None) -> list[dict[str, Any]]:
    outlets = eval_items(CLUSTERS)
    order = ["wire"] + sorted(o for o in outlets if o != "wire")
    return [
        {
            "url": serve_outlet(
                server, o, [to_item(shifted(d, now) if now else d) for d in outlets[o]]
            ),
            "tags": ["world"],
        }
        for o in order
    ]


class App:
    """One app for the whole test, as one server process would be (feeds cached)."""

    def __init__(self, agg: Aggregator) -> None:
        self.app = create_app(agg, poll=False)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://agg.test") as c:
                return await c.request(method, path, **kw)

        return asyncio.run(go())


@pytest.fixture
def polled(tmp_path: Path, db_url: str, feed_server: FeedServer) -> Iterator[Aggregator]:
    agg = make(tmp_path, db_url, serve_all(feed_server))
    poll(agg)
    yield agg
    agg.close()


def test_admin_api_lists_and_splits_stories(
    polled: Aggregator, admin_headers: dict[str, str]
) -> None:
    app = App(polled)
    assert app.call("GET", "/admin/stories?since=3650d").status_code == 401
    no_token = app.call("POST", "/admin/stories/x/split", json={"entries": [1]})
    assert no_token.status_code == 401

    r = app.call("GET", "/admin/stories?since=3650d", headers=admin_headers)
    assert r.status_code == 200, r.text
    peru, chile = r.json()["stories"]
    assert len(peru["entries"]) == 5 and len(chile["entries"]) == 3
    assert "earthquake" in peru["entries"][0]["title"].lower()
    # Only stories first published in the window: these are from 2026-11-17.
    recent = app.call("GET", "/admin/stories?since=1h", headers=admin_headers).json()["stories"]
    if datetime.now(UTC) - datetime(2026, 11, 18, tzinfo=UTC) > timedelta(hours=1):
        assert recent == []
    for bad in ("since=soon", "limit=0", "limit=x"):
        assert app.call("GET", f"/admin/stories?{bad}", headers=admin_headers).status_code == 400

    # The feed item's id names the story as well as its uid does.
    one = app.call("GET", f"/admin/stories/{peru['id']}", headers=admin_headers)
    assert one.status_code == 200 and one.json() == peru
    assert app.call("GET", "/admin/stories/nope", headers=admin_headers).status_code == 404

    before = app.call("GET", "/topics/world.json").json()["items"]
    assert len(before) == 2
    split = f"/admin/stories/{peru['story']}/split"
    moving = [e["entry"] for e in peru["entries"][-2:]]
    for body, status in [
        ({"entries": []}, 400),
        ({"entries": ["3"]}, 400),
        ({"entries": [True]}, 400),
        ([1, 2], 400),
        ({"entries": [chile["entries"][0]["entry"]]}, 422),
        ({"entries": [e["entry"] for e in peru["entries"]]}, 422),
    ]:
        r = app.call("POST", split, json=body, headers=admin_headers)
        assert r.status_code == status, (body, r.text)
        assert "error" in r.json()
    assert app.call("POST", split, content=b"{", headers=admin_headers).status_code == 400
    r = app.call("POST", "/admin/stories/nope/split", json={"entries": [1]}, headers=admin_headers)
    assert r.status_code == 404

    r = app.call("POST", split, json={"entries": moving}, headers=admin_headers)
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["split_from"] == peru["story"]
    assert sorted(e["entry"] for e in new["entries"]) == sorted(moving)
    # The published feed follows at once (the same app: its cache saw the change).
    after = app.call("GET", "/topics/world.json").json()["items"]
    assert len(after) == 3
    assert {i["id"] for i in before} <= {i["id"] for i in after}
    assert new["id"] in {i["id"] for i in after}
    left = app.call("GET", f"/admin/stories/{peru['story']}", headers=admin_headers).json()
    assert len(left["entries"]) == 3
    # The same split again is refused, and changes nothing.
    r = app.call("POST", split, json={"entries": moving}, headers=admin_headers)
    assert r.status_code == 422

    # Polled again: nothing merges back.
    poll(polled)
    assert len(app.call("GET", "/topics/world.json").json()["items"]) == 3


def test_cli_lists_the_largest_stories_and_splits_one(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    db = f"sqlite:///{tmp_path / 'agg.db'}"
    agg = make(tmp_path, db, serve_all(feed_server, now=datetime.now(UTC)))
    try:
        poll(agg)
        [peru, chile] = agg.repo.story_clusters(datetime.now(UTC) - timedelta(days=1))
    finally:
        agg.close()

    r = run("stories", "--since", "1d", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert peru.uid in r.stdout and chile.uid in r.stdout
    assert r.stdout.index(peru.uid) < r.stdout.index(chile.uid)  # the largest first
    for e in peru.entries:
        assert e.feed_title in r.stdout and str(e.entry_id) in r.stdout
    assert "2 stories" in r.stdout
    bad = run("stories", "--since", "soon", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid duration" in bad.stderr

    moving = str(peru.entries[-1].entry_id)
    r = run("stories", "split", "urn:aggregator:story:" + peru.uid, moving, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 entries now in story" in r.stdout
    again = run("stories", "split", peru.uid, moving, cwd=tmp_path)
    assert again.returncode == 1 and "not in story" in again.stderr
    unknown = run("stories", "split", "nope", "1", cwd=tmp_path)
    assert unknown.returncode == 1 and "no story" in unknown.stderr

    r = run("stories", "--since", "1d", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 stories" in r.stdout and f"split from {peru.uid}" in r.stdout


def test_cli_joins_two_events_explains_and_splits_one_off(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    db = f"sqlite:///{tmp_path / 'agg.db'}"
    agg = make(tmp_path, db, serve_all(feed_server, now=datetime.now(UTC)))
    try:
        poll(agg)
        [peru, chile] = agg.repo.story_clusters(datetime.now(UTC) - timedelta(days=1))
        assert len({uid for _, uid in agg.repo.entry_events()}) == 2  # two quakes, two events
    finally:
        agg.close()

    r = run("stories", "join", peru.uid, "urn:aggregator:story:" + chile.uid, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = run("stories", "join", peru.uid, chile.uid, cwd=tmp_path)
    assert again.returncode == 1 and "one event already" in again.stderr
    r = run("stories", "explain", chile.uid, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert peru.uid in r.stdout and chile.uid in r.stdout
    assert "joined by an admin" in r.stdout and "lead" in r.stdout
    lead = peru.uid if peru.published <= chile.published else chile.uid
    other = chile.uid if lead == peru.uid else peru.uid

    r = run("stories", "split", other, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"left event {lead}" in r.stdout
    alone = run("stories", "split", other, cwd=tmp_path)
    assert alone.returncode == 1 and "an event of its own" in alone.stderr
    # Polled again: the correction stays.
    agg = make(tmp_path, db, serve_all(feed_server, now=datetime.now(UTC)))
    try:
        poll(agg)
        assert len({uid for _, uid in agg.repo.entry_events()}) == 2
    finally:
        agg.close()


def test_the_admin_story_routes_are_described_in_openapi(tmp_path: Path) -> None:
    from starlette.routing import Route

    agg = make(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", [])
    try:
        app = App(agg)
        paths = app.call("GET", "/openapi.json").json()["paths"]
        routed = {
            (r.path, m.lower())
            for r in app.app.routes
            if isinstance(r, Route) and r.path.startswith("/admin/stories")
            for m in (r.methods or ()) - {"HEAD"}
        }
        assert len(routed) == 3
        described = {
            (p, m) for p, item in paths.items() if p.startswith("/admin/stories") for m in item
        }
        assert described == routed
    finally:
        agg.close()
