"""Item language: detected from the words, stored on the entry, used by topics and filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from builders import Item, rss
from conftest import FeedServer
from test_feed_query import Client
from test_pipeline import make_agg, poll_all

from aggregator.language import detect_language, normalise_language

ES_TEXT = (
    "El gobierno anunció este martes una reforma del sistema de pensiones que será "
    "debatida en el Congreso durante las próximas semanas."
)
EN_TEXT = (
    "The government announced on Tuesday a reform of the pension system that will be "
    "debated in parliament over the coming weeks."
)


def test_detects_from_words_not_from_the_feed() -> None:
    assert detect_language("Reforma de pensiones", ES_TEXT, declared="en-GB") == "es"
    assert detect_language("Pension reform", EN_TEXT, declared="es") == "en"
    assert (
        detect_language(
            "Die Regierung",
            "Die Bundesregierung hat am Dienstag neue Regeln für die Rente beschlossen.",
        )
        == "de"
    )


def test_too_short_to_tell_falls_back_to_the_feed() -> None:
    assert detect_language("Gol!", "", declared="pt-BR") == "pt"
    assert detect_language("Gol!", "", declared=None) is None
    assert normalise_language("EN_gb") == "en"
    assert normalise_language("x-klingon-!") is None


def test_stored_language_drives_the_lang_filter(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    when = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    items = [
        Item("Reforma de pensiones", "https://d.example/1", "d1", ES_TEXT, ["World"], when),
        Item("Pension reform", "https://d.example/2", "d2", EN_TEXT, ["World"], when),
    ]
    # The feed says en-gb for both: a lie for the first item.
    url = feed_server.serve("/mixed.rss", rss(items, site="https://d.example"))
    agg = make_agg(tmp_path, db_url, [{"url": url, "tags": ["world"]}])
    try:
        poll_all(agg)
        c = Client(agg)
        spanish = c.items("/topics/world.json?lang=es")
        assert [i["title"] for i in spanish] == ["Reforma de pensiones"]
        english = c.items("/topics/world.json?lang=en")
        assert [i["title"] for i in english] == ["Pension reform"]
        body = json.loads(c.get("/topics/world.json").content)
        assert len(body["items"]) == 2
    finally:
        agg.close()
