"""What the pages chart, read from a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from builders import Item, rss
from conftest import FeedServer
from test_pipeline import make_agg, poll_all


def test_topic_activity_and_recent_polls(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    items = [
        Item(
            title=f"Summit in Lisbon ends with a joint statement, part {i}",
            link=f"https://world.example.org/lisbon-{i}",
            guid=f"lisbon-{i}",
            categories=["World"],
            published=now - timedelta(days=i // 2, minutes=5),
        )
        for i in range(6)
    ]
    world = feed_server.serve("/world.rss", rss(items, title="World Desk"))
    down = feed_server.serve("/down.rss", b"", status=500)
    agg = make_agg(tmp_path, db_url, [{"url": world, "tags": ["world"]}, {"url": down}])
    try:
        for _ in range(4):
            poll_all(agg)
        since = now - timedelta(days=29)
        act = agg.repo.topic_activity(since)
        days = act.per_day["world"]
        assert sum(days.values()) == 6 and set(days.values()) == {2}
        assert (now - timedelta(minutes=5)).date() in days
        assert now - act.last_update["world"] < timedelta(minutes=10)
        assert "sport" not in act.per_day and "sport" not in act.last_update
        # Stories older than the window are not counted.
        assert (
            sum(agg.repo.topic_activity(now - timedelta(hours=12)).per_day["world"].values()) <= 2
        )

        polls = agg.repo.recent_polls(3, now - timedelta(days=1))
        assert [p.status for p in polls[down]] == ["error"] * 3
        assert [p.http_status for p in polls[down]] == [500] * 3
        assert len(polls[world]) == 3 and polls[world][-1].status in ("ok", "not_modified")
        assert polls[world] == sorted(polls[world], key=lambda p: p.started_at)
        assert agg.repo.recent_polls(3, datetime.now(UTC) + timedelta(minutes=1)) == {}
    finally:
        agg.close()
