"""A folder of HTML pages (a documentation site, a Wikipedia HTML dump): one document per page.

id = the page's path relative to the folder (posix), title = ``<title>``, text = the main text without
navigation, header, footer, scripts and styles; links = hyperlinks of that main text to other pages
of the folder (relative URLs and ``../`` resolved, fragment and query dropped).

Parsing uses selectolax's lexbor backend: an HTML5 parser (pages as browsers read them, broken markup
included) that is 10-30x faster than lxml.html or BeautifulSoup on whole sites and has CSS selectors
and in-place node removal, which is all the boilerplate removal needs. Generic content extractors
(trafilatura, readability) guess the main block from text density; documentation pages are short and
link-dense, which such scoring misreads, while sites mark their navigation with a small, well-known set
of tags, roles and class names (below), so those are removed explicitly.
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from selectolax.lexbor import LexborHTMLParser
from tqdm import tqdm

from data_prep.converters.common import ConvertStats
from data_prep.errors import PrepError

PAGE_SUFFIXES = (".html", ".htm", ".xhtml")
_DROP_TAGS = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "button",
              "iframe", "svg", "canvas", "object", "embed", "select", "dialog", "link", "meta")
_DROP_ROLES = {"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar",
               "toolbar", "dialog"}
# Class/id tokens of navigation across common generators: Sphinx (related, sphinxsidebar, headerlink),
# Texinfo (header/nav-panel, section-toc, menu, copiable-anchor), DocBook (navheader/navfooter), mdBook,
# MkDocs (md-nav, md-header), Javadoc, rustdoc, MediaWiki and typical hand-written sites.
_NAV_TOKENS = {"header", "footer", "menu", "sidebar", "toc", "breadcrumb", "breadcrumbs", "related", "navbar",
               "navigation", "nav", "skip", "skip-link", "skiplink", "topbar", "masthead", "site-header",
               "site-footer", "copiable-anchor", "headerlink", "sphinxsidebar", "pager", "pagination",
               "cookie", "cookie-banner", "share", "social",
               # MediaWiki HTML (Wikipedia HTML dumps): edit links, footnote markers, reference lists,
               # category and print-only boxes
               "mw-editsection", "reference", "reflist", "references", "mw-references-wrap", "catlinks",
               "printfooter", "noprint", "mw-jump-link", "mw-indicators", "mw-cite-backlink"}
_NAV_PREFIXES = ("nav", "sidebar", "breadcrumb", "menu-", "footer", "toc-", "md-nav", "md-header",
                 "md-footer", "md-sidebar")
_NAV_SUFFIXES = ("-nav", "-navigation", "-sidebar", "-footer", "-header", "-menu", "-toc", "-breadcrumbs",
                 "-breadcrumb", "navbar", "-pager")
_BLOCKS = ("p, div, li, dt, dd, h1, h2, h3, h4, h5, h6, pre, blockquote, tr, table, ul, ol, dl, section, "
           "article, main, br, hr, figcaption, caption, td, th")
_BREAK = "\u2029"  # paragraph separator: marks line ends while other whitespace is collapsed
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w-]+)""", re.I)


def accepts(path: Path) -> bool:
    return path.name.lower().endswith(PAGE_SUFFIXES)


def _is_nav(node) -> bool:
    attrs = node.attributes
    if (attrs.get("role") or "").strip().lower() in _DROP_ROLES:
        return True
    if "hidden" in attrs or (attrs.get("aria-hidden") or "").lower() == "true":
        return True
    tokens = ((attrs.get("class") or "") + " " + (attrs.get("id") or "")).lower().split()
    return any(t in _NAV_TOKENS or t.startswith(_NAV_PREFIXES) or t.endswith(_NAV_SUFFIXES) for t in tokens)


def _decode(raw: bytes, path: Path, stats: ConvertStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    m = _CHARSET.search(raw[:4096])
    if m:
        try:
            return raw.decode(m.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            pass
    stats.other["pages_decoded_as_cp1252"] += 1
    return raw.decode("cp1252", errors="replace")


def extract_page(html: str) -> tuple[str, str, list[str]]:
    """(title, main text, hrefs of the main text in order) of one HTML page."""
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    root = tree.body
    if root is None:
        return title, "", []
    # Reverse document order: descendants go before their ancestors, so no node is freed twice.
    doomed = [n for n in root.css(", ".join(_DROP_TAGS) + ", [class], [id], [role], [hidden], [aria-hidden]")
              if n.tag in _DROP_TAGS or _is_nav(n)]
    for node in reversed(doomed):
        node.decompose()
    main = root.css_first("main") or root.css_first("[role=main]") or root.css_first("article") or root
    hrefs = [a.attributes.get("href") or "" for a in main.css("a[href]")]
    # As a browser lays text out: whitespace runs are one space, except in <pre>; blocks end lines.
    for pre in reversed(main.css("pre")):
        pre.replace_with(pre.text().replace("\n", _BREAK) + _BREAK)
    for node in main.css(_BLOCKS):
        node.insert_after(_BREAK)
    lines = (" ".join(line.split()) for line in main.text(separator="").split(_BREAK))
    text = "\n".join(line for line in lines if line)
    if not title:
        h1 = main.css_first("h1")
        title = " ".join(h1.text().split()) if h1 is not None else ""
    return title, text, hrefs


def resolve_href(href: str, page_id: str) -> tuple[str | None, str]:
    """The id (site-relative posix path) an href of page ``page_id`` points to, or (None, reason)."""
    href = href.strip()
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return None, "external" if parts.scheme in ("http", "https", "ftp", "") else "not_a_page"
    path = unquote(parts.path)
    if not path:
        return None, "same_page"  # "#section" or "?query" alone
    if path.startswith("/"):
        target = posixpath.normpath(path.lstrip("/"))
    else:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page_id), path))
    if target == ".." or target.startswith("../"):
        return None, "outside_folder"
    if path.endswith("/") or target == ".":
        target = posixpath.join("" if target == "." else target, "index.html")
    return target, ""


def iter_documents(inputs: list[Path], stats: ConvertStats, progress: bool = True) -> Iterator[dict]:
    for folder in inputs:
        pages = sorted(p for p in folder.rglob("*") if p.is_file() and accepts(p))
        if not pages:
            raise PrepError(f"{folder}: no .html/.htm pages under this folder")
        ids = {p.relative_to(folder).as_posix() for p in pages}
        for page in tqdm(pages, desc=f"html {folder.name}", unit="page", disable=not progress, leave=False):
            page_id = page.relative_to(folder).as_posix()
            stats.documents["read"] += 1
            try:
                raw = page.read_bytes()
            except OSError as e:
                raise PrepError(f"{page}: cannot read ({e.strerror})") from None
            title, text, hrefs = extract_page(_decode(raw, page, stats))
            links = []
            for href in hrefs:
                stats.links["read"] += 1
                target, reason = resolve_href(href, page_id)
                if target is not None and target not in ids:
                    # extensionless links and folders without the slash, as the site's web server serves them
                    target = next((t for t in (target + ".html", target + "/index.html") if t in ids), target)
                if target is None:
                    stats.links[f"dropped_{reason}"] += 1
                elif target == page_id:
                    stats.links["dropped_same_page"] += 1
                elif target not in ids:
                    stats.links["dropped_missing_page"] += 1
                else:
                    links.append(target)
            if not text:
                stats.skip("empty_text")
                stats.links["dropped_with_skipped_document"] += len(links)
                continue
            yield {"id": page_id, "title": title or page_id, "text": text, "links": links}
