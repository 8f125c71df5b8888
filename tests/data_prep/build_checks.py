"""Shared checks for the build tests: read a prepared dataset back with h5py and hold it to SPEC section 3,
against an independent reading of the corpus and an independent tokenization of every document."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
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


def run_build(corpus, tokenizer, out, **kw):
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


_TERMINALS = {".", "!", "?", "\u3002", "\uff01", "\uff1f"}
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")


def sentence_starts(text: str, offsets) -> set[int]:
    """Token positions where a sentence starts, by this checker's own reading of the text: after a
    terminal (. ! ?) token followed by whitespace, or after a blank line; 0 and the end included."""
    n = len(offsets)
    starts = {0, n}
    for p in range(1, n):
        s0, e0 = offsets[p - 1]
        if text[s0:e0] in _TERMINALS and (e0 >= len(text) or text[e0].isspace()):
            starts.add(p)
        elif _PARAGRAPH.search(text, e0, offsets[p][0]):
            starts.add(p)
    return starts


def _occurrences(doc: bytes, seq: list[int]) -> set[int]:
    needle = np.asarray(seq, dtype=">u4").tobytes()
    found, i = set(), doc.find(needle)
    while i >= 0:
        if i % 4 == 0:
            found.add(i // 4)
        i = doc.find(needle, i + 1)
    return found


def check_dataset(arrays: dict, manifest: dict, ids: list[str], docs_by_id: dict, tokenizer) -> dict:
    """Everything a dataset must satisfy (SPEC section 3, build's A/B definition), read independently:
    A and B are runs of whole sentences of their documents' own tokenization (a sentence longer than
    segment_len may be cut in pieces of segment_len), a contiguous B starts where A ends, a linked B
    comes from a document A's document links to. Returns {doc: {unit index: token offset}}."""
    a = arrays
    L = manifest["max_seq_len"]
    at = a["attrs"]
    assert (at["cls_id"], at["sep_id"], at["pad_id"], at["mask_id"]) == (
        tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id)
    assert a["input_ids"].dtype == np.uint16 and a["input_ids"].shape[1] == L
    assert a["seq_lens"].dtype == np.int32 and a["a_lens"].dtype == np.int32 and a["pair_labels"].dtype == np.int8
    texts = [docs_by_id[i]["text"] for i in ids]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    toks, offs = enc["input_ids"], enc["offset_mapping"]
    raw = [np.asarray(t, dtype=">u4").tobytes() for t in toks]
    fixed = manifest["options"].get("segmenting") == "fixed"
    seg_len = manifest["options"]["segment_len"]
    cand: dict = {}   # (doc, unit index) -> token offsets consistent with every row that starts there
    runs = []
    for r in range(len(a["seq_lens"])):
        row = a["input_ids"][r].astype(np.int64)
        n, al = int(a["seq_lens"][r]), int(a["a_lens"][r])
        assert 5 <= n <= L and 3 <= al <= n - 2
        assert row[0] == at["cls_id"] and row[al - 1] == at["sep_id"] and row[n - 1] == at["sep_id"]
        assert (row[n:] == at["pad_id"]).all(), f"row {r}: padding"
        A, B = row[1:al - 1].tolist(), row[al:n - 1].tolist()
        if fixed:
            assert len(A) <= seg_len and len(B) <= seg_len
        for seq in (A, B):
            assert at["cls_id"] not in seq and at["sep_id"] not in seq and at["pad_id"] not in seq
        ad, pd = int(a["anchor_doc"][r]), int(a["partner_doc"][r])
        ka, kb = (ad, int(a["anchor_seg"][r])), (pd, int(a["partner_seg"][r]))
        for key, seq in ((ka, A), (kb, B)):
            c = _occurrences(raw[key[0]], seq) & cand.get(key, _occurrences(raw[key[0]], seq))
            assert c, f"row {r}: {key} is not a run of document {ids[key[0]]!r}'s tokenization starting there"
            cand[key] = c
        runs.append((ka, len(A), kb, len(B)))
        label = int(a["pair_labels"][r])
        if label == 0:
            assert pd == ad and kb[1] > ka[1], f"row {r}: contiguous"
        elif label == 1:
            assert pd != ad, f"row {r}: random partner from the anchor's own document"
        else:
            assert label == 2
            links = docs_by_id[ids[ad]].get("links", [])
            assert ids[pd] in links and pd != ad, f"row {r}: {ids[pd]!r} is not linked from {ids[ad]!r}"
    # Units of a document in order lie at strictly increasing offsets (smallest consistent choice:
    # a short run can occur more than once in a document).
    by_doc: dict = {}
    for (d, u) in cand:
        by_doc.setdefault(d, []).append(u)
    assert set(a["anchor_doc"].tolist()) == set(range(len(ids))), "some documents are never an anchor"
    placed: dict = {}
    for d, units in by_doc.items():
        prev = -1
        for u in sorted(units):
            later = [c for c in cand[(d, u)] if c > prev]
            assert later, f"doc {ids[d]!r}: unit {u} cannot come after unit offsets {prev}"
            prev = placed.setdefault(d, {})[u] = min(later)
    starts = [sentence_starts(t, o) for t, o in zip(texts, offs)]

    def whole(d: int, p: int) -> bool:
        """p is a sentence start, or a cut of a sentence longer than seg_len at a multiple of seg_len."""
        if p in starts[d]:
            return True
        prev = max(b for b in starts[d] if b < p)
        nxt = min(b for b in starts[d] if b > p)
        return nxt - prev > seg_len and (p - prev) % seg_len == 0

    lens: dict = {}
    for r, (ka, la, kb, lb) in enumerate(runs):
        lens[ka], lens[kb] = la, lb
        if int(a["pair_labels"][r]) == 0:
            assert any(c + la in cand[kb] for c in cand[ka]), f"row {r}: contiguous B does not start where A ends"
        if not fixed:
            for key, n in ((ka, la), (kb, lb)):
                assert any(whole(key[0], c) and whole(key[0], c + n) for c in cand[key]), (
                    f"row {r}: {n} tokens at unit {key[1]} of {ids[key[0]]!r} are not whole sentences")
    if fixed:
        # every segment is an anchor: the segments of each document, in order, are its tokenization
        for d, units in by_doc.items():
            assert sorted(units) == list(range(len(units))), f"doc {ids[d]!r}: segment numbers have gaps"
            pos = 0
            for u in range(len(units)):
                assert pos in cand[(d, u)], f"doc {ids[d]!r}: segment {u} does not follow the previous one"
                pos += lens[(d, u)]
            assert pos == len(toks[d]), f"doc {ids[d]!r}: segments do not cover the document"
    return placed


def fill(arrays: dict, manifest: dict) -> float:
    return float(arrays["seq_lens"].mean() / manifest["max_seq_len"])
