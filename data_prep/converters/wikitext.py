"""MediaWiki wikitext to plain text and link targets (mwparserfromhell), and MediaWiki title normalisation.

``mwparserfromhell``'s own ``strip_code`` keeps table cells, file captions with their "thumb|" options,
list markers and the appendix sections (References, External links); LinkBERT trains on running
prose, so the parse tree is walked here to keep the prose and anchor texts and nothing else.
"""
from __future__ import annotations

import html
import re

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)

# English Wikipedia namespaces and aliases; a dump's <siteinfo> adds its own names.
DEFAULT_NAMESPACES = frozenset(n.casefold() for n in (
    "Media", "Special", "Talk", "User", "User talk", "Wikipedia", "Wikipedia talk", "Project", "WP",
    "File", "File talk", "Image", "Image talk", "MediaWiki", "MediaWiki talk", "Template", "Template talk",
    "Help", "Help talk", "Category", "Category talk", "Portal", "Portal talk", "Book", "Book talk", "Draft",
    "Draft talk", "Education Program", "Education Program talk", "TimedText", "TimedText talk", "Module",
    "Module talk", "Gadget", "Gadget talk", "Gadget definition", "Gadget definition talk", "Topic"))
# Sister projects; language prefixes ([[fr:...]]) are recognised by shape below.
INTERWIKI = frozenset((
    "wikt", "wiktionary", "commons", "s", "wikisource", "q", "wikiquote", "b", "wikibooks", "n", "wikinews",
    "v", "wikiversity", "m", "meta", "metawikipedia", "species", "wikispecies", "d", "wikidata", "mw",
    "mediawikiwiki", "voy", "wikivoyage", "c", "w", "wikipedia", "f", "foundation", "wmf", "phab", "doi",
    "google", "imdbname", "imdbtitle", "iarchive", "rfc", "oldwikisource", "outreach", "incubator"))
_LANG = re.compile(r"^[a-z]{2,3}(-[a-z]{2,8})*$")
# Tags whose content is not prose.
_DROP_TAGS = frozenset(("ref", "references", "table", "gallery", "math", "chem", "timeline", "score", "graph",
                        "imagemap", "templatedata", "syntaxhighlight", "source", "hiero", "categorytree",
                        "inputbox", "mapframe", "maplink", "noinclude", "includeonly"))
_BREAK_TAGS = frozenset(("br", "p", "div", "li", "dd", "dt", "blockquote"))
# Appendix sections: reference lists and link farms, not running prose.
APPENDIX_SECTIONS = frozenset(s.casefold() for s in (
    "References", "External links", "Further reading", "Notes", "Bibliography", "Sources", "Citations",
    "Footnotes", "Notes and references", "References and notes", "See also", "Works cited",
    "Literature", "Reference", "Note"))
_KEEP_PARAM_1 = frozenset(("nowrap", "nobr", "small", "smaller", "big", "larger", "sc", "smallcaps", "lang-x",
                           "nihongo", "nihongo2", "angbr", "em", "strong", "ill", "interlanguage link", "keypress",
                           "mvar", "math", "tooltip", "abbr", "nowiki", "not a typo", "sic", "bracket"))
_KEEP_PARAM_2 = frozenset(("lang", "transl", "translit", "transliteration"))
_KEEP_PARAMS_1_2 = frozenset(("convert", "cvt"))
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)|\[\s*\]")
# Punctuation left behind by dropped templates: "Aristotle (;, Aristotélēs; 384–322 BC)", "such as,, or".
_OPEN_JUNK = re.compile(r"\(\s*[,;:]*\s*")
_CLOSE_JUNK = re.compile(r"\s*[,;:]*\s*\)")
_REPEATED_COMMAS = re.compile(r",(\s*,)+")
_SPACES = re.compile(r"[ \t\u00a0]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?)])")


