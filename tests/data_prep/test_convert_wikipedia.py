"""`linkbert-prep convert wikipedia` on pages cut from a real enwiki dump and on real WikiExtractor 3.1.0
output of those pages (see tests/fixtures/convert/make_fixtures.py)."""
from __future__ import annotations

import bz2
import json
import re
import shutil
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import pytest

from data_prep.convert import convert
from data_prep.converters.common import ConvertStats
from data_prep.converters.wikipedia import resolve, strip_anchors
from data_prep.converters.wikitext import normalize_title, wikitext_to_text
from data_prep.errors import PrepError
from tests.data_prep.convert_checks import FIXTURES, read_corpus, read_stats

DUMP = FIXTURES / "enwiki_sample.xml.bz2"
WX_JSON = FIXTURES / "wikiextractor_json"
WX_DOC = FIXTURES / "wikiextractor_doc"


def _pages():
    """title -> (ns, is redirect, wikitext), read with the stdlib parser."""
    root = ET.fromstring(bz2.decompress(DUMP.read_bytes()))
    ns = {"m": root.tag[1:].split("}")[0]}
    return {p.find("m:title", ns).text: (p.find("m:ns", ns).text, p.find("m:redirect", ns) is not None,
                                         p.find("m:revision/m:text", ns).text or "")
            for p in root.findall("m:page", ns)}


def _norm(t: str) -> str:
    t = unquote(t).replace("_", " ").split("#")[0].strip()
    return t[:1].upper() + t[1:]


def test_dump_articles_text_and_links(tmp_path):
    out = tmp_path / "wiki.jsonl.gz"
    convert("wikipedia", [DUMP], out, progress=False)
    docs = {d["id"]: d for d in read_corpus(out)}
    pages = _pages()
    assert set(docs) == {t for t, (ns, red, _) in pages.items() if ns == "0" and not red}
    stats = read_stats(out)
    assert stats["documents"]["skipped"] == {"redirect": 4, "not_article_namespace": 1}
    for title, doc in docs.items():
        raw = pages[title][2]
        written = {_norm(m) for m in re.findall(r"\[\[([^\]|]+)", raw)}
        assert set(doc["links"]) <= written, title  # every link is a [[target]] of the page
        assert not any(t.split(":")[0] in ("File", "Category", "Image") for t in doc["links"])
        for junk in ("[[", "]]", "{{", "}}", "<ref", "thumb|", "Category:"):
            assert junk not in doc["text"], (title, junk)
    transport = docs["Transport in Angola"]
    assert transport["links"][0] == "Angola"
    # anchor text of a piped link is kept, its target becomes the link (checked by hand in the wikitext)
    raw = pages["Abacus"][2]
    assert "[[Greek language|Greek]]" in raw and "Greek language" in docs["Abacus"]["links"]
    assert "[[Genitive case|genitive form]]" in raw and "genitive form" in docs["Abacus"]["text"]
    # a link only inside a File caption is not prose: it is not a link of the document
    assert "[[Gregor Reisch]]" in raw and "[[Gregor Reisch]]" not in re.sub(r"\[\[File:[^\n]*", "", raw)
    assert "Gregor Reisch" not in docs["Abacus"]["links"]
    # appendix sections are dropped
    assert "External links" not in docs["Abacus"]["text"].split("\n")


def test_wikiextractor_json_and_doc_forms(tmp_path):
    a, b = tmp_path / "json.jsonl", tmp_path / "doc.jsonl"
    convert("wikipedia", [WX_JSON], a, progress=False)
    convert("wikipedia", [WX_DOC], b, progress=False)
    ja, jb = read_corpus(a), read_corpus(b)
    assert ja == jb and len(ja) == 6
    raw = [json.loads(line) for line in bz2.decompress((WX_JSON / "AA" / "wiki_00.bz2").read_bytes()).splitlines()]
    for rec, doc in zip(raw, ja):
        hrefs = [_norm(h) for h in re.findall(r'&lt;a href="([^"]*)"&gt;', rec["text"])]
        assert doc["links"] == [h for h in hrefs if h]
        assert "&lt;" not in doc["text"] and "<a href" not in doc["text"]
        assert doc["id"] == rec["title"]
    # anchors keep their text: "&lt;a href="Eastern%20Europe"&gt;Eastern Europe&lt;/a&gt;"
    abacus = ja[0]
    assert abacus["id"] == "Abacus" and "parts of Eastern Europe, Russia, China and Africa" in abacus["text"]
    assert abacus["links"][:5] == ["Hindu–Arabic numeral system", "Eastern Europe", "Russia", "China", "Africa"]


