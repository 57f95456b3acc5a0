"""The admin page (issue 7): feed health, add / remove / disable feeds, a topic editor.

    GET  /admin                 the page (``?topic=slug`` loads a topic into the editor)
    POST /admin                 a form: ``do`` says what (see ACTIONS); then 303 back to
                                /admin with a note, or the page again with the errors (422)
                                or with the topic preview

Plain HTML forms, no script (the guard's CSP allows none); every form carries the CSRF
field when the admin came in with the login cookie (the guard checks it). What the forms do
is admin_ops.py, the same calls as the JSON API, so an edit is validated, written to
feeds.yaml with its comments kept, and applied to the running process.
"""

from __future__ import annotations

import asyncio
import html
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import admin_guard as guard
from . import charts, feeds_file
from .admin_ops import AdminOps, FeedRow, Preview, check_text, full_topic, topic_json
from .config import approx_duration
from .config import format_duration as span
from .exceptions import ConfigEditError, ConfigError
from .types import PollMark

ACTIONS = (
    "add-feed",
    "remove-feed",
    "enable-feed",
    "disable-feed",
    "poll-feed",
    "preview-topic",
    "save-topic",
    "remove-topic",
)
POLL_MARKS = 30  # polls in each feed's timeline ...
POLL_WINDOW = timedelta(days=7)  # ... at most this far back
TOPIC_TEMPLATE = """\
name: Climate
slug: climate
description: Climate change and energy
rules:
  keywords: [climate change, emissions]
  categories: [environment]
"""

