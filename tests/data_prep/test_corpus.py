"""The corpus reader's checks (SPEC section 2): each bad-input case is an error naming file:line, or a
counted skip with --skip-bad-lines; empty documents and bad links are always counted."""
from __future__ import annotations

import bz2
import gzip
import json

import pytest

from data_prep.corpus import CorpusIndex, corpus_files, iter_documents
from data_prep.errors import PrepError
from tests.data_prep.build_checks import FIXTURES, load, run_build, write_jsonl

BAD = FIXTURES / "bad_lines.jsonl"


@pytest.mark.parametrize("lineno,what", [(4, "not valid JSON"), (5, "not valid UTF-8"),
                                         (6, "field 'id' is missing"), (10, "field 'text' is a int"),
                                         (11, "duplicate id '-ware' (first at")])
def test_each_bad_line_is_an_error_naming_file_and_line(tmp_path, lineno, what):
    lines = BAD.read_bytes().split(b"\n")
    # keep the good lines 1-3 and the one bad line under test, at its own line number
    keep = [ln if i < 3 or i == lineno - 1 else b"" for i, ln in enumerate(lines)]
    path = tmp_path / "one_bad.jsonl"
    path.write_bytes(b"\n".join(keep))
    with pytest.raises(PrepError) as e:
        list(iter_documents([path]))
    msg = str(e.value)
    assert msg.startswith(f"{path}:{lineno}: ") and what in msg and "--skip-bad-lines" in msg
    assert "\n" not in msg


def test_skip_bad_lines_counts_every_case():
    index = CorpusIndex(skip_bad_lines=True)
    docs = list(iter_documents([BAD], skip_bad_lines=True, index=index))
    assert [row for row, *_ in docs] == list(range(8))
    assert index.lines_in == 14
    assert dict(index.skipped) == {"invalid_json": 1, "invalid_utf8": 1, "bad_field": 2, "duplicate_id": 1,
                                   "empty_text": 1}
    for row, _, _, links in docs:
        index.resolve(row, links)
    assert index.link_stats() == {"in": 19, "used": 16,
                                  "dropped": {"missing_target": 1, "self_link": 1, "repeated": 1}}


def test_empty_text_is_counted_not_an_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "Hello there."}, {"id": "b", "text": " \n"}])
    index = CorpusIndex()
    assert [d[1] for d in iter_documents([path], index=index)] == ["a"]
    assert index.skipped["empty_text"] == 1


def test_build_manifest_counts_bad_lines(tmp_path, minilm_dir):
    m = run_build(BAD, minilm_dir, tmp_path / "out", max_seq_len=64, skip_bad_lines=True)
    d, lk = m.stats["documents"], m.stats["links"]
    assert d == {"in": 14, "used": 8, "skipped": {"invalid_utf8": 1, "invalid_json": 1, "bad_field": 2,
                                                   "duplicate_id": 1, "empty_text": 1, "no_tokens": 0}}
    assert lk == {"in": 19, "used": 16, "dropped": {"missing_target": 1, "self_link": 1, "repeated": 1}}
    _, _, ids = load(tmp_path / "out")
    assert ids == ["(TM)", "-fu", "-ware", "/dev/null", "/me", "2", "404", "404 compliant"]


def test_build_without_skip_fails_at_the_first_bad_line(tmp_path, minilm_dir):
    with pytest.raises(PrepError, match=r"bad_lines.jsonl:4: not valid JSON"):
        run_build(BAD, minilm_dir, tmp_path / "out", max_seq_len=64)


def test_text_without_tokens_is_counted(tmp_path, minilm_dir):
    docs = [{"id": "a", "text": "First document. It has two sentences."},
            {"id": "b", "text": "\u200b\u0007"},  # only zero-width/control characters: no tokens
            {"id": "c", "text": "Third document here.", "links": ["a", "b"]}]
    m = run_build(write_jsonl(tmp_path / "c.jsonl", docs), minilm_dir, tmp_path / "out", max_seq_len=64)
    assert m.stats["documents"]["skipped"]["no_tokens"] == 1
    assert m.stats["links"]["dropped"]["missing_target"] == 1  # the link to the skipped document


def test_files_compression_and_directory_order(tmp_path):
    docs = [{"id": f"d{i}", "text": f"Document number {i}."} for i in range(6)]
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(x) for x in docs[2:4]) + "\n")
    with bz2.open(d / "sub" / "c.jsonl.bz2", "wt") as f:
        f.write(json.dumps(docs[4]) + "\n\n")  # a blank line is ignored
    write_jsonl(d / "a.jsonl", docs[0:2])
    (d / "notes.txt").write_text("not a corpus file")
    single = write_jsonl(tmp_path / "z.jsonl", docs[5:])
    files = corpus_files([single, d])
    assert [f.name for f in files] == ["z.jsonl", "a.jsonl", "b.jsonl.gz", "c.jsonl.bz2"]
    got = [doc_id for _, doc_id, _, _ in iter_documents([single, d])]
    assert got == ["d5", "d0", "d1", "d2", "d3", "d4"]
    with pytest.raises(PrepError, match="no such corpus file"):
        corpus_files([tmp_path / "nope.jsonl"])


def test_id_table_finds_every_row_across_merges():
    import numpy as np

    from data_prep.corpus import IdTable, id_hashes

    table = IdTable()
    ids = [f"PMID{i * 7919 % 100003}" for i in range(5000)]
    h = id_hashes(ids)
    assert len(np.unique(h)) == 5000 and h.dtype == np.uint64
    for lo in range(0, 5000, 37):  # batches of uneven size: runs merge many times
        hi = min(5000, lo + 37)
        assert (table.find(h[lo:hi]) == -1).all()
        table.insert(h[lo:hi], np.arange(lo, hi))
    assert len(table) == 5000 and len(table.keys) <= 14
    order = np.random.default_rng(0).permutation(5000)
    assert np.array_equal(table.find(h[order]), order)
    assert (table.find(id_hashes(["nope", "PMID-1"])) == -1).all()
    assert np.array_equal(id_hashes(["a"]), id_hashes(["a"])) and id_hashes(["a"])[0] != id_hashes(["b"])[0]