def _dump_with(tmp_path, extra_pages: list[tuple[str, str]]):
    """The real dump plus redirect pages (title -> target) added the way MediaWiki writes them."""
    xml = bz2.decompress(DUMP.read_bytes()).decode()
    add = "".join(f"  <page>\n    <title>{t}</title>\n    <ns>0</ns>\n    <id>{900 + i}</id>\n"
                  f'    <redirect title="{target}" />\n    <revision><text>#REDIRECT [[{target}]]</text>'
                  "</revision>\n  </page>\n" for i, (t, target) in enumerate(extra_pages))
    path = tmp_path / "dump.xml"
    path.write_text(xml.replace("</mediawiki>", add + "</mediawiki>"))
    return path


def test_links_resolve_through_redirects_across_inputs(tmp_path):
    dump = _dump_with(tmp_path, [("Counting frame", "AbacuS"), ("Loop a", "Loop b"), ("Loop b", "Loop a")])
    wx = tmp_path / "wx.json"
    text = ('Beads on a &lt;a href="counting_frame#Use"&gt;frame&lt;/a&gt;, see &lt;a href="abacuS"&gt;x&lt;/a&gt;'
            ' and &lt;a href="ANOVA"&gt;y&lt;/a&gt; &lt;a href="Loop%20a"&gt;z&lt;/a&gt; '
            '&lt;a href="Transport_in_Angola"&gt;t&lt;/a&gt; &lt;a href="https://example.org"&gt;e&lt;/a&gt;.')
    wx.write_text(json.dumps({"id": "1", "url": "u", "title": "Bead counting", "text": text}) + "\n")
    out = tmp_path / "w.jsonl"
    summary = convert("wikipedia", [dump, wx], out, progress=False)
    docs = {d["id"]: d for d in read_corpus(out)}
    assert docs["Bead counting"]["text"] == "Beads on a frame, see x and y z t e."
    # chain Counting frame -> AbacuS -> Abacus; ANOVA -> "Analysis of variance" (not in the input, kept);
    # the loop is kept as written (build drops it as missing)
    assert docs["Bead counting"]["links"] == ["Abacus", "Abacus", "Analysis of variance", "Loop a",
                                              "Transport in Angola"]
    assert summary["links"]["resolved_via_redirect"] >= 2
    assert summary["links"]["redirect_loop_kept"] == 1
    assert summary["links"]["not_article_external"] == 1
    assert summary["other"]["inputs_dump"] == 1 and summary["other"]["inputs_wikiextractor-json"] == 1


def test_resolve_function():
    red = {"A": "B", "B": "C", "X": "Y", "Y": "X", "U": "V"}
    arts = {"C", "B2"}
    assert resolve("A", red, arts) == ("C", "redirect")
    assert resolve("C", red, arts) == ("C", "direct")
    assert resolve("X", red, arts) == ("X", "loop")
    assert resolve("U", red, arts) == ("V", "unresolved")
    assert resolve("Q", red, arts) == ("Q", "unresolved")


@pytest.mark.parametrize("raw,expected", [
    ("political_philosophy#History", ("Political philosophy", "")),
    ("  Star Wars: Episode I ", ("Star Wars: Episode I", "")),
    (":Category:Anarchism", (None, "namespace")),
    ("file:Foo.jpg", (None, "namespace")),
    ("fr:Paris", (None, "interwiki")),
    ("wikt:abacus", (None, "interwiki")),
    ("#Etymology", (None, "fragment_only")),
    ("AT&amp;T", ("AT&T", "")),
])
def test_normalize_title(raw, expected):
    assert normalize_title(raw) == expected


