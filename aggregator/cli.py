"""The ``aggregator`` command line (typer + rich).

aggregator validate            check feeds.yaml, print every error, exit 1 if any
aggregator poll --once         poll every enabled feed now, print a result table
aggregator poll                poll on schedule, forever (a worker without the web server)
aggregator serve               poll on schedule and serve the topic feeds
aggregator worker              poll due feeds claimed with leases (one of several processes)
aggregator migrate             create or upgrade the database schema, then exit
aggregator web [--processes N] serve only (= serve --no-poll), one of several web processes
aggregator feeds add|remove|list|enable|disable   edit the feed list (comments kept)
aggregator topics list         the topics and their rules
aggregator retag [--topic S]   re-apply the current topics to stored items, publish changes
aggregator status [--json]     feed health: last poll, errors, next poll, items/day
aggregator prune [--dry-run]   prune entries past `retention:`, keep their tombstones
aggregator explain ITEM        why an item has its tags (stored reasons, today's verdicts)
aggregator opml import|export  the feed list as OPML
aggregator stories --since 1d  the largest stories and their sources (what merged)
aggregator stories split STORY ENTRY...   move entries off a wrongly merged story
aggregator stories split STORY            take a story out of the event it wrongly joined
aggregator stories join STORY STORY       make two stories' events one
aggregator stories explain STORY          an event's stories and why each joined
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from ruamel.yaml.comments import CommentedMap

from storage import Repository, open_repository

from . import discover, feeds_file, logs, opml, retention
from .admin_stories import story_uid
from .arenas import limit_malloc_arenas
from .collector import pace_collector
from .config import (
    Config,
    FeedConfig,
    approx_duration,
    database_url,
    format_duration,
    load_config,
    parse_duration,
)
from .corrections import CorrectionError, correct
from .exceptions import AggregatorError, ConfigEditError, ConfigError, StoryError
from .explain import explain
from .retag import retag
from .service import Aggregator, fetch_limits, next_interval
from .types import FeedHealth, PollResult

if TYPE_CHECKING:
    from starlette.applications import Starlette

CONFIG_ENV = "AGGREGATOR_CONFIG"

app = typer.Typer(
    help="RSS/Atom/JSON Feed aggregator: poll feeds, deduplicate, tag, republish topic feeds.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar=CONFIG_ENV, help="Path to feeds.yaml.", show_default=True
    ),
]


def _setup_logging(verbose: bool = False) -> None:
    logs.setup(verbose)


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """``1 feed``, ``2 feeds``, ``0 feeds``: the count and the noun that agrees with it."""
    return f"{n} {singular if n == 1 else (plural_form or singular + 's')}"


def _print_table(table: Table) -> None:
    """A table that fits the terminal, or one tab-separated record per line when piped.

    Piped output is for grep, cut and scripts: a header line of column names, then each row
    on one line with the markup stripped and a cell's own line breaks shown as ``; ``.
    Wrapping a table at the 80 columns rich assumes off a terminal folds URLs over lines.
    """
    if console.is_terminal:
        console.print(table)
        return

    def plain(cell: object) -> str:
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
        return "; ".join(line.strip() for line in text.splitlines() if line.strip())

    columns = [list(c.cells) for c in table.columns]
    lines = ["\t".join(plain(c.header) for c in table.columns)]
    for row in zip(*columns, strict=True):
        lines.append("\t".join(plain(cell) for cell in row))
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _load(config: Path) -> Aggregator:
    try:
        return Aggregator.from_file(config)
    except ConfigError as e:
        err_console.print(f"[red]{len(e.errors)} error(s) in {config}; not starting:[/red]")
        for line in e.errors:
            err_console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from e
    except AggregatorError as e:
        err_console.print(f"[red]cannot start:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e


@app.command()
def validate(config: ConfigOption = Path("feeds.yaml")) -> None:
    """Check feeds.yaml and print every problem with its line; exit 1 if there is any."""
    try:
        cfg = load_config(config)
    except ConfigError as e:
        for line in e.errors:
            err_console.print(line, highlight=False, markup=False, soft_wrap=True)
        err_console.print(f"[red]{len(e.errors)} error(s)[/red]")
        raise typer.Exit(1) from e
    console.print(
        f"[green]ok[/green]: {config}: {plural(len(cfg.feeds), 'feed')} "
        f"({sum(f.enabled for f in cfg.feeds)} enabled), {plural(len(cfg.topics), 'topic')}"
    )


def _results_table(results: list[PollResult]) -> Table:
    table = Table(title="Poll results")
    for col in ("feed", "status", "http", "new", "updated", "unchanged", "ms", "error"):
        table.add_column(col, overflow="fold")
    colours = {"ok": "green", "not_modified": "cyan", "error": "red"}
    for r in sorted(results, key=lambda r: (r.status != "error", r.feed_url)):
        # Masked like the log lines: this output is pasted into tickets and chat as well.
        table.add_row(
            escape(logs.redact(r.feed_url)),
            f"[{colours[r.status]}]{r.status}[/]",
            str(r.http_status or ""),
            str(r.new),
            str(r.updated),
            str(r.unchanged),
            str(r.elapsed_ms),
            escape(logs.redact(r.error or "")),
        )
    return table


@app.command()
def poll(
    config: ConfigOption = Path("feeds.yaml"),
    once: Annotated[bool, typer.Option("--once", help="Poll every feed now, then exit.")] = False,
    feed: Annotated[
        list[str] | None, typer.Option("--feed", help="Only this feed URL (repeatable).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Poll feeds: once now with a result table (--once), or on schedule forever."""
    _setup_logging(verbose)
    agg = _load(config)
    try:
        unknown = [u for u in feed or [] if agg.config.feed(u) is None]
        if unknown:
            # Polled, it would stay in the store as a feed feeds.yaml does not list.
            for u in unknown:
                err_console.print(
                    f"[red]error:[/red] {u} is not in {config}; add it first with "
                    f"`aggregator feeds add {u}`",
                    highlight=False,
                )
            raise typer.Exit(2)
        if once or feed:
            urls = feed or [f.url for f in agg.enabled_feeds()]
            with Progress(
                TextColumn("polling"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            ) as progress:
                task = progress.add_task("poll", total=len(urls))
                results, stopped = asyncio.run(
                    _poll_once(agg, urls, lambda _r: progress.advance(task))
                )
            _print_table(_results_table(results))
            failed = sum(r.status == "error" for r in results)
            console.print(f"{plural(len(results), 'feed')} polled, {failed} failed")
            if stopped:
                err_console.print(
                    f"stopped by a signal: {len(urls) - len(results)} feed(s) not polled"
                )
                raise typer.Exit(EXIT_STOPPED)
            if failed:
                raise typer.Exit(EXIT_FAILED)  # cron and scripts can tell
        else:
            asyncio.run(_poll_forever(agg))
    finally:
        agg.close()


log = logging.getLogger("aggregator.cli")

# `poll --once` exit codes: some feed failed; stopped by SIGTERM/SIGINT (128 + 15).
EXIT_FAILED = 1
EXIT_STOPPED = 143


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (instead of dying at once, as Python would)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _poll_once(
    agg: Aggregator, urls: list[str], on_done: Callable[[PollResult], None]
) -> tuple[list[PollResult], bool]:
    """The results, and whether a signal stopped it: no new poll is started then, and the
    polls in progress finish (each bounded by fetch_timeout) and are saved."""
    stop = _stop_on_signals()
    try:
        return await agg.poll_all(urls, on_done, stop), stop.is_set()
    finally:
        await agg.stop()


async def _poll_forever(agg: Aggregator) -> None:
    stop = _stop_on_signals()
    agg.start_polling()
    agg.start_watching()
    try:
        await stop.wait()
        log.info("stopping: polls in progress finish first")
    finally:
        await agg.stop()


@app.command()
def serve(
    config: ConfigOption = Path("feeds.yaml"),
    host: Annotated[str | None, typer.Option(help="Listen address (default: settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: settings).")] = None,
    no_poll: Annotated[
        bool, typer.Option("--no-poll", help="Serve only; leave polling to workers.")
    ] = False,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            min=1,
            help="Web processes sharing the port (with --no-poll only; one per core).",
        ),
    ] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True,
) -> None:
    """Poll feeds on schedule and serve the topic feeds over HTTP."""
    import uvicorn

    from .web import create_app

    if processes > 1 and not no_poll:
        # Each process would run its own scheduler: every feed polled N times.
        err_console.print("--processes needs --no-poll (or `aggregator web`); not starting")
        raise typer.Exit(2)
    _setup_logging(verbose)
    agg = _load(config)
    s = agg.config.settings
    host, port = host or s.host, port or s.port
    console.print(
        f"serving {len(agg.config.topics)} topics on http://{host}:{port}/ "
        f"({'not polling' if no_poll else f'polling {len(agg.enabled_feeds())} feeds'}"
        f"{f', {processes} processes' if processes > 1 else ''})"
    )
    from .hot_protocol import HotHttpProtocol

    run = functools.partial(
        uvicorn.run,
        host=host,
        port=port,
        http=HotHttpProtocol,
        log_level="info" if verbose else "warning",
        access_log=False,
        # uvicorn's own lines go through our root handlers: one format, secrets masked.
        log_config=None,
    )
    if processes > 1:
        agg.close()  # each process opens its own (checked above: the file is valid)
        # uvicorn binds once and starts the processes from an import string; they read
        # the configuration path from the environment they inherit.
        os.environ[CONFIG_ENV] = str(config.resolve())
        os.environ[_VERBOSE_ENV] = "1" if verbose else ""
        run("aggregator.cli:web_process_app", factory=True, workers=processes)
        return
    try:
        run(create_app(agg, poll=not no_poll))
    finally:
        agg.close()


