"""Events: coverage of one news event by several outlets, one item in a topic feed.

Store-level tests save polls through the real ``Repository.save_poll`` into SQLite and
PostgreSQL; the end-to-end test polls feeds from a real local HTTP server and reads the
topic feed back in RSS, Atom and JSON Feed. The texts are made up for these tests.
Most tests use the lexical signals only (``use_model=False``), so they say what the rules
do whatever model is installed; one runs with the model when it is installed.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest
from builders import Item, config_yaml, rss
from conftest import FeedServer
from test_stories import get

from aggregator import dedup
from aggregator.embed import embedder_unavailable
from aggregator.events import EventMatcher, cjk_terms, title_terms
from aggregator.service import Aggregator
from aggregator.types import ParsedEntry, PollResult, PollSave
from storage.repository import Repository, migrate

LEXICAL = EventMatcher(use_model=False)
T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)


def entry(title: str, text: str, link: str, published: datetime) -> ParsedEntry:
    return ParsedEntry(
        None, link, title, f"<p>{text}</p>", "", text, (), published, published, False, ()
    )


def save(
    repo: Repository,
    feed: str,
    entries: list[ParsedEntry],
    events: EventMatcher | None = LEXICAL,
) -> None:
    url = f"https://{feed}.example/feed"
    intents = dedup.plan(entries, url, repo.entry_hashes(url, []))
    repo.save_poll(
        url,
        PollSave(
            PollResult(url, "ok", 200, None, len(entries), 0, 0, 0),
            max(e.published for e in entries) + timedelta(minutes=5),
            tuple(intents),
            matcher=dedup.DEFAULT_POLICY.matcher,
            events=events,
        ),
    )


def events_of(repo: Repository) -> dict[str, str]:
    """link -> event (lead story uid)."""
    return {link: uid for link, uid in repo.entry_events() if link}


@pytest.fixture
def repo(db_url: str) -> Any:
    migrate(db_url)
    r = Repository(db_url)
    yield r
    r.close()


def test_cjk_headlines_are_cut_into_character_bigrams() -> None:
    assert cjk_terms("日銀が利上げ") == ["日銀", "銀が", "が利", "利上", "上げ"]
    # Latin words stay words beside them; numbers are kept.
    assert set(title_terms("日銀 raises rates to 0.5%")) >= {"日銀", "raise", "rate", "0.5"}


def test_an_identical_headline_joins_whatever_the_summaries_say(repo: Repository) -> None:
    title = "Former tech workers form coalition to fight the platforms they helped build"
    save(
        repo,
        "wire",
        [
            entry(
                title,
                "A group of early employees of two large technology companies said on "
                "Monday they would lobby lawmakers over the effects of social media on children.",
                "https://wire.example/tech-coalition",
                T0,
            )
        ],
    )
    save(
        repo,
        "daily",
        [
            entry(
                title,
                "Silicon Valley veterans are launching an advocacy campaign, with a budget of "
                "several million dollars, aimed at schools and parents.",
                "https://daily.example/2026/11/02/coalition",
                T0 + timedelta(hours=2),
            )
        ],
    )
    # Two stories (the texts are no copies of each other), one event.
    assert repo.count_stories() == 2
    assert len(set(events_of(repo).values())) == 1
    [lead, member] = repo.event_explained(next(iter(events_of(repo).values())))
    assert lead.reason is None and member.reason and member.reason.startswith("same headline")


def test_unrelated_stories_and_one_feeds_recurring_items_stay_apart(repo: Repository) -> None:
    save(
        repo,
        "wire",
        [
            entry(
                "Morning briefing: what you need to know today",
                "Rail strike talks resume; rain is expected across the north.",
                "https://wire.example/briefing-1",
                T0,
            )
        ],
    )
    save(
        repo,
        "wire",
        [
            entry(
                "Morning briefing: what you need to know today",
                "The central bank meets; a storm warning is issued for the coast.",
                "https://wire.example/briefing-2",
                T0 + timedelta(days=1),
            )
        ],
    )
    save(
        repo,
        "daily",
        [
            entry(
                "City council approves new cycling lanes downtown",
                "The council voted 31 to 9 for four kilometres of protected lanes.",
                "https://daily.example/cycling",
                T0 + timedelta(hours=3),
            )
        ],
    )
    # Same feed, same headline: the headline rule joins them (a re-issued item); the
    # unrelated story stays its own event.
    events = events_of(repo)
    assert events["https://daily.example/cycling"] not in {
        events["https://wire.example/briefing-1"],
        events["https://wire.example/briefing-2"],
    }


def test_a_cjk_pair_joins_and_an_unrelated_cjk_story_does_not(repo: Repository) -> None:
    save(
        repo,
        "nikkan",
        [
            entry(
                "日銀、政策金利を0.75%に引き上げ 物価上昇続く",
                "日本銀行は金融政策決定会合で政策金利を0.75%に引き上げることを決めた。",
                "https://nikkan.example/boj-rate",
                T0,
            )
        ],
    )
    save(
        repo,
        "shimbun",
        [
            entry(
                "日銀が政策金利を0.75%に引き上げ",
                "日本銀行は政策金利を0.75%に引き上げると発表した。物価上昇が続いている。",
                "https://shimbun.example/news/boj",
                T0 + timedelta(hours=1),
            ),
            entry(
                "新型ロケットの打ち上げに成功 種子島宇宙センター",
                "宇宙航空研究開発機構は種子島宇宙センターから新型ロケットを打ち上げた。",
                "https://shimbun.example/news/rocket",
                T0 + timedelta(hours=2),
            ),
        ],
    )
    events = events_of(repo)
    assert events["https://nikkan.example/boj-rate"] == events["https://shimbun.example/news/boj"]
    assert (
        events["https://shimbun.example/news/rocket"] != events["https://nikkan.example/boj-rate"]
    )


def test_a_week_long_story_stays_one_event_and_the_cap_ends_it(repo: Repository) -> None:
    title = "Wildfire near Cedar Ridge forces thousands to evacuate as winds pick up"
    outlets = ["wire", "daily", "courier", "herald", "radio", "post", "times", "gazette", "tribune"]
    for n, outlet in enumerate(outlets):
        save(
            repo,
            outlet,
            [
                entry(
                    title,
                    f"Update {n}: firefighters worked through the night.",
                    f"https://{outlet}.example/cedar-ridge-fire",
                    T0 + timedelta(days=2 * n),
                )
            ],
        )
    events = events_of(repo)
    # Every two days, for 14 days: one event, though the last is 14 days after the first
    # (more than the 3-day window: it counts from the latest entry).
    week = {events[f"https://{o}.example/cedar-ridge-fire"] for o in outlets[:8]}
    assert len(week) == 1
    # Day 16 is past the cap (14 days from the event's first story): a new event.
    assert events["https://tribune.example/cedar-ridge-fire"] not in week


def test_split_and_join_are_remembered_across_polls_and_workers(db_url: str) -> None:
    migrate(db_url)
    one, two = Repository(db_url), Repository(db_url)  # two workers on one store
    try:
        same = "Storm Bella closes ports and cancels ferries along the west coast"
        wire_text = (
            "Harbour masters shut every port at noon as waves reached nine metres, and the "
            "coastguard asked fishing crews to stay ashore until the wind drops on Wednesday "
            "evening; schools in low-lying villages closed early and sandbags were handed out."
        )
        daily_text = (
            "Operators cancelled all crossings until Thursday, stranding hundreds of lorries "
            "on the quayside. Drivers queued for hours for news, and hauliers warned that "
            "supermarket deliveries to the islands would run late into the weekend."
        )
        save(one, "wire", [entry(same, wire_text, "https://wire.example/bella", T0)])
        daily_entry = entry(
            same, daily_text, "https://daily.example/bella", T0 + timedelta(hours=1)
        )
        save(one, "daily", [daily_entry])
        save(
            one,
            "courier",
            [
                entry(
                    "Harbour businesses count the cost of a week without visitors",
                    "Shops near the marina say takings halved.",
                    "https://courier.example/harbour",
                    T0 + timedelta(hours=2),
                )
            ],
        )
        events = events_of(one)
        wire, daily = events["https://wire.example/bella"], events["https://daily.example/bella"]
        courier = events["https://courier.example/harbour"]
        assert wire == daily != courier
        assert one.count_stories() == 3
        daily_story = next(
            m.uid
            for m in one.event_explained(wire)
            if (m.entries[0].link or "").endswith("daily.example/bella")
        )
        # The other worker corrects both ways.
        two.split_event(daily_story, datetime.now(UTC))
        two.join_events(wire, courier, datetime.now(UTC))

        # Later polls by the first worker: the same items again, and new coverage.
        save(one, "daily", [daily_entry])
        herald_text = (
            "Gusts of 120 km/h were recorded on the headland as the storm moved inland, "
            "bringing down power lines; about 4,000 homes were without electricity overnight "
            "while engineers waited for the wind to ease before climbing the pylons."
        )
        herald = entry(same, herald_text, "https://herald.example/bella", T0 + timedelta(hours=3))
        save(one, "herald", [herald])
        events = events_of(two)
        assert events["https://wire.example/bella"] == events["https://courier.example/harbour"]
        assert events["https://daily.example/bella"] != events["https://wire.example/bella"]
        # New coverage joins one of the two events, and neither correction is undone.
        assert events["https://herald.example/bella"] in {
            events["https://wire.example/bella"],
            events["https://daily.example/bella"],
        }
        assert len(set(events.values())) == 2
    finally:
        one.close()
        two.close()


def test_two_workers_saving_coverage_of_one_event_at_once_make_one_event(db_url: str) -> None:
    migrate(db_url)
    workers = [Repository(db_url), Repository(db_url)]
    title = "Magnitude 6.8 earthquake strikes off the coast of northern Chile"
    for attempt in range(3):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(
            n: int,
            repo: Repository,
            attempt: int = attempt,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            e = entry(
                title,
                f"Report {n}: buildings shook in the port city.",
                f"https://outlet{n}.example/quake-{attempt}",
                T0 + timedelta(days=30 * attempt, minutes=n),
            )
            barrier.wait()
            try:
                save(repo, f"outlet{n}", [e])
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n, r)) for n, r in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        events = events_of(workers[0])
        assert (
            events[f"https://outlet0.example/quake-{attempt}"]
            == events[f"https://outlet1.example/quake-{attempt}"]
        )
    for r in workers:
        r.close()


@pytest.mark.skipif(embedder_unavailable() is not None, reason="no embedding model installed")
def test_with_the_model_rewritten_coverage_joins_and_another_event_does_not(
    repo: Repository,
) -> None:
    model = EventMatcher()
    save(
        repo,
        "wire",
        [
            entry(
                "Apple pulls messaging app Telegram from its App Store over illegal content",
                "Apple removed the Telegram messenger from the App Store after being alerted "
                "to inappropriate content, the company said.",
                "https://wire.example/telegram-removed",
                T0,
            )
        ],
        model,
    )
    save(
        repo,
        "daily",
        [
            entry(
                "Telegram vanishes from Apple's App Store",
                "The encrypted chat app Telegram was taken off the App Store by Apple, "
                "which cited content that broke its rules.",
                "https://daily.example/telegram-app-store",
                T0 + timedelta(hours=5),
            ),
            entry(
                "Storm floods streets in Lisbon after a month of rain in a day",
                "Heavy rain flooded roads and metro stations in the Portuguese capital.",
                "https://daily.example/lisbon-floods",
                T0 + timedelta(hours=6),
            ),
        ],
        model,
    )
    events = events_of(repo)
    assert (
        events["https://wire.example/telegram-removed"]
        == events["https://daily.example/telegram-app-store"]
    )
    assert (
        events["https://daily.example/lisbon-floods"]
        != events["https://wire.example/telegram-removed"]
    )


@pytest.mark.skipif(embedder_unavailable() is not None, reason="no embedding model installed")
def test_with_the_model_two_markets_stories_of_one_day_stay_apart() -> None:
    """A currency story that mentions oil and an oil-cartel story the same day share a topic
    and a phrase, not an event (they scored 0.924 against a threshold of 0.92)."""
    model = EventMatcher()
    peso, opec = model.signatures(
        [
            entry(
                "Colombian peso hits two-year high as oil prices climb",
                "The peso strengthened past 3,800 per dollar for the first time since 2024.",
                "https://dispatch.example/peso",
                T0 + timedelta(hours=5),
            ),
            entry(
                "Oil prices jump as Opec+ delays output increase",
                "Brent crude rose 3% to $78 a barrel after the group said it would hold "
                "production steady until April.",
                "https://bbc.example/opec",
                T0,
            ),
        ]
    )
    why = model.compare(peso, opec)
    assert not why.joins, why


def test_a_topic_feed_publishes_one_item_per_event_or_per_story(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    title = "Parliament passes election reform bill after all-night session"
    texts = [
        "Lawmakers voted in the early hours to redraw constituency boundaries and lower the "
        "voting age, after the opposition's attempt to delay the final reading failed; the "
        "upper house is expected to debate the changes next month.",
        "Weary deputies emerged at dawn, some still in evening dress from a reception, and "
        "campaigners outside cheered; critics said the new boundaries favour the governing "
        "coalition and promised a challenge in the constitutional court.",
    ]
    urls = []
    for n, outlet in enumerate(["wire", "daily"]):
        item = Item(
            title=title,
            link=f"https://{outlet}.example/reform-{n}",
            guid=f"{outlet}-reform",
            description=texts[n],
            published=T0 + timedelta(hours=n),
        )
        urls.append(
            feed_server.serve(
                f"/{outlet}.rss",
                rss([item], title=f"{outlet.title()} News", site=f"https://{outlet}.example"),
                content_type="application/rss+xml",
            )
        )
    path = tmp_path / "feeds.yaml"
    path.write_text(
        config_yaml([{"url": u, "tags": ["politics"]} for u in urls], database_url=db_url)
    )
    agg = Aggregator.from_file(path)
    try:
        import asyncio

        async def run() -> None:
            try:
                for u in urls:
                    assert (await agg.poll(u)).status == "ok"
            finally:
                await agg.stop()

        asyncio.run(run())
        items = get(agg, "/topics/politics.json").json()["items"]
        assert len(items) == 1
        sources = items[0]["_aggregator"]["sources"]
        assert [s["url"] for s in sources] == [
            "https://wire.example/reform-0",
            "https://daily.example/reform-1",
        ]
        for fmt in ("rss", "atom"):
            body = get(agg, f"/topics/politics.{fmt}").content
            parsed = feedparser.parse(body)
            assert not parsed.bozo, parsed.bozo_exception
            assert len(parsed.entries) == 1
            text = parsed.entries[0].get("summary", "") + str(parsed.entries[0].get("content", ""))
            assert "daily.example/reform-1" in text and "Daily News" in text
        copies = get(agg, "/topics/politics.json?stories=copies").json()["items"]
        assert len(copies) == 2
        assert get(agg, "/topics/politics.json?stories=both").status_code == 400
    finally:
        agg.close()
