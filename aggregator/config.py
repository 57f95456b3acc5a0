"""feeds.yaml: the schema (Pydantic), loading with line-numbered errors.

The file has these top-level keys::

    settings:           # optional: database, listen address, fetch limits
    polling:            # optional: SSRF guard, per-host limit, timeouts, interval bounds
    workers:            # optional: leases between several poller processes
    websub:             # optional: subscribing to feeds' WebSub hubs (push in)
    feeds: [...]        # url, title, tags, interval, enabled
    topics: [...]       # name, slug, description, rules
    category_synonyms:  # optional: extra "category" -> "canonical category" pairs
    retention:          # optional: prune old entries (days, max_items), keep tombstones

Every error names the file, the line and column, and the field path, e.g.
``feeds.yaml:14:5: feeds[2].interval: invalid duration 'soon' (expected e.g. 90s, 30m, 2h, 1d)``.
All errors are reported at once; a bad file never yields a partial Config.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .exceptions import ConfigError
from .topicconfig import TaggingSettings as TaggingSettings
from .topicconfig import TopicClassifier as TopicClassifier
from .topicconfig import TopicRules as TopicRules
from .topicconfig import check_languages

DATABASE_URL_ENV = "AGGREGATOR_DATABASE_URL"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest duration any setting takes (retention, intervals, leases): 100 years.
MAX_DURATION = timedelta(days=36525)


def format_duration(seconds: float) -> str:
    """A duration as feeds.yaml writes it (parse_duration reads it back): ``2h``, ``150m``."""
    seconds = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def approx_duration(seconds: float) -> str:
    """``format_duration`` for round values, else rounded for reading: ``~7h``, ``~42m``."""
    if round(seconds) % 60 == 0:
        return format_duration(seconds)
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"~{max(minutes, 1)}m"
    return f"~{round(minutes / 60, 1):g}h"


def parse_duration(value: Any) -> timedelta:
    """``90`` / ``"90s"`` / ``"30m"`` / ``"2h"`` / ``"1d"`` -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (expected e.g. 90s, 30m, 2h, 1d)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r} (expected e.g. 90s, 30m, 2h, 1d)")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r} (expected e.g. 90s, 30m, 2h, 1d)")
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    if seconds > MAX_DURATION.total_seconds():
        # timedelta itself overflows near 2.7 million years; no setting wants more than this.
        raise ValueError(f"duration {value!r} is too long (at most {MAX_DURATION.days} days)")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as "intervall" must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Strict):
    database_url: str = Field(
        default="sqlite:///storage/aggregator.db",
        description="SQLAlchemy URL; relative SQLite paths are relative to feeds.yaml. "
        f"${DATABASE_URL_ENV} overrides it.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    base_url: str | None = Field(
        default=None, description="public URL of the server, for self links"
    )
    default_interval: Duration = timedelta(minutes=30)
    fetch_timeout: Duration = timedelta(seconds=30)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_concurrency: int = Field(default=16, ge=1, le=1000)
    items_per_feed: int = Field(default=50, ge=1, le=500)
    user_agent: str | None = None
    parse_processes: int | None = Field(
        default=None,
        ge=0,
        le=256,
        description="parser processes (default: one per core but one; 0: parse in a thread)",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else v


class PollingConfig(_Strict):
    """How politely and how defensively feeds are polled (see docs/polling.md)."""

    allow_private_addresses: bool = Field(
        default=False,
        description="allow feed URLs on loopback, private, link-local or reserved addresses",
    )
    allowed_networks: tuple[str, ...] = Field(
        default=(), description="CIDR networks allowed even while the SSRF guard is on"
    )
    per_host_concurrency: int = Field(default=2, ge=1, le=100)
    max_redirects: int = Field(default=5, ge=0, le=20)
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=20)
    min_interval: Duration = timedelta(minutes=5)
    max_interval: Duration = timedelta(hours=24)
    adaptive: bool = True

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise ValueError(f"{net!r} is not a network such as 10.0.0.0/8: {e}") from e
        return v

    @model_validator(mode="after")
    def _bounds(self) -> PollingConfig:
        if self.min_interval > self.max_interval:
            raise ValueError("min_interval must not be longer than max_interval")
        return self