_VERBOSE_ENV = "AGGREGATOR_VERBOSE"


def web_process_app() -> Starlette:
    """One web process of ``aggregator web --processes N`` (a uvicorn app factory)."""
    from .web import create_app

    pace_collector()  # a process of its own, started by uvicorn: main() did not run here
    _setup_logging(bool(os.environ.get(_VERBOSE_ENV)))
    return create_app(_load(Path(os.environ[CONFIG_ENV])), poll=False)


@app.command()
def migrate(config: ConfigOption = Path("feeds.yaml")) -> None:
    """Create or upgrade the database schema (Alembic), then exit."""
    from storage import migrate as run_migrations

    from .config import database_url

    cfg = _load_config(config)
    url = database_url(cfg, config)
    try:
        run_migrations(url)
    except AggregatorError as e:
        err_console.print(f"[red]{escape(str(e).splitlines()[0])}[/red]")
        raise typer.Exit(1) from e
    console.print("database schema is up to date")


@app.command()
def worker(
    config: ConfigOption = Path("feeds.yaml"),
    health_port: Annotated[
        int | None,
        typer.Option(
            "--health-port",
            envvar="AGGREGATOR_HEALTH_PORT",
            help="Serve GET /healthz on this port (200 ok, 503 while the store is down).",
        ),
    ] = None,
    health_host: Annotated[
        str, typer.Option("--health-host", help="Listen address of /healthz.")
    ] = "127.0.0.1",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True,
) -> None:
    """Poll due feeds, claimed with leases, alongside any number of other workers."""
    _setup_logging(verbose)
    agg = _load(config)
    try:
        asyncio.run(_work_forever(agg, health_host, health_port))
    except KeyboardInterrupt:
        pass
    finally:
        agg.close()


