"""Plain-text fields, URLs and media types made safe to publish, whatever a feed sent.

HTML fields (summaries, content) are cleaned with nh3 in parse.py. The fields that are
"plain text" (titles, authors, categories, summaries derived from text) need their own
care: RSS never said whether a title is text or HTML, and many readers render it as HTML,
so text that *reads* as markup is as dangerous there as markup. :func:`plain_text` leaves
no tag in such a field; :func:`safe_url` leaves no quote or angle bracket in a URL (so it
cannot break out of an attribute in a careless reader); :func:`media_type` keeps a MIME
type only if it is one. parse.py applies them on the way in; publish.py again on the way
out, so entries stored before a fix are published clean too.
"""

from __future__ import annotations

import html
import re

import nh3

_PASSES = 4
# Every element name an HTML, SVG or MathML parser knows (and obsolete ones browsers still
# honour). A bare tag-like word that is none of these ("over <outage> reports") is text to
# any reader and is kept; anything else that reads as a tag is dropped.
_ELEMENTS = frozenset(
    """a abbr acronym address animate animatemotion animatetransform annotation
    annotation-xml applet area article aside audio b base basefont bdi bdo bgsound big blink
    blockquote body br button canvas caption center circle cite clippath code col colgroup
    data datalist dd defs del desc details dfn dialog dir discard div dl dt ellipse em embed
    fe feblend fieldset figcaption figure filter font footer foreignobject form frame
    frameset g h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe ilayer image img input
    ins isindex kbd keygen label layer legend li line lineargradient link listing main maction
    map mark marker marquee mask math menu menuitem merror meta metadata meter mfrac mi
    mglyph mmultiscripts mn mo mover mpadded mpath mphantom mroot mrow ms mspace msqrt mstyle
    msub msubsup msup mtable mtd mtext mtr munder munderover multicol nav nextid nobr noembed
    noframes nolayer noscript object ol optgroup option output p param path pattern picture
    plaintext polygon polyline portal pre progress q radialgradient rb rect rp rt rtc ruby s
    samp script search section select semantics set slot small source spacer span stop
    strike strong style sub summary sup svg switch symbol table tbody td template text
    textarea textpath tfoot th thead time title tr track tspan tt u ul use var video view wbr
    xmp xss""".split()
)
# A tag with no attributes: <name> or </name>.
_BARE_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)>")
# "<" followed by what starts a tag, a closing tag, a comment or a processing instruction.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
# Characters a URL may not hold unescaped (RFC 3986) that matter in markup, and controls.
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f\"'<>`{}|\\^]")
# C0 controls but tab, newline and CR; DEL; C1 controls (what windows-1252 read as
# latin-1 leaves; validators flag them as bad characters); lone UTF-16 surrogates (from
# JSON "\ud800"), which no database or encoder takes. PostgreSQL refuses NUL in text.
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}$")


def scrub(value: str) -> str:
    """``value`` without characters no store or XML document can hold (NUL, controls,
    lone surrogates); a lone surrogate becomes U+FFFD so the text keeps its shape."""
    if not _UNSTORABLE.search(value):
        return value
    return _UNSTORABLE.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else "", value)


def strip_markup(text: str) -> str:
    """``text`` without anything that reads as a tag (script/style bodies dropped too).

    A bare tag-like word that is no element (``over <outage> reports``) is text and kept.
    Decoding can make new markup of escaped text (``&lt;script&gt;`` or the text inside a
    ``<textarea>``), so cleaning repeats until nothing changes; what a few passes do not
    settle loses its tag-opening ``<`` characters. Text without ``<`` is returned as is.
    """
    for _ in range(_PASSES):
        if "<" not in text:
            return text
        cleaned = html.unescape(nh3.clean(_BARE_TAG.sub(_keep_unknown, text), tags=set()))
        if cleaned == text:
            return text
        text = cleaned
    return _TAG_START.sub("", text)


def _keep_unknown(m: re.Match[str]) -> str:
    if m.group(2).lower() in _ELEMENTS:
        return m.group()
    return f"&lt;{m.group(1)}{m.group(2)}&gt;"  # text to the cleaner; decoded again after


def safe_url(url: str) -> str:
    """``url`` with quotes, angle brackets, spaces and controls percent-encoded."""
    return _URL_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", url)


def media_type(value: object) -> str | None:
    """A ``type/subtype`` MIME type (parameters dropped), or None if ``value`` is not one."""
    if not isinstance(value, str):
        return None
    bare = value.split(";", 1)[0].strip()
    return bare.lower() if _MEDIA_TYPE.match(bare) else None