def _http_url(v: str) -> str:
    v = v.strip()
    if not re.match(r"^https?://[^/\s]+", v, re.IGNORECASE):
        raise ValueError(f"not an http(s) URL: {v!r}")
    return v


class FeedRetention(_Strict):
    """How much of a feed to keep; unset keys follow the global ``retention:``."""

    days: int | None = Field(
        default=None, ge=1, description="prune entries published more than this many days ago"
    )
    max_items: int | None = Field(
        default=None, ge=1, description="keep at most this many of the feed's newest entries"
    )


class RetentionConfig(FeedRetention):
    """``retention:``: pruning old entries (aggregator/retention.py, docs/feeds-yaml.md)."""

    tombstone_days: int = Field(
        default=365,
        ge=1,
        description="keep a pruned entry's identity this long after its feed last sent it",
    )
    every: Duration = Field(
        default=timedelta(hours=1), description="how often a running poller prunes"
    )


class FeedConfig(_Strict):
    url: str
    title: str | None = None
    tags: tuple[str, ...] = ()
    interval: Duration | None = None
    enabled: bool = True
    retention: FeedRetention | None = None

    _check_url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))


class TopicConfig(_Strict):
    name: str = Field(min_length=1)
    slug: str
    description: str = ""
    rules: TopicRules = TopicRules()
    languages: tuple[str, ...] = Field(
        default=(), description="only items detected in these languages (ISO 639-1)"
    )
    classifier: TopicClassifier | None = None

    _check_languages = field_validator("languages")(classmethod(lambda cls, v: check_languages(v)))

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v):
            raise ValueError(f"{v!r} is not a URL slug (lower-case letters, digits and hyphens)")
        return v


