"""`linkbert-prep convert pubmed` on real MEDLINE citations cut from pubmed20n0014.xml.gz."""
from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET

import pytest

from data_prep.convert import convert
from data_prep.converters.pubmed import iter_citations
from data_prep.errors import PrepError
from tests.data_prep.convert_checks import FIXTURES, read_corpus, read_stats

SAMPLE = FIXTURES / "pubmed_sample.xml.gz"


def _expected():
    """PMID -> (has abstract, cited PMIDs in order) read with the stdlib parser, a different method."""
    root = ET.fromstring(gzip.decompress(SAMPLE.read_bytes()))
    out = {}
    for art in root.iter("PubmedArticle"):
        pmid = art.find("MedlineCitation/PMID").text
        has_abs = art.find("MedlineCitation/Article/Abstract/AbstractText") is not None
        cited = []
        for ref in art.iter("Reference"):
            for aid in ref.iter("ArticleId"):
                if aid.get("IdType") == "pubmed" and aid.text not in cited:
                    cited.append(aid.text)
        out[pmid] = (has_abs, cited)
    return out


def test_documents_links_and_counts(tmp_path):
    out = tmp_path / "pm.jsonl.gz"
    summary = convert("pubmed", [SAMPLE], out, progress=False)
    docs = {d["id"]: d for d in read_corpus(out)}
    expected = _expected()
    assert len(expected) == 8
    assert set(docs) == {p for p, (has_abs, _) in expected.items() if has_abs}
    for pmid, doc in docs.items():
        assert doc["links"] == expected[pmid][1]
    # checked by hand in the XML: 401896 cites 401897 (also in the sample) among 30+ references
    assert "401897" in docs["401896"]["links"] and len(docs["401896"]["links"]) > 20
    stats = read_stats(out)
    assert stats["documents"] == summary["documents"] and stats["links"] == summary["links"]
    assert stats["documents"]["read"] == 8
    assert stats["documents"]["skipped"] == {"no_abstract": 2}
    assert stats["links"]["written"] == sum(len(d["links"]) for d in docs.values())
    assert stats["links"]["read"] == sum(len(c) for _, c in expected.values())


def test_structured_abstract_sections_and_text():
    cits = {c.pmid: c for c in iter_citations(SAMPLE)}
    c = cits["421919"]
    assert [s.label for s in c.sections] == ["", "CONCLUSION"]  # UNLABELLED becomes no prefix
    assert [s.category for s in c.sections] == ["", "CONCLUSIONS"]
    assert c.sections[1].text.startswith("ligation of the testicular vein causes an acute rise")
    lines = c.text.split("\n")
    root = ET.fromstring(gzip.decompress(SAMPLE.read_bytes()))
    title = [a.find("MedlineCitation/Article/ArticleTitle").text for a in root.iter("PubmedArticle")
             if a.find("MedlineCitation/PMID").text == "421919"]
    assert lines[0] == c.title == title[0]
    assert lines[2].startswith("CONCLUSION: ligation of the testicular vein")
    assert "UNLABELLED" not in c.text
    assert [s.label for s in cits["419900"].sections] == ["", "INDICATION"]


def test_title_only_citations_kept_on_request(tmp_path):
    out = tmp_path / "pm.jsonl"
    convert("pubmed", [SAMPLE], out, progress=False, keep_title_only=True)
    docs = {d["id"]: d for d in read_corpus(out)}
    assert len(docs) == 8
    # 400955 has only RetractionOf/CommentIn corrections: not citations, so no links
    assert docs["400955"]["links"] == []
    assert docs["400955"]["text"] == docs["400955"]["title"]


def test_comments_corrections_cites_come_first_and_deduplicated(tmp_path):
    # The sample file has no CommentsCorrections of type Cites (older citations); add one to a real
    # record, as MEDLINE writes it, citing one PMID that the ReferenceList also cites.
    xml = gzip.decompress(SAMPLE.read_bytes()).decode()
    anchor = "<CitationSubset>"
    i = xml.index(anchor, xml.index("<PMID Version=\"1\">413296</PMID>"))
    cc = ('<CommentsCorrectionsList><CommentsCorrections RefType="Cites"><RefSource>x</RefSource>'
          '<PMID Version="1">111</PMID></CommentsCorrections><CommentsCorrections RefType="CommentIn">'
          '<RefSource>y</RefSource><PMID Version="1">222</PMID></CommentsCorrections>'
          '<CommentsCorrections RefType="Cites"><RefSource>z</RefSource><PMID Version="1">5363538</PMID>'
          "</CommentsCorrections></CommentsCorrectionsList>")
    path = tmp_path / "edited.xml"
    path.write_text(xml[:i] + cc + xml[i:])
    cits = {c.pmid: c for c in iter_citations(path)}
    assert cits["413296"].cited == ["111", "5363538"]
    out = tmp_path / "pm.jsonl.bz2"
    summary = convert("pubmed", [path], out, progress=False)
    assert summary["links"]["dropped_repeated"] == 1
    assert {d["id"]: d for d in read_corpus(out)}["413296"]["links"] == ["111", "5363538"]


