"""Small server-side SVG charts for the HTML pages: no script, readable without colour.

Each chart is an inline ``<svg role="img">`` with a ``<title>`` and ``<desc>`` that say in
words what it shows (screen readers, text browsers, a failed render), scales to its box
(``viewBox``, ``width="100%"``), and tells its marks apart by shape and position as well
as colour. Pure functions from plain values to markup strings.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

from .types import PollMark

DAYS = 30


def last_days(per_day: Mapping[date, int], today: date, days: int = DAYS) -> list[tuple[date, int]]:
    """``days`` (day, count) pairs ending ``today``, oldest first, missing days as 0."""
    start = today - timedelta(days=days - 1)
    return [(d, per_day.get(d, 0)) for d in (start + timedelta(days=i) for i in range(days))]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _day(d: date) -> str:
    return f"{d.day} {d:%b}"


def stories(n: int) -> str:
    """``1 story``, ``2 stories``."""
    return f"{n} {'story' if n == 1 else 'stories'}"


def volume_summary(days: Sequence[tuple[date, int]]) -> str:
    """The chart in one sentence: total, daily mean, busiest day."""
    total = sum(n for _, n in days)
    if total == 0:
        return f"No stories in the last {len(days)} days."
    busiest, most = max(days, key=lambda dn: (dn[1], dn[0]))
    return (
        f"{stories(total)} in the last {len(days)} days, {total / len(days):.1f} a day on "
        f"average; busiest day {_day(busiest)} ({stories(most)})."
    )


def bar_chart(days: Sequence[tuple[date, int]], chart_id: str) -> str:
    """Stories per day as bars with a baseline, the peak value and the first and last day."""
    w, h, top, bottom, left = 600, 140, 16, 22, 28
    plot_h = h - top - bottom
    step = (w - left) / max(len(days), 1)
    peak = max((n for _, n in days), default=0)
    bars = []
    for i, (d, n) in enumerate(days):
        bh = plot_h * n / peak if peak else 0
        x = left + i * step
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - bh:.1f}" width="{step - 2:.1f}" '
            f'height="{bh:.1f}"><title>{_e(_day(d))}: {stories(n)}</title></rect>'
        )
    first, last = (_day(days[0][0]), _day(days[-1][0])) if days else ("", "")
    summary = volume_summary(days)
    return (
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="100%" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMinYMid meet">'
        f'<title id="{chart_id}-t">Stories per day, last {len(days)} days</title>'
        f'<desc id="{chart_id}-d">{_e(summary)}</desc>'
        f'<g fill="#2f4f6f">{"".join(bars)}</g>'
        f'<line x1="{left}" x2="{w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#333"/>'
        f'<g font-size="12" fill="#333" font-family="system-ui,sans-serif">'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>'
        f'<text x="{left}" y="{h - 6}">{_e(first)}</text>'
        f'<text x="{w}" y="{h - 6}" text-anchor="end">{_e(last)}</text></g></svg>'
    )


def sparkline(days: Sequence[tuple[date, int]], label: str) -> str:
    """A word-sized line of the daily counts; ``label`` names it for assistive technology."""
    w, h = 120, 24
    peak = max((n for _, n in days), default=0)
    step = w / max(len(days) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{h - 2 - ((h - 4) * n / peak if peak else 0):.1f}"
        for i, (_, n) in enumerate(days)
    )
    return (
        f'<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>'
        f'<polyline points="{points}" fill="none" stroke="#2f4f6f" stroke-width="1.5"/></svg>'
    )


_POLL_WORDS = {"ok": "ok", "not_modified": "not modified (304)", "error": "error"}


def poll_summary(marks: Sequence[PollMark]) -> str:
    if not marks:
        return "Not polled yet."
    counts = {k: sum(m.status == k for m in marks) for k in _POLL_WORDS}
    parts = [f"{n} {_POLL_WORDS[k]}" for k, n in counts.items() if n]
    last = marks[-1]
    http = f", HTTP {last.http_status}" if last.http_status else ""
    return (
        f"Last {len(marks)} polls, oldest first: {', '.join(parts)}; "
        f"the latest {_POLL_WORDS.get(last.status, last.status)}{http}."
    )


def poll_strip(marks: Sequence[PollMark], per_feed: int = 30) -> str:
    """One mark per poll, oldest first: ok a tall bar, 304 a short one, error a drop below
    the line, so the three read apart in grey too."""
    w, h, mid = per_feed * 6, 28, 16
    shapes = []
    for i, m in enumerate(marks[-per_feed:]):
        x = i * 6
        when = f"{m.started_at:%Y-%m-%d %H:%M} UTC: {_POLL_WORDS.get(m.status, m.status)}"
        if m.http_status:
            when += f" (HTTP {m.http_status})"
        if m.status == "error":
            y, bh, cls, fill = mid, h - mid, "err", "#cf222e"
        elif m.status == "not_modified":
            y, bh, cls, fill = mid - 6, 6, "nm", "#6e7781"
        else:
            y, bh, cls, fill = 2, mid - 2, "ok", "#1a7f37"
        shapes.append(
            f'<rect class="{cls}" fill="{fill}" x="{x}" y="{y}" width="4" height="{bh}">'
            f"<title>{_e(when)}</title></rect>"
        )
    label = poll_summary(marks)
    return (
        f'<svg class="polls" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>'
        f'<line x1="0" x2="{w}" y1="{mid}" y2="{mid}" stroke="#999"/>{"".join(shapes)}</svg>'
    )
