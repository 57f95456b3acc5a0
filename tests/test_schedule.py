"""Scheduling arithmetic on a driven clock (no sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from aggregator.schedule import MAX_BACKOFF, first_poll_at, next_poll_at

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
