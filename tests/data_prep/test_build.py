"""`linkbert-prep build` on the bundled Jargon File: structure, relations, tokens, mix, counts, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from data_prep.cli import main as prep_main
from tests.data_prep.build_checks import (
    JARGON,
    check_dataset,
    doc_tokens,
    fill,
    load,
    read_jsonl,
    run_build,
    write_jsonl,
)

MAX_LEN = 128


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def jargon():
    docs = read_jsonl(JARGON)
    return docs, {d["id"]: d for d in docs}


@pytest.fixture(scope="module")
def built(tmp_path_factory, minilm_dir):
    out = tmp_path_factory.mktemp("jargon128")
    run_build(JARGON, minilm_dir, out, max_seq_len=MAX_LEN, dupe_factor=2, num_shards=3)
    return out


def test_full_corpus_pairs_are_right(built, jargon, tok):
    docs, by_id = jargon
    arrays, manifest, ids = load(built)
    # rows of docs.jsonl = order of first appearance in the corpus
    assert ids == [d["id"] for d in docs]
    check_dataset(arrays, manifest, ids, by_id, tok)
    assert manifest["options"]["segmenting"] == "sentences"
    assert manifest["options"]["segment_len"] == (MAX_LEN - 3) // 2
    # BERT-style split: A's length varies (a random sentence boundary), rows fill most of max_seq_len
    # (Jargon entries are short: a contiguous row holds at most one entry), and the reported fill is the rows'
    assert len(np.unique(arrays["a_lens"])) > 50
    p = manifest["stats"]["pairs"]
    assert p["mean_fill"] == pytest.approx(fill(arrays, manifest), abs=1e-12) and p["mean_fill"] > 0.7
    rel = arrays["pair_labels"]
    for r in (0, 1, 2):  # no relation is told apart by its length alone
        assert abs(arrays["seq_lens"][rel == r].mean() / MAX_LEN - p["mean_fill"]) < 0.12


def test_fixed_segments_option(tmp_path, jargon, minilm_dir, tok):
    docs, _ = jargon
    part = docs[:600]
    run_build(write_jsonl(tmp_path / "c.jsonl", part), minilm_dir, tmp_path / "out", max_seq_len=MAX_LEN,
              segmenting="fixed")
    arrays, manifest, ids = load(tmp_path / "out")
    placed = check_dataset(arrays, manifest, ids, {d["id"]: d for d in part}, tok)  # also: segments tile docs
    seg_len = manifest["options"]["segment_len"]
    assert (arrays["a_lens"] - 2).max() <= seg_len and manifest["stats"]["segments"]["segmenting"] == "fixed"
    assert sum(len(u) for u in placed.values()) == manifest["stats"]["segments"]["total"]


def test_checker_catches_a_split_inside_a_sentence(built, jargon, tok):
    docs, by_id = jargon
    arrays, manifest, ids = load(built)
    r = int(np.flatnonzero((arrays["pair_labels"] == 1) & (arrays["a_lens"] > 12))[0])
    bad = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in arrays.items()}
    al, n = int(bad["a_lens"][r]), int(bad["seq_lens"][r])
    row = bad["input_ids"][r]
    # drop A's last token (a sentence end): A is still a run of its document, but not of whole sentences
    row[al - 2:n - 1] = row[al - 1:n].copy()
    row[n - 1] = bad["attrs"]["pad_id"]
    bad["a_lens"][r], bad["seq_lens"][r] = al - 1, n - 1
    with pytest.raises(AssertionError, match="whole sentences|never an anchor"):
        check_dataset(bad, manifest, ids, by_id, tok)


def test_manifest_counts_add_up(built, jargon, tok):
    docs, by_id = jargon
    arrays, m, ids = load(built)
    st = m["stats"]
    d, lk, p = st["documents"], st["links"], st["pairs"]
    assert d["in"] == len(docs) == d["used"] + sum(d["skipped"].values())
    assert lk["in"] == lk["used"] + sum(lk["dropped"].values())
    # links recounted independently from the corpus
    known = set(by_id)
    n_in = n_missing = n_self = n_rep = 0
    for doc in docs:
        seen = set()
        for t in doc.get("links", []):
            n_in += 1
            if t not in known:
                n_missing += 1
            elif t == doc["id"]:
                n_self += 1
            elif t in seen:
                n_rep += 1
            seen.add(t)
    assert (lk["in"], lk["dropped"]["missing_target"], lk["dropped"]["self_link"], lk["dropped"]["repeated"]) == (
        n_in, n_missing, n_self, n_rep)
    assert p["total"] == len(arrays["seq_lens"]) == sum(s["num_pairs"] for s in m["shards"])
    assert p["total"] == p["contiguous"] + p["random"] + p["linked"]
    assert p["total"] == 2 * st["segments"]["total"]  # dupe factor 2, every chunk an anchor
    assert st["tokens"] == sum(len(t) for t in doc_tokens(tok, by_id, ids))
    by_kind = p["mix_by_anchor"]
    assert by_kind["with_links"]["total"] + by_kind["without_links"]["total"] == p["total"]
    sizes = [s["num_pairs"] for s in m["shards"]]
    assert max(sizes) - min(sizes) <= 1 and len(sizes) == 3
    assert m["tokenizer"]["vocab_size"] == 30522 and len(m["tokenizer"]["vocab_sha256"]) == 64


def test_mix_hits_thirds(built):
    arrays, m, _ = load(built)
    mix = np.bincount(arrays["pair_labels"], minlength=3) / len(arrays["pair_labels"])
    assert np.abs(mix - 1 / 3).max() < 0.02, mix


def test_shuffled(built):
    arrays, _, _ = load(built)
    # pairs are not in anchor order: neighbouring rows come from unrelated documents
    same_next = np.mean(arrays["anchor_doc"][1:] == arrays["anchor_doc"][:-1])
    assert same_next < 0.05


def test_mix_rebalanced_when_half_the_documents_have_no_links(tmp_path, jargon, minilm_dir, tok):
    docs, _ = jargon
    # drop every link of the even documents: then only ~41% of anchors can take "linked", ~65% have
    # a next segment; applying the mix per anchor would give ~12% linked instead of 30%
    part = [dict(d, links=[] if i % 2 == 0 else d.get("links", [])) for i, d in enumerate(docs)]
    corpus = write_jsonl(tmp_path / "half.jsonl", part)
    run_build(corpus, minilm_dir, tmp_path / "out", max_seq_len=MAX_LEN, pair_mix=(0.3, 0.4, 0.3))
    arrays, m, ids = load(tmp_path / "out")
    mix = np.bincount(arrays["pair_labels"], minlength=3) / len(arrays["pair_labels"])
    assert np.abs(mix - [0.3, 0.4, 0.3]).max() < 0.02, mix
    assert m["stats"]["graph"]["docs_with_links"] < 0.45 * len(part)
    check_dataset(arrays, m, ids, {d["id"]: d for d in part}, tok)


def test_no_links_gives_bert_50_50(tmp_path, jargon, minilm_dir):
    docs, _ = jargon
    part = [{"id": d["id"], "text": d["text"]} for d in docs[:400]]
    corpus = write_jsonl(tmp_path / "nolinks.jsonl", part)
    run_build(corpus, minilm_dir, tmp_path / "out", max_seq_len=MAX_LEN)
    arrays, m, _ = load(tmp_path / "out")
    mix = np.bincount(arrays["pair_labels"], minlength=3) / len(arrays["pair_labels"])
    assert mix[2] == 0 and abs(mix[0] - 0.5) < 0.02, mix
    assert m["stats"]["pairs"]["target_mix"] == {"contiguous": 0.5, "random": 0.5, "linked": 0.0}


def test_seed_changes_pairs_same_seed_same_bytes(tmp_path, jargon, minilm_dir):
    docs, _ = jargon
    corpus = write_jsonl(tmp_path / "c.jsonl", docs[:300])
    outs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_build(corpus, minilm_dir, tmp_path / name, max_seq_len=64, seed=seed)
        outs[name] = load(tmp_path / name)[0]
    for k in ("input_ids", "pair_labels", "partner_doc"):
        assert np.array_equal(outs["a"][k], outs["b"][k])
    assert not np.array_equal(outs["a"]["partner_doc"], outs["c"]["partner_doc"])


def test_lead_partner_segment_option(tmp_path, jargon, minilm_dir):
    docs, _ = jargon
    corpus = write_jsonl(tmp_path / "c.jsonl", docs[:300])
    run_build(corpus, minilm_dir, tmp_path / "lead", max_seq_len=64, partner_segment="lead")
    arrays, _, _ = load(tmp_path / "lead")
    other = arrays["pair_labels"] > 0
    assert (arrays["partner_seg"][other] == 0).all()
    run_build(corpus, minilm_dir, tmp_path / "rand", max_seq_len=64)
    arrays, _, _ = load(tmp_path / "rand")
    assert (arrays["partner_seg"][arrays["pair_labels"] > 0] > 0).mean() > 0.3


def test_cli_build_and_option_errors(tmp_path, jargon, minilm_dir, capsys):
    docs, _ = jargon
    corpus = write_jsonl(tmp_path / "c.jsonl", docs[:50])
    rc = prep_main(["build", "--corpus", str(corpus), "--tokenizer", str(minilm_dir), "--out",
                    str(tmp_path / "o"), "--max-seq-len", "64", "--quiet"])
    assert rc == 0
    assert "pairs" in capsys.readouterr().err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["max_seq_len"] == 64 and m["seed"] == 0
    rc = prep_main(["build", "--corpus", str(corpus), "--tokenizer", str(minilm_dir), "--out",
                    str(tmp_path / "o2"), "--max-seq-len", "64", "--segment-len", "40", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--segment-len 40" in err and "Traceback" not in err
    rc = prep_main(["build", "--corpus", str(tmp_path / "missing.jsonl"), "--tokenizer", str(minilm_dir),
                    "--out", str(tmp_path / "o3"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.jsonl" in err and len(err.strip().splitlines()) == 1


def test_out_inside_a_corpus_directory_is_not_read_back(tmp_path, jargon, minilm_dir):
    docs, _ = jargon
    write_jsonl(tmp_path / "a.jsonl", docs[:40])
    m1 = run_build(tmp_path, minilm_dir, tmp_path / "out", max_seq_len=64)
    m2 = run_build(tmp_path, minilm_dir, tmp_path / "out", max_seq_len=64)  # out/docs.jsonl exists now
    assert m1.stats == m2.stats and m2.stats["documents"]["in"] == 40