async def _work_forever(agg: Aggregator, health_host: str, health_port: int | None) -> None:
    import signal

    import uvicorn

    from .worker_health import create_worker_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    w = agg.start_worker()
    agg.start_watching()
    console.print(f"worker {w.owner} polling due feeds (lease {w.lease}, up to {w.capacity})")
    health: uvicorn.Server | None = None
    served: asyncio.Task[None] | None = None
    if health_port is not None:
        # Started after our signal handlers: uvicorn hands a SIGTERM back to them on exit.
        health = uvicorn.Server(
            uvicorn.Config(
                create_worker_app(agg),
                host=health_host,
                port=health_port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        served = asyncio.create_task(health.serve())
        console.print(f"worker health on http://{health_host}:{health_port}/healthz")
    try:
        await stop.wait()
    finally:
        if health is not None and served is not None:
            health.should_exit = True
            await served
        await agg.stop()


@app.command()
def web(
    config: ConfigOption = Path("feeds.yaml"),
    host: Annotated[str | None, typer.Option(help="Listen address (default: settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default: settings).")] = None,
    processes: Annotated[
        int, typer.Option("--processes", min=1, help="Processes sharing the port (one per core).")
    ] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True,
) -> None:
    """Serve the topic feeds only; `aggregator worker` processes do the polling."""
    serve(config=config, host=host, port=port, no_poll=True, processes=processes, verbose=verbose)


# -- feed health ------------------------------------------------------------------------------


@app.command()
def status(
    config: ConfigOption = Path("feeds.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The health of every feed: last attempt and success, errors, next poll, items per day."""
    cfg = _load_config(config)
    repo = _open_store(cfg, config)
    try:
        now = datetime.now(UTC)
        health = repo.feed_health(now)
    finally:
        repo.close()
    listed = {f.url for f in cfg.feeds}
    # Feeds never polled yet are not in the store: show them too, as waiting.
    known = {h.url for h in health}
    rows = [(h, h.url in listed) for h in health] + [
        (_never_polled(f.url, f.title, f.enabled), True) for f in cfg.feeds if f.url not in known
    ]
    if as_json:
        sys.stdout.write(
            json.dumps([_health_json(h, listed_) for h, listed_ in rows], indent=2) + "\n"
        )
        return
    table = Table(title=f"Feed health ({config})")
    for col in ("feed", "status", "last attempt", "last success", "errors", "last error"):
        table.add_column(col, overflow="fold")
    table.add_column("next poll")
    table.add_column("items/day", justify="right")
    failing = disabled = 0
    for h, listed_ in rows:
        off = not h.enabled or h.disabled_reason is not None or not listed_
        bad = not off and _failing(h)
        failing += bad
        disabled += off
        state = h.last_status or "never polled"
        if h.last_http_status:
            state += f" ({h.last_http_status})"
        if h.disabled_reason:
            state += f"\ndisabled: {h.disabled_reason}"
        elif not listed_:
            state += "\nnot in feeds.yaml"
        elif not h.enabled:
            state += "\ndisabled"
        if h.moved_to:
            state += f"\nmoved to {h.moved_to}"
        table.add_row(
            escape(logs.redact(f"{h.title}\n{h.url}" if h.title else h.url)),
            escape(state),
            _ago(h.last_attempt_at, now),
            _ago(h.last_success_at, now),
            str(h.consecutive_errors),
            escape(logs.redact(h.last_error or "")),
            "-" if off else _ago(h.next_poll_at, now),
            f"{h.items_per_day:g}",
            style="red" if bad else ("dim" if off else None),
        )
    _print_table(table)
    console.print(
        f"{plural(len(rows), 'feed')}: {len(rows) - failing - disabled} ok, "
        f"[red]{failing} failing[/red], {disabled} disabled or removed",
        highlight=False,
    )


def _never_polled(url: str, title: str | None, enabled: bool) -> FeedHealth:
    return FeedHealth(
        url=url,
        title=title or "",
        enabled=enabled,
        last_attempt_at=None,
        last_success_at=None,
        last_status=None,
        last_http_status=None,
        last_error=None,
        consecutive_errors=0,
        next_poll_at=None,
        entries=0,
        items_per_day=0.0,
    )


def _failing(h: FeedHealth) -> bool:
    return h.consecutive_errors > 0 or h.last_status == "error"


def _ago(when: datetime | None, now: datetime) -> str:
    """'5m ago' / 'in 12m' / '-': what an admin reads at a glance."""
    if when is None:
        return "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    span = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            text = f"{int(span // size)}{unit}"
            break
    else:
        text = f"{int(span)}s"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _health_json(h: FeedHealth, listed: bool) -> dict[str, object]:
    def iso(when: datetime | None) -> str | None:
        if when is None:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()

    return {
        "url": h.url,
        "title": h.title,
        "listed": listed,
        "enabled": h.enabled and listed and h.disabled_reason is None,
        "failing": _failing(h),
        "last_attempt_at": iso(h.last_attempt_at),
        "last_success_at": iso(h.last_success_at),
        "last_status": h.last_status,
        "last_http_status": h.last_http_status,
        "consecutive_errors": h.consecutive_errors,
        "last_error": h.last_error,
        "next_poll_at": iso(h.next_poll_at),
        "items_per_day": h.items_per_day,
        "entries": h.entries,
        "moved_to": h.moved_to,
        "disabled_reason": h.disabled_reason,
    }


@app.command("prune")
def prune_cmd(
    config: ConfigOption = Path("feeds.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be pruned.")
    ] = False,
) -> None:
    """Prune entries past `retention:` (days, max_items); their tombstones stop re-sends."""
    cfg = _load_config(config)
    if not retention.enabled(cfg):
        console.print(f"no retention: in {config}: every entry is kept", highlight=False)
    repo = _open_store(cfg, config)
    try:
        counts = retention.prune(repo, cfg, dry_run=dry_run)
    finally:
        repo.close()
    if counts.pruned:
        table = Table(title="Would prune" if dry_run else "Pruned")
        table.add_column("feed", overflow="fold")
        table.add_column("entries", justify="right")
        for url, n in counts.pruned.items():
            table.add_row(escape(url), str(n))
        _print_table(table)
    verb = "would prune" if dry_run else "pruned"
    console.print(
        f"{verb} {plural(counts.entries, 'entry', 'entries')} from "
        f"{plural(len(counts.pruned), 'feed')}; "
        f"{plural(counts.stories_hidden, 'story', 'stories')} "
        f"{'would be' if dry_run else 'are'} no longer published; "
        f"{plural(counts.tombstones_expired, 'tombstone')} "
        f"{'would expire' if dry_run else 'expired'}, "
        f"{counts.tombstones} kept",
        highlight=False,
    )


# -- tagging -----------------------------------------------------------------------------------


@app.command("retag")
def retag_cmd(
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Only this topic (repeatable); default: all."),
    ] = None,
    config: ConfigOption = Path("feeds.yaml"),
) -> None:
    """Re-apply the current topics to every stored item (no fetching); publish the changes."""
    agg = _load(config)
    slugs = {t.slug for t in agg.config.topics}
    gone = [s for s in topic or [] if s not in slugs]
    if gone:
        stored = agg.repo.topic_counts()
        for slug in gone:
            if stored.get(slug):
                console.print(f"topic {slug!r} is not in {config}: its stored tags are removed")
            else:
                err_console.print(
                    f"[red]error:[/red] no topic {slug!r} in {config} and no stored tags for "
                    f"it (topics: {', '.join(sorted(slugs))})",
                    highlight=False,
                )
        if any(not stored.get(slug) for slug in gone):
            agg.close()
            raise typer.Exit(2)
    try:
        with Progress(
            TextColumn("re-tagging"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("retag", total=None)
            result = retag(
                agg.repo,
                agg.config,
                topic or None,
                lambda d, t: bar.update(task, completed=d, total=t),
            )
    finally:
        agg.close()
    console.print(f"{plural(result.entries, 'item')} re-tagged, {result.changed} changed")
    if result.topics:
        console.print("feeds changed: " + ", ".join(sorted(result.topics)), highlight=False)


@app.command("explain")
def explain_cmd(item: str, config: ConfigOption = Path("feeds.yaml")) -> None:
    """Why an item has its tags (ITEM: entry id, or story id urn:aggregator:story:...)."""
    agg = _load(config)
    try:
        found = explain(agg.repo, agg.tagger, item)
    finally:
        agg.close()
    if not found:
        err_console.print(f"no stored item {item!r} (an entry id or a story id)", highlight=False)
        raise typer.Exit(1)
    for e in found:
        console.print(f"[bold]{e.title}[/bold]", highlight=False)
        console.print(
            f"entry {e.entry_id} of {e.feed_url}; {e.story}; language {e.language or '?'}; "
            f"categories {', '.join(e.categories) or '-'}",
            highlight=False,
        )
        table = Table("topic", "stored reason", "with the current feeds.yaml")
        now = {v.topic: v for v in e.now}
        for key in [*now, *(k for k in e.stored if k not in now)]:
            v = now.get(key)
            verdict = "-" if v is None else (f"in: {v.reason}" if v.reason else f"out: {v.why_not}")
            if key in e.corrections:
                fixed = "in" if e.corrections[key] else "out"
                verdict = f"{fixed}: correction by an admin (rules: {verdict})"
            table.add_row(key, e.stored.get(key, ""), verdict)
        _print_table(table)


# -- editing feeds.yaml ----------------------------------------------------------------------

feeds_app = typer.Typer(help="Edit the feed list in feeds.yaml (comments and order kept).")
topics_app = typer.Typer(help="The topics defined in feeds.yaml.")
opml_app = typer.Typer(help="Import or export the feed list as OPML.")
app.add_typer(feeds_app, name="feeds")
app.add_typer(topics_app, name="topics")
app.add_typer(opml_app, name="opml")
stories_app = typer.Typer(help="Stories: what merged, and splitting a wrong merge.")
app.add_typer(stories_app, name="stories")
tags_app = typer.Typer(help="Correct an item's topics: corrections win over rules and the model.")
app.add_typer(tags_app, name="tags")


def _edit(
    config: Path, change: Callable[[CommentedMap], object], done: str | Callable[[], str]
) -> Config:
    """Apply an edit through the validated, atomic path; report and exit 1 if refused."""
    try:
        cfg, _ = feeds_file.edit(config, change)
    except ConfigEditError as e:
        err_console.print(f"[red]error:[/red] {e.errors[0]}", highlight=False)
        raise typer.Exit(1) from e
    except ConfigError as e:
        err_console.print(f"[red]refused; {config} is unchanged:[/red]", highlight=False)
        for line in e.errors:
            err_console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from e
    what = done if isinstance(done, str) else done()
    console.print(
        f"{what} ({plural(len(cfg.feeds), 'feed')}, {plural(len(cfg.topics), 'topic')})",
        highlight=False,
    )
    return cfg


def _load_config(config: Path) -> Config:
    try:
        return load_config(config)
    except ConfigError as e:
        for line in e.errors:
            err_console.print(line, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from e


def _stored_titles(cfg: Config, config: Path) -> dict[str, str]:
    """Each polled feed's own title, from the store (none if there is no store yet)."""
    url = database_url(cfg, config)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {}  # never polled: do not create a store just to export
    repo = _open_store(cfg, config)
    try:
        return {h.url: h.title for h in repo.feed_health(datetime.now(UTC)) if h.title}
    finally:
        repo.close()


def _open_store(cfg: Config, config: Path) -> Repository:
    """The store ``cfg`` names (migrated), or a one-line error and exit 1."""
    try:
        return open_repository(database_url(cfg, config))
    except AggregatorError as e:
        err_console.print(f"[red]cannot open the store:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e


@feeds_app.command("add")
def feeds_add(
    url: str,
    config: ConfigOption = Path("feeds.yaml"),
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Repeatable.")] = None,
    interval: Annotated[str | None, typer.Option(help="e.g. 15m, 2h")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it switched off.")] = False,
    find: Annotated[
        bool, typer.Option("--discover/--no-discover", help="Find the feed of a web page.")
    ] = True,
    pick: Annotated[
        str | None, typer.Option(help="Which found feed to add: its number or URL.")
    ] = None,
) -> None:
    """Add a feed to feeds.yaml; given a site's page, add the feed it links (or lists)."""
    if find:
        url = _discovered(url, config, pick)
    _edit(
        config,
        lambda d: feeds_file.add_feed(
            d, url, title=title, tags=tag or (), interval=interval, enabled=not disabled
        ),
        f"added {url}",
    )


def _discovered(url: str, config: Path, pick: str | None) -> str:
    """The feed URL to add for ``url`` (see aggregator/discover.py); exits 1 if unclear."""
    try:
        cfg = load_config(config)
    except ConfigError:
        return url  # the edit reports what is wrong with the file
    if cfg.feed(url) or not url.startswith(("http://", "https://")):
        return url  # the edit says why it is refused
    try:
        found = discover.discover_sync(url, fetch_limits(cfg))
    except AggregatorError as e:
        err_console.print(f"warning: could not check {url} ({e}); adding it as given")
        return url
    chosen = discover.choose(found, pick)
    if chosen is None:
        if found:
            err_console.print(f"{plural(len(found), 'feed')} found on {url}:", highlight=False)
            for i, f in enumerate(found, 1):
                err_console.print(f"  {i}. {f.url}  ({f.kind}) {f.title}", highlight=False)
            err_console.print("add one with --pick N (or --pick URL)", highlight=False)
        else:
            err_console.print(
                f"[red]error:[/red] no feed found on {url} (no <link rel=alternate>, none of "
                f"{', '.join(discover.COMMON_PATHS)}); --no-discover adds it as given",
                highlight=False,
            )
        raise typer.Exit(1)
    if chosen.url != url:
        console.print(f"found {chosen.url} ({chosen.kind}) {chosen.title}", highlight=False)
    return chosen.url


@feeds_app.command("remove")
def feeds_remove(url: str, config: ConfigOption = Path("feeds.yaml")) -> None:
    """Remove a feed from feeds.yaml (its stored items stay)."""
    _edit(config, lambda d: feeds_file.remove_feed(d, url), f"removed {url}")


@feeds_app.command("enable")
def feeds_enable(url: str, config: ConfigOption = Path("feeds.yaml")) -> None:
    """Switch a feed back on."""
    _edit(config, lambda d: feeds_file.set_enabled(d, url, True), f"enabled {url}")


@feeds_app.command("disable")
def feeds_disable(url: str, config: ConfigOption = Path("feeds.yaml")) -> None:
    """Stop polling a feed but keep it (and its items) listed."""
    _edit(config, lambda d: feeds_file.set_enabled(d, url, False), f"disabled {url}")


@feeds_app.command("list")
def feeds_list(
    config: ConfigOption = Path("feeds.yaml"),
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Only feeds with this tag.")
    ] = None,
) -> None:
    """The feeds in feeds.yaml with their tags, interval (and the next one, why) and state."""
    cfg = _load_config(config)
    repo = _open_store(cfg, config)
    try:
        states = repo.feed_states()
    finally:
        repo.close()
    now = datetime.now(UTC)
    table = Table(title=f"Feeds in {config}")
    for col in ("url", "title", "tags", "interval", "next interval", "enabled"):
        table.add_column(col, overflow="fold")
    shown = [f for f in cfg.feeds if tag is None or tag in f.tags]
    for f in shown:
        state = states.get(f.url)
        planned = next_interval(cfg, f, state, now)
        off = not f.enabled or (state is not None and state.disabled_reason is not None)
        table.add_row(
            escape(f.url),
            escape(f.title or ""),
            escape(", ".join(f.tags)),
            format_duration(cfg.interval_for(f).total_seconds()),
            "-" if off else f"{approx_duration(planned.delay.total_seconds())} ({planned.reason})",
            "[green]yes[/]" if f.enabled else "[red]no[/]",
        )
    _print_table(table)
    console.print(f"{plural(len(shown), 'feed')} ({sum(f.enabled for f in shown)} enabled)")


@topics_app.command("list")
def topics_list(config: ConfigOption = Path("feeds.yaml")) -> None:
    """The topics in feeds.yaml and a summary of their rules."""
    cfg = _load_config(config)
    table = Table(title=f"Topics in {config}")
    for col in ("slug", "name", "rules"):
        table.add_column(col, overflow="fold")
    for t in cfg.topics:
        rules = [
            _rule_summary(key, value)
            for key, value in t.rules.model_dump(exclude_defaults=True).items()
        ]
        table.add_row(t.slug, t.name, "\n".join(rules))
    _print_table(table)
    console.print(plural(len(cfg.topics), "topic"))


def _rule_summary(key: str, value: object) -> str:
    if isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value):
            return f"{key}: {', '.join(value)}"
        return f"{key}: {len(value)} rule(s)"
    return f"{key}: {value}"


@opml_app.command("import")
def opml_import(
    file: Annotated[Path, typer.Argument(help="An OPML file, e.g. exported from a feed reader.")],
    config: ConfigOption = Path("feeds.yaml"),
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Add to every feed.")] = None,
) -> None:
    """Add every feed of an OPML file that feeds.yaml does not have yet."""
    try:
        found = opml.parse_opml(file.read_bytes(), str(file))
    except OSError as e:
        err_console.print(f"[red]error:[/red] cannot read {file}: {e}", highlight=False)
        raise typer.Exit(1) from e
    except ConfigError as e:
        err_console.print(f"[red]error:[/red] {e.errors[0]}", highlight=False)
        raise typer.Exit(1) from e
    skipped: list[str] = []
    # Each outline on its own: one bad one is listed, the others are imported.
    good: list[tuple[opml.OpmlFeed, list[str]]] = []
    refused: list[str] = []
    for f in found:
        tags = list(dict.fromkeys([*f.tags, *(tag or [])]))
        try:
            FeedConfig.model_validate({"url": f.url, "title": f.title, "tags": tags})
        except ValidationError as e:
            why = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
            refused.append(f"{f.title or f.url!r} (xmlUrl={f.url!r}): {why}")
        else:
            good.append((f, tags))

    def change(doc: CommentedMap) -> None:
        present = {f.get("url") for f in doc.get("feeds") or []}
        for f, tags in good:
            if f.url in present:
                skipped.append(f.url)
                continue
            feeds_file.add_feed(doc, f.url, title=f.title, tags=tags)

    if good:
        _edit(
            config,
            change,
            lambda: (
                f"imported {len(good) - len(skipped)} feeds from {file}, "
                f"{len(skipped)} already present"
            ),
        )
    if refused:
        err_console.print(f"[red]refused {len(refused)} outline(s) of {file}:[/red]")
        for line in refused:
            err_console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


@opml_app.command("export")
def opml_export(
    config: ConfigOption = Path("feeds.yaml"),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write the feed list as OPML 2.0 (to stdout by default)."""
    cfg = _load_config(config)
    data = opml.render_opml(cfg.feeds, _stored_titles(cfg, config))
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        feeds_file.write_atomic(output, data.decode())
        err_console.print(f"wrote {output}", highlight=False)


@stories_app.callback(invoke_without_command=True)
def stories_list(
    ctx: typer.Context,
    config: ConfigOption = Path("feeds.yaml"),
    since: Annotated[
        str, typer.Option("--since", help="Stories first published this long ago or later.")
    ] = "1d",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 20,
) -> None:
    """The largest stories (most entries) first published since --since, with their sources."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        window = parse_duration(since)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--since") from e
    agg = _load(config)
    try:
        found = agg.repo.story_clusters(datetime.now(UTC) - window, limit)
    finally:
        agg.close()
    table = Table(title=f"Largest stories since {since} ago")
    table.add_column("story", overflow="fold")
    table.add_column("n", justify="right")
    table.add_column("entry", justify="right")
    table.add_column("source", overflow="fold")
    table.add_column("title", overflow="fold")
    for c in found:
        note = f"\n[dim]split from {c.split_from}[/]" if c.split_from else ""
        table.add_row(
            c.uid + note,
            str(len(c.entries)),
            "\n".join(str(e.entry_id) for e in c.entries),
            "\n".join(escape(e.feed_title) for e in c.entries),
            "\n".join(escape(e.title) for e in c.entries),
            end_section=True,
        )
    _print_table(table)
    console.print(
        f"{plural(len(found), 'story', 'stories')}; "
        "split one with: aggregator stories split STORY ENTRY..."
    )


@stories_app.command("split")
def stories_split(
    story: Annotated[str, typer.Argument(help="Story uid, or its item id in the feeds.")],
    entries: Annotated[
        list[int] | None,
        typer.Argument(help="Entry ids to move to a new story; none: leave the event."),
    ] = None,
    config: ConfigOption = Path("feeds.yaml"),
) -> None:
    """Move entries off a story into a new one, or (no entries) take the story out of its
    event; later polls never merge them back."""
    agg = _load(config)
    try:
        if entries:
            new_uid = agg.repo.split_story(story_uid(story), entries, datetime.now(UTC))
        else:
            left = agg.repo.split_event(story_uid(story), datetime.now(UTC))
    except StoryError as e:
        err_console.print(f"[red]not split:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from e
    finally:
        agg.close()
    if entries:
        console.print(f"split: {len(set(entries))} entries now in story {new_uid}", highlight=False)
    else:
        console.print(f"split: story {story_uid(story)} left event {left}", highlight=False)


@stories_app.command("join")
def stories_join(
    story: Annotated[str, typer.Argument(help="A story uid, or its item id in the feeds.")],
    other: Annotated[str, typer.Argument(help="A story of the other event.")],
    config: ConfigOption = Path("feeds.yaml"),
) -> None:
    """Make the events of two stories one (coverage of one event that matching missed)."""
    agg = _load(config)
    try:
        lead = agg.repo.join_events(story_uid(story), story_uid(other), datetime.now(UTC))
    except StoryError as e:
        err_console.print(f"[red]not joined:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from e
    finally:
        agg.close()
    console.print(f"joined: one event, published as story {lead}", highlight=False)


@stories_app.command("explain")
def stories_explain(
    story: Annotated[str, typer.Argument(help="A story uid, or its item id in the feeds.")],
    config: ConfigOption = Path("feeds.yaml"),
) -> None:
    """The stories of a story's event and why each joined it."""
    agg = _load(config)
    try:
        members = agg.repo.event_explained(story_uid(story))
    except StoryError as e:
        err_console.print(f"[red]{escape(str(e))}[/red]", highlight=False)
        raise typer.Exit(1) from e
    finally:
        agg.close()
    table = Table(title=f"Event of story {story_uid(story)}")
    table.add_column("story", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("title", overflow="fold")
    table.add_column("why", overflow="fold")
    for m in members:
        table.add_row(
            m.uid,
            "\n".join(escape(e.feed_title) for e in m.entries),
            "\n".join(escape(e.title) for e in m.entries),
            escape(m.reason or "lead: the event's first story"),
            end_section=True,
        )
    console.print(table)


ItemArg = Annotated[str, typer.Argument(help="An entry id, a story uid or its item id.")]
TopicArg = Annotated[str, typer.Argument(help="A topic slug of feeds.yaml.")]


def _correct(config: Path, item: str, topic: str, inside: bool | None) -> None:
    agg = _load(config)
    try:
        done = correct(agg.repo, agg.tagger, item, topic, inside)
    except CorrectionError as e:
        err_console.print(f"[red]not corrected:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from e
    finally:
        agg.close()
    what = {True: "is in", False: "is not in", None: "is left to the rules for"}[inside]
    console.print(
        f"story {done.story} ({plural(len(done.entries), 'entry', 'entries')}) {what} "
        f"{topic}; feeds changed: {', '.join(sorted(done.feeds)) or 'none'}",
        highlight=False,
    )


@tags_app.command("add")
def tags_add(item: ItemArg, topic: TopicArg, config: ConfigOption = Path("feeds.yaml")) -> None:
    """Put an item's story in a topic, whatever the rules and the model say."""
    _correct(config, item, topic, True)


@tags_app.command("remove")
def tags_remove(item: ItemArg, topic: TopicArg, config: ConfigOption = Path("feeds.yaml")) -> None:
    """Take an item's story out of a topic, whatever the rules and the model say."""
    _correct(config, item, topic, False)


@tags_app.command("reset")
def tags_reset(item: ItemArg, topic: TopicArg, config: ConfigOption = Path("feeds.yaml")) -> None:
    """Forget a correction: the rules and the model decide the topic again."""
    _correct(config, item, topic, None)


@tags_app.command("corrections")
def tags_corrections(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    config: ConfigOption = Path("feeds.yaml"),
) -> None:
    """The latest corrections, newest first."""
    cfg = _load_config(config)
    repo = _open_store(cfg, config)
    try:
        rows = repo.tag_corrections(limit)
    finally:
        repo.close()
    table = Table("when", "entry", "topic", "in", "title")
    for c in rows:
        table.add_row(
            c.made_at.strftime("%Y-%m-%d %H:%M"),
            str(c.entry_id),
            c.topic,
            "yes" if c.inside else "no",
            escape(c.title),
        )
    _print_table(table)


def main() -> None:
    limit_malloc_arenas()
    pace_collector()
    app()


def serve_main(argv: list[str] | None = None) -> None:
    """``python serve.py [options]`` is ``aggregator serve [options]``."""
    args = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    limit_malloc_arenas()
    pace_collector()
    app(["serve", *args])
