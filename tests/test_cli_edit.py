"""The real `aggregator` console script editing temporary feeds.yaml files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.config import load_config

ROOT = Path(__file__).parent.parent
SHIPPED = (ROOT / "feeds.yaml").read_text()
SCRIPT = Path(sys.executable).parent / "aggregator"
OPML = Path(__file__).parent / "data" / "opml" / "subscriptions.opml"


def agg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "feeds.yaml").write_text(SHIPPED)
    return tmp_path


def test_feeds_add_disable_enable_remove(workdir: Path) -> None:
    url = "https://www.lemonde.fr/international/rss_full.xml"
    r = agg("feeds", "add", url, "-t", "world", "-t", "france", "--interval", "1h",
            "--title", "Le Monde", cwd=workdir)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"added {url} (27 feeds, 7 topics)" in r.stdout
    text = (workdir / "feeds.yaml").read_text()
    assert text.startswith(SHIPPED.split("\ntopics:")[0])  # comments and order kept
    assert text.endswith(SHIPPED.split("    interval: 1h\n\ntopics:")[1])
    assert f"  - url: {url}\n    title: Le Monde\n    tags: [world, france]\n" in text

    r = agg("feeds", "list", "--tag", "france", cwd=workdir)
    assert r.returncode == 0 and url in r.stdout and "2 feeds (2 enabled)" in r.stdout

    assert agg("feeds", "disable", url, cwd=workdir).returncode == 0
    assert load_config(workdir / "feeds.yaml").feed(url).enabled is False  # type: ignore[union-attr]
    assert "(1 enabled)" in agg("feeds", "list", "-t", "france", cwd=workdir).stdout
    assert agg("feeds", "enable", url, cwd=workdir).returncode == 0
    r = agg("feeds", "remove", url, cwd=workdir)
    assert r.returncode == 0 and "removed" in r.stdout
    assert (workdir / "feeds.yaml").read_text() == SHIPPED


def test_refused_edits_leave_the_file_alone(workdir: Path) -> None:
    r = agg("feeds", "add", "https://x.example/rss", "--interval", "soon", cwd=workdir)
    assert r.returncode == 1
    assert "refused; feeds.yaml is unchanged" in r.stderr
    assert "feeds[26].interval: invalid duration 'soon'" in r.stderr
    r = agg("feeds", "add", "ftp://x.example/rss", cwd=workdir)
    assert r.returncode == 1 and "not an http(s) URL" in r.stderr
    r = agg("feeds", "remove", "https://nowhere.example/", cwd=workdir)
    assert r.returncode == 1 and "no feed https://nowhere.example/" in r.stderr
    r = agg("feeds", "add", "https://feeds.npr.org/1004/rss.xml", cwd=workdir)
    assert r.returncode == 1 and "already in feeds.yaml" in r.stderr
    assert (workdir / "feeds.yaml").read_text() == SHIPPED


def test_topics_list(workdir: Path) -> None:
    r = agg("topics", "list", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "foreign-relations" in r.stdout and "feed_tags: colombia" in r.stdout
    assert "7 topics" in r.stdout


def test_opml_import_then_export(workdir: Path) -> None:
    r = agg("opml", "import", str(OPML), "--tag", "imported", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "imported 3 feeds" in r.stdout and "2 already present" in r.stdout
    cfg = load_config(workdir / "feeds.yaml")
    hn = cfg.feed("https://hnrss.org/frontpage")
    assert hn is not None and hn.title == "Hacker News: Front Page"
    assert hn.tags == ("tech-science", "imported")
    reuters = cfg.feed("https://www.reutersagency.com/feed/?best-topics=world&post_type=best")
    assert reuters is not None and reuters.tags == ("news", "imported")
    # Feeds already present keep their own titles and tags.
    bbc = cfg.feed("https://feeds.bbci.co.uk/news/world/rss.xml")
    assert bbc is not None and bbc.tags == ("world", "uk")
    assert (workdir / "feeds.yaml").read_text().startswith(SHIPPED.split("\ntopics:")[0])

    out = workdir / "out.opml"
    assert agg("opml", "export", "-o", str(out), cwd=workdir).returncode == 0
    fresh = workdir / "fresh"
    fresh.mkdir()
    (fresh / "feeds.yaml").write_text("# empty to start with\nfeeds: []\n")
    r = agg("opml", "import", str(out), cwd=fresh)
    assert r.returncode == 0, r.stderr
    again = load_config(fresh / "feeds.yaml")
    assert [(f.url, f.title, f.tags) for f in again.feeds] == [
        (f.url, f.title, f.tags) for f in cfg.feeds
    ]
    assert (fresh / "feeds.yaml").read_text().startswith("# empty to start with\n")


def test_opml_import_refuses_non_opml(workdir: Path) -> None:
    bomb = workdir / "bomb.opml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><opml><body/></opml>')
    r = agg("opml", "import", str(bomb), cwd=workdir)
    assert r.returncode == 1 and "entity declarations" in r.stderr
    page = workdir / "page.html"
    page.write_text("<html><body>hi</body></html>")
    r = agg("opml", "import", str(page), cwd=workdir)
    assert r.returncode == 1 and "not an OPML document" in r.stderr
    assert (workdir / "feeds.yaml").read_text() == SHIPPED
