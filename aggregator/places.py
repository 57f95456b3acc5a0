"""Places: which countries an item mentions, from a gazetteer built on pycountry.

The gazetteer knows every ISO 3166 country by its pycountry names (``name``,
``common_name``, ``official_name``, and the part before a comma: "Korea, Republic of"
is also "Korea"), the common forms news writes ("U.S.", "United States", "UK",
"Britain", "Ivory Coast"), and demonyms ("Colombian", "Colombians", "Chinese").
Capital cities ("Washington", "Moscow") stand for their governments in news writing but are
also just cities; they are found with kind ``capital`` and count as the country only where
the admin says so (``places`` rules with ``capitals: true``, or the
``tagging.capitals_as_places`` setting for place feeds).

Matching is on whole words, accent-insensitive, and case-sensitive: places are proper nouns,
so "turkey" the bird and "china" the plates are not countries (a capitalised "Turkey" still
is). "America"/"American" after Latin, South, Central or North is not the US.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Literal, NamedTuple

PlaceKind = Literal["name", "demonym", "capital"]

# Forms pycountry does not have, as news writes them.
EXTRA_NAMES: dict[str, tuple[str, ...]] = {
    "US": ("U.S.", "US", "USA", "U.S.A.", "United States", "United States of America", "America"),
    "GB": ("UK", "U.K.", "Britain", "Great Britain", "United Kingdom"),
    "RU": ("Russia",),
    "KR": ("South Korea", "Korea"),
    "KP": ("North Korea", "DPRK"),
    "TR": ("Turkey", "Turkiye"),
    "CI": ("Ivory Coast",),
    "CD": ("DR Congo", "DRC", "Democratic Republic of Congo", "Democratic Republic of the Congo"),
    "CG": ("Congo-Brazzaville", "Republic of Congo"),
    "CZ": ("Czech Republic",),
    "AE": ("UAE", "U.A.E.", "Emirates"),
    "VA": ("Vatican",),
    "MM": ("Burma",),
    "CV": ("Cape Verde",),
    "SZ": ("Swaziland",),
    "MK": ("North Macedonia", "Macedonia"),
    "PS": ("Palestine", "Gaza", "West Bank"),
    "XK": ("Kosovo",),
    "NL": ("Holland",),
    "TL": ("East Timor",),
    "FM": ("Micronesia",),
    "MD": ("Moldova",),
    "BN": ("Brunei",),
    "TZ": ("Tanzania",),
    "VN": ("Vietnam",),
    "LA": ("Laos",),
    "SY": ("Syria",),
    "IR": ("Iran",),
}

DEMONYMS: dict[str, tuple[str, ...]] = {
    "AF": ("Afghan",),
    "AL": ("Albanian",),
    "DZ": ("Algerian",),
    "AO": ("Angolan",),
    "AR": ("Argentine", "Argentinian"),
    "AM": ("Armenian",),
    "AU": ("Australian",),
    "AT": ("Austrian",),
    "AZ": ("Azerbaijani",),
    "BD": ("Bangladeshi",),
    "BY": ("Belarusian",),
    "BE": ("Belgian",),
    "BO": ("Bolivian",),
    "BA": ("Bosnian",),
    "BR": ("Brazilian",),
    "BG": ("Bulgarian",),
    "KH": ("Cambodian",),
    "CM": ("Cameroonian",),
    "CA": ("Canadian",),
    "CL": ("Chilean",),
    "CN": ("Chinese",),
    "CO": ("Colombian",),
    "CR": ("Costa Rican",),
    "HR": ("Croatian",),
    "CU": ("Cuban",),
    "CY": ("Cypriot",),
    "CZ": ("Czech",),
    "DK": ("Danish", "Dane"),
    "DO": ("Dominican",),
    "EC": ("Ecuadorian", "Ecuadorean"),
    "EG": ("Egyptian",),
    "SV": ("Salvadoran", "Salvadorean"),
    "EE": ("Estonian",),
    "ET": ("Ethiopian",),
    "FI": ("Finnish", "Finn"),
    "FR": ("French",),
    "GE": ("Georgian",),
    "DE": ("German",),
    "GH": ("Ghanaian",),
    "GR": ("Greek",),
    "GT": ("Guatemalan",),
    "HT": ("Haitian",),
    "HN": ("Honduran",),
    "HU": ("Hungarian",),
    "IS": ("Icelandic",),
    "IN": ("Indian",),
    "ID": ("Indonesian",),
    "IR": ("Iranian",),
    "IQ": ("Iraqi",),
    "IE": ("Irish",),
    "IL": ("Israeli",),
    "IT": ("Italian",),
    "JM": ("Jamaican",),
    "JP": ("Japanese",),
    "JO": ("Jordanian",),
    "KZ": ("Kazakh",),
    "KE": ("Kenyan",),
    "KW": ("Kuwaiti",),
    "KG": ("Kyrgyz",),
    "LV": ("Latvian",),
    "LB": ("Lebanese",),
    "LY": ("Libyan",),
    "LT": ("Lithuanian",),
    "MY": ("Malaysian",),
    "ML": ("Malian",),
    "MX": ("Mexican",),
    "MD": ("Moldovan",),
    "MN": ("Mongolian",),
    "MA": ("Moroccan",),
    "MZ": ("Mozambican",),
    "NP": ("Nepali", "Nepalese"),
    "NL": ("Dutch",),
    "NZ": ("New Zealander",),
    "NI": ("Nicaraguan",),
    "NE": ("Nigerien",),
    "NG": ("Nigerian",),
    "KP": ("North Korean",),
    "NO": ("Norwegian",),
    "OM": ("Omani",),
    "PK": ("Pakistani",),
    "PS": ("Palestinian",),
    "PA": ("Panamanian",),
    "PY": ("Paraguayan",),
    "PE": ("Peruvian",),
    "PH": ("Filipino", "Philippine"),
    "PL": ("Polish", "Pole"),
    "PT": ("Portuguese",),
    "QA": ("Qatari",),
    "RO": ("Romanian",),
    "RU": ("Russian",),
    "RW": ("Rwandan",),
    "SA": ("Saudi",),
    "SN": ("Senegalese",),
    "RS": ("Serbian", "Serb"),
    "SG": ("Singaporean",),
    "SK": ("Slovak",),
    "SI": ("Slovenian", "Slovene"),
    "SO": ("Somali",),
    "ZA": ("South African",),
    "KR": ("South Korean",),
    "SS": ("South Sudanese",),
    "ES": ("Spanish", "Spaniard"),
    "LK": ("Sri Lankan",),
    "SD": ("Sudanese",),
    "SE": ("Swedish", "Swede"),
    "CH": ("Swiss",),
    "SY": ("Syrian",),
    "TW": ("Taiwanese",),
    "TJ": ("Tajik",),
    "TZ": ("Tanzanian",),
    "TH": ("Thai",),
    "TN": ("Tunisian",),
    "TR": ("Turkish", "Turk"),
    "TM": ("Turkmen",),
    "UG": ("Ugandan",),
    "UA": ("Ukrainian",),
    "AE": ("Emirati",),
    "GB": ("British", "Briton"),
    "US": ("American",),
    "UY": ("Uruguayan",),
    "UZ": ("Uzbek",),
    "VE": ("Venezuelan",),
    "VN": ("Vietnamese",),
    "YE": ("Yemeni",),
    "ZM": ("Zambian",),
    "ZW": ("Zimbabwean",),
}

CAPITALS: dict[str, tuple[str, ...]] = {
    "US": ("Washington",),
    "RU": ("Moscow", "Kremlin"),
    "CN": ("Beijing",),
    "UA": ("Kyiv", "Kiev"),
    "IR": ("Tehran",),
    "KP": ("Pyongyang",),
    "KR": ("Seoul",),
    "JP": ("Tokyo",),
    "GB": ("London", "Downing Street", "Westminster"),
    "FR": ("Paris", "Elysee"),
    "DE": ("Berlin",),
    "CO": ("Bogota",),
    "VE": ("Caracas",),
    "CU": ("Havana",),
    "TR": ("Ankara",),
    "SA": ("Riyadh",),
    "IN": ("New Delhi",),
    "PK": ("Islamabad",),
    "AF": ("Kabul",),
    "SY": ("Damascus",),
    "IQ": ("Baghdad",),
    "EG": ("Cairo",),
    "CA": ("Ottawa",),
    "AU": ("Canberra",),
    "BR": ("Brasilia",),
    "MX": ("Mexico City",),
    "AR": ("Buenos Aires",),
    "PE": ("Lima",),
    "EC": ("Quito",),
    "ES": ("Madrid",),
    "IT": ("Rome",),
    "PL": ("Warsaw",),
    "BY": ("Minsk",),
    "GE": ("Tbilisi",),
    "TW": ("Taipei",),
    "VN": ("Hanoi",),
    "PH": ("Manila",),
    "ID": ("Jakarta",),
    "TH": ("Bangkok",),
    "KE": ("Nairobi",),
    "NG": ("Abuja",),
    "ZA": ("Pretoria",),
    "ET": ("Addis Ababa",),
    "SD": ("Khartoum",),
    "LY": ("Tripoli",),
    "QA": ("Doha",),
    "AE": ("Abu Dhabi",),
    "LB": ("Beirut",),
    "JO": ("Amman",),
    "IL": ("Jerusalem",),
}

# Word sequences that contain a country name but are not the country: they are consumed
# whole so the name inside them is not found.
NOT_PLACES = (
    "New Jersey",
    "New Mexico",
    "Guinea pig",
    "Guinea pigs",
    "Georgia Tech",
    "Washington Post",
    "Washington state",
    "Washington State",
    "Jersey City",
    "Paris Hilton",
    "Jordan Henderson",
    "Michael Jordan",
)

# "Latin America", "South American" are regions, not the United States.
_NOT_US_BEFORE = frozenset({"Latin", "South", "Central", "North", "Pan", "Afro"})
_WORD = re.compile(r"\w+")
_MAX_WORDS = 6


class PlaceMention(NamedTuple):
    code: str  # ISO 3166 alpha-2, upper case
    form: str  # the words as found (accents removed)
    kind: PlaceKind


def strip_accents(text: str) -> str:
    """'Bogotá' -> 'Bogota', keeping case; cheap for ASCII text."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    # Each distinct mark removed at once (str.replace runs in C): testing every character
    # of an item with one "café" or a curly quote in it cost three times as much.
    for c in set(decomposed):
        if c > "\x7f" and unicodedata.combining(c):
            decomposed = decomposed.replace(c, "")
    return decomposed


