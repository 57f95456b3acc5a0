"""Edit feeds.yaml in place: comments and layout kept, validated first, written atomically.

Every writer (the CLI, the admin API and page) goes through ``edit``::

    with lock(feeds.yaml):                      # one editor at a time, across processes
        doc  = round-trip load of the file      # ruamel.yaml: comments, order, quoting kept
        change(doc)                             # add_feed / remove_feed / set_enabled / ...
        text = dump(doc)
        parse_config(text)                      # ConfigError: nothing is written
        write text to a temp file in the same directory, fsync, os.replace, fsync the dir

so the file on disk is always either the old or the new complete, valid version; a reader
(the hot-reload watcher) never sees a half-written file from us.

ruamel.yaml keeps a comment that follows an item (a blank line, "# Politics" heading the
next group) on the last scalar of that item; when an item is removed or appended, that
trailing comment is handed to the neighbour so that headings and spacing stay where they were.
"""

from __future__ import annotations

import copy
import fcntl
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from .config import Config, FeedConfig, TopicConfig, parse_config
from .exceptions import ConfigEditError, ConfigError

T = TypeVar("T")


# -- reading and writing -------------------------------------------------------------------


class _ScanOnly:
    """Stands in for the loader of ``load_yaml_guess_indent``: only its indentation scan of
    the text is wanted. Its own full load would parse the file once more per edit (of three
    parses, the costliest: seconds for thousands of feeds on a busy machine)."""

    def load(self, stream: Any) -> None:
        return None