# One readable table: rows that say their state in words and in colour (a bar on the left,
# a label), URLs that wrap at their separators, and below 48rem each row becomes a card
# whose cells name their column, so nothing scrolls sideways on a phone.
_STYLE = """
:root{--ink:#1b1f24;--muted:#57606a;--line:#d0d7de;--ok:#1a7f37;--bad:#b42318;--off:#6e7781}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:90rem;padding:0 1rem 2rem;
color:var(--ink);background:#fff}
header{display:flex;gap:1rem;align-items:center;flex-wrap:wrap;border-bottom:1px solid var(--line);
padding:.5rem 0;margin-bottom:1rem}
header h1{font-size:1.3rem;margin:0;margin-right:auto}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}h3{font-size:1rem}
a{color:#0550ae}
table{border-collapse:collapse;width:100%;font-size:.9rem}
caption{text-align:left;color:var(--muted);padding:.3rem 0}
th,td{border-bottom:1px solid var(--line);padding:.45rem .5rem;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f6f8fa;font-weight:600;
border-bottom:2px solid var(--line)}
tbody tr:nth-child(even){background:#fafbfc}
tbody tr{border-left:4px solid var(--line)}tr.good{border-left-color:var(--ok)}
tr.failing{background:#fff5f5 !important;border-left-color:var(--bad)}
tr.off{color:var(--muted);border-left-color:var(--off)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:var(--bad);font-weight:600}.ok{color:var(--ok);font-weight:600}
.why,.url{font-size:.8rem;color:var(--muted)}
.url,code{overflow-wrap:anywhere}
.polls{display:block;margin-top:.3rem}
form.inline{display:inline}
button{font:inherit;cursor:pointer;padding:.15rem .5rem;border:1px solid var(--line);
border-radius:4px;background:#f6f8fa;color:var(--ink)}
button:hover{background:#eaeef2}
input,textarea{font:inherit;max-width:100%}
textarea{width:100%;font:13px/1.4 ui-monospace,monospace}
[role=alert]{border:2px solid var(--bad);padding:.5rem;background:#fff4f4}
[role=status]{border:2px solid var(--ok);padding:.5rem;background:#f2fff2}
@media (max-width:48rem){
table.feeds thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
table.feeds,table.feeds tbody,table.feeds tr,table.feeds td{display:block;width:100%}
table.feeds tr{border:1px solid var(--line);border-left-width:4px;margin:.6rem 0;padding:.3rem}
table.feeds td{border:0;padding:.2rem .3rem}
table.feeds td[data-label]::before{content:attr(data-label) ": ";font-weight:600;color:var(--muted)}
table:not(.feeds){display:block;overflow-x:auto}
}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(value: str | None, now: datetime) -> str:
    if not value:
        return "never"
    at = datetime.fromisoformat(value)
    seconds = (at - now).total_seconds()
    mins = round(abs(seconds) / 60)
    span = f"{mins} min" if mins < 120 else f"{round(mins / 60)} h"
    rel = f"in {span}" if seconds > 0 else f"{span} ago"
    return f'<time datetime="{_e(value)}">{at:%Y-%m-%d %H:%M} UTC</time> ({rel})'


def _interval_cell(f: dict[str, Any]) -> str:
    configured = span(f["interval"])
    if not f["polling"] or f["next_interval"] is None:
        return configured
    effective, reason = approx_duration(f["next_interval"]), f["next_interval_reason"]
    if reason == "configured":
        return configured
    return f'{configured}<div class="why">next: {effective} ({_e(reason)})</div>'


def _csrf_field(request: Request) -> str:
    session = request.scope.get("state", {}).get("admin_session")
    token = guard.admin_token().token
    if not session or not token:
        return ""  # bearer requests need no CSRF token
    value = guard.csrf_token(token, session)
    return f'<input type="hidden" name="{guard.CSRF_FIELD}" value="{_e(value)}">'


def _button(request: Request, do: str, label: str, **fields: object) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items()
    )
    return (
        f'<form class="inline" method="post" action="/admin">{_csrf_field(request)}'
        f'<input type="hidden" name="do" value="{do}">{hidden}'
        f'<button type="submit">{_e(label)}</button></form>'
    )


def _wrappable(url: str) -> str:
    """The URL escaped, with a line-break opportunity after each separator (not mid-word)."""
    out = _e(url)
    for sep in ("/", ".", "?", "&amp;", "="):
        out = out.replace(sep, sep + "<wbr>")
    return out.replace("/<wbr>/<wbr>", "//<wbr>")


def _feed_rows(
    request: Request,
    rows: Sequence[FeedRow],
    polls: Mapping[str, Sequence[PollMark]],
    now: datetime,
) -> str:
    out = []
    for row in rows:
        f = row.as_json()
        cls = "failing" if row.failing else ("off" if not f["polling"] else "")
        if not cls and f["last_status"]:
            cls = "good"
        if f["disabled_reason"]:
            state = f'<span class="bad">✗ disabled: {_e(f["disabled_reason"])}</span>'
        elif not f["enabled"]:
            state = "disabled"
        elif row.failing:
            state = f'<span class="bad">✗ failing: {_e(f["last_error"] or "")}</span>'
        elif f["last_status"]:
            words = "not modified (304)" if f["last_status"] == "not_modified" else "ok"
            state = f'<span class="ok">✓ {words}</span>'
        else:
            state = "not polled yet"
        actions = []
        if f["id"] is not None:
            fid = f["id"]
            actions.append(_button(request, "poll-feed", "Poll now", id=fid))
            if f["enabled"]:
                actions.append(_button(request, "disable-feed", "Disable", id=fid))
            else:
                actions.append(_button(request, "enable-feed", "Enable", id=fid))
            actions.append(_button(request, "remove-feed", "Remove", id=fid))
        title = f["title"] or f["url"]
        out.append(
            f'<tr class="{cls}" data-url="{_e(f["url"])}">'
            f'<td>{_e(title)}<div class="url">{_wrappable(f["url"])}</div></td>'
            f'<td data-label="Tags">{_e(", ".join(f["tags"])) or "—"}</td>'
            f'<td data-label="Interval">{_interval_cell(f)}</td>'
            f'<td data-label="Last success">{_when(f["last_success"], now)}</td>'
            f'<td data-label="Errors" class="num">{f["consecutive_errors"]}</td>'
            f'<td data-label="Items/day" class="num">{f["items_per_day"]:g}</td>'
            f'<td data-label="Next poll">{_when(f["next_poll"], now) if f["polling"] else "—"}</td>'
            f'<td data-label="Status" class="state">{state}'
            f"{charts.poll_strip(polls.get(f['url'], ()))}</td>"
            f"<td>{' '.join(actions)}</td></tr>"
        )
    return "".join(out)


def _preview_html(preview: Preview) -> str:
    items = "".join(
        f"<tr><td>{_e(i.title)}</td><td>{_e(i.feed_title)}</td><td>{_e(i.reason or '')}</td>"
        f"<td>{'yes' if i.tagged_now else 'new'}</td></tr>"
        for i in preview.matches
    )
    dropped = "".join(f"<li>{_e(i.title)} ({_e(i.feed_title)})</li>" for i in preview.dropped)
    return (
        f'<section id="preview" aria-labelledby="preview-h"><h3 id="preview-h">Preview: '
        f"{len(preview.matches)} of the {preview.checked} most recent items match</h3>"
        + (
            "<table><thead><tr><th scope=col>Item</th><th scope=col>Feed</th>"
            "<th scope=col>Why</th><th scope=col>Tagged now</th></tr></thead>"
            f"<tbody>{items}</tbody></table>"
            if items
            else "<p>No recent item matches.</p>"
        )
        + (
            f"<p>Tagged now, no longer matched ({len(preview.dropped)}):</p><ul>{dropped}</ul>"
            if dropped
            else ""
        )
        + "</section>"
    )


def _yaml_text(value: Any) -> str:
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = None
    yaml.dump(value, out)
    return out.getvalue()


def routes(ops: AdminOps) -> list[BaseRoute]:
    agg = ops.agg

    async def render(
        request: Request,
        *,
        status: int = 200,
        errors: Sequence[str] = (),
        note: str = "",
        topic_text: str | None = None,
        preview: Preview | None = None,
        feed_form: dict[str, str] | None = None,
    ) -> Response:
        now = datetime.now(UTC)
        rows = await ops.feeds()
        polls = await asyncio.to_thread(agg.repo.recent_polls, POLL_MARKS, now - POLL_WINDOW)
        counts = await ops.topic_counts()
        if topic_text is None:
            chosen = agg.config.topic(request.query_params.get("topic", ""))
            topic_text = _yaml_text(topic_json(chosen)) if chosen else TOPIC_TEMPLATE
        ff = feed_form or {}
        failing = sum(r.failing for r in rows)
        csrf = _csrf_field(request)
        parts = [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Admin: feeds and topics</title><style>{_STYLE}</style></head><body>"
            '<header><h1>Admin</h1><form class="inline" method="post" action="/logout">'
            '<button type="submit">Log out</button></form> '
            '<a href="/">Public site</a></header><main>'
        ]
        if note:
            parts.append(f'<p role="status">{_e(note)}</p>')
        if errors:
            lines = "".join(f"<li><code>{_e(x)}</code></li>" for x in errors)
            parts.append(
                f'<div role="alert"><p>Refused; nothing changed:</p><ul>{lines}</ul></div>'
            )
        if agg.last_config_error:
            lines = "".join(f"<li><code>{_e(x)}</code></li>" for x in agg.last_config_error)
            parts.append(
                '<section id="config-error" role="alert"><h2>feeds.yaml was not loaded</h2>'
                "<p>The last edit of the file was refused; the server runs the previous "
                f"version. Fix these:</p><ul>{lines}</ul></section>"
            )
        failures = getattr(request.app.state, "login_failures", None)
        if failures is not None and failures.recent:
            recent = list(failures.recent)[-10:][::-1]
            items = "".join(
                f"<li>{_e(datetime.fromtimestamp(t, UTC).strftime('%Y-%m-%d %H:%M:%S'))} UTC "
                f"from <code>{_e(client)}</code> ({_e(via)})</li>"
                for t, client, via in recent
            )
            parts.append(
                '<section id="login-failures" aria-labelledby="login-failures-h">'
                f'<h2 id="login-failures-h">Failed logins ({len(failures.recent)} recent)</h2>'
                f"<ul>{items}</ul></section>"
            )
        parts.append(
            f'<section aria-labelledby="feeds-h"><h2 id="feeds-h">Feeds ({len(rows)}, '
            f'{failing} failing)</h2><table class="feeds"><caption>Feed health, from '
            f"<code>{_e(agg.config_path)}</code></caption><thead><tr>"
            "<th scope=col>Feed</th><th scope=col>Tags</th><th scope=col>Interval</th>"
            "<th scope=col>Last success</th>"
            "<th scope=col>Errors</th><th scope=col>Items/day</th><th scope=col>Next poll</th>"
            "<th scope=col>Status</th><th scope=col>Actions</th></tr></thead>"
            f"<tbody>{_feed_rows(request, rows, polls, now)}</tbody></table>"
            '<h3>Add a feed</h3><form method="post" action="/admin" id="add-feed">'
            f'{csrf}<input type="hidden" name="do" value="add-feed">'
            f'<p><label>Feed URL <input type="url" name="url" required size="60" '
            f'value="{_e(ff.get("url", ""))}"></label></p>'
            f'<p><label>Tags (comma-separated) <input name="tags" '
            f'value="{_e(ff.get("tags", ""))}"></label> '
            f'<label>Interval <input name="interval" size="6" '
            f'placeholder="{span(agg.config.settings.default_interval.total_seconds())}" '
            f'value="{_e(ff.get("interval", ""))}"></label></p>'
            '<p><button type="submit">Add feed</button></p></form></section>'
        )
        topic_links = "".join(
            f'<li><a href="/admin?topic={_e(t.slug)}#topic-editor">{_e(t.name)}</a> '
            f"({charts.stories(counts.get(t.slug, 0))}) "
            f'<a href="/topics/{_e(t.slug)}">page</a></li>'
            for t in agg.config.topics
        )
        parts.append(
            f'<section aria-labelledby="topics-h"><h2 id="topics-h">Topics</h2>'
            f"<ul>{topic_links}</ul>"
            '<h3 id="topic-editor">Topic editor</h3><p>One topic in feeds.yaml form '
            "(see docs/feeds-yaml.md). <em>Preview</em> shows which recent items it would "
            "match without saving; <em>Save</em> writes it to feeds.yaml (a topic with an "
            "existing slug is replaced) and re-tags stored items.</p>"
            f'<form method="post" action="/admin">{csrf}'
            '<p><label for="topic-yaml">Topic (YAML)</label>'
            f'<textarea id="topic-yaml" name="topic" rows="12">{_e(topic_text)}</textarea></p>'
            '<p><button type="submit" name="do" value="preview-topic">Preview</button> '
            '<button type="submit" name="do" value="save-topic">Save</button> '
            '<button type="submit" name="do" value="remove-topic">Remove topic</button></p>'
            "</form>"
        )
        if preview is not None:
            parts.append(_preview_html(preview))
        parts.append("</section></main></body></html>")
        return HTMLResponse("".join(parts), status_code=status)

    def done(note: str) -> Response:
        return RedirectResponse("/admin?" + urlencode({"note": note}), status_code=303)

    async def page(request: Request) -> Response:
        return await render(request, note=request.query_params.get("note", "")[:300])

    async def submit(request: Request) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        do = fields.get("do", "")
        try:
            check_text(fields)
            if do not in ACTIONS:
                raise ConfigEditError(
                    f"unknown action {do!r}; expected one of {', '.join(ACTIONS)}"
                )
            if do.endswith("-feed") and do != "add-feed":
                return await feed_action(request, do, fields)
            if do == "add-feed":
                return await add_feed(fields)
            return await topic_action(request, do, fields.get("topic", ""))
        except ConfigEditError as e:
            return await render(
                request,
                status=e.status,
                errors=e.errors,
                topic_text=fields.get("topic"),
                feed_form=fields if do == "add-feed" else None,
            )
        except ConfigError as e:
            return await render(
                request,
                status=422,
                errors=e.errors,
                topic_text=fields.get("topic"),
                feed_form=fields if do == "add-feed" else None,
            )

    async def add_feed(fields: dict[str, str]) -> Response:
        url = fields.get("url", "").strip()
        tags = [t.strip() for t in fields.get("tags", "").split(",") if t.strip()]
        interval = fields.get("interval", "").strip() or None
        await ops.edit(lambda d: feeds_file.add_feed(d, url, tags=tags, interval=interval))
        ops.poll_soon(url)
        return done(f"Added {url}; polling it now.")

    async def feed_action(request: Request, do: str, fields: dict[str, str]) -> Response:
        raw = fields.get("id", "")
        row = (
            await ops.feed(int(raw)) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
        )
        if row is None:
            raise ConfigEditError(f"no feed {raw!r} in feeds.yaml (reload the page)", status=404)
        url = row.config.url
        if do == "remove-feed":
            await ops.edit(lambda d: feeds_file.remove_feed(d, url))
            return done(f"Removed {url}; its stored items are kept.")
        if do in ("enable-feed", "disable-feed"):
            on = do == "enable-feed"
            await ops.edit(lambda d: feeds_file.set_enabled(d, url, on))
            return done(f"{'Enabled' if on else 'Disabled'} {url}.")
        result = await agg.poll(url)
        outcome = result.status + (f": {result.error}" if result.error else f", {result.new} new")
        return done(f"Polled {url}: {outcome}.")

    async def topic_action(request: Request, do: str, text: str) -> Response:
        try:
            topic = YAML(typ="safe", pure=True).load(text) if text.strip() else None
        except YAMLError as e:
            raise ConfigEditError(f"the topic is not valid YAML: {e}") from e
        if not isinstance(topic, dict):
            raise ConfigEditError("the topic must be a mapping: name, slug, rules, ...")
        slug = topic.get("slug")
        if do == "preview-topic":
            preview = await ops.preview(topic)
            return await render(request, topic_text=text, preview=preview)
        if not isinstance(slug, str):
            raise ConfigEditError("the topic needs a slug")
        if do == "remove-topic":
            if agg.config.topic(slug) is None:
                raise ConfigEditError(f"no topic {slug!r} in feeds.yaml", status=404)
            await ops.edit(lambda d: feeds_file.remove_topic(d, slug), retag_topics=[slug])
            return done(f"Removed topic {slug}; its tags are being removed.")
        if agg.config.topic(slug) is not None:
            await ops.edit(
                lambda d: feeds_file.update_topic(d, slug, full_topic(topic)), retag_topics=[slug]
            )
        else:
            await ops.edit(lambda d: feeds_file.add_topic(d, topic), retag_topics=[slug])
        return done(f"Saved topic {slug}; stored items are being re-tagged.")

    return [
        Route("/admin", page, methods=["GET"]),
        Route("/admin", submit, methods=["POST"]),
    ]


_FORM = {
    "type": "object",
    "required": ["do"],
    "properties": {
        "do": {"enum": list(ACTIONS)},
        "id": {"type": "string", "description": "a feed's id (the *-feed actions)"},
        "url": {"type": "string"},
        "tags": {"type": "string", "description": "comma-separated"},
        "interval": {"type": "string"},
        "topic": {"type": "string", "description": "one topic as YAML"},
        guard.CSRF_FIELD: {"type": "string", "description": "with the login cookie"},
    },
}
_HTML = {"text/html": {"schema": {"type": "string"}}}
OPENAPI_PATHS = {
    "/admin": {
        "get": {
            "tags": ["admin"],
            "summary": "The admin page: feed health, feed and topic editors (HTML)",
            "parameters": [
                {
                    "name": n,
                    "in": "query",
                    "required": False,
                    "description": d,
                    "schema": {"type": "string"},
                }
                for n, d in (("topic", "a topic to load into the editor"), ("note", "a notice"))
            ],
            "responses": {
                "200": {"description": "The page", "content": _HTML},
                "401": {"description": "No or wrong admin token, or not logged in"},
            },
        },
        "post": {
            "tags": ["admin"],
            "summary": "A form of the admin page",
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": _FORM}},
            },
            "responses": {
                "200": {"description": "The page with a topic preview", "content": _HTML},
                "303": {"description": "Done: back to the page with a note"},
                "404": {"description": "No such feed or topic", "content": _HTML},
                "409": {"description": "Already listed", "content": _HTML},
                "422": {"description": "Refused, with the errors", "content": _HTML},
                "401": {"description": "No or wrong admin token, or not logged in"},
                "403": {"description": "Logged in, but the CSRF field is missing or wrong"},
            },
        },
    }
}