def _key(form: str) -> str:
    return " ".join(_WORD.findall(strip_accents(form)))


def _plurals(demonym: str) -> tuple[str, ...]:
    if demonym.endswith(("ese", "sh", "ch", "ss", "Swiss")):
        return (demonym,)
    return (demonym, demonym + "s")


@lru_cache(maxsize=1)
def _countries() -> dict[str, str]:
    import pycountry

    out = {c.alpha_2: getattr(c, "common_name", None) or c.name for c in pycountry.countries}
    out["XK"] = "Kosovo"  # user-assigned code in wide use; not in ISO 3166-1
    return out


def country_name(code: str) -> str | None:
    """'CO' -> 'Colombia'; None for an unknown code."""
    return _countries().get(code.upper())


def _pycountry_forms() -> Iterable[tuple[str, str]]:
    import pycountry

    for c in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            value = getattr(c, attr, None)
            if not value:
                continue
            yield c.alpha_2, value
            if "," in value:
                yield c.alpha_2, value.split(",", 1)[0]


class Gazetteer:
    """Country names, demonyms and capitals -> ISO codes; ``find()`` scans a text once."""

    def __init__(self, aliases: Mapping[str, Sequence[str]] | None = None) -> None:
        table: dict[str, tuple[str, PlaceKind] | None] = {_key(k): None for k in NOT_PLACES}

        def add(code: str, form: str, kind: PlaceKind) -> None:
            key = _key(form)
            if key and key not in table:
                table[key] = (code.upper(), kind)

        for code, forms in (aliases or {}).items():
            for form in forms:
                add(code, form, "name")
        for code, forms in EXTRA_NAMES.items():
            for form in forms:
                add(code, form, "name")
        for code, form in _pycountry_forms():
            add(code, form, "name")
        for code, forms in DEMONYMS.items():
            for d in forms:
                for form in _plurals(d):
                    add(code, form, "demonym")
        for code, forms in CAPITALS.items():
            for form in forms:
                add(code, form, "capital")
        # Bare "Korea" and "Congo" are ambiguous; the longer forms above decide.
        table.pop("Korea", None)
        table.pop("Jersey", None)  # the island, far more often "New Jersey" or a shirt
        self._table = table
        # first word -> most words in a form starting with it: most words are no place at all.
        self._first: dict[str, int] = {}
        for k in table:
            parts = k.split()
            self._first[parts[0]] = max(self._first.get(parts[0], 1), min(len(parts), _MAX_WORDS))

    def find(self, text: str) -> dict[str, PlaceMention]:
        """code -> the first mention of that country in ``text``."""
        words = _WORD.findall(strip_accents(text))
        out: dict[str, PlaceMention] = {}
        table = self._table
        i, n = 0, len(words)
        first = self._first
        while i < n:
            w = words[i]
            longest = first.get(w)
            if longest is None:
                i += 1
                continue
            for size in range(min(longest, n - i), 0, -1):
                key = " ".join(words[i : i + size]) if size > 1 else w
                if key not in table:
                    continue
                hit = table[key]
                if hit is None:
                    i += size - 1
                    break
                code, kind = hit
                if (
                    code == "US"
                    and key.startswith("America")
                    and i
                    and words[i - 1] in (_NOT_US_BEFORE)
                ):
                    break
                seen = out.get(code)
                if seen is None or (seen.kind == "capital" and kind != "capital"):
                    out[code] = PlaceMention(code, key, kind)
                i += size - 1
                break
            i += 1
        return out


@lru_cache(maxsize=1)
def default_gazetteer() -> Gazetteer:
    return Gazetteer()
