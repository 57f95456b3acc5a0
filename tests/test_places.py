"""Places: the gazetteer's forms and traps, and the place feeds over real polled items."""

from __future__ import annotations

import feedparser
from test_web import agg, get  # noqa: F401  (agg is a fixture)

from aggregator.places import Gazetteer, country_name
from aggregator.service import Aggregator


def codes(text: str) -> dict[str, str]:
    return {c: m.kind for c, m in Gazetteer().find(text).items()}


def test_names_common_forms_and_demonyms() -> None:
    assert codes("U.S. and United States and USA") == {"US": "name"}
    assert codes("Colombian growers") == {"CO": "demonym"}
    assert codes("Colombians vote") == {"CO": "demonym"}
    assert codes("Talks in Côte d'Ivoire") == {"CI": "name"}
    assert codes("the Ivory Coast squad") == {"CI": "name"}
    assert codes("UK and Britons") == {"GB": "name"}
    assert codes("North Korea fires missile") == {"KP": "name"}
    assert codes("Korea, Republic of") == {"KR": "name"}
    assert codes("Viet Nam, Vietnam and Vietnamese") == {"VN": "name"}
    assert codes("Bolivia, Plurinational State of") == {"BO": "name"}


def test_capitals_are_their_own_kind_and_names_win() -> None:
    assert codes("Washington warns Moscow") == {"US": "capital", "RU": "capital"}
    assert codes("Washington and the United States") == {"US": "name"}
    assert codes("Bogotá mayor") == {"CO": "capital"}


def test_traps_are_not_places() -> None:
    assert codes("turkey dinner on china plates") == {}
    assert codes("Latin America and South American markets") == {}
    assert codes("New Jersey and New Mexico governors") == {}
    assert codes("the Washington Post reports") == {}
    assert codes("Georgia Tech wins") == {}


def test_aliases_extend_the_gazetteer() -> None:
    g = Gazetteer({"CO": ["Tierra del Café"]})
    assert set(g.find("News from Tierra del Cafe")) == {"CO"}


def test_country_name() -> None:
    assert country_name("CO") == "Colombia"
    assert country_name("co") == "Colombia"
    assert country_name("XX") is None


def test_place_feeds_serve_items_that_mention_the_country(agg: Aggregator) -> None:  # noqa: F811
    atom = feedparser.parse(get(agg, "/places/co.atom").content)
    assert atom.version == "atom10" and not atom.bozo
    assert atom.feed.title == "Colombia"
    titles = [e.title for e in atom.entries]
    assert any("Colombia" in t for t in titles)
    assert any("Colombian peso" in t for t in titles)  # a demonym
    assert not any("Volcano erupts near Iceland" in t for t in titles)
    assert get(agg, "/places/co.rss").status_code == 200
    assert get(agg, "/places/co.json").json()["items"]
    iceland = feedparser.parse(get(agg, "/places/is.rss").content)
    assert any("Iceland" in e.title for e in iceland.entries)
    assert get(agg, "/places/zz.atom").status_code == 404
    assert get(agg, "/places/CO.atom").status_code == 200  # either case (issue 23)
    assert get(agg, "/places/co.xml").status_code == 404
