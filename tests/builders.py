"""Build realistic feed documents in tests (for feeds whose items the test changes)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).parent.parent


@dataclass
class Item:
    title: str
    link: str | None
    guid: str | None = None
    description: str = ""
    categories: list[str] = field(default_factory=list)
    published: datetime | None = None
    author: str | None = None


def news_items(n: int, site: str = "https://news.example.com", start: int = 0) -> list[Item]:
    base = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    subjects = [
        ("Markets rally as central bank holds interest rates", ["Business", "Economy"]),
        ("Storm batters coast &amp; thousands lose power", ["UK", "Weather"]),
        ("Striker's late goal sends club top of the table", ["Sport", "Football"]),
        ("Chipmaker unveils faster AI accelerator", ["Technology"]),
        ("Parliament debates budget amid opposition anger", ["Politics"]),
        ("Museum returns looted bronzes to Nigeria", ["Arts &amp; Culture", "World/Africa"]),
    ]
    out = []
    for i in range(start, start + n):
        title, cats = subjects[i % len(subjects)]
        out.append(
            Item(
                title=f"{title} ({i})",
                link=f"{site}/2026/11/24/story-{i}?utm_source=rss&amp;utm_medium=feed",
                guid=f"{site}/a/{i}",
                description=(
                    f"&lt;p&gt;Story {i}: {title}. &lt;a href=&quot;/more/{i}&quot;&gt;"
                    f"Read more&lt;/a&gt; &amp;mdash; caf&eacute;&lt;/p&gt;"
                ),
                categories=cats,
                published=base - timedelta(minutes=17 * i),
                author=f"reporter{i % 4}@example.com (Reporter {i % 4})",
            )
        )
    return out


def rss(
    items: list[Item], title: str = "Example News", site: str = "https://news.example.com"
) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE rss [<!ENTITY eacute "&#233;"> <!ENTITY mdash "&#8212;">]>',
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">',
        f"<channel><title>{escape(title)}</title><link>{site}/</link>",
        "<description>Latest stories</description><language>en-gb</language>",
    ]
    for it in items:
        parts.append("<item>")
        parts.append(f"<title>{it.title}</title>")
        if it.link:
            parts.append(f"<link>{it.link}</link>")
        if it.guid:
            parts.append(f'<guid isPermaLink="false">{it.guid}</guid>')
        parts.append(f"<description>{it.description}</description>")
        for c in it.categories:
            parts.append(f"<category>{c}</category>")
        if it.published:
            parts.append(f"<pubDate>{format_datetime(it.published)}</pubDate>")
        if it.author:
            parts.append(f"<author>{it.author}</author>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def config_yaml(
    feeds: list[dict[str, Any]], polling: dict[str, Any] | None = None, **settings: Any
) -> str:
    """A feeds.yaml with the given feeds and the shipped topics.

    The SSRF guard is off: every test server is on 127.0.0.1 (``polling`` overrides).
    Bodies are parsed in a thread: starting parser processes would cost every test a
    second or two; test_parsepool.py runs them. The topics' classifiers are off: these
    tests are about rules, storage and serving; test_classify.py runs the model.
    """
    shipped = YAML(typ="safe").load((ROOT / "feeds.yaml").read_text())
    doc = {
        "settings": {"fetch_timeout": "5s", "parse_processes": 0, **settings},
        "polling": {"allow_private_addresses": True, **(polling or {})},
        "feeds": feeds,
        "topics": shipped["topics"],
        "category_synonyms": shipped.get("category_synonyms", {}),
        "tagging": {"classifier": False},
    }
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, out)
    return out.getvalue()
