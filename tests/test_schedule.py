"""Scheduling arithmetic on a driven clock (no sleeps)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from builders import news_items, rss
from hypothesis import given
from hypothesis import strategies as st

from aggregator.schedule import (
    MAX_BACKOFF,
    Hints,
    Policy,
    effective_interval,
    first_poll_at,
    from_json,
    header_hints,
    item_gap,
    next_poll_at,
    to_json,
)

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
H = timedelta(hours=1)


def test_success_polls_after_interval_with_bounded_jitter() -> None:
    assert next_poll_at(NOW, H, 0, rand=lambda: 0.0) == NOW + H
    assert next_poll_at(NOW, H, 0, rand=lambda: 1.0) == NOW + H + timedelta(minutes=2)
    m = timedelta(minutes=10)
    assert next_poll_at(NOW, m, 0, rand=lambda: 1.0) == NOW + m + timedelta(minutes=1)


def test_errors_back_off_exponentially_up_to_a_cap() -> None:
    got = [next_poll_at(NOW, H, n, rand=lambda: 0.0) - NOW for n in range(7)]
    assert got[:5] == [H, 2 * H, 4 * H, 8 * H, 16 * H]
    assert got[5] == got[6] == MAX_BACKOFF


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_backoff_never_overflows(errors: int, r: float) -> None:
    delay = next_poll_at(NOW, timedelta(minutes=30), errors, rand=lambda: r) - NOW
    assert timedelta(minutes=30) <= delay <= MAX_BACKOFF + timedelta(minutes=2)


def test_restart_resumes_stored_plan_and_spreads_the_rest() -> None:
    stored = NOW + timedelta(minutes=20)
    assert first_poll_at(NOW, H, stored, 0, 10) == stored
    assert first_poll_at(NOW, timedelta(minutes=5), stored, 0, 10) == NOW + timedelta(minutes=5)
    spread = [first_poll_at(NOW, H, None, i, 4) for i in range(4)]
    assert spread == [NOW + timedelta(seconds=s) for s in (0, 15, 30, 45)]
    assert first_poll_at(NOW, H, NOW - H, 2, 4) == NOW + timedelta(seconds=30)


# ------------------------------------------------------------------ hints and adaptation

M = timedelta(minutes=1)
POLICY = Policy(min_interval=5 * M, max_interval=timedelta(hours=12))


def at(hints: Hints, errors: int = 0, interval: timedelta = H) -> timedelta:
    return next_poll_at(NOW, interval, errors, rand=lambda: 0.0, hints=hints, policy=POLICY) - NOW


def test_the_feeds_own_hints_are_never_undercut() -> None:
    assert at(Hints(ttl=3 * H)) == 3 * H
    assert at(Hints(update_period=timedelta(days=1) / 4)) == 6 * H
    assert at(Hints(max_age=2 * H, ttl=90 * M)) == 2 * H
    assert at(Hints(expires=NOW + 4 * H)) == 4 * H
    # Hints only ever slow polling down, and never beyond max_interval.
    assert at(Hints(ttl=10 * M, max_age=M)) == H
    assert at(Hints(ttl=timedelta(days=30))) == timedelta(hours=12)
    assert at(Hints(expires=NOW - H)) == H


def test_interval_adapts_to_how_often_the_feed_publishes() -> None:
    assert at(Hints(item_gap=20 * M)) == 20 * M  # busier than configured: sooner
    assert at(Hints(item_gap=6 * H)) == 6 * H  # quieter: later
    assert at(Hints(item_gap=M)) == 5 * M  # bounded by min_interval
    assert at(Hints(item_gap=timedelta(days=5))) == timedelta(hours=12)  # and max_interval
    off = Policy(adaptive=False)
    assert next_poll_at(NOW, H, rand=lambda: 0, hints=Hints(item_gap=M), policy=off) == NOW + H
    # A ttl still wins over a fast publishing rate.
    assert at(Hints(item_gap=10 * M, ttl=H)) == H


def test_backoff_starts_from_the_adapted_interval() -> None:
    assert at(Hints(item_gap=20 * M), errors=2) == 80 * M
    assert at(Hints(item_gap=20 * M), errors=30) == MAX_BACKOFF


def test_the_effective_interval_says_which_term_decided_it() -> None:
    def eff(hints: Hints, errors: int = 0) -> tuple[timedelta, str]:
        return tuple(effective_interval(H, errors, hints, POLICY, NOW))  # type: ignore[return-value]

    assert eff(Hints()) == (H, "configured")
    assert eff(Hints(item_gap=20 * M)) == (20 * M, "adaptive rate")
    assert eff(Hints(item_gap=H)) == (H, "configured")  # the rate agrees with the setting
    assert eff(Hints(item_gap=10 * M, ttl=2 * H)) == (2 * H, "feed hint (ttl)")
    assert eff(Hints(max_age=3 * H, ttl=2 * H)) == (3 * H, "feed hint (max-age)")
    assert eff(Hints(ttl=10 * M)) == (H, "configured")  # a hint below the interval: no say
    assert eff(Hints(item_gap=20 * M), errors=1) == (40 * M, "backoff (1 error)")
    assert eff(Hints(), errors=3) == (8 * H, "backoff (3 errors)")


@given(
    st.integers(0, 40),
    st.sampled_from([None, M, 20 * M, 2 * H, timedelta(days=3)]),
    st.sampled_from([None, 10 * M, 3 * H, timedelta(days=40)]),
)
def test_next_poll_is_the_effective_interval_plus_jitter(
    errors: int, gap: timedelta | None, ttl: timedelta | None
) -> None:
    hints = Hints(item_gap=gap, ttl=ttl)
    assert at(hints, errors) == effective_interval(H, errors, hints, POLICY, NOW).delay


def test_item_gap_counts_the_last_week_and_the_quiet_since() -> None:
    assert item_gap([NOW - i * 15 * M for i in range(20)], NOW) == 285 * M / 20
    assert item_gap([NOW - timedelta(days=d) for d in (1, 3, 6)], NOW) == timedelta(days=2)
    assert item_gap([NOW - timedelta(days=30)], NOW) is None
    assert item_gap([NOW + H], NOW) is None  # the future is not a publishing rate
    assert item_gap([], NOW) is None


def test_skip_hours_and_days_move_the_poll_to_the_next_allowed_hour() -> None:
    # NOW is Wednesday 06:00 UTC.
    night = Hints(skip_hours=frozenset({7, 8, 9}))
    assert NOW + at(night, interval=90 * M) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert at(night, interval=30 * M) == 30 * M
    weekend_off = Hints(skip_days=frozenset({3, 4}))  # Thursday, Friday
    due = NOW + at(weekend_off, interval=timedelta(days=1))
    assert due == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    everything = Hints(skip_hours=frozenset(range(24)))
    assert at(everything) == H


def test_cache_headers_are_read() -> None:
    assert header_hints({"cache-control": "public, max-age=600"}, NOW) == (10 * M, None)
    assert header_hints({"cache-control": "no-cache"}, NOW) == (None, None)
    assert header_hints({"expires": "Wed, 25 Nov 2026 08:00:00 GMT"}, NOW) == (
        None,
        NOW + 2 * H,
    )
    assert header_hints({"expires": "0"}, NOW) == (None, None)


@given(
    st.integers(min_value=0, max_value=50),
    st.floats(min_value=0, max_value=1),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**7)),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**7)),
    st.frozensets(st.integers(min_value=0, max_value=23)),
)
def test_next_poll_stays_within_its_bounds(
    errors: int, r: float, gap: int | None, ttl: int | None, hours: frozenset[int]
) -> None:
    hints = Hints(
        item_gap=timedelta(seconds=gap) if gap else None,
        ttl=timedelta(seconds=ttl) if ttl else None,
        skip_hours=hours,
    )
    due = next_poll_at(NOW, H, errors, rand=lambda: r, hints=hints, policy=POLICY)
    assert NOW + 5 * M <= due
    # Backoff cap + jitter + at most one day of skipped hours.
    assert due <= NOW + MAX_BACKOFF + 2 * M + timedelta(days=1)
    if len(hours) < 24:
        assert due.hour not in hours or due == NOW


def test_hints_survive_the_store_as_json() -> None:
    hints = Hints(
        ttl=H,
        update_period=2 * H,
        item_gap=17 * M,
        skip_hours=frozenset({1, 2}),
        skip_days=frozenset({6}),
    )
    assert from_json(to_json(hints)) == hints
    assert from_json(None) == Hints()


def test_a_polled_feed_is_planned_by_its_hints(tmp_path: Path) -> None:
    from test_fetch import ScriptServer, make_agg, poll, send

    # Dated in the last hours: the publishing rate counts the last week only.
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    items = [
        replace(it, published=recent - i * timedelta(minutes=17))
        for i, it in enumerate(news_items(5))
    ]
    body = rss(items).replace(
        b"<language>en-gb</language>",
        b"<language>en-gb</language><ttl>180</ttl>"
        b"<skipDays><day>Saturday</day><day>Sunday</day></skipDays>",
    )
    srv = ScriptServer()
    try:
        etag = '"v1"'

        def handler(h: BaseHTTPRequestHandler) -> None:
            if h.headers.get("If-None-Match") == etag:
                send(h, 304, headers={"ETag": etag, "Cache-Control": "max-age=36000"})
            else:
                send(h, 200, body, headers={"ETag": etag})

        url = srv.route("/ttl.rss", handler)
        agg = make_agg(tmp_path, [url], default_interval="10m")
        before = datetime.now(UTC)
        assert poll(agg)[url].status == "ok"
        state = agg.repo.feed_states()[url]
        assert state.hints is not None
        assert (state.hints["ttl"], state.hints["skip_days"]) == (10800.0, [5, 6])
        assert state.hints["item_gap"] > 0  # five items, dated: a publishing rate
        assert state.next_poll_at is not None
        assert state.next_poll_at >= before + 3 * H
        assert state.next_poll_at.weekday() not in (5, 6)

        before = datetime.now(UTC)
        assert poll(agg)[url].status == "not_modified"
        state = agg.repo.feed_states()[url]
        assert state.next_poll_at is not None
        assert state.next_poll_at >= before + 10 * H  # the 304's max-age, over the ttl
        assert state.hints is not None and state.hints["ttl"] == 10800.0  # kept from the body
        agg.close()
    finally:
        srv.close()


def test_parse_reads_the_feeds_polling_hints() -> None:
    from aggregator.parse import parse

    body = (
        rss(news_items(2))
        .replace(
            b'<rss version="2.0" ',
            b'<rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/" ',
        )
        .replace(
            b"<language>en-gb</language>",
            b"<language>en-gb</language><sy:updatePeriod>daily</sy:updatePeriod>"
            b"<sy:updateFrequency>4</sy:updateFrequency>"
            b"<skipHours><hour>0</hour><hour>23</hour><hour>24</hour><hour>99</hour></skipHours>",
        )
    )
    hints = parse(body, "https://news.example.com/rss", {}, NOW).hints
    assert hints.update_period == 6 * H
    assert hints.ttl is None
    assert hints.skip_hours == (0, 23)
    assert hints.skip_days == ()
