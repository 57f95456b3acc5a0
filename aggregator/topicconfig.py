"""The feeds.yaml schema of topic rules, the classifier and the tagging settings.

Kept apart from config.py (which imports it) because the rule language is a small grammar
of its own. A rule is a mapping with exactly one condition::

    keywords: [embassy, foreign minister]   # any of these words or phrases
    regex: '\\bG(7|20)\\b'                  # a regular expression (or a list: any)
    categories: [diplomacy]                 # the item's own categories (normalised)
    feed_tags: [foreign-relations]          # tags of the item's feed
    places: [CO, VE]                        # countries mentioned (gazetteer)
    language: [es]                          # the item's detected language
    any: [RULE, ...]                        # boolean nesting; a plain string in the
    all: [RULE, ...]                        # list is a keyword or phrase
    none: [RULE, ...]

plus an optional ``in: [title, text, ...]`` field scope for keywords and regexes (inherited
by the plain strings of an any/all/none group and by nested rules that set none).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

FieldName = Literal[
    "title", "text", "categories", "author", "feed", "feed_tags", "link_host", "language"
]
FIELDS: tuple[str, ...] = FieldName.__args__  # type: ignore[attr-defined]
DEFAULT_SCOPE: tuple[FieldName, ...] = ("title", "text")
CONDITIONS = ("keywords", "regex", "categories", "feed_tags", "places", "language")
GROUPS = ("any", "all", "none")
_LANG = re.compile(r"^[a-z]{2,3}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_regex(pattern: str) -> str:
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        # Point at the column inside the pattern: long patterns are hard to eyeball.
        at = f" at character {e.pos + 1}" if e.pos is not None else ""
        raise ValueError(f"invalid regular expression {pattern!r}: {e.msg}{at}") from e
    return pattern


# Validated one by one so that every bad pattern is reported with its own index and line.
Regex = Annotated[str, AfterValidator(check_regex)]


def check_places(codes: tuple[str, ...]) -> tuple[str, ...]:
    from .places import country_name

    out = []
    for code in codes:
        c = code.strip().upper()
        if country_name(c) is None:
            raise ValueError(f"unknown country code {code!r} (use ISO 3166 alpha-2, e.g. CO, US)")
        out.append(c)
    return tuple(out)


def check_languages(codes: tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(c.strip().lower() for c in codes)
    for c in out:
        if not _LANG.match(c):
            raise ValueError(f"{c!r} is not a language code (ISO 639-1, e.g. en, es)")
    return out


def _strings(v: Any) -> Any:
    return (v,) if isinstance(v, str) else v


class Rule(_Strict):
    """One condition or one boolean group; see the module docstring."""

    keywords: tuple[str, ...] | None = None
    regex: tuple[Regex, ...] | None = None
    categories: tuple[str, ...] | None = None
    feed_tags: tuple[str, ...] | None = None
    places: tuple[str, ...] | None = None
    language: tuple[str, ...] | None = None
    any: tuple[Rule, ...] | None = None
    all: tuple[Rule, ...] | None = None
    none: tuple[Rule, ...] | None = None
    scope: tuple[FieldName, ...] | None = Field(default=None, alias="in")
    capitals: bool = Field(
        default=False, description="with places: a capital city counts as its country"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # A plain string inside any/all/none is a keyword or phrase.
        if isinstance(data, str):
            return {"keywords": [data]}
        if isinstance(data, dict):
            data = dict(data)
            for key in ("keywords", "regex", "categories", "feed_tags", "places", "language"):
                if key in data:
                    data[key] = _strings(data[key])
        return data

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and (not v or any(not k.strip() for k in v)):
            raise ValueError("empty keyword")
        return v

    @field_validator("places")
    @classmethod
    def _places(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_places(v) if v is not None else v

    @field_validator("language")
    @classmethod
    def _language(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return check_languages(v) if v is not None else v

    @model_validator(mode="after")
    def _one_condition(self) -> Rule:
        given = [k for k in (*CONDITIONS, *GROUPS) if getattr(self, k) is not None]
        if len(given) != 1:
            listed = ", ".join(given) if given else "none"
            raise ValueError(
                "a rule needs exactly one of keywords, regex, categories, feed_tags, places, "
                f"language, any, all, none (found: {listed}); combine several with all:/any:"
            )
        if self.scope is not None and given[0] not in ("keywords", "regex", *GROUPS):
            raise ValueError(f"'in' applies to keywords and regex, not to {given[0]}")
        if self.capitals and given[0] != "places":
            raise ValueError("'capitals' applies to places only")
        for g in GROUPS:
            if getattr(self, g) == ():
                raise ValueError(f"empty {g}: list")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in (*CONDITIONS, *GROUPS) if getattr(self, k) is not None)


class TopicRules(_Strict):
    keywords: tuple[str, ...] = Field(
        default=(), description="words or phrases, whole-word, case- and accent-insensitive"
    )
    regex: tuple[Regex, ...] = Field(default=(), description="case-insensitive regular expressions")
    categories: tuple[str, ...] = Field(
        default=(), description="item categories, normalised (case, spacing, &/and, synonyms)"
    )
    feed_tags: tuple[str, ...] = Field(default=(), description="tags of the feed in feeds.yaml")
    places: tuple[str, ...] = Field(default=(), description="ISO country codes mentioned")
    match: tuple[Rule, ...] = Field(default=(), description="more rules (any of them)")
    exclude: tuple[Rule, ...] = Field(default=(), description="rules that veto the topic")

    @field_validator("keywords")
    @classmethod
    def _nonempty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not k.strip() for k in v):
            raise ValueError("empty keyword")
        return v

    @field_validator("places")
    @classmethod
    def _places(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_places(v)


class TopicClassifier(_Strict):
    """The semantic classifier of one topic: a head learned from these texts (classify.py)."""

    examples: tuple[str, ...] = Field(
        default=(), description="headlines of items in the topic (with the description)"
    )
    negative_examples: tuple[str, ...] = Field(
        default=(), description="headlines of items NOT in the topic, near misses best"
    )
    threshold: float = Field(
        default=0.35, gt=0, lt=1, description="probability from which an item is in the topic"
    )

    @field_validator("examples", "negative_examples")
    @classmethod
    def _texts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not t.strip() for t in v):
            raise ValueError("empty example")
        return v

    @model_validator(mode="after")
    def _not_both(self) -> TopicClassifier:
        both = sorted(
            {t.strip() for t in self.examples} & {t.strip() for t in self.negative_examples}
        )
        if both:
            raise ValueError(f"in both examples and negative_examples: {both[0]!r}")
        return self


class TaggingSettings(_Strict):
    classifier: bool = Field(
        default=True, description="use the semantic classifier where topics define one"
    )
    batch_size: int = Field(default=64, ge=1, le=4096)
    background: bool = Field(
        default=True,
        description="everyday headlines (recipes, weather...) are negatives of every topic",
    )
    relative: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="a topic's probability must reach this share of the item's best topic's",
    )
    detect_language: bool = True
    place_tags: bool = Field(default=True, description="store place:XX tags for place feeds")
    capitals_as_places: bool = Field(
        default=False, description="a capital city ('Washington') tags its country"
    )
