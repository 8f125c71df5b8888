"""Real corpora at 512 with BERT-style sentence splits: one PubMed baseline file's citation-linked
abstracts (tests/fixtures/build/pubmed_cited.jsonl.gz) and the Jargon File hit the relation mix."""
from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from data_prep.cli import main as prep_main
from tests.data_prep.build_checks import FIXTURES, JARGON, check_dataset, fill, load, read_jsonl, write_jsonl

PUBMED = FIXTURES / "pubmed_cited.jsonl.gz"
WARNING = "relation mix is"


@pytest.fixture(scope="module")
def tok(minilm_dir):
    return AutoTokenizer.from_pretrained(minilm_dir)


def _build(corpus, minilm_dir, out, capsys, *extra):
    rc = prep_main(["build", "--corpus", str(corpus), "--tokenizer", str(minilm_dir), "--out", str(out),
                    "--max-seq-len", "512", "--quiet", *extra])
    assert rc == 0
    return capsys.readouterr().err


@pytest.mark.parametrize("corpus", [PUBMED, JARGON], ids=["pubmed", "jargon"])
def test_512_hits_the_mix_without_warning(tmp_path, corpus, minilm_dir, tok, capsys):
    err = _build(corpus, minilm_dir, tmp_path, capsys)
    assert WARNING not in err, err
    arrays, m, ids = load(tmp_path)
    docs = read_jsonl(corpus)
    check_dataset(arrays, m, ids, {d["id"]: d for d in docs}, tok)
    mix = np.bincount(arrays["pair_labels"], minlength=3) / len(arrays["pair_labels"])
    assert np.abs(mix - 1 / 3).max() < 0.02, mix
    assert m["stats"]["pairs"]["mean_fill"] == pytest.approx(fill(arrays, m))


def test_fixed_halves_starve_contiguous_on_short_documents(tmp_path, minilm_dir, capsys):
    # the old default, kept as --segmenting fixed: most Jargon entries are one 254-token segment
    err = _build(JARGON, minilm_dir, tmp_path, capsys, "--segmenting", "fixed")
    assert WARNING in err
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["stats"]["pairs"]["mix"]["contiguous"] < 0.2


def test_one_sentence_and_link_less_corpora(tmp_path, minilm_dir, capsys):
    docs = read_jsonl(PUBMED)
    titles = write_jsonl(tmp_path / "titles.jsonl", [{"id": d["id"], "text": d["title"] + ".", "links": d["links"]}
                                                     for d in docs if d.get("title")])
    err = _build(titles, minilm_dir, tmp_path / "t", capsys)
    assert WARNING in err  # (nearly) one sentence each: hardly any contiguous pair exists
    m = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert m["stats"]["pairs"]["mix"]["contiguous"] < 0.2
    nolinks = write_jsonl(tmp_path / "nolinks.jsonl", [{"id": d["id"], "text": d["text"]} for d in docs])
    err = _build(nolinks, minilm_dir, tmp_path / "n", capsys)
    assert WARNING not in err  # no links at all: BERT's 50/50, which the abstracts reach
    m = json.loads((tmp_path / "n" / "manifest.json").read_text())
    assert abs(m["stats"]["pairs"]["mix"]["contiguous"] - 0.5) < 0.02


def test_mix_per_anchor_kind_and_policy(tmp_path, minilm_dir, capsys):
    _build(PUBMED, minilm_dir, tmp_path / "g", capsys)
    err = _build(PUBMED, minilm_dir, tmp_path / "p", capsys, "--mix-policy", "per-anchor")
    g = json.loads((tmp_path / "g" / "manifest.json").read_text())["stats"]["pairs"]
    p = json.loads((tmp_path / "p" / "manifest.json").read_text())["stats"]["pairs"]
    arrays, _, _ = load(tmp_path / "p")
    graph = np.load(tmp_path / "p" / "graph.npz")
    has_links = np.diff(graph["indptr"])[arrays["anchor_doc"]] > 0
    # recounted from the shards: per-anchor gives thirds where the anchor document has out-links ...
    w = np.bincount(arrays["pair_labels"][has_links], minlength=3) / has_links.sum()
    assert np.abs(w - 1 / 3).max() < 0.03, w
    assert p["mix_by_anchor"]["with_links"]["total"] == has_links.sum()
    assert p["mix_by_anchor"]["with_links"]["mix"]["linked"] == pytest.approx(w[2])
    # ... and no linked pair where it has none; global skews the kinds apart to hit the overall target
    assert p["mix_by_anchor"]["without_links"]["mix"]["linked"] == 0
    assert g["mix_by_anchor"]["with_links"]["mix"]["linked"] > 0.5
    assert abs(g["mix"]["linked"] - 1 / 3) < 0.02 and p["mix"]["linked"] < 0.25
    assert "per-anchor" in err
