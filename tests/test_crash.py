"""A poller SIGKILLed at random instants: every poll is saved whole or not at all.

A real ``aggregator poll --once`` process ingests a large feed (1,000 items, new and edited
ones every version) from a real local server into a real SQLite file and a real PostgreSQL
database, and is killed at 11 random instants on each (22 in all). After each kill the store
holds the entries from before that poll or all of them from after it, with their stories,
tags and near-duplicate signatures agreeing; the next run (the restart) finishes the job,
and at the end the store holds exactly the unique items served, none twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from builders import Item, config_yaml, rss
from conftest import FeedServer

from storage import Repository, open_repository

SIZE = 1000  # items in every version of the feed
STEP = 100  # new items per version (the oldest drop off the end)
KILLS = 20  # per engine (issue 8: 20+ random instants), 40 in all
Snapshot = dict[int, tuple[str, str, str, tuple[str, ...]]]
WORDS = (
    "minister council harbour storm league striker budget museum bronze chipmaker election "
    "coalition vaccine trial drought harvest railway strike merger shares tariff summit treaty "
    "border refugees wildfire flood orbit rocket satellite court verdict appeal senate governor "
    "festival novel album premiere stadium transfer coach injury inflation wages pension "
    "housing rent mortgage lender charity hospital nurses doctors school exams reservoir "
    "glacier volcano earthquake pipeline refinery turbine battery factory airline airport "
    "runway ferry bridge tunnel canal orchestra gallery library archive parliament mayor "
    "police prison jury lawyer tribunal embassy diplomat envoy ceasefire talks sanctions"
).split()


def _item(i: int, revision: int) -> Item:
    """Item i of the wire: its own headline and text (realistic, not near-duplicates)."""
    r = random.Random(i)
    title = " ".join(r.choice(WORDS) for _ in range(8)).capitalize()
    text = " ".join(r.choice(WORDS) for _ in range(45))
    if revision:
        text += f" Updated (revision {revision})."
    return Item(
        title=f"{title} ({i})",
        link=f"https://wire.example.net/{2026 - i // 5000}/story-{i}?utm_source=rss",
        guid=f"urn:wire:{i}",
        description=f"&lt;p&gt;{text} &amp;mdash; caf&eacute;&lt;/p&gt;",
        categories=[["World", "Politics"], ["Business &amp; Economy"], ["Sport"]][i % 3],
        published=datetime(2026, 11, 24, 18, 0, tzinfo=UTC) - timedelta(minutes=3 * i),
        author=f"desk{i % 5}@wire.example.net (Desk {i % 5})",
    )


def _version(k: int) -> list[Item]:
    """Version k of the feed: STEP new items on top, every 7th older one edited."""
    return [_item(i, k if i % 7 == 3 else 0) for i in range(k * STEP, k * STEP + SIZE)]


def _snapshot(repo: Repository) -> Snapshot:
    """entry id -> (guid, content hash, story uid, topics), for every stored entry."""
    out: Snapshot = {}
    after = 0
    while batch := repo.entry_batch(after, 1000):
        for e in batch:
            topics = tuple(sorted(t.topic for t in e.tags))
            out[e.id] = (e.entry.guid or "", e.content_hash, e.story_uid, topics)
        after = batch[-1].id
    return out


def _guids(snap: Snapshot) -> set[str]:
    return {v[0] for v in snap.values()}


def _start(config: Path, db_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AGGREGATOR_DATABASE_URL": db_url, "NO_COLOR": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aggregator", "poll", "--once", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _consistent(repo: Repository) -> None:
    check = repo.check()
    assert check.problems == (), check
    assert check.counts["entries"] == len(_snapshot(repo))


def test_a_poller_killed_at_random_instants_saves_each_poll_whole_or_not_at_all(
    db_url: str, feed_server: FeedServer, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    config = tmp_path / "feeds.yaml"
    url = feed_server.url("/wire.rss")
    config.write_text(config_yaml([{"url": url}]))
    log = tmp_path / "poller.log"
    open_repository(db_url).close()  # the schema first: kills then land in polls, not in DDL

    def publish(k: int) -> set[str]:
        items = _version(k)
        feed_server.serve("/wire.rss", rss(items, title="Wire", site="https://wire.example.net"))
        return {it.guid or "" for it in items}

    def run_whole() -> float:
        t0 = time.monotonic()
        assert _start(config, db_url, log).wait(timeout=300) == 0, log.read_text()[-3000:]
        return time.monotonic() - t0

    repo = open_repository(db_url, run_migrations=False)
    try:
        # Versions 0 and 1 uninterrupted: the second, a typical poll of new and edited
        # items, sets the window the kills are spread over.
        served = publish(0)
        run_whole()
        served_now = publish(1)
        served |= served_now
        whole = run_whole()
        _consistent(repo)
        assert _guids(_snapshot(repo)) == served
        version, outcomes, pending = 1, {"before": 0, "after": 0}, False
        for _kill in range(KILLS):
            before = _snapshot(repo)
            if not pending:  # the last version is in: serve the next one
                version += 1
                served_now = publish(version)
                pending = True
            target = served | served_now
            proc = _start(config, db_url, log)
            # Anywhere from start-up to the end of the save (and a little past it).
            time.sleep(rng.uniform(0.25, 1.1) * whole)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            _consistent(repo)
            now = _snapshot(repo)
            if now == before:
                outcomes["before"] += 1
                continue  # the next run is the restart: same version, same poll to do
            # Not before: then wholly after. Every item of the version is in, the edits
            # too, nothing else changed and nothing is there twice.
            outcomes["after"] += 1
            assert _guids(now) == target, (seed, len(_guids(now) - _guids(before)))
            assert before.keys() <= now.keys(), seed
            edited = {v[0] for eid, v in before.items() if now[eid][1] != v[1]}
            assert edited and edited <= served_now, seed  # the edits came with the new items
            assert all(now[eid][2] == v[2] for eid, v in before.items()), seed  # same stories
            served, pending = target, False
        # The restart after the last kill finishes whatever was cut off.
        run_whole()
        _consistent(repo)
        final = _snapshot(repo)
        served = served | served_now
        assert _guids(final) == served
        assert len(final) == len(served)  # none twice
        assert repo.check().counts["stories"] <= len(served)
        print(f"seed={seed} whole_run={whole:.1f}s versions={version} kills={outcomes}")
        assert outcomes["before"] > 0, f"no kill landed inside a poll (seed {seed})"
    finally:
        repo.close()
