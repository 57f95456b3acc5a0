"""OPML 2.0 <-> the feed list: import subscriptions from a feed reader, export ours.

Import reads every ``<outline xmlUrl=...>`` at any depth; its tags are its ``category``
attribute (comma-separated, ``/a/b`` paths split) plus the text of the folders it sits in,
as slugs. Export writes one outline per feed with its tags in ``category``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate

from .config import FeedConfig
from .exceptions import ConfigError
from .feeds_file import slugify


@dataclass(frozen=True)
class OpmlFeed:
    url: str
    title: str | None
    tags: tuple[str, ...]


def parse_opml(data: bytes, source: str = "OPML") -> list[OpmlFeed]:
    """Every feed outline in an OPML document; ConfigError if it is not OPML."""
    if b"<!ENTITY" in data:
        # Entity definitions have no use in OPML and are how entity-expansion bombs start.
        raise ConfigError([f"{source}: entity declarations are not allowed in OPML"])
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ConfigError([f"{source}: not well-formed XML: {e}"]) from e
    if root.tag != "opml" or root.find("body") is None:
        raise ConfigError([f"{source}: not an OPML document (expected <opml><body>)"])
    body = root.find("body")
    assert body is not None
    found: list[OpmlFeed] = []
    seen: set[str] = set()

    def walk(node: ET.Element, folders: tuple[str, ...]) -> None:
        for outline in node.findall("outline"):
            url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
            label = (outline.get("title") or outline.get("text") or "").strip()
            if url:
                tags: list[str] = [t for t in folders]
                for cat in (outline.get("category") or "").split(","):
                    tags += [slugify(part) for part in cat.split("/") if slugify(part)]
                if url not in seen:
                    seen.add(url)
                    found.append(OpmlFeed(url, label or None, tuple(dict.fromkeys(tags))))
            sub = folders + ((slugify(label),) if not url and slugify(label) else ())
            walk(outline, sub)

    walk(body, ())
    return found


def render_opml(
    feeds: Iterable[FeedConfig],
    stored_titles: Mapping[str, str] | None = None,
    title: str = "aggregator feeds",
) -> bytes:
    """OPML of ``feeds``; a feed without ``title:`` is named by its own (stored) title."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = formatdate(usegmt=True)
    body = ET.SubElement(root, "body")
    for f in feeds:
        name = f.title or (stored_titles or {}).get(f.url)
        attrs = {"type": "rss", "text": name or f.url, "xmlUrl": f.url}
        if name:
            attrs["title"] = name
        if f.tags:
            attrs["category"] = ",".join(f.tags)
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out + b"\n"
