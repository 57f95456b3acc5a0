"""Pairwise precision, recall and F1 of story merging on the labelled sets.

    python bench/dedup_eval.py [--db-url URL] [--threshold 0.35] [--show-errors]
        [--data ../shared/data] [--half fit|report|all] [--no-model]

The set (tests/data/dedup_eval.jsonl) is hand-written for this project: news items of
made-up outlets (wire.example, ledger.example, ...) describing real-looking events, each
labelled with the story it belongs to: one story rewritten by several outlets (different
URLs, headlines, reworded paragraphs, some title-only items) and hard negatives (two
earthquakes, two Colombia-US rows a day apart, two elections, daily briefings and market
wraps of one feed, template local news of two cities, two NASA Moon stories a day apart,
floods in Spain and in Italy a day apart).

Every item goes through the real path: ``dedup.plan`` then ``Repository.save_poll``, one
poll per item in publication order, into a fresh store (SQLite by default). Two items
are predicted together when they end up in the same story. Also prints the same figures
for canonical-URL matching alone, as the bar.

Then the real set ``stories/giveme5w1h.jsonl`` under ``--data`` (default ../shared/data;
skipped when missing): one RSS feed per outlet served from 127.0.0.1 (title, link,
description, date; then again with the article text as ``content:encoded``), polled end to
end by the aggregator's own poller, day by day in publication order. Scored twice: copies
(stories) and events (``?stories=events``), each with pairwise precision and recall, the
recall over same-event pairs of different outlets at most 3 days apart, and every wrong
merge. ``--half`` picks the events (by a hash of their id): ``fit`` is the half the
thresholds were fitted on, ``report`` the other half, ``all`` both.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import NamedTuple
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from aggregator import dedup  # noqa: E402
from aggregator.config import parse_duration  # noqa: E402
from aggregator.events import EventMatcher  # noqa: E402
from aggregator.fetch import FetchLimits, make_client  # noqa: E402
from aggregator.neardup import Matcher  # noqa: E402
from aggregator.pipeline import PollContext, poll_feed  # noqa: E402
from aggregator.tag import Tagger  # noqa: E402
from aggregator.types import ParsedEntry, PollResult, PollSave  # noqa: E402
from storage import open_repository  # noqa: E402

DATA = ROOT / "tests" / "data" / "dedup_eval.jsonl"
SHARED = ROOT.parent / "shared" / "data"


class Item(NamedTuple):
    cluster: str
    feed_url: str
    entry: ParsedEntry


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    false_merges: list[tuple[str, str]]  # (cluster, cluster) of wrongly merged pairs
    missed: list[tuple[str, str, str]]  # (cluster, title, title) of pairs not merged
    seconds_per_item: float


def load(path: Path = DATA) -> list[Item]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        published = datetime.fromisoformat(d["published"].replace("Z", "+00:00"))
        text = d["text"]
        entry = ParsedEntry(
            guid=None,
            link=d["link"],
            title=d["title"],
            summary_html=f"<p>{text}</p>" if text else "",
            content_html=f"<p>{text}</p>" if text else "",
            text=text,
            authors=(),
            published=published,
            updated=published,
            date_from_fetch=False,
            categories=(),
        )
        items.append(Item(d["cluster"], f"https://{d['feed']}.example/feed", entry))
    return sorted(items, key=lambda i: i.entry.published)


def run(
    db_url: str, items: Iterable[Item], policy: dedup.Policy, events_level: bool = False
) -> tuple[dict[str, str], float]:
    """Save every item as its own poll; link -> story (or event) uid, and seconds per item."""
    repo = open_repository(db_url)
    n = 0
    t0 = time.perf_counter()
    try:
        for item in items:
            stored = repo.entry_hashes(item.feed_url, [])
            intents = dedup.plan(
                [item.entry], item.feed_url, stored, None, tracking=policy.tracking
            )
            result = PollResult(item.feed_url, "ok", 200, None, 1, 0, 0, 0)
            repo.save_poll(
                item.feed_url,
                PollSave(
                    result=result,
                    started_at=item.entry.published + timedelta(minutes=5),
                    intents=tuple(intents),
                    matcher=policy.story_matcher,
                    events=policy.event_matcher,
                ),
            )
            n += 1
        elapsed = time.perf_counter() - t0
        if events_level:
            return {link: uid for link, uid in repo.entry_events() if link}, elapsed / max(n, 1)
        return {link: uid for _f, _i, link, uid in repo.entry_stories() if link}, elapsed / max(
            n, 1
        )
    finally:
        repo.close()


# -- the real set: Giveme5W1H's news clusters, polled from RSS feeds on 127.0.0.1 -------


class Article(NamedTuple):
    event: str
    outlet: str
    title: str
    link: str
    description: str
    text: str
    published: datetime


def half_of(event: str) -> str:
    """Which half an event is in: a fixed split by a hash of its id."""
    return "fit" if hashlib.sha256(event.encode()).digest()[0] % 2 == 0 else "report"


def load_articles(path: Path, half: str) -> list[Article]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        event = str(d["event_id"])
        if half != "all" and half_of(event) != half:
            continue
        published = datetime.fromisoformat(d["published"])
        if published.tzinfo is None:
            published = published.replace(tzinfo=UTC)
        out.append(
            Article(
                event=event,
                outlet=d["source_domain"],
                title=d["title"] or "",
                link=d["url"],
                description=d["description"] or "",
                text=d["text"] or "",
                published=published,
            )
        )
    return sorted(out, key=lambda a: (a.published, a.link))


def rss_feed(outlet: str, articles: list[Article], full_text: bool) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">',
        f"<channel><title>{escape(outlet)}</title><link>https://{escape(outlet)}/</link>",
        "<description>News</description>",
    ]
    for a in articles:
        parts.append("<item>")
        parts.append(f"<title>{escape(a.title)}</title><link>{escape(a.link)}</link>")
        parts.append(f"<guid>{escape(a.link)}</guid>")
        parts.append(f"<description>{escape(a.description)}</description>")
        if full_text and a.text:
            paragraphs = "".join(f"<p>{escape(p)}</p>" for p in a.text.split("\n") if p.strip())
            parts.append(f"<content:encoded>{escape(paragraphs)}</content:encoded>")
        parts.append(f"<pubDate>{format_datetime(a.published)}</pubDate></item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


class _Feeds(BaseHTTPRequestHandler):
    bodies: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = self.bodies.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: object) -> None:
        pass


def poll_articles(
    db_url: str, articles: list[Article], full_text: bool, policy: dedup.Policy
) -> tuple[dict[str, str], dict[str, str], float]:
    """Serve one feed per outlet and poll them day by day, as a poller would see them
    appear; returns link -> story uid, link -> event uid, and seconds per article."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Feeds)
    Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    repo = open_repository(db_url)
    days = sorted({a.published.date() for a in articles})
    t0 = time.perf_counter()

    async def run() -> None:
        limits = FetchLimits(allow_private=True)
        ctx = PollContext(repo=repo, client=make_client(limits), tagger=Tagger(()), limits=limits)
        ctx.policy = policy
        try:
            for day in days:
                shown = [a for a in articles if a.published.date() <= day]
                changed = {a.outlet for a in articles if a.published.date() == day}
                for outlet in sorted(changed):
                    mine = [a for a in shown if a.outlet == outlet][::-1]
                    path = f"/{outlet}.xml"
                    _Feeds.bodies[path] = rss_feed(outlet, mine, full_text)
                    ctx.clock = lambda d=day: (
                        datetime.combine(d, datetime.min.time(), UTC) + timedelta(hours=23)
                    )
                    await poll_feed(ctx, base + path, (), timedelta(hours=1))
        finally:
            await ctx.client.aclose()

    try:
        asyncio.run(run())
        elapsed = time.perf_counter() - t0
        stories = {link: uid for _f, _i, link, uid in repo.entry_stories() if link}
        events = {link: uid for link, uid in repo.entry_events() if link}
        return stories, events, elapsed / max(len(articles), 1)
    finally:
        repo.close()
        server.shutdown()


