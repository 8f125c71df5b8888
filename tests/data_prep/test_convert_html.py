"""`linkbert-prep convert html` on a small site: real Texinfo pages of the libffi manual plus hand-written
HTML5 pages with navigation, breadcrumbs, sidebar, footer and every kind of relative link."""
from __future__ import annotations

import shutil
from urllib.parse import urljoin, urlsplit

import lxml.html
import pytest

from data_prep.convert import convert
from data_prep.converters.html_site import extract_page, resolve_href
from data_prep.errors import PrepError
from tests.data_prep.convert_checks import FIXTURES, read_corpus, read_stats

SITE = FIXTURES / "html_site"


@pytest.fixture(scope="module")
def site_docs(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "site.jsonl"
    convert("html", [SITE], out, progress=False)
    return {d["id"]: d for d in read_corpus(out)}, read_stats(out)


def test_ids_titles_and_hand_checked_links(site_docs):
    docs, _ = site_docs
    assert set(docs) == {p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")}
    assert docs["guide/faq.html"]["title"] == "FAQ - FFI Notes"
    # Written by hand from the pages' <main> content; nav, breadcrumbs, sidebar and footer links excluded.
    assert docs["index.html"]["links"] == ["guide/index.html", "libffi/Introduction.html", "libffi/index.html",
                                           "guide/faq.html"]
    # ?query dropped, root-relative /guide/faq.html, ../ and #fragment
    assert docs["guide/index.html"]["links"] == ["guide/getting-started.html", "guide/faq.html",
                                                 "libffi/The-Basics.html"]
    # Structures.html is not in the folder, https:// is external, ../../archive is outside the folder
    assert docs["guide/getting-started.html"]["links"] == ["libffi/Simple-Example.html",
                                                           "libffi/Primitive-Types.html", "guide/faq.html"]
    # Multiple-ABIs.html missing, "#abi" is the page itself
    assert docs["guide/faq.html"]["links"] == ["libffi/Missing-Features.html", "guide/getting-started.html"]


def test_boilerplate_left_out_prose_kept(site_docs):
    docs, _ = site_docs
    home = docs["index.html"]["text"]
    assert home.split("\n")[0] == "FFI Notes"
    assert ("Start with the guide, which walks through a first call, or read the introduction to libffi if "
            "you already know why a foreign function interface is needed.") in home
    for junk in ("Skip to content", "Home", "Maintained by", "Contact", "dataLayer", "libffi manual\nFAQ"):
        assert junk not in home
    guide = docs["guide/index.html"]["text"]
    for junk in ("In this guide", "font-family", "Back to top", "»", "©"):
        assert junk not in guide
    assert "Last updated" not in docs["guide/getting-started.html"]["text"]
    # <pre> keeps its lines
    assert "ffi_type *args[1];\nvoid *values[1];" in docs["libffi/Simple-Example.html"]["text"]


def test_texinfo_navigation_panel_excluded(site_docs):
    """Checked with lxml, a different parser: the header panel's Next/Previous/Up links never become links
    unless the page's own text links there too, and every link is a main-text href that exists."""
    docs, _ = site_docs
    for page in sorted((SITE / "libffi").glob("*.html")):
        page_id = page.relative_to(SITE).as_posix()
        tree = lxml.html.fromstring(page.read_bytes())
        base = "http://site/" + page_id

        def resolved(anchors, base=base):
            out = []
            for a in anchors:
                u = urlsplit(urljoin(base, a.get("href")))
                if u.netloc == "site":
                    out.append(u.path.lstrip("/"))
            return out

        nav = set(resolved(tree.xpath("//div[@class='header']//a[@href]")))
        menus = set(resolved(tree.xpath("//*[contains(@class,'menu') or contains(@class,'toc')]//a[@href]")))
        body = [t for t in resolved(tree.xpath("//body//a[@href]")) if t != page_id]
        doc = docs[page_id]
        assert set(doc["links"]) <= {t for t in body if (SITE / t).is_file()}
        only_nav = (nav | menus) - set(resolved(tree.xpath(
            "//body//a[@href][not(ancestor::div[@class='header'])][not(ancestor::*[contains(@class,'menu')])]"
            "[not(ancestor::*[contains(@class,'toc')])]")))
        assert not (set(doc["links"]) & only_nav), page_id
        assert "Next:" not in doc["text"] and "Previous:" not in doc["text"]
    assert docs["libffi/The-Basics.html"]["links"] == ["libffi/Types.html"]


def test_link_counts_add_up(site_docs):
    docs, stats = site_docs
    links = stats["links"]
    assert links["written"] == sum(len(d["links"]) for d in docs.values())
    assert links["read"] == links["written"] + sum(v for k, v in links.items() if k.startswith("dropped_"))
    assert links["dropped_external"] == 1 and links["dropped_outside_folder"] == 1
    assert links["dropped_missing_page"] >= 2 and links["dropped_same_page"] >= 1


@pytest.mark.parametrize("href,expected", [
    ("b.html", ("guide/b.html", "")),
    ("./b.html#x", ("guide/b.html", "")),
    ("../libffi/Types.html?x=1#y", ("libffi/Types.html", "")),
    ("/index.html", ("index.html", "")),
    ("sub/", ("guide/sub/index.html", "")),
    ("./", ("guide/index.html", "")),
    ("../", ("index.html", "")),
    ("Hello%20World.html", ("guide/Hello World.html", "")),
    ("#top", (None, "same_page")),
    ("../../x.html", (None, "outside_folder")),
    ("https://example.org/a.html", (None, "external")),
    ("//cdn.example.org/x.html", (None, "external")),
    ("mailto:a@b.c", (None, "not_a_page")),
    ("javascript:void(0)", (None, "not_a_page")),
])
def test_resolve_href(href, expected):
    assert resolve_href(href, "guide/a.html") == expected


def test_legacy_charset_and_empty_pages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "latin.htm").write_bytes('<html><head><meta charset="iso-8859-1"><title>Caf\xe9</title></head>'
                                     '<body><p>Cr\xe8me br\xfbl\xe9e, <a href="only-nav.html">see</a>.</p>'
                                     "</body></html>".encode("latin-1"))
    (site / "only-nav.html").write_text('<html><body><nav><a href="latin.htm">x</a></nav>'
                                        "<script>var a = 1;</script></body></html>")
    out = tmp_path / "o.jsonl"
    summary = convert("html", [site], out, progress=False)
    docs = read_corpus(out)
    assert docs == [{"id": "latin.htm", "title": "Café", "text": "Crème brûlée, see.", "links": ["only-nav.html"]}]
    assert summary["documents"]["skipped"] == {"empty_text": 1}


def test_extract_page_prefers_main_and_falls_back_to_h1():
    title, text, hrefs = extract_page('<body><div class="sidebar"><a href="a.html">A</a></div><p>outside</p>'
                                      '<main><h1>Heading</h1><p>inside <a href="b.html">B</a></p></main></body>')
    assert (title, text, hrefs) == ("Heading", "Heading\ninside B", ["b.html"])


def test_bad_inputs(tmp_path):
    with pytest.raises(PrepError, match="must be a folder"):
        convert("html", [SITE / "index.html"], tmp_path / "o.jsonl", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(PrepError, match=f"{empty}: no .html"):
        convert("html", [empty], tmp_path / "o.jsonl", progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(SITE, copy)
    with pytest.raises(PrepError, match="also an input"):
        convert("html", [copy], copy, progress=False)


def test_mediawiki_html_page(tmp_path):
    """The shape of a page of a Wikipedia HTML dump (MediaWiki skin markup)."""
    site = tmp_path / "wiki" / "A"
    site.mkdir(parents=True)
    (site / "Abacus.html").write_text(
        '<html><head><title>Abacus - Wikipedia</title></head><body><a class="mw-jump-link" href="#content">'
        'Jump to content</a><div id="mw-navigation"><a href="Main_Page.html">Main page</a></div>'
        '<div id="content" role="main"><h1>Abacus</h1><div class="hatnote navigation-not-searchable">Not to be'
        ' confused with <a href="Abaca.html">Abaca</a>.</div><p>The <b>abacus</b> is a calculating tool'
        '<sup class="reference"><a href="#cite_note-1">[1]</a></sup> used in <a href="../C/China.html">China'
        '</a>.</p><h2>History<span class="mw-editsection">[<a href="edit.html">edit</a>]</span></h2>'
        '<p>Old.</p><div class="reflist"><ol class="references"><li>A book.</li></ol></div>'
        '<div id="catlinks" class="catlinks"><a href="Category_Tools.html">Tools</a></div></div>'
        '<div id="footer"><a href="Privacy.html">Privacy policy</a></div></body></html>')
    (tmp_path / "wiki" / "C").mkdir()
    (tmp_path / "wiki" / "C" / "China.html").write_text("<html><body><p>A country.</p></body></html>")
    out = tmp_path / "o.jsonl"
    convert("html", [tmp_path / "wiki"], out, progress=False)
    doc = read_corpus(out)[0]
    assert doc["id"] == "A/Abacus.html" and doc["title"] == "Abacus - Wikipedia"
    assert doc["text"] == "Abacus\nThe abacus is a calculating tool used in China.\nHistory\nOld."
    assert doc["links"] == ["C/China.html"]


def test_links_as_a_web_server_serves_them(tmp_path):
    site = tmp_path / "s"
    (site / "guide").mkdir(parents=True)
    (site / "guide" / "index.html").write_text("<p>Guide.</p>")
    (site / "faq.html").write_text("<p>FAQ.</p>")
    (site / "index.html").write_text('<p>See <a href="guide">the guide</a> and <a href="faq">FAQ</a>.</p>')
    out = tmp_path / "o.jsonl"
    convert("html", [site], out, progress=False)
    docs = {d["id"]: d for d in read_corpus(out)}
    assert docs["index.html"]["links"] == ["guide/index.html", "faq.html"]
