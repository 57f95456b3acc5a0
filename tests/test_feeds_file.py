"""feeds.yaml edits: comments and layout kept exactly, validated first, written atomically."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aggregator import feeds_file as ff
from aggregator.config import load_config
from aggregator.exceptions import ConfigEditError, ConfigError

ROOT = Path(__file__).parent.parent
SHIPPED = (ROOT / "feeds.yaml").read_text()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "feeds.yaml"
    p.write_text(SHIPPED)
    return p


def _block(lines: list[str], first: str) -> tuple[int, int]:
    """The line range of the list item starting with ``first`` (its deeper lines follow)."""
    start = next(i for i, line in enumerate(lines) if line.strip() == first)
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    return start, end


@pytest.mark.parametrize("url", [f.url for f in load_config(ROOT / "feeds.yaml").feeds])
def test_removing_any_feed_removes_exactly_its_lines(path: Path, url: str) -> None:
    ff.edit(path, lambda d: ff.remove_feed(d, url))
    lines = SHIPPED.splitlines(keepends=True)
    start, end = _block(lines, f"- url: {url}")
    # Every comment (group headings such as "# Politics") and blank line stays where it was.
    assert path.read_text() == "".join(lines[:start] + lines[end:])


@pytest.mark.parametrize("slug", [t.slug for t in load_config(ROOT / "feeds.yaml").topics])
def test_removing_any_topic_keeps_the_spacing(path: Path, slug: str) -> None:
    name = next(t.name for t in load_config(path).topics if t.slug == slug)
    ff.edit(path, lambda d: ff.remove_topic(d, slug))
    lines = SHIPPED.splitlines(keepends=True)
    start, end = _block(lines, f"- name: {name}")
    # Topics are separated by one blank line: it goes with the topic.
    if lines[end].strip() == "" and lines[end + 1].startswith("  - "):
        end += 1
    elif lines[start - 1].strip() == "":
        start -= 1
    assert path.read_text() == "".join(lines[:start] + lines[end:])


def test_add_disable_enable_remove_round_trips_to_the_same_bytes(path: Path) -> None:
    url = "https://www.lemonde.fr/international/rss_full.xml"
    ff.edit(path, lambda d: ff.add_feed(d, url, title="Le Monde", tags=["world"], interval="1h"))
    text = path.read_text()
    assert text.startswith(SHIPPED.split("\ntopics:")[0].rstrip("\n") + "\n")
    assert (
        f"    interval: 1h\n  - url: {url}\n    title: Le Monde\n    tags: [world]\n"
        "    interval: 1h\n\ntopics:\n" in text
    )
    last = "https://www.eltiempo.com/rss/mundo.xml"
    for u in (url, last):
        ff.edit(path, lambda d, u=u: ff.set_enabled(d, u, False))
    assert load_config(path).feed(url).enabled is False  # type: ignore[union-attr]
    assert "    enabled: false\n\ntopics:" in path.read_text()
    for u in (url, last):
        ff.edit(path, lambda d, u=u: ff.set_enabled(d, u, True))
    ff.edit(path, lambda d: ff.remove_feed(d, url))
    assert path.read_text() == SHIPPED


def test_topics_added_and_updated_like_the_others(path: Path) -> None:
    topic = {"name": "Climate", "slug": "climate", "rules": {"keywords": ["climate", "emissions"]}}
    ff.edit(path, lambda d: ff.add_topic(d, topic))
    text = path.read_text()
    assert "peace talks\n\n  - name: Colombia\n" in text  # spacing between topics kept
    assert (
        "]\n\n  - name: Climate\n    slug: climate\n    rules:\n"
        "      keywords: [climate, emissions]\n\ncategory_synonyms:\n"
    ) in text
    cfg, _ = ff.edit(
        path, lambda d: ff.update_topic(d, "climate", {"rules": {"keywords": ["heatwave"]}})
    )
    assert cfg.topic("climate").rules.keywords == ("heatwave",)  # type: ignore[union-attr]
    ff.edit(path, lambda d: ff.remove_topic(d, "climate"))
    assert path.read_text() == SHIPPED


def test_a_refused_edit_leaves_the_file_untouched(path: Path) -> None:
    before = path.stat()
    with pytest.raises(ConfigError) as e:
        ff.edit(path, lambda d: ff.add_feed(d, "https://x.example/rss", interval="soon"))
    assert e.value.errors == [
        f"{path}:105:5: feeds[26].interval: invalid duration 'soon' "
        "(expected e.g. 90s, 30m, 2h, 1d)"
    ]
    with pytest.raises(ConfigEditError) as missing:
        ff.edit(path, lambda d: ff.remove_feed(d, "https://nowhere.example/"))
    assert missing.value.status == 404
    with pytest.raises(ConfigEditError) as dup:
        ff.edit(path, lambda d: ff.add_feed(d, "https://feeds.npr.org/1004/rss.xml"))
    assert dup.value.status == 409
    assert path.read_text() == SHIPPED
    assert path.stat().st_ino == before.st_ino  # not even rewritten
    assert sorted(p.name for p in path.parent.iterdir()) == [".feeds.yaml.lock", "feeds.yaml"]


def test_written_by_rename_keeping_the_mode(path: Path) -> None:
    path.chmod(0o640)
    inode = path.stat().st_ino
    ff.edit(path, lambda d: ff.add_feed(d, "https://x.example/rss"))
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert path.stat().st_mode & 0o777 == 0o640
    assert not list(path.parent.glob("*.tmp"))


def test_concurrent_edits_are_serialised(path: Path) -> None:
    urls = [f"https://site{i}.example/feed" for i in range(8)]
    threads = [
        threading.Thread(target=ff.edit, args=(path, lambda d, u=u: ff.add_feed(d, u)))
        for u in urls
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {f.url for f in load_config(path).feeds} >= set(urls)


def test_empty_or_missing_file_gets_a_feed_list(tmp_path: Path) -> None:
    p = tmp_path / "feeds.yaml"
    ff.edit(p, lambda d: ff.add_feed(d, "https://x.example/rss", tags=["a"]))
    assert p.read_text() == "feeds:\n- url: https://x.example/rss\n  tags: [a]\n"


def test_removing_the_first_item_keeps_the_heading_after_it(tmp_path: Path) -> None:
    p = tmp_path / "feeds.yaml"
    head = "# Feeds\nfeeds:\n  # World news\n"
    first = "  - url: https://world.example.com/rss\n    tags: [world]\n"
    rest = (
        "  # Science\n  - url: https://science.example.org/feed\n"
        "    title: Science & Nature\n  - url: https://space.example.org/atom\n\ntopics: []\n"
    )
    p.write_text(head + first + rest)
    ff.edit(p, lambda d: ff.remove_feed(d, "https://world.example.com/rss"))
    # Nothing says whether "# World news" headed only the removed feed: both comments stay.
    assert p.read_text() == head + rest