class Pairs(NamedTuple):
    precision: float
    recall: float
    near_recall: float  # different outlets, at most 3 days apart
    true: int
    predicted: int
    near_true: int
    wrong: list[tuple[Article, Article]]


def score_articles(articles: list[Article], group_of: dict[str, str]) -> Pairs:
    tp = fp = fn = near_tp = near_fn = 0
    wrong = []
    for a, b in itertools.combinations(articles, 2):
        truth = a.event == b.event
        pred = group_of.get(a.link, a.link) == group_of.get(b.link, b.link)
        near = a.outlet != b.outlet and abs(a.published - b.published) <= timedelta(days=3)
        if truth and pred:
            tp += 1
            near_tp += near
        elif pred:
            fp += 1
            wrong.append((a, b))
        elif truth:
            fn += 1
            near_fn += near
    return Pairs(
        tp / (tp + fp) if tp + fp else 1.0,
        tp / (tp + fn) if tp + fn else 1.0,
        near_tp / (near_tp + near_fn) if near_tp + near_fn else 1.0,
        tp + fn,
        tp + fp,
        near_tp + near_fn,
        wrong,
    )


def reachable_pairs(articles: list[Article], window: timedelta, cap: timedelta) -> tuple[int, int]:
    """(pairs a perfect matcher could join, same-event pairs): an event grows only by
    entries within ``window`` of its latest one and ``cap`` of its first, so an event
    written up again weeks later is, for the matcher, two."""
    by_event: dict[str, list[datetime]] = {}
    for a in articles:
        by_event.setdefault(a.event, []).append(a.published)
    reach = true = 0
    for dates in by_event.values():
        dates.sort()
        true += len(dates) * (len(dates) - 1) // 2
        run = [dates[0]]
        for d in dates[1:]:
            if d - run[-1] <= window and d - run[0] <= cap:
                run.append(d)
            else:
                reach += len(run) * (len(run) - 1) // 2
                run = [d]
        reach += len(run) * (len(run) - 1) // 2
    return reach, true


