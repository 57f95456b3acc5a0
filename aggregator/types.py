"""Plain typed values that pass between pipeline stages.

Frozen dataclasses for domain objects, NamedTuples for stage outputs. ORM rows,
``FeedParserDict`` and ``httpx.Response`` never leave their own module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol


class Fetched(NamedTuple):
    """What fetch.py returns for a 200 response."""

    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int
    content: bytes
    headers: dict[str, str]  # lower-cased names
    etag: str | None
    last_modified: str | None
    elapsed_ms: int
    moved_to: str | None = None  # where a chain of 301/308 led, to poll from now on


class Enclosure(NamedTuple):
    url: str
    type: str | None
    length: int | None


@dataclass(frozen=True)
class ParsedEntry:
    """One feed item, normalised. Dates are timezone-aware UTC."""

    guid: str | None  # <guid>, <id>, JSON Feed "id"; None when the feed gives none
    link: str | None  # absolute URL as given by the feed (not yet canonicalised)
    title: str  # plain text
    summary_html: str  # sanitised HTML
    content_html: str  # sanitised HTML; may equal summary_html when the feed has only one
    text: str  # plain text of content (or summary), whitespace collapsed
    authors: tuple[str, ...]
    published: datetime
    updated: datetime
    date_from_fetch: bool  # True when the feed gave no date and we used the fetch time
    categories: tuple[str, ...]  # the item's own categories, as given
    enclosures: tuple[Enclosure, ...] = ()
    orig_link: str | None = None  # feedburner:origLink or similar, when the feed gives one
    # The item's language (language.detect_language, the feed's declared one as fallback),
    # when the parser process already worked it out (pipeline.prepare): the tagger then
    # need not, in the poller process. ``language_known`` False: not worked out yet.
    language: str | None = None
    language_known: bool = False


class FeedHints(NamedTuple):
    """What a feed body says about when to poll it (RSS ttl, sy:update*, skip*)."""

    ttl: timedelta | None = None  # RSS <ttl>
    update_period: timedelta | None = None  # sy:updatePeriod / sy:updateFrequency
    skip_hours: tuple[int, ...] = ()  # UTC hours 0-23 not to poll in (<skipHours>)
    skip_days: tuple[int, ...] = ()  # weekdays, Monday = 0, not to poll on (<skipDays>)
    hub: str | None = None  # WebSub: <link rel="hub">, JSON Feed "hubs", or a Link header
    self_url: str | None = None  # WebSub: rel="self", the topic to subscribe to


class ParsedFeed(NamedTuple):
    """What parse.py returns."""

    title: str
    link: str | None
    language: str | None
    entries: list[ParsedEntry]
    warnings: list[str]  # entries skipped, survivable bozo kinds
    hints: FeedHints = FeedHints()


class TopicTag(NamedTuple):
    """A topic given to an entry, with why it was given."""

    topic: str  # topic slug
    reason: str  # e.g. 'category "foreign relations"', 'keyword "embassy" in title'


CORRECTED = "correction by an admin"


def with_corrections(
    tags: Iterable[TopicTag], corrections: Mapping[str, bool], keep: Iterable[str] | None = None
) -> tuple[TopicTag, ...]:
    """``tags`` with admins' corrections applied over them (those of topics in ``keep``).

    A correction wins over every rule and the classifier: an entry an admin took out of a
    topic stays out, one put in stays in, whatever its text says after an edit.
    """
    chosen = None if keep is None else set(keep)
    out = {t.topic: t for t in tags}
    for topic, inside in corrections.items():
        if chosen is not None and topic not in chosen:
            continue
        if inside:
            out[topic] = TopicTag(topic, CORRECTED)
        else:
            out.pop(topic, None)
    return tuple(out.values())


class Fingerprint(NamedTuple):
    """What near-duplicate matching keeps of an entry (aggregator/neardup.py)."""

    features: tuple[int, ...]  # sorted 32-bit hashes of weighted title + lede words
    title: tuple[str, ...]  # sorted folded title words
    short: bool  # no text beyond the title
    host: str | None  # host of the entry's link
    published: datetime
    buckets: tuple[int, ...] = ()  # LSH bucket keys; empty when read back from the store


class NearCandidate(NamedTuple):
    """A stored entry that shares an LSH bucket with a new one."""

    entry_id: int
    story_id: int
    feed_id: int
    fingerprint: Fingerprint


class EventSignature(NamedTuple):
    """What event matching keeps of an entry (aggregator/events.py)."""

    published: datetime
    vector: bytes | None  # float16 unit sentence embedding; None without a model
    terms: tuple[str, ...]  # names and numbers
    title: tuple[str, ...]  # headline terms


class EventCandidate(NamedTuple):
    """A stored entry of an event active around a new story's date."""

    entry_id: int
    story_id: int
    feed_id: int
    event_id: int  # the event's lead story
    event_first: datetime  # its first story's date
    signature: EventSignature


