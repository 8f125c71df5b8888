"""`linkbert-prep convert dictd` on a slice of the real Jargon File dictionary, and the bundled corpus."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from data_prep.convert import convert
from data_prep.errors import PrepError
from tests.data_prep.convert_checks import FIXTURES, read_corpus, read_stats

INDEX = FIXTURES / "jargon_slice.index"
BUNDLED = Path(__file__).resolve().parents[2] / "data_prep" / "corpora"
_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _raw_entries():
    """headword -> raw entry text, decoded here with shifts (the converter multiplies)."""
    blob = gzip.decompress((FIXTURES / "jargon_slice.dict.dz").read_bytes())
    out = []
    for line in INDEX.read_text().splitlines():
        head, off, n = line.split("\t")
        o = sum(_DIGITS.index(c) << (6 * i) for i, c in enumerate(reversed(off)))
        k = sum(_DIGITS.index(c) << (6 * i) for i, c in enumerate(reversed(n)))
        out.append((head, blob[o:o + k].decode()))
    return out


@pytest.fixture(scope="module")
def slice_docs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dictd") / "jargon.jsonl.gz"
    summary = convert("dictd", [INDEX], out, progress=False)
    return {d["id"]: d for d in read_corpus(out)}, summary, out


def test_entries_become_documents(slice_docs):
    docs, summary, out = slice_docs
    raw = _raw_entries()
    assert len(raw) == 20
    content = [(h, body) for h, body in raw if not h.startswith("00-database-")]
    # id = the headword as the entry spells it on its first line (the index has it lowercased)
    assert sorted(docs) == sorted(body.split("\n", 1)[0] for _, body in content)
    assert {"OP", "op", "UN*X", "(TM)", "1TBS"} <= set(docs)
    assert read_stats(out)["documents"]["skipped"] == {"dictd_internal_entry": 2}
    for head, body in content:
        doc = docs[body.split("\n", 1)[0]]
        assert doc["title"] == doc["id"]
        # the first words of the body (after the pronunciation header) open the text, unwrapped
        para = body.split("\n\n", 1)[1].strip() if body.split("\n")[1].startswith(" ") else body
        first_words = " ".join(para.replace("{", "").replace("}", "").split()[:6])
        assert " ".join(doc["text"].split()).startswith(first_words), head
        assert "    " not in doc["text"]


def test_cross_references_resolved_in_order(slice_docs):
    docs, summary, _ = slice_docs
    # read by hand from the entries
    assert docs["(TM)"]["links"] == ["UN*X"]                     # {UN*X}
    assert docs["/dev/null"]["links"] == ["bit bucket"]
    assert docs["1TBS"]["links"] == ["indent style"]
    assert docs["UN*X"]["links"] == ["(TM)", "glob", "splat out"]
    assert docs["op"]["links"] == ["sysop", "IRC", "CHOP", "sysop"]  # "{CHOP\n    }" across a line break
    assert docs["op"]["text"].endswith("Sometimes used interchangeably with CHOP. Compare sysop.")
    assert "{" not in docs["op"]["text"] and "}" not in docs["1TBS"]["text"]
    # a reference outside the slice is kept (build drops it and counts it)
    assert docs["bit bucket"]["links"] == ["Unix", "/dev/null", "Finagle's Law", "black hole", "chad box",
                                           "chad box", "bit bucket"]
    assert summary["links"]["unresolved_kept"] == sum(t not in docs for d in docs.values() for t in d["links"])


def test_code_braces_and_ascii_art(slice_docs):
    docs, summary, _ = slice_docs
    # the C code's "{ case 0: do { *to = *from++; ...}" is not a cross-reference
    assert docs["Duff's device"]["links"] == ["fall through", "fall through"]
    assert summary["other"]["literal_braces_kept"] >= 1
    art = docs["ASCII art"]["text"]
    assert "o----)||(" not in art and "A power supply consisting of a full wave rectifier circuit" in art
    assert summary["other"]["art_paragraphs_dropped"] >= 1


def test_deterministic_bytes(tmp_path):
    a, b = tmp_path / "a" / "x.jsonl.gz", tmp_path / "b" / "y.jsonl.gz"
    convert("dictd", [INDEX], a, progress=False)
    convert("dictd", [FIXTURES], b, progress=False)  # a directory: its .index files
    assert a.read_bytes() == b.read_bytes()


def test_bundled_jargon_corpus():
    docs = read_corpus(BUNDLED / "jargon.jsonl.gz")
    assert len(docs) == 2307
    ids = {d["id"] for d in docs}
    links = [t for d in docs for t in d["links"]]
    assert sum(t in ids for t in links) >= 5300 and len(links) - sum(t in ids for t in links) < 20
    assert sum(len(d["text"].split()) for d in docs) > 190_000
    notice = (BUNDLED / "NOTICE").read_text()
    assert "public domain" in notice and "linkbert-prep convert dictd" in notice


@pytest.mark.parametrize("case", ["no_data", "bad_line", "bad_digits", "past_end"])
def test_bad_dictionary(tmp_path, case):
    index = tmp_path / "d.index"
    lines = INDEX.read_text().splitlines()
    if case != "no_data":
        (tmp_path / "d.dict.dz").write_bytes((FIXTURES / "jargon_slice.dict.dz").read_bytes())
    if case == "bad_line":
        lines[3] = "no tabs here"
    elif case == "bad_digits":
        lines[3] = "x\tA*\tB"
    elif case == "past_end":
        lines[3] = "x\tA\t////"
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(PrepError) as err:
        convert("dictd", [index], tmp_path / "o.jsonl", progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert (f"{index}:4" in msg) if case != "no_data" else ("d.dict.dz" in msg and str(index) in msg)
