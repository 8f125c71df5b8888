"""Shared checks for the build tests: read a prepared dataset back with h5py and hold it to SPEC section 3,
against an independent reading of the corpus and an independent tokenization of every document."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from data_prep.build import BuildOptions, build

ROOT = Path(__file__).resolve().parents[2]
JARGON = ROOT / "data_prep" / "corpora" / "jargon.jsonl.gz"
FIXTURES = ROOT / "tests" / "fixtures" / "build"
DATASETS = ("input_ids", "seq_lens", "a_lens", "pair_labels", "anchor_doc", "partner_doc", "anchor_seg",
            "partner_seg")


def read_jsonl(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, docs) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return Path(path)


def run_build(corpus, tokenizer, out, **kw) -> dict:
    opts = BuildOptions(corpus=[str(c) for c in (corpus if isinstance(corpus, list) else [corpus])],
                        tokenizer=str(tokenizer), out=str(out), progress=False, **kw)
    return build(opts)


def load(out) -> tuple[dict, dict, list[str]]:
    """(arrays concatenated over shards, manifest, document ids of docs.jsonl)."""
    out = Path(out)
    manifest = json.loads((out / "manifest.json").read_text())
    parts = {k: [] for k in DATASETS}
    for s in manifest["shards"]:
        p = out / s["path"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == s["sha256"], f"{p}: sha256 differs from manifest"
        with h5py.File(p, "r") as f:
            assert f.attrs["format"] == "linkbert-pairs" and int(f.attrs["version"]) == 1
            assert int(f.attrs["max_seq_len"]) == manifest["max_seq_len"]
            assert len(f["seq_lens"]) == s["num_pairs"]
            for k in DATASETS:
                assert f[k].compression == "gzip" or len(f[k]) == 0, f"{p}:{k} not compressed"
                parts[k].append(f[k][...])
            attrs = {k: int(f.attrs[k]) for k in ("vocab_size", "cls_id", "sep_id", "pad_id", "mask_id")}
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["attrs"] = attrs
    with open(out / "docs.jsonl", encoding="utf-8") as f:
        ids = [json.loads(line)["id"] for line in f]
    return arrays, manifest, ids


def doc_tokens(tokenizer, docs_by_id: dict, ids: list[str]) -> list[list[int]]:
    texts = [docs_by_id[i]["text"] for i in ids]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def check_dataset(arrays: dict, manifest: dict, ids: list[str], docs_by_id: dict, tokenizer) -> dict:
    """Everything a dataset must satisfy; returns the per-document segment token lists it recovered."""
    a = arrays
    L = manifest["max_seq_len"]
    at = a["attrs"]
    assert (at["cls_id"], at["sep_id"], at["pad_id"], at["mask_id"]) == (
        tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id)
    assert a["input_ids"].dtype == np.uint16 and a["input_ids"].shape[1] == L
    assert a["seq_lens"].dtype == np.int32 and a["a_lens"].dtype == np.int32 and a["pair_labels"].dtype == np.int8
    toks = doc_tokens(tokenizer, docs_by_id, ids)
    seg_len = manifest["options"]["segment_len"]
    segments: dict = {}
    for r in range(len(a["seq_lens"])):
        row = a["input_ids"][r].astype(np.int64)
        n, al = int(a["seq_lens"][r]), int(a["a_lens"][r])
        assert 5 <= n <= L and 3 <= al <= n - 2
        assert row[0] == at["cls_id"] and row[al - 1] == at["sep_id"] and row[n - 1] == at["sep_id"]
        assert (row[n:] == at["pad_id"]).all(), f"row {r}: padding"
        A, B = row[1:al - 1].tolist(), row[al:n - 1].tolist()
        assert len(A) <= seg_len and len(B) <= seg_len
        for seq in (A, B):
            assert at["cls_id"] not in seq and at["sep_id"] not in seq and at["pad_id"] not in seq
        ad, pd = int(a["anchor_doc"][r]), int(a["partner_doc"][r])
        for key, seq in (((ad, int(a["anchor_seg"][r])), A), ((pd, int(a["partner_seg"][r])), B)):
            seen = segments.setdefault(key, seq)
            assert seen == seq, f"row {r}: segment {key} has two different token runs"
        label = int(a["pair_labels"][r])
        if label == 0:
            assert pd == ad and a["partner_seg"][r] == a["anchor_seg"][r] + 1, f"row {r}: contiguous"
        elif label == 1:
            assert pd != ad, f"row {r}: random partner from the anchor's own document"
        else:
            assert label == 2
            links = docs_by_id[ids[ad]].get("links", [])
            assert ids[pd] in links and pd != ad, f"row {r}: {ids[pd]!r} is not linked from {ids[ad]!r}"
    # Every segment is an anchor, so the segments of each document, in order, must be exactly the
    # document's own tokenization: contiguous, complete, never mixed across documents.
    by_doc: dict = {}
    for (d, s), seq in segments.items():
        by_doc.setdefault(d, {})[s] = seq
    assert set(by_doc) == set(range(len(ids))), "some documents have no segment in the shards"
    for d, segs in by_doc.items():
        assert sorted(segs) == list(range(len(segs))), f"doc {ids[d]!r}: segment numbers have gaps"
        joined = [t for s in range(len(segs)) for t in segs[s]]
        assert joined == toks[d], f"doc {ids[d]!r}: segments are not its own tokenization"
    return by_doc