class DedupSettings(_Strict):
    """How entries from different feeds become one story (see aggregator/dedup.py)."""

    tracking_params: tuple[str, ...] = Field(
        default=(),
        description="query parameters to drop from links, besides the built-in list; "
        "a trailing * makes a prefix (e.g. sc_*)",
    )
    near_duplicates: bool = Field(
        default=True, description="merge rewritten stories, not only the same link"
    )
    window: Duration = Field(
        default=timedelta(days=3), description="how far apart two items of one story may be"
    )
    threshold: float = Field(
        default=0.35,
        ge=0.25,
        le=1.0,
        description="similarity of title+text (Jaccard) from which two items are one story",
    )
    title_threshold: float = Field(
        default=0.8,
        ge=0.5,
        le=1.0,
        description="title overlap needed to merge short (title-only) items",
    )
    events: bool = Field(
        default=True,
        description="join stories of other outlets about the same event into one event "
        "(coverage), published as one item naming every outlet (docs/stories.md)",
    )
    event_threshold: float = Field(
        default=0.94,
        ge=0.3,
        le=2.0,
        description="event score (embedding cosine + names + headline - days) from which "
        "a story joins an event",
    )
    event_lexical_threshold: float = Field(
        default=0.54,
        ge=0.1,
        le=1.0,
        description="the same bar when no embedding model is installed (names + headline)",
    )
    event_same_title: float = Field(
        default=0.8,
        ge=0.5,
        le=1.0,
        description="headline similarity (Jaccard of headline terms) from which two stories "
        "are one event whatever their texts say",
    )
    event_window: Duration = Field(
        default=timedelta(days=3),
        description="how far a new story may be from an event's nearest entry to join it",
    )
    event_cap: Duration = Field(
        default=timedelta(days=14),
        description="how long after its first story an event can still grow",
    )

    preferred_sources: tuple[str, ...] = Field(
        default=(),
        description="feeds (URL) or sites (host name, subdomains included) whose headline "
        "and link a story shows when they carry it, in order; else the first source seen",
    )

    @field_validator("preferred_sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for i, raw in enumerate(v):
            name = raw.strip()
            if name.startswith(("http://", "https://")):
                out.append(name)
            elif name and re.fullmatch(r"[A-Za-z0-9.-]+", name) and "." in name:
                out.append(name.lower().removeprefix("www."))
            else:
                raise ValueError(f"preferred_sources[{i}] {raw!r}: a feed URL or a host name")
        return tuple(out)

    @field_validator("tracking_params")
    @classmethod
    def _params(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, name in enumerate(v):
            if not name.strip() or "*" in name.rstrip("*") or name.strip() == "*":
                raise ValueError(f"tracking_params[{i}] {name!r}: a parameter name or prefix*")
        return tuple(n.strip().lower() for n in v)


class WorkersConfig(_Strict):
    """How ``aggregator worker`` processes share the feeds (docs/deployment.md)."""

    lease: Duration = Field(
        default=timedelta(minutes=5),
        description="how long a claimed feed stays a worker's without renewal; a live worker "
        "renews the leases of its polls in flight, so this is how soon a dead one's feeds move",
    )
    claim_every: Duration = Field(
        default=timedelta(seconds=2), description="how often a worker looks for due feeds"
    )
    batch: int | None = Field(
        default=None, ge=1, le=1000, description="feeds claimed at once (max_concurrency)"
    )

    @model_validator(mode="after")
    def _lease_outlasts_ticks(self) -> WorkersConfig:
        # Renewals happen on claim ticks, from a third of a lease on; a lease shorter than
        # three ticks could lapse between.
        if self.lease <= 3 * self.claim_every:
            raise ValueError(
                f"lease ({self.lease}) must be longer than three claim_every ({self.claim_every})"
            )
        return self


class WebSubConfig(_Strict):
    """Subscribing to the hubs feeds advertise (push in; aggregator/subscriber.py)."""

    subscribe: bool = Field(
        default=True, description="subscribe to a feed's WebSub hub (needs settings.base_url)"
    )
    lease: Duration = Field(
        default=timedelta(days=10), description="the lease asked of hubs; renewed before it ends"
    )
    fallback_interval: Duration = Field(
        default=timedelta(hours=6),
        description="polling interval (at least) while a feed is pushed to us",
    )


class Config(_Strict):
    settings: Settings = Settings()
    websub: WebSubConfig = WebSubConfig()
    dedup: DedupSettings = DedupSettings()
    workers: WorkersConfig = WorkersConfig()
    polling: PollingConfig = PollingConfig()
    feeds: tuple[FeedConfig, ...] = ()
    topics: tuple[TopicConfig, ...] = ()
    category_synonyms: dict[str, str] = Field(default_factory=dict)
    tagging: TaggingSettings = TaggingSettings()
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _unique(self) -> Config:
        _no_duplicates("feeds", [f.url for f in self.feeds], "url")
        _no_duplicates("topics", [t.slug for t in self.topics], "slug")
        return self

    def interval_for(self, feed: FeedConfig) -> timedelta:
        return feed.interval or self.settings.default_interval

    def topic(self, slug: str) -> TopicConfig | None:
        return next((t for t in self.topics if t.slug == slug), None)

    def feed(self, url: str) -> FeedConfig | None:
        return self._feeds_by_url.get(url)

    @cached_property
    def _feeds_by_url(self) -> dict[str, FeedConfig]:
        # Every poll looks its feed up: a scan of 10,000 feeds per poll cost more than
        # the poll itself in bench/poll.py's 304 round.
        return {f.url: f for f in self.feeds}


class _DuplicateError(ValueError):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _duplicates(section: str, values: Sequence[object], key: str) -> list[_DuplicateError]:
    seen: dict[object, int] = {}
    found = []
    for i, v in enumerate(values):
        if v is None:
            continue
        if v in seen:
            found.append(
                _DuplicateError(
                    (section, i, key), f"duplicate {key} {v!r} (first at {section}[{seen[v]}])"
                )
            )
        else:
            seen[v] = i
    return found


def _no_duplicates(section: str, values: Sequence[str], key: str) -> None:
    if found := _duplicates(section, values, key):
        raise found[0]


def _raw_duplicates(doc: Any) -> list[_DuplicateError]:
    """Duplicates found in the raw document, so they are reported alongside field errors."""
    found = []
    for section, key in (("feeds", "url"), ("topics", "slug")):
        items = doc.get(section)
        if isinstance(items, list):
            values = [
                (i[key].strip() if isinstance(i[key], str) else i[key])
                if isinstance(i, dict) and isinstance(i.get(key), str)
                else None
                for i in items
            ]
            found += _duplicates(section, values, key)
    return found


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The Pydantic model that validates the mapping at ``loc`` (for "expected keys")."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = _submodel(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _submodel(arg)) is not None:
            return found
    return None


def _position(doc: Any, loc: Iterable[str | int]) -> tuple[int, int] | None:
    """The (line, column), 1-based, of the deepest node of ``loc`` present in ``doc``."""
    node, pos = doc, None
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            line, col = node.lc.key(key)
            pos = (line + 1, col + 1)
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            line, col = node.lc.item(key)
            pos = (line + 1, col + 1)
            node = node[key]
        else:
            break
    return pos


def _field_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _topic_name(doc: Any, loc: tuple[str | int, ...]) -> str:
    """' (topic "Politics")' for an error inside a topic, so a rule error names its topic."""
    if len(loc) > 2 and loc[0] == "topics" and isinstance(loc[1], int):
        try:
            name = doc["topics"][loc[1]]["name"]
        except (KeyError, IndexError, TypeError):
            return ""
        if isinstance(name, str):
            return f' (topic "{name}")'
    return ""


def _message(err: Any, loc: Sequence[str | int]) -> str:
    msg: str = err["msg"]
    msg = msg.removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is None:
            return "unknown key (check the spelling; see docs/feeds-yaml.md)"
        known = [f.alias or name for name, f in model.model_fields.items()]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key; {hint}expected one of: {', '.join(known)}"
    if err["type"] == "missing":
        return "required key is missing"
    # Pydantic says "tuple" where the file has a YAML list.
    msg = msg.replace("a valid tuple", "a list")
    if "input" in err and err["type"] != "value_error":
        # Say what was found as well as what was expected.
        return f"{msg}, got {_short(err['input'])}"
    return msg


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_config(text: str, path: str = "feeds.yaml") -> Config:
    """Validate feeds.yaml text; raise ConfigError listing every problem with its line."""
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError([f"{where}: YAML syntax error: {e.problem or e}"]) from e
    except YAMLError as e:
        # ReaderError (a NUL or other unreadable character) and the like carry no mark.
        raise ConfigError([f"{path}: not a YAML file: {e}"]) from e
    if doc is None:
        # Empty, blank or only comments: what a truncating save leaves for a moment, never
        # a configuration anyone means (it would remove every feed and topic).
        raise ConfigError([f"{path}:1:1: the file is empty (it needs feeds: and topics:)"])
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}:1:1: the file must be a mapping with feeds: and topics:"])
    found: list[tuple[tuple[int, int], str]] = []

    def add(loc: tuple[str | int, ...], message: str) -> None:
        pos = _position(doc, loc)
        where = f"{path}:{pos[0]}:{pos[1]}" if pos else path
        topic = _topic_name(doc, loc)
        found.append((pos or (0, 0), f"{where}: {_field_path(loc)}{topic}: {message}"))

    duplicates = _raw_duplicates(doc)
    for dup in duplicates:
        add(dup.loc, str(dup))
    try:
        config = Config.model_validate(doc)
    except ValidationError as e:
        for err in e.errors():
            if isinstance(err.get("ctx", {}).get("error"), _DuplicateError):
                continue  # already reported from the raw document
            loc = tuple(err["loc"])
            add(loc, _message(err, loc))
    else:
        if not duplicates:
            return config
    # In file order, so the admin can work through them top to bottom.
    found.sort(key=lambda f: f[0])
    raise ConfigError([line for _, line in found])


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a feeds.yaml file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{p}: cannot read: {e}"]) from e
    return parse_config(text, str(p))


def database_url(config: Config, config_path: str | os.PathLike[str]) -> str:
    """The database URL to use: the environment wins, relative SQLite paths follow feeds.yaml."""
    url = os.environ.get(DATABASE_URL_ENV) or config.settings.database_url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        base = Path(config_path).resolve().parent
        url = prefix + str(base / url[len(prefix) :])
    return url
