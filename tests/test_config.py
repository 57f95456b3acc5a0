"""feeds.yaml loading: the shipped file is valid; bad files name line and field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.config import database_url, load_config, parse_config, parse_duration
from aggregator.exceptions import ConfigError

ROOT = Path(__file__).parent.parent


def test_shipped_feeds_yaml_is_valid_and_complete() -> None:
    cfg = load_config(ROOT / "feeds.yaml")
    assert 15 <= len(cfg.feeds) <= 30
    slugs = {t.slug for t in cfg.topics}
    assert {"foreign-relations", "politics", "world", "business", "technology", "sport"} <= slugs
    assert all(f.url.startswith("https://") for f in cfg.feeds)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "feeds.yaml")
    return e.value.errors


def test_every_error_has_line_column_and_field() -> None:
    errors = errors_of(
        "feeds:\n"
        "  - url: https://example.com/a.rss\n"
        "    interval: soon\n"
        "  - url: ftp://example.com/b\n"
        "    titel: B\n"
        "topics:\n"
        "  - name: Politics\n"
        "    slug: Politics Now\n"
        "    rules:\n"
        "      regex: ['(unbalanced']\n"
    )
    assert errors == [
        "feeds.yaml:3:5: feeds[0].interval: invalid duration 'soon' "
        "(expected e.g. 90s, 30m, 2h, 1d)",
        "feeds.yaml:4:5: feeds[1].url: not an http(s) URL: 'ftp://example.com/b'",
        "feeds.yaml:5:5: feeds[1].titel: unknown key; did you mean 'title'? "
        "expected one of: url, title, tags, interval, enabled, retention",
        "feeds.yaml:8:5: topics[0].slug (topic \"Politics\"): 'Politics Now' is not a URL slug "
        "(lower-case letters, digits and hyphens)",
        'feeds.yaml:10:15: topics[0].rules.regex[0] (topic "Politics"): invalid regular expression '
        "'(unbalanced': missing ), unterminated subpattern at character 1",
    ]


def test_all_errors_at_once_in_file_order() -> None:
    errors = errors_of(
        "settings:\n"
        "  port: 99999\n"
        "feeds:\n"
        "  - url: https://example.com/a.rss\n"
        "  - url: https://example.com/a.rss\n"
        "    tags: notalist\n"
        "    enabled: maybe\n"
        "topics:\n"
        "  - name: P\n"
        "    slug: p\n"
        "    rules:\n"
        "      regex: ['ok', '[x', 'a)']\n"
        "      keywrds: [a]\n"
        "  - name: Q\n"
        "    slug: p\n"
    )
    assert errors == [
        "feeds.yaml:2:3: settings.port: Input should be less than or equal to 65535, got 99999",
        "feeds.yaml:5:5: feeds[1].url: duplicate url 'https://example.com/a.rss' "
        "(first at feeds[0])",
        "feeds.yaml:6:5: feeds[1].tags: Input should be a list, got 'notalist'",
        "feeds.yaml:7:5: feeds[1].enabled: Input should be a valid boolean, unable to "
        "interpret input, got 'maybe'",
        'feeds.yaml:12:21: topics[0].rules.regex[1] (topic "P"): '
        "invalid regular expression '[x': "
        "unterminated character set at character 1",
        'feeds.yaml:12:27: topics[0].rules.regex[2] (topic "P"): '
        "invalid regular expression 'a)': "
        "unbalanced parenthesis at character 2",
        'feeds.yaml:13:7: topics[0].rules.keywrds (topic "P"): '
        "unknown key; did you mean 'keywords'? "
        "expected one of: keywords, regex, categories, feed_tags, places, match, exclude",
        "feeds.yaml:15:5: topics[1].slug (topic \"Q\"): duplicate slug 'p' (first at topics[0])",
    ]


def test_duplicates_missing_keys_and_syntax_errors() -> None:
    [dup] = errors_of("feeds:\n  - url: https://a.example/x\n  - url: https://a.example/x\n")
    assert dup.startswith("feeds.yaml:3:5: feeds[1].url: duplicate url")
    [missing] = errors_of("topics:\n  - slug: x\n")
    assert missing == "feeds.yaml:2:5: topics[0].name: required key is missing"
    [syntax] = errors_of("feeds:\n  - url: [unclosed\n")
    assert syntax.startswith("feeds.yaml:3:1: YAML syntax error")
    [top] = errors_of("- just a list\n")
    assert "must be a mapping" in top


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration(45) == timedelta(seconds=45)
    for bad in ("0m", "-5m", "soon", True, None, "5 weeks"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_database_url_follows_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGGREGATOR_DATABASE_URL", raising=False)
    cfg = parse_config("feeds: []\n")
    assert database_url(cfg, tmp_path / "feeds.yaml") == (
        f"sqlite:///{tmp_path}/storage/aggregator.db"
    )
    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert database_url(cfg, tmp_path / "feeds.yaml") == "postgresql+psycopg://u@h/db"