def test_wikitext_to_text_drops_markup_keeps_anchor_text():
    wt = ("'''Foo''' is a [[bar baz|Bar thing]]{{citation needed}} with [[qux]]es<ref>[[Hidden]]</ref>.\n"
          "[[File:X.jpg|thumb|A [[caption link]]]]\n{| class=wikitable\n| [[Cell]] || 2\n|}\n"
          "* item [[Listed]]\n== See also ==\n* [[Other]]\n== History ==\nIt began.[[Category:Things]]"
          "[[de:Foo]]")
    text, links, not_article = wikitext_to_text(wt)
    assert text == "Foo is a Bar thing with quxes.\nitem Listed\nHistory\nIt began."
    assert links == ["Bar baz", "Qux", "Listed"]
    assert not_article == {"namespace": 2, "interwiki": 1}  # File, Category; de:


def test_directory_of_mixed_inputs(tmp_path):
    d = tmp_path / "in"
    shutil.copytree(WX_DOC, d / "extracted")
    shutil.copy(DUMP, d / "pages.xml.bz2")
    (d / "README").write_text("ignored: not an input name")
    out = tmp_path / "w.jsonl.bz2"
    summary = convert("wikipedia", [d], out, progress=False)
    assert summary["other"]["inputs_dump"] == 1 and summary["other"]["inputs_wikiextractor-doc"] == 1
    assert summary["documents"]["skipped"]["duplicate_id"] == 6  # same six articles in both forms
    assert len(read_corpus(out)) == 6


@pytest.mark.parametrize("case", ["bad_json", "unclosed_doc", "unknown", "truncated", "bad_xml"])
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    if case == "bad_json":
        path = tmp_path / "wiki_00"
        path.write_text('{"title": "A", "text": "ok"}\n{"title": "B", "text": \n')
        where = f"{path}:2"
    elif case == "unclosed_doc":
        path = tmp_path / "wiki_01"
        path.write_text('<doc id="1" url="u" title="A">\nA\n\ntext\n</doc>\n<doc id="2" url="u" title="B">\nB\n')
        where = f"{path}:6"
    elif case == "unknown":
        path = tmp_path / "x.json"
        path.write_text("hello")
        where = str(path)
    elif case == "truncated":
        path = tmp_path / "t.xml.bz2"
        path.write_bytes(DUMP.read_bytes()[:20000])
        where = str(path)
    else:
        path = tmp_path / "b.xml"
        path.write_text(bz2.decompress(DUMP.read_bytes()).decode().replace("</title>", "</titl>", 3))
        where = str(path)
    with pytest.raises(PrepError) as err:
        convert("wikipedia", [path], tmp_path / "o.jsonl", progress=False)
    assert where in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o.jsonl").exists()
    assert not list(tmp_path.glob(".wikipedia-stage-*"))


def test_strip_anchors_counts_external():
    stats = ConvertStats("wikipedia")
    text, links = strip_anchors('<a href="http://x.org">site</a> and <a href="Foo%20bar">foo</a>', stats)
    assert (text, links) == ("site and foo", ["Foo bar"])
    assert stats.links["not_article_external"] == 1 and stats.links["read"] == 2


def test_worker_processes_give_identical_output(tmp_path):
    a, b = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    convert("wikipedia", [DUMP], a, progress=False)
    convert("wikipedia", [DUMP], b, progress=False, workers=2)
    assert a.read_bytes() == b.read_bytes()
    assert json.loads((tmp_path / "one.jsonl.stats.json").read_text())["links"] == \
        json.loads((tmp_path / "two.jsonl.stats.json").read_text())["links"]


