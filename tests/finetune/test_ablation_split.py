"""benchmarks/bench_ablation.py's split: held-out documents are in no training pair of any arm's dataset,
and the held-out corpus still holds cross-document probe items."""
from __future__ import annotations

import gzip
import importlib.util
import json

import h5py
import numpy as np
import pytest

from data_prep.shards import LINKED, Manifest
from finetune.crossdoc_items import build_items, read_corpus


@pytest.fixture(scope="module")
def bench(repo_root):
    spec = importlib.util.spec_from_file_location("bench_ablation", repo_root / "benchmarks" / "bench_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def labels(data):
    man = Manifest.read(data)
    return np.concatenate([h5py.File(p, "r")["pair_labels"][:] for p in man.shard_paths])


def test_heldout_documents_in_no_training_pair(bench, repo_root, minilm_dir, tmp_path):
    from transformers import AutoTokenizer
    rows = [json.loads(x) for x in gzip.open(repo_root / "data_prep" / "corpora" / "jargon.jsonl.gz")][:600]
    ids = {r["id"] for r in rows}
    src = tmp_path / "sub.jsonl"
    src.write_text("".join(json.dumps({**r, "links": [t for t in r["links"] if t in ids]}) + "\n" for r in rows))
    docs = read_corpus(src)
    held = bench.split_documents(docs, 0.2, seed=0)
    assert held == bench.split_documents(docs, 0.2, seed=0) and 100 <= len(held) <= 120
    train_ids = ids - held
    bench.write_corpus(tmp_path / "held.jsonl", docs, held)
    bench.write_corpus(tmp_path / "train.jsonl", docs, train_ids)
    train_rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert {r["id"] for r in train_rows} == train_ids
    assert not any(set(r["links"]) & held for r in train_rows)      # no link leads into the held-out set
    # the held-out corpus is self-contained and has probe items (the split takes linked neighbourhoods)
    held_docs = read_corpus(tmp_path / "held.jsonl")
    assert all(set(d.links) <= held for d in held_docs)
    items, _ = build_items(held_docs, AutoTokenizer.from_pretrained(minilm_dir), 1000, 5, 0)
    assert len(items) >= 50 and {it.a for it in items} | {it.b for it in items} <= held
    counts = {}
    for name in ("bert", "linkbert"):
        data = bench.build_dataset(tmp_path / "train.jsonl", str(minilm_dir), tmp_path / name, bench.ARMS[name], 64, 0)
        used, pairs, _ = bench.dataset_doc_ids(data)
        assert pairs > 0 and used <= train_ids and not used & held
        assert len(used) > 0.8 * len(train_ids)        # the check reads real document ids, most of them
        like = bench.probe_like_pairs(data, {d.id: d.title for d in docs})
        assert like["pairs"] == pairs and like["partner_spells_title"] <= like["a_mentions_partner"]
        counts[name] = like["a_mentions_partner"]
        assert (labels(data) == LINKED).any() == (name == "linkbert")
    # linked pairs pose the probe's task (A names its partner) far more often than random partners do
    assert counts["linkbert"] > 5 * max(1, counts["bert"]), counts
    # the same reading of a dataset built from every document does see the held-out ones
    leak = bench.build_dataset(src, str(minilm_dir), tmp_path / "all", "1,1,0", 64, 0)
    assert bench.dataset_doc_ids(leak)[0] & held


def test_pooling_over_seeds_and_arm_difference(bench):
    """An arm's report over seeds averages each item's outcome; arm differences pair the same items."""
    def outcome(gold_gain_linked: bool, raw_linked: bool):
        none = [-2.0, -3.0, -4.0]
        linked = [-2.0, -1.0, -4.0] if gold_gain_linked else [-1.0, -3.0, -4.0]
        return {"gold": 1, "none": {"scores": none, "correct": False},
                "linked": {"scores": linked, "correct": raw_linked},
                "random": {"scores": [-1.5, -3.0, -4.0], "correct": False}}
    seed0 = [outcome(True, True), outcome(True, False), outcome(False, False), outcome(False, False)]
    seed1 = [outcome(True, False), outcome(False, False), outcome(False, False), outcome(False, True)]
    rep, got = bench.pooled([seed0, seed1], 3, 0)
    assert got["raw"].tolist() == [0.5, 0, 0, 0.5] and got["effect"].tolist() == [1, 0.5, 0, 0]
    assert rep["linked"]["acc"] == 0.25 and rep["effect"]["linked"]["acc"] == 0.375
    assert rep["effect"]["random"]["acc"] == 0 and rep["effect"]["linked_minus_random"]["mean"] == 0.375
    other = {"raw": np.array([0.0, 0, 0, 0]), "effect": np.array([0.0, 0, 0, 1])}
    d = bench.arm_difference(got, other, 0)
    assert d["mean"] == 0.25 and d["effect"]["mean"] == pytest.approx(0.125)
    assert d["effect"]["ci95"][0] <= 0.125 <= d["effect"]["ci95"][1]
    # each seed's own outcomes, and seed s of one arm paired with seed s of the other
    assert [x["raw"].tolist() for x in got["per_seed"]] == [[1, 0, 0, 0], [0, 0, 0, 1]]
    assert [x["effect"].tolist() for x in got["per_seed"]] == [[1, 1, 0, 0], [1, 0, 0, 0]]
    _, flipped = bench.pooled([seed1, seed0], 3, 0)
    d = bench.arm_difference(got, flipped, 0)
    assert d["mean"] == 0 and [(r["seed"], r["mean"], r["effect"]) for r in d["per_seed"]] == \
        [(0, 0, 0.25), (1, 0, -0.25)]
    assert "per_seed" not in bench.arm_difference(got, other, 0)   # one seed on one side: nothing to pair
    # the `titled` diagnostic pools and pairs like `linked` raw, when every seed scored it
    for i, o in enumerate(seed0 + seed1):
        o["titled"] = {"scores": [0.0, 1.0, 0.0], "correct": i % 2 == 0}
    _, got_t = bench.pooled([seed0, seed1], 3, 0)
    assert got_t["titled"].tolist() == [1, 0, 1, 0]
    d = bench.arm_difference(got_t, {**other, "titled": np.zeros(4)}, 0)
    assert d["titled"]["mean"] == 0.5 and "titled" not in bench.arm_difference(got, other, 0)


def test_notitle_arms_train_on_documents_that_never_name_themselves(bench, tmp_path):
    """The opt-in *-notitle arms: each document's own title (and words it begins) leaves its text, links
    and other titles stay; the arm names parse and pair up for their own difference."""
    src = tmp_path / "train.jsonl"
    rows = [{"id": "a", "title": "hacker", "text": "A hacker writes code. Hackers, HACKER's tools; see kludge.",
             "links": ["b"]},
            {"id": "b", "title": "kludge", "text": "A kludge is ugly; hacker folklore loves a kludge.", "links": []}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = bench.untitled_corpus(tmp_path / "notitle.jsonl", read_corpus(src), {"a", "b"})
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["links"] for r in got] == [["b"], []] and [r["title"] for r in got] == ["hacker", "kludge"]
    assert "hacker" not in got[0]["text"].lower() and "kludge" in got[0]["text"]
    assert "kludge" not in got[1]["text"].lower() and "hacker folklore" in got[1]["text"]
    _, cfg = bench.parse_args(["--corpus", "c", "--tokenizer", "t", "--init-from", "m", "--out", "o", "--quick",
                               "--arms", "bert-notitle,linkbert-notitle"])
    assert bench.ALL_ARMS["linkbert-notitle"] == "1,1,1" and bench.ALL_ARMS["bert-notitle"] == "1,1,0"
    assert bench.DIFFERENCES["linkbert_notitle_minus_bert_notitle"] == ("linkbert-notitle", "bert-notitle")
    with pytest.raises(SystemExit):
        bench.parse_args(["--corpus", "c", "--tokenizer", "t", "--init-from", "m", "--out", "o", "--arms", "nope"])