def _yaml_for(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap an admin's long lines
    try:
        _, seq_indent, offset = load_yaml_guess_indent(text, yaml=_ScanOnly())
    except (YAMLError, IndexError):
        seq_indent, offset = None, None
    seq_indent = seq_indent or 2
    offset = offset or 0
    mapping = seq_indent - offset if offset else seq_indent
    yaml.indent(mapping=max(mapping, 2), sequence=seq_indent, offset=offset)
    return yaml


def load_doc(text: str, path: str = "feeds.yaml") -> tuple[YAML, CommentedMap]:
    yaml = _yaml_for(text)
    try:
        doc = yaml.load(text)
    except YAMLError:
        parse_config(text, path)  # raises the line-numbered error
        raise
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigError([f"{path}:1:1: the file must be a mapping with feeds: and topics:"])
    return yaml, doc


def dump_doc(yaml: YAML, doc: CommentedMap) -> str:
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never a mix."""
    try:
        mode: int | None = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # A side file, not feeds.yaml itself: os.replace swaps feeds.yaml's inode under a lock.
    lock_path = path.parent / f".{path.name}.lock"
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def edit(
    path: str | os.PathLike[str], change: Callable[[CommentedMap], T], *, write: bool = True
) -> tuple[Config, T]:
    """Apply ``change`` to feeds.yaml; write it only if the result validates.

    Returns the new Config and whatever ``change`` returned. Raises ConfigEditError if the
    change names a feed or topic that is missing (or already there), ConfigError listing the
    problems if the result would not validate; in both cases the file is left untouched.
    ``write=False`` validates the change and writes nothing (the admin's topic preview).
    """
    p = Path(path)
    with _locked(p):
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError([f"{p}: cannot read: {e}"]) from e
        yaml, doc = load_doc(text, str(p))
        result = change(doc)
        new_text = dump_doc(yaml, doc)
        config = _validated(doc, new_text, str(p))
        if write and new_text != text:
            write_atomic(p, new_text)
        return config, result


def _validated(doc: CommentedMap, text: str, path: str) -> Config:
    """The Config of the changed document; ConfigError with the new file's lines if invalid.

    A valid change (the common case) is validated as the document in hand, which is what
    the dumped text loads back to; only a refused one is parsed again from the text, so
    that its errors name the lines and columns of the file it would have written.
    """
    try:
        return Config.model_validate(doc)
    except ValueError:  # pydantic's ValidationError, and the duplicate checks
        return parse_config(text, path)


# -- comments that trail an item -------------------------------------------------------------


def _is_block(node: Any) -> bool:
    return isinstance(node, CommentedMap | CommentedSeq) and bool(node) and not node.fa.flow_style()


def _tail(node: CommentedMap | CommentedSeq) -> tuple[CommentedMap | CommentedSeq, Any, int]:
    """Where ruamel keeps the comment after ``node``: the slot of its deepest last scalar."""
    if isinstance(node, CommentedMap):
        key = list(node.keys())[-1]
        value = node[key]
        return _tail(value) if _is_block(value) else (node, key, 2)
    idx = len(node) - 1
    value = node[idx]
    return _tail(value) if _is_block(value) else (node, idx, 0)


def _take_trailing(node: Any) -> CommentToken | None:
    if not _is_block(node):
        return None
    container, key, slot = _tail(node)
    entry = container.ca.items.get(key)
    token: CommentToken | None = None
    if entry and entry[slot] is not None:
        token = entry[slot]
        entry[slot] = None
    # A comment after a nested block can also sit at the end of any container on the way.
    path: list[Any] = []
    inner = node
    while _is_block(inner):
        path.append(inner)
        inner = inner[list(inner.keys())[-1]] if isinstance(inner, CommentedMap) else inner[-1]
    for c in reversed(path):
        if getattr(c.ca, "end", None):
            token = _merge(token, _from_lines(c.ca.end))
            c.ca.end = []
    return token


def _from_lines(tokens: list[CommentToken]) -> CommentToken:
    """Whole-line comment tokens (they carry their indentation as a column) as one trailing
    token (which carries it as text, after the newline ending the item's last line)."""
    moved = copy.copy(tokens[0])
    moved.value = "\n" + "".join(
        (" " * t.column if t.value.lstrip(" ").startswith("#") else "") + t.value.lstrip(" ")
        for t in tokens
    )
    return moved


def _set_trailing(node: Any, token: CommentToken | None) -> None:
    if not _is_block(node):
        return
    container, key, slot = _tail(node)
    entry = container.ca.items.setdefault(key, [None, None, None, None])
    entry[slot] = token


def _has_text(token: CommentToken | None) -> bool:
    return token is not None and "#" in token.value


def _merge(first: CommentToken | None, second: CommentToken | None) -> CommentToken | None:
    """Two separators become one: comment text wins over blank lines; both texts are kept."""
    if not _has_text(second):
        return first if first is not None else second
    if not _has_text(first):
        return second
    assert first is not None and second is not None
    merged = copy.copy(first)
    merged.value = first.value.rstrip("\n") + "\n" + second.value.lstrip("\n")
    return merged


def _take_separator(seq: CommentedSeq, i: int) -> CommentToken | None:
    """Remove and return the comment between item ``i`` and the next.

    ruamel keeps it either after the last scalar of item ``i`` or, when item ``i`` ends in a
    flow sequence, before item ``i + 1`` (a list of tokens, without the leading newline).
    """
    token = _take_trailing(seq[i])
    entry = seq.ca.items.get(i + 1)
    if entry and entry[1]:
        token = _merge(token, _from_lines(entry[1]))
        entry[1] = None
    return token


@contextmanager
def _keeping_trailing(node: Any) -> Iterator[None]:
    """Keep the comment after ``node`` after it while keys are added or removed at its end."""
    token = _take_trailing(node)
    try:
        yield
    finally:
        _set_trailing(node, token)


def _append(seq: CommentedSeq, item: Any) -> None:
    n = len(seq)
    end = _take_separator(seq, n - 1) if n else None
    if n >= 2:
        # Separate the new item as the others are (e.g. a blank line between topics).
        between = _take_separator(seq, n - 2)
        _set_trailing(seq[n - 2], between)
        if between is not None and not _has_text(between):
            _set_trailing(seq[n - 1], copy.copy(between))
    seq.append(item)
    _set_trailing(item, end)


def _remove(seq: CommentedSeq, index: int) -> None:
    # Always a non-negative index: CommentedSeq.__delitem__ mis-shifts comments on negative ones.
    index = index % len(seq)
    after = _take_separator(seq, index)
    before = _take_separator(seq, index - 1) if index > 0 else None
    last = index == len(seq) - 1
    del seq[index]
    if index > 0:
        # After the last item comes the end of the section; otherwise keep group headings.
        _set_trailing(seq[index - 1], after if last else _merge(before, after))
    elif seq and _has_text(after):
        # The first item went: a heading that followed it now leads the section.
        assert after is not None
        _lead(seq, after)


def _lead(seq: CommentedSeq, token: CommentToken) -> None:
    """Put a trailing comment token's lines before the first item, as whole-line comments."""
    lines = token.value.split("\n")[1:-1]
    tokens = [
        CommentToken(line.lstrip() + "\n", CommentMark(len(line) - len(line.lstrip())))
        if line.strip()
        else CommentToken("\n", CommentMark(0))
        for line in lines
    ]
    entry = seq.ca.items.setdefault(0, [None, None, None, None])
    entry[1] = (entry[1] or []) + tokens


def _flow(values: Sequence[Any]) -> CommentedSeq:
    seq = CommentedSeq(list(values))
    seq.fa.set_flow_style()
    return seq


def _section(doc: CommentedMap, name: str) -> CommentedSeq:
    seq = doc.get(name)
    if seq is None:
        seq = CommentedSeq()
        doc[name] = seq
    if not isinstance(seq, CommentedSeq):
        raise ConfigError([f"{name}: must be a list"])
    return seq


def _index(seq: CommentedSeq, key: str, value: str) -> int | None:
    for i, item in enumerate(seq):
        if isinstance(item, Mapping) and item.get(key) == value:
            return i
    return None


# -- feeds -----------------------------------------------------------------------------------


def _to_yaml(value: Any) -> Any:
    """Plain values as the file writes them: short lists of scalars in flow style."""
    if isinstance(value, Mapping):
        node = CommentedMap()
        for k, v in value.items():
            if v is not None:
                node[k] = _to_yaml(v)
        return node
    if isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return _flow(list(value))
        return CommentedSeq([_to_yaml(v) for v in value])
    return value


def _set(node: CommentedMap, key: str, value: Any) -> None:
    """Set (or with None, remove) a key."""
    if value is None:
        node.pop(key, None)
    else:
        node[key] = _to_yaml(value)


FEED_KEYS = tuple(FeedConfig.model_fields)


def add_feed(
    doc: CommentedMap,
    url: str,
    *,
    title: str | None = None,
    tags: Sequence[str] = (),
    interval: str | None = None,
    enabled: bool = True,
) -> None:
    feeds = _section(doc, "feeds")
    url = url.strip()
    if _index(feeds, "url", url) is not None:
        raise ConfigEditError(f"feed {url} is already in feeds.yaml", status=409)
    item = CommentedMap()
    item["url"] = url
    _set(item, "title", title)
    _set(item, "tags", list(tags) or None)
    _set(item, "interval", interval)
    if not enabled:
        item["enabled"] = False
    _append(feeds, item)


def update_feed(doc: CommentedMap, url: str, changes: Mapping[str, Any]) -> None:
    """Set the given keys of one feed; a value of None removes the key (its default)."""
    feeds = _section(doc, "feeds")
    i = _index(feeds, "url", url)
    if i is None:
        raise ConfigEditError(f"no feed {url} in feeds.yaml", status=404)
    unknown = set(changes) - set(FEED_KEYS)
    if unknown:
        raise ConfigEditError(f"unknown feed key(s) {sorted(unknown)}; expected {FEED_KEYS}")
    with _keeping_trailing(feeds[i]):
        for key, value in changes.items():
            _set(feeds[i], key, value)


def set_enabled(doc: CommentedMap, url: str, enabled: bool) -> None:
    # Enabled is the default, so enabling removes the key instead of writing `enabled: true`.
    update_feed(doc, url, {"enabled": None if enabled else False})


def remove_feed(doc: CommentedMap, url: str) -> None:
    feeds = _section(doc, "feeds")
    i = _index(feeds, "url", url)
    if i is None:
        raise ConfigEditError(f"no feed {url} in feeds.yaml", status=404)
    _remove(feeds, i)


# -- topics ----------------------------------------------------------------------------------

TOPIC_KEYS = tuple(TopicConfig.model_fields)


def _topic_node(topic: Mapping[str, Any]) -> CommentedMap:
    unknown = set(topic) - set(TOPIC_KEYS)
    if unknown:
        raise ConfigEditError(f"unknown topic key(s) {sorted(unknown)}; expected {TOPIC_KEYS}")
    node: CommentedMap = _to_yaml({k: topic[k] for k in TOPIC_KEYS if k in topic})
    return node


def add_topic(doc: CommentedMap, topic: Mapping[str, Any]) -> None:
    topics = _section(doc, "topics")
    slug = topic.get("slug")
    if isinstance(slug, str) and _index(topics, "slug", slug) is not None:
        raise ConfigEditError(f"topic {slug!r} is already in feeds.yaml", status=409)
    _append(topics, _topic_node(topic))


def update_topic(doc: CommentedMap, slug: str, changes: Mapping[str, Any]) -> None:
    """Set the given keys of one topic; ``rules`` replaces the rules wholesale."""
    topics = _section(doc, "topics")
    i = _index(topics, "slug", slug)
    if i is None:
        raise ConfigEditError(f"no topic {slug!r} in feeds.yaml", status=404)
    node = topics[i]
    new = _topic_node({k: v for k, v in changes.items() if v is not None})
    with _keeping_trailing(node):
        _update_topic_node(node, new, changes)


def _update_topic_node(node: CommentedMap, new: CommentedMap, changes: Mapping[str, Any]) -> None:
    for key in changes:
        old_rules = node.get("rules")
        if key == "rules" and isinstance(old_rules, CommentedMap) and "rules" in new:
            # Change the rules key by key, so comments on untouched rules stay.
            new_rules = new["rules"]
            for rk in list(old_rules):
                if rk not in new_rules:
                    del old_rules[rk]
            for rk, rv in new_rules.items():
                if _plain(old_rules.get(rk)) != _plain(rv):
                    old_rules[rk] = rv
        elif key in new:
            node[key] = new[key]
        else:
            node.pop(key, None)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def remove_topic(doc: CommentedMap, slug: str) -> None:
    topics = _section(doc, "topics")
    i = _index(topics, "slug", slug)
    if i is None:
        raise ConfigEditError(f"no topic {slug!r} in feeds.yaml", status=404)
    _remove(topics, i)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