def event_matcher(args: argparse.Namespace) -> EventMatcher:
    return EventMatcher(
        threshold=args.event_threshold,
        lexical_threshold=args.event_lexical_threshold,
        window=parse_duration(args.event_window),
        cap=parse_duration(args.event_cap),
        use_model=not args.no_model,
    )


def real_set(args: argparse.Namespace, tmp: Path) -> None:
    path = Path(args.data) / "stories" / "giveme5w1h.jsonl"
    if not path.exists():
        print(f"(no {path}: the real set is skipped)")
        return
    articles = load_articles(path, args.half)
    events = {a.event for a in articles}
    outlets = {a.outlet for a in articles}
    print(
        f"\nreal set: {len(articles)} articles, {len(events)} events, {len(outlets)} outlets "
        f"(half={args.half}) from {path}"
    )
    policy = dedup.Policy(events=event_matcher(args))
    assert policy.events is not None
    reach, true = reachable_pairs(articles, policy.events.window, policy.events.cap)
    print(
        f"recall ceiling of the window ({args.event_window} from an event's latest entry, cap "
        f"{args.event_cap}): {reach} of {true} same-event pairs can join at all = "
        f"{reach / max(true, 1):.3f}"
    )
    for n, full_text in enumerate((False, True)):
        url = f"sqlite:///{tmp / f'real{n}.db'}"
        stories, grouped, seconds = poll_articles(url, articles, full_text, policy)
        variant = "title+description+content:encoded" if full_text else "title+description"
        for level, groups in (("copies", stories), ("events", grouped)):
            p = score_articles(articles, groups)
            print(
                f"{variant:34} {level:6} precision={p.precision:.3f} recall={p.recall:.3f} "
                f"cross-outlet<=3d recall={p.near_recall:.3f} pairs true={p.true} "
                f"near={p.near_true} predicted={p.predicted} ms/item={seconds * 1000:.1f}"
            )
            for a, b in p.wrong:
                print(f"  wrong merge [{a.event} / {b.event}]: {a.title!r} / {b.title!r}")