def test_directory_input_and_duplicate_pmids(tmp_path):
    d = tmp_path / "baseline"
    d.mkdir()
    (d / "a.xml.gz").write_bytes(SAMPLE.read_bytes())
    (d / "b.xml").write_bytes(gzip.decompress(SAMPLE.read_bytes()))
    (d / "notes.txt").write_text("not xml")
    out = tmp_path / "pm.jsonl"
    summary = convert("pubmed", [d], out, progress=False)
    assert len(summary["inputs"]) == 2
    assert summary["documents"]["read"] == 16
    assert summary["documents"]["skipped"] == {"duplicate_id": 8, "no_abstract": 2}
    assert len(read_corpus(out)) == 6


@pytest.mark.parametrize("case", ["truncated", "malformed", "not_pubmed", "missing"])
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    raw = gzip.decompress(SAMPLE.read_bytes())
    path = tmp_path / "bad.xml.gz"
    if case == "truncated":
        path.write_bytes(SAMPLE.read_bytes()[:3000])
    elif case == "malformed":
        path = tmp_path / "bad.xml"
        path.write_bytes(raw.replace(b"</ArticleTitle>", b"</ArticleTitl>", 1))
    elif case == "not_pubmed":
        path = tmp_path / "bad.xml"
        path.write_text("<?xml version='1.0'?><rss><channel><title>x</title></channel></rss>")
    else:
        path = tmp_path / "nope.xml.gz"
    out = tmp_path / "o.jsonl"
    with pytest.raises(PrepError) as err:
        convert("pubmed", [path], out, progress=False)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    if case == "malformed":
        assert "line " in msg
    assert not out.exists() and not (tmp_path / "o.jsonl.partial").exists()


def test_bad_output_name(tmp_path):
    with pytest.raises(PrepError, match="--out"):
        convert("pubmed", [SAMPLE], tmp_path / "corpus.json", progress=False)


def test_parallel_files_give_identical_output(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    xml = gzip.decompress(SAMPLE.read_bytes()).decode()
    (d / "a.xml.gz").write_bytes(SAMPLE.read_bytes())
    (d / "b.xml").write_text(xml)  # the same PMIDs again: all duplicates
    (d / "c.xml").write_text(xml.replace(">399296<", ">99399296<"))  # one new PMID
    one, two = tmp_path / "one.jsonl.gz", tmp_path / "two.jsonl.gz"
    s1 = convert("pubmed", [d], one, progress=False)
    s2 = convert("pubmed", [d], two, progress=False, workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert (s1["documents"], s1["links"]) == (s2["documents"], s2["links"])
    assert s1["documents"]["skipped"]["duplicate_id"] == 15
    assert "99399296" in {doc["id"] for doc in read_corpus(one)}
    assert not list(tmp_path.glob(".pubmed-parts-*"))


def test_parallel_bad_file_is_one_line(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.xml.gz").write_bytes(SAMPLE.read_bytes())
    (d / "b.xml.gz").write_bytes(SAMPLE.read_bytes()[:3000])
    with pytest.raises(PrepError) as err:
        convert("pubmed", [d], tmp_path / "o.jsonl", progress=False, workers=2)
    assert str(d / "b.xml.gz") in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".pubmed-parts-*"))


def test_cited_ids_that_are_not_pmids_are_dropped_and_counted(tmp_path):
    xml = gzip.decompress(SAMPLE.read_bytes()).decode()
    bad = ('<Reference><Citation>x</Citation><ArticleIdList><ArticleId IdType="pubmed">12ab</ArticleId>'
           '<ArticleId IdType="pmc">PMC1</ArticleId></ArticleIdList></Reference>')
    i = xml.index("<Reference>", xml.index('<PMID Version="1">413296</PMID>'))
    path = tmp_path / "e.xml"
    path.write_text(xml[:i] + bad + xml[i:])
    summary = convert("pubmed", [path], tmp_path / "o.jsonl", progress=False)
    assert summary["links"]["dropped_not_a_pmid"] == 1
    assert {d["id"]: d for d in read_corpus(tmp_path / "o.jsonl")}["413296"]["links"] == ["5363538"]