def normalize_title(raw: str, namespaces=DEFAULT_NAMESPACES) -> tuple[str | None, str]:
    """A link target as MediaWiki stores the page title: entities decoded, underscores as spaces,
    fragment dropped, first letter uppercase. Returns (title, "") or (None, reason) for a link that is
    not to an article: "namespace", "interwiki" or "fragment_only"."""
    t = html.unescape(raw).replace("_", " ")
    t = t.split("#", 1)[0]
    t = " ".join(t.split())
    t = t.lstrip(":").strip()
    if not t:
        return None, "fragment_only"
    if ":" in t:
        prefix = t.split(":", 1)[0].strip()
        if prefix.casefold() in namespaces:
            return None, "namespace"
        if prefix.casefold() in INTERWIKI or _LANG.match(prefix):
            return None, "interwiki"
    return t[0].upper() + t[1:], ""


class _Walker:
    def __init__(self, namespaces):
        self.namespaces = namespaces
        self.parts: list[str] = []
        self.links: list[str] = []
        self.not_article: dict[str, int] = {}

    def walk(self, code) -> None:
        for node in code.nodes:
            if isinstance(node, Text):
                self.parts.append(str(node))
            elif isinstance(node, Wikilink):
                self._link(node)
            elif isinstance(node, HTMLEntity):
                self.parts.append(node.normalize())
            elif isinstance(node, Tag):
                self._tag(node)
            elif isinstance(node, ExternalLink):
                if node.title is not None:
                    self.walk(node.title)
            elif isinstance(node, Template):
                self._template(node)
            elif isinstance(node, (Comment, Argument)):
                continue
            elif isinstance(node, Heading):
                self.parts.append("\n")
                self.walk(node.title)
                self.parts.append("\n")

    def _link(self, node: Wikilink) -> None:
        target, reason = normalize_title(str(node.title), self.namespaces)
        if target is None:
            self.not_article[reason] = self.not_article.get(reason, 0) + 1
            if reason != "fragment_only":
                return  # files, categories, interlanguage links: no visible prose
        else:
            self.links.append(target)
        if node.text is not None:
            self.walk(node.text)
        else:
            self.parts.append(str(node.title).lstrip(":").lstrip("#"))

    def _template(self, node: Template) -> None:
        # Templates are dropped (infoboxes, citations, navboxes), except the inline ones that carry words
        # of the sentence: {{lang|fr|text}}, {{convert|3003|m}}, {{nowrap|...}}.
        name = str(node.name).strip().lower().replace("_", " ")
        if name.startswith("lang-") or name in _KEEP_PARAM_1:
            keep = [1]
        elif name in _KEEP_PARAM_2:
            keep = [2]
        elif name in _KEEP_PARAMS_1_2:
            keep = [1, 2]
        else:
            return
        first = True
        for i in keep:
            if node.has(i):
                if not first:
                    self.parts.append(" ")
                self.walk(node.get(i).value)
                first = False

    def _tag(self, node: Tag) -> None:
        name = str(node.tag).strip().lower()
        if name in _DROP_TAGS:
            return
        if name in _BREAK_TAGS:
            self.parts.append("\n")
        if node.contents is not None and not node.self_closing:
            self.walk(node.contents)


def wikitext_to_text(wikitext: str, namespaces=DEFAULT_NAMESPACES) -> tuple[str, list[str], dict[str, int]]:
    """(plain text, article link targets in order, counts of non-article links by reason)."""
    code = mwparserfromhell.parse(wikitext)
    walker = _Walker(namespaces)
    skip_level = 0
    for section in code.get_sections(include_lead=True, flat=True):
        head = section.nodes[0] if section.nodes and isinstance(section.nodes[0], Heading) else None
        if head is not None:
            if skip_level and head.level > skip_level:
                continue
            skip_level = 0
            if head.title.strip_code().strip().casefold() in APPENDIX_SECTIONS:
                skip_level = head.level
                continue
        walker.walk(section)
    return _tidy("".join(walker.parts)), walker.links, walker.not_article


def _tidy(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        line = _OPEN_JUNK.sub("(", line)
        line = _CLOSE_JUNK.sub(")", line)
        line = _EMPTY_PARENS.sub("", line)
        line = _REPEATED_COMMAS.sub(",", line)
        line = _SPACES.sub(" ", line)
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line).strip()
        # list markers and leftover table/indent markup
        line = line.lstrip("*#:;|!,").strip()
        if line and any(c.isalnum() for c in line):
            lines.append(line)
    return "\n".join(lines)