def score(items: list[Item], story_of: dict[str, str], seconds: float) -> Scores:
    tp = fp = fn = 0
    false_merges: list[tuple[str, str]] = []
    missed: list[tuple[str, str, str]] = []
    for a, b in itertools.combinations(items, 2):
        same_truth = a.cluster == b.cluster
        same_pred = story_of[a.entry.link or ""] == story_of[b.entry.link or ""]
        if same_truth and same_pred:
            tp += 1
        elif same_pred:
            fp += 1
            false_merges.append((a.cluster, b.cluster))
        elif same_truth:
            fn += 1
            missed.append((a.cluster, a.entry.title, b.entry.title))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp + fn, tp + fp, false_merges, missed, seconds)


def evaluate(db_url: str, policy: dedup.Policy | None = None) -> Scores:
    items = load()
    story_of, seconds = run(db_url, items, policy or dedup.DEFAULT_POLICY)
    return score(items, story_of, seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-url", help="a fresh, empty store (default: a temporary SQLite file)")
    ap.add_argument("--threshold", type=float, default=dedup.DEFAULT_POLICY.matcher.threshold)
    ap.add_argument("--title-threshold", type=float, default=Matcher.title_threshold)
    ap.add_argument("--show-errors", action="store_true")
    ap.add_argument("--data", default=str(SHARED), help="the shared data folder")
    ap.add_argument("--half", choices=("fit", "report", "all"), default="report")
    ap.add_argument("--event-threshold", type=float, default=EventMatcher.threshold)
    ap.add_argument("--event-lexical-threshold", type=float, default=EventMatcher.lexical_threshold)
    ap.add_argument("--event-window", default="3d", help="dedup.event_window")
    ap.add_argument("--event-cap", default="14d", help="dedup.event_cap")
    ap.add_argument("--no-model", action="store_true", help="lexical event signals only")
    ap.add_argument("--only-real", action="store_true", help="skip the project's own set")
    args = ap.parse_args()
    items = load()
    clusters = {i.cluster for i in items}
    matcher = Matcher(threshold=args.threshold, title_threshold=args.title_threshold)
    events = event_matcher(args)
    runs = [
        ("canonical URL only (bar)", dedup.Policy(near_duplicates=False), False),
        (
            f"near-duplicates threshold={args.threshold} title={args.title_threshold}",
            dedup.Policy(matcher=matcher, events=None),
            False,
        ),
        (
            f"events threshold={args.event_threshold}" + (" lexical" if args.no_model else ""),
            dedup.Policy(matcher=matcher, events=events),
            True,
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.only_real:
            print(
                f"set: {len(items)} items, {len(clusters)} stories, from {DATA.relative_to(ROOT)}"
            )
        for n, (name, policy, events_level) in enumerate(runs):
            if args.only_real:
                break
            url = args.db_url if args.db_url and n == len(runs) - 1 else None
            url = url or f"sqlite:///{Path(tmp) / f'eval{n}.db'}"
            story_of, seconds = run(url, items, policy, events_level)
            s = score(items, story_of, seconds)
            print(
                f"{name:52} precision={s.precision:.3f} recall={s.recall:.3f} f1={s.f1:.3f} "
                f"pairs true={s.true_pairs} predicted={s.predicted_pairs} "
                f"ms/item={s.seconds_per_item * 1000:.1f}"
            )
            if args.show_errors and policy.near_duplicates:
                for pair in s.false_merges:
                    print("  false merge:", *pair)
                for cluster, ta, tb in s.missed:
                    print(f"  missed [{cluster}]: {ta!r} / {tb!r}")
        real_set(args, Path(tmp))


if __name__ == "__main__":
    main()