class EventMember(NamedTuple):
    """One story of an event, as ``aggregator stories explain`` shows it."""

    uid: str
    published: datetime
    reason: str | None  # None: the lead (the event's first story)
    entries: tuple[ClusterEntry, ...]


class EventDecider(Protocol):
    """Picks the event a new story joins (aggregator/events.py ``EventMatcher``)."""

    @property
    def window(self) -> timedelta: ...

    def signatures(self, entries: Sequence[ParsedEntry]) -> list[EventSignature]: ...

    def choose(
        self,
        new: EventSignature,
        story_id: int,
        feed_id: int,
        candidates: Sequence[EventCandidate],
    ) -> tuple[int, Any] | None: ...


class StoryMatcher(Protocol):
    """Picks the story a new entry joins among stored near-duplicate candidates."""

    @property
    def window(self) -> timedelta: ...

    def choose(
        self, new: Fingerprint, feed_id: int, candidates: Sequence[NearCandidate]
    ) -> int | None: ...


EntryAction = Literal["new", "updated", "unchanged"]


@dataclass(frozen=True)
class EntryIntent:
    """What dedup decided for one parsed entry of one feed."""

    identity: str  # the entry's identity within its feed
    content_hash: str
    canonical_url: str | None
    action: EntryAction
    entry: ParsedEntry
    tags: tuple[TopicTag, ...] = field(default=())
    language: str | None = None  # detected by the tagger (ISO 639-1), None if unknown
    fingerprint: Fingerprint | None = None  # for near-duplicate stories; None: no words