def test_files_in_parallel_give_identical_output(tmp_path):
    d = tmp_path / "in"
    shutil.copytree(WX_JSON, d / "extracted")
    (d / "extracted" / "AB").mkdir()
    (d / "extracted" / "AB" / "wiki_00").write_text(json.dumps({
        "id": "9", "url": "u", "title": "Counting",
        "text": 'See &lt;a href="AbacuS"&gt;abacus&lt;/a&gt; and &lt;a href="Angola"&gt;Angola&lt;/a&gt;.'}) + "\n")
    dump = _dump_with(tmp_path, [("Counting frame", "AbacuS")])
    shutil.move(dump, d / "z_dump.xml")
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    s1 = convert("wikipedia", [d], one, progress=False)
    s2 = convert("wikipedia", [d], two, progress=False, workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert (s1["documents"], s1["links"], s1["other"]) == (s2["documents"], s2["links"], s2["other"])
    docs = {doc["id"]: doc for doc in read_corpus(one)}
    # the dump comes last, yet its redirect resolves the link of an earlier WikiExtractor file
    assert docs["Counting"]["links"] == ["Abacus", "Angola"]
    assert not list(tmp_path.glob(".wikipedia-stage-*"))


def test_files_in_parallel_bad_file_is_one_line(tmp_path):
    d = tmp_path / "in"
    shutil.copytree(WX_JSON, d)
    (d / "AA" / "wiki_01").write_text('{"title": "A", "text": "ok"}\n{broken\n')
    with pytest.raises(PrepError) as err:
        convert("wikipedia", [d], tmp_path / "o.jsonl", progress=False, workers=2)
    assert f"{d / 'AA' / 'wiki_01'}:2: not valid JSON" in str(err.value)
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".wikipedia-stage-*"))


def test_inline_templates_keep_their_words_and_leave_no_stray_punctuation():
    wt = ("'''Aristotle''' ({{IPAc-en|ˈ|ær|ɪ|s|t|ɒ|t|əl}};<ref>x</ref> {{lang-grc|[[Ἀριστοτέλης]]}}, "
          "''Aristotélēs''; 384–322 BC) rose {{convert|3003|m|ft}} high, {{nowrap|in [[Stagira]]}}, "
          "particularly {{IPA|a}}, {{IPA|b}}, and {{lang|fr|la ville}}.{{Infobox person|name=A}}\n"
          "{{As of|2010}}, it grew.")
    text, links, _ = wikitext_to_text(wt)
    assert text == ("Aristotle (Ἀριστοτέλης, Aristotélēs; 384–322 BC) rose 3003 m high, in Stagira, particularly, "
                    "and la ville.\nit grew.")
    assert links == ["Ἀριστοτέλης", "Stagira"]


def test_previous_output_in_input_folder_is_not_read(tmp_path):
    d = tmp_path / "extracted"
    shutil.copytree(WX_JSON, d)
    out = d / "corpus.jsonl"
    convert("wikipedia", [d], out, progress=False)
    first = out.read_bytes()
    summary = convert("wikipedia", [d], out, progress=False)  # again, the output now lies in the folder
    assert summary["inputs"] == [str(d / "AA" / "wiki_00.bz2")] and out.read_bytes() == first
    with pytest.raises(PrepError, match="also an input"):
        convert("wikipedia", [out], out, progress=False)


def test_parse_pages_in_small_batches_keeps_order():
    import multiprocessing

    from data_prep.converters.wikipedia import parse_pages, read_dump

    def docs(pool, batch):
        stats = ConvertStats("wikipedia")
        out = list(parse_pages(read_dump(DUMP, stats, {}, False), stats, pool, batch=batch))
        return out, stats.as_dict()["links"]

    serial = docs(None, 256)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert docs(pool, 2) == serial and docs(pool, 4) == serial
    assert [d["id"] for d in serial[0]] == ["Abacus", "Angola", "Demographics of Angola", "Politics of Angola",
                                            "Transport in Angola", "Foreign relations of Angola"]
