"""Prometheus metrics: what the poller and the web layer count, and the ``/metrics`` text.

Counted in the process that does the work (prometheus_client's default registry)::

    aggregator_polls_total{status}                  polls by outcome: ok, not_modified, error
    aggregator_poll_duration_seconds                one poll, waiting for a free slot included
    aggregator_pushes_total{status}                 bodies a WebSub hub pushed, by outcome
    aggregator_items_ingested_total{action}         entries stored: new, updated
    aggregator_dedup_merges_total                   new entries that joined an existing story
    aggregator_tags_total{topic}                    topic tags given to stored entries
    aggregator_http_request_duration_seconds{...}   web requests by route template, method, status

Read from the store at each scrape, so every process reports the same, whoever polled::

    aggregator_queue_lag_seconds                    now minus the due time of the most overdue feed
    aggregator_store_up                             1 when the store answered the scrape

Per-process by default: each process counts its own work and a web process's ``/metrics``
shows that process only (with ``aggregator serve``, poller and web are one process). For
several processes on one host (``aggregator worker`` x N + ``aggregator web`` x M), set
``PROMETHEUS_MULTIPROC_DIR`` to one empty directory in the environment of all of them
before they start: counters are then kept in files there and every web process's
``/metrics`` sums all processes (prometheus_client's multiprocess mode). Across hosts,
scrape each host's web process and sum in Prometheus.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from datetime import timedelta
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .types import EntryIntent, PollResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

POLLS = Counter("aggregator_polls", "Feed polls by outcome", ["status"])
POLL_SECONDS = Histogram(
    "aggregator_poll_duration_seconds",
    "Time of one poll: waiting for a host/global slot, fetch, parse, dedup, tag and save",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PUSHES = Counter("aggregator_pushes", "Feed bodies pushed by a WebSub hub, by outcome", ["status"])
ITEMS = Counter("aggregator_items_ingested", "Entries stored, new or updated", ["action"])
MERGES = Counter(
    "aggregator_dedup_merges", "New entries that joined an existing story (same URL or near-dup)"
)
TAGS = Counter("aggregator_tags", "Topic tags given to stored entries", ["topic"])
REQUEST_SECONDS = Histogram(
    "aggregator_http_request_duration_seconds",
    "Web requests by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


def record_poll(result: PollResult, seconds: float, *, pushed: bool = False) -> None:
    (PUSHES if pushed else POLLS).labels(result.status).inc()
    if not pushed:
        POLL_SECONDS.observe(seconds)
    if result.new:
        ITEMS.labels("new").inc(result.new)
    if result.updated:
        ITEMS.labels("updated").inc(result.updated)
    if result.merged:
        MERGES.inc(result.merged)


def tag_counts(intents: Iterable[EntryIntent]) -> dict[str, int]:
    """Entries per topic among ``intents``: what ``record_tags`` adds."""
    counts: dict[str, int] = {}
    for intent in intents:
        for tag in intent.tags:
            counts[tag.topic] = counts.get(tag.topic, 0) + 1
    return counts


def record_tags(counts: Mapping[str, int]) -> None:
    """Add ``tag_counts`` of a poll (made in this process or an ingest worker)."""
    for topic, n in counts.items():
        TAGS.labels(topic).inc(n)


# Exact paths keep their own label; anything else is folded into a template, so a scan of
# random URLs cannot create a series per URL.
_EXACT = frozenset(
    {
        "/",
        "/topics",
        "/topics.opml",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/login",
        "/logout",
        "/websub/hub",
        "/stories.rss",
        "/stories.atom",
        "/stories.json",
    }
)
_FORMATS = frozenset({"rss", "atom", "json"})


def route_label(path: str) -> str:
    """The route template a request path falls under (``/topics/{slug}.rss``), or ``other``."""
    if path in _EXACT:
        return path
    if path == "/admin" or path.startswith("/admin/"):
        return "/admin"
    if path.startswith("/websub/callback/"):
        return "/websub/callback/{id}"
    for prefix, name in (("/topics/", "{slug}"), ("/places/", "{code}")):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if "/" in rest:
                return "other"
            stem, dot, fmt = rest.rpartition(".")
            if dot and stem:
                return f"{prefix}{name}.{fmt if fmt in _FORMATS else '{fmt}'}"
            return f"{prefix}{name}" if prefix == "/topics/" else "other"
    return "other"


class RequestMetrics:
    """ASGI middleware timing every HTTP request, hot-path answers included (outermost)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            observe_request(scope["path"], scope["method"], status, time.perf_counter() - t0)


_children: dict[tuple[str, str, int], Any] = {}


def observe_request(path: str, method: str, status: int, seconds: float) -> None:
    """Count one web request under its route template (the hot path calls this directly)."""
    key = (path, method, status)
    child = _children.get(key)
    if child is None:
        # Resolving labels takes a lock and string work; feed readers repeat a few URLs.
        if len(_children) >= 4096:
            _children.clear()
        child = _children[key] = REQUEST_SECONDS.labels(route_label(path), method, str(status))
    child.observe(seconds)


class _StoreGauges(Collector):
    def __init__(self, lag: timedelta | None) -> None:
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("aggregator_store_up", "1 when the store answered this scrape")
        up.add_metric([], 0 if self.lag is None else 1)
        yield up
        if self.lag is not None:
            lag = GaugeMetricFamily(
                "aggregator_queue_lag_seconds",
                "Now minus the due time of the most overdue feed (0: none overdue)",
            )
            lag.add_metric([], self.lag.total_seconds())
            yield lag


def exposition(queue_lag: timedelta | None) -> bytes:
    """The /metrics body: this process's (or, in multiprocess mode, this host's) counters,
    then the store's gauges (``queue_lag`` None: the store did not answer)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    store = CollectorRegistry()
    store.register(_StoreGauges(queue_lag))
    return generate_latest(registry) + generate_latest(store)
