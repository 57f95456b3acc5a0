"""The docs stay true: every feeds.yaml key and every CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from aggregator.cli import app
from aggregator.config import (
    Config,
    DedupSettings,
    FeedConfig,
    FeedRetention,
    PollingConfig,
    RetentionConfig,
    Settings,
    TopicConfig,
    TopicRules,
    WebSubConfig,
    WorkersConfig,
)
from aggregator.topicconfig import Rule, TaggingSettings, TopicClassifier

ROOT = Path(__file__).parent.parent


def documented_keys() -> set[str]:
    text = (ROOT / "docs" / "feeds-yaml.md").read_text()
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE)) | set(
        re.findall(r"^## `([a-z_]+)`", text, re.MULTILINE)
    )


def test_every_feeds_yaml_key_is_documented() -> None:
    models: list[type[BaseModel]] = [
        Config,
        Settings,
        FeedConfig,
        TopicConfig,
        TopicRules,
        DedupSettings,
        WorkersConfig,
        Rule,
        TopicClassifier,
        TaggingSettings,
        PollingConfig,
        WebSubConfig,
        RetentionConfig,
        FeedRetention,
    ]
    keys = {f.alias or name for m in models for name, f in m.model_fields.items()}
    missing = keys - documented_keys()
    assert not missing, f"document these feeds.yaml keys in docs/feeds-yaml.md: {missing}"


def test_every_cli_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = [
        c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
    ]
    assert commands
    for name in commands:
        assert f"aggregator {name}" in readme, f"README does not show `aggregator {name}`"


def test_readme_quick_start_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make (\w+)", quick, re.MULTILINE) == ["run", "test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_deployment_commands_and_options_exist() -> None:
    """Every `aggregator ...` line of docs/deployment.md names a real command and options."""
    from typer.testing import CliRunner

    text = (ROOT / "docs" / "deployment.md").read_text()
    lines = re.findall(r"(?:^|\s)aggregator (\w+)([^\n`]*)", text)
    runs = [(cmd, rest) for cmd, rest in lines if "--" in rest or cmd in ("migrate", "worker")]
    assert {"worker", "web", "migrate"} <= {cmd for cmd, _ in runs}
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    runner = CliRunner()
    for cmd, rest in runs:
        assert cmd in names, f"docs/deployment.md shows `aggregator {cmd}`, which does not exist"
        out = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"}).output
        for option in re.findall(r"--[a-z-]+", rest):
            assert option in out, f"`aggregator {cmd}` has no {option} (docs/deployment.md)"
    readme = (ROOT / "README.md").read_text()
    assert "(docs/deployment.md)" in readme