@dataclass(frozen=True)
class FeedContext:
    """What the tagger knows of the feed an item came from."""

    tags: tuple[str, ...] = ()
    title: str = ""
    language: str | None = None  # as the feed declares it (often wrong)
    url: str = ""  # as feeds.yaml lists it


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored, with its feed: what re-tagging and explanations start from."""

    id: int
    entry: ParsedEntry
    feed: FeedContext
    feed_url: str
    language: str | None
    tags: tuple[TopicTag, ...]
    content_hash: str = ""  # what its tags were computed from
    story_uid: str = ""  # the published item is urn:aggregator:story:{story_uid}
    corrections: Mapping[str, bool] = field(default_factory=dict)  # admins': topic -> in


class PollCounts(NamedTuple):
    new: int
    updated: int
    unchanged: int
    merged: int = 0  # new entries that joined an existing story rather than starting one


PollStatus = Literal["ok", "not_modified", "error"]


class PollResult(NamedTuple):
    """The recorded outcome of one poll of one feed."""

    feed_url: str
    status: PollStatus
    http_status: int | None
    error: str | None
    new: int
    updated: int
    unchanged: int
    elapsed_ms: int
    # What the feed body advertised for WebSub (hub URL, its rel="self" topic), if read.
    hub: str | None = None
    topic: str | None = None
    merged: int = 0  # of ``new``: entries that joined an existing story (dedup)
    tag_ms: int = 0  # of the poll's time: tagging (topic rules, classifier, language)


@dataclass(frozen=True)
class StorySource:
    """One entry of a story, as published: which feed carried it and where."""

    feed_title: str
    feed_url: str
    title: str
    link: str | None


@dataclass(frozen=True)
class StoryItem:
    """A story as the publisher sees it: one item in a topic feed."""

    uid: str  # stable forever; the published item id is derived from it
    title: str
    link: str | None
    summary_html: str
    content_html: str
    text: str
    authors: tuple[str, ...]
    published: datetime
    updated: datetime
    topics: tuple[str, ...]
    categories: tuple[str, ...]
    enclosures: tuple[Enclosure, ...]
    sources: tuple[StorySource, ...]  # the first is the one headline and link come from


class ClusterEntry(NamedTuple):
    """One entry of a story, as an admin reviewing merges sees it."""

    entry_id: int
    feed_url: str
    feed_title: str
    title: str
    link: str | None
    published: datetime


class StoryCluster(NamedTuple):
    """A story and every entry in it (``aggregator stories``)."""

    uid: str
    published: datetime
    entries: tuple[ClusterEntry, ...]  # first seen first: the first one leads
    split_from: str | None  # uid of the story an admin split this one off, if any


@dataclass(frozen=True)
class TopicInfo:
    slug: str
    name: str
    description: str


class FeedSpec(NamedTuple):
    """A feed as configured, the part the store keeps (from feeds.yaml)."""

    url: str
    title: str | None
    tags: tuple[str, ...]
    enabled: bool


class FeedState(NamedTuple):
    """What a poll needs to know about a feed from the store."""

    url: str
    title: str
    tags: tuple[str, ...]
    etag: str | None
    last_modified: str | None
    consecutive_errors: int
    next_poll_at: datetime | None
    moved_to: str | None = None  # poll this URL instead of ``url`` (a 301/308 said so)
    disabled_reason: str | None = None  # set by a 410 Gone: not polled
    hints: dict[str, Any] | None = None  # schedule hints read from the last feed body

    @property
    def fetch_url(self) -> str:
        return self.moved_to or self.url


class Lease(NamedTuple):
    """A feed a worker has claimed and not yet saved (storage/leases.py)."""

    url: str
    owner: str  # host:pid:random of the worker (aggregator/worker.py worker_id)
    until: datetime


class StoreCheck(NamedTuple):
    """Row counts of the tables a poll writes, and what disagrees between them."""

    counts: dict[str, int]
    problems: tuple[str, ...]  # empty when the store is consistent


class FeedHealth(NamedTuple):
    url: str
    title: str
    enabled: bool
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_status: str | None
    last_http_status: int | None
    last_error: str | None
    consecutive_errors: int
    next_poll_at: datetime | None
    entries: int
    items_per_day: float  # new entries per day over the last 7 days
    moved_to: str | None = None
    disabled_reason: str | None = None
    id: int | None = None  # the feed's row id: the admin API names feeds by it


class PollSave(NamedTuple):
    """Everything one poll writes, saved in one transaction."""

    result: PollResult
    started_at: datetime
    intents: tuple[EntryIntent, ...] = ()
    etag: str | None = None
    last_modified: str | None = None
    feed_title: str | None = None  # the feed's own title, when it was parsed
    site_url: str | None = None
    next_poll_at: datetime | None = None
    feed_language: str | None = None  # the feed's own <language>, when it was parsed
    moved_to: str | None = None  # a permanent redirect's target, to poll from now on
    disabled_reason: str | None = None  # a 410: stop polling the feed
    hints: dict[str, Any] | None = None  # schedule hints from the body (None: keep stored)
    matcher: StoryMatcher | None = None  # near-duplicate stories; None: canonical URL only
    events: EventDecider | None = None  # coverage of one event; None: every story its own


@dataclass(frozen=True)
class PushSubscription:
    """Our WebSub subscription to a feed's hub (aggregator/subscriber.py)."""

    feed_url: str
    callback_id: str  # the random last segment of our callback URL
    hub: str
    topic: str
    secret: str
    state: str  # pending, active, unsubscribing, denied
    lease_seconds: int | None
    requested_at: datetime
    expires_at: datetime | None = None
    last_push_at: datetime | None = None
    last_error: str | None = None


class TopicActivity(NamedTuple):
    """How busy each topic is, for the pages: stories a day and its newest arrival."""

    per_day: dict[str, dict[date, int]]  # topic -> UTC day -> stories first published then
    last_update: dict[str, datetime]  # topic -> when its newest entry arrived


class PollMark(NamedTuple):
    """One past poll of a feed, for the admin page's timeline."""

    started_at: datetime
    status: str  # ok, not_modified, error
    http_status: int | None
