"""Turn sampled pairs into rows ``[CLS] A [SEP] B [SEP] [PAD]...`` and write them as HDF5 shards.

Runs in build's worker processes: tokens are gathered straight from the memory-mapped token files
(one per rank that tokenized), so no process holds the corpus.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from data_prep.shards import SpecialIds, write_shard


@dataclass
class SegmentTable:
    """Where every segment's tokens are: offsets into the concatenation of the token files."""
    start: np.ndarray          # [S] int64 global token offset
    length: np.ndarray         # [S] int32
    doc: np.ndarray            # [S] int64 document row
    doc_seg_indptr: np.ndarray  # [D+1] int64

    def save(self, path):
        np.savez(path, start=self.start, length=self.length, doc=self.doc, doc_seg_indptr=self.doc_seg_indptr)

    @classmethod
    def load(cls, path):
        z = np.load(path)
        return cls(z["start"], z["length"], z["doc"], z["doc_seg_indptr"])


class TokenStore:
    """Read-only view of several token files as one array of global offsets."""

    def __init__(self, paths: list[str], dtype: str):
        # np.memmap cannot map an empty file (a rank may have tokenized nothing).
        self.maps = [np.memmap(p, dtype=dtype, mode="r") if os.path.getsize(p) else np.zeros(0, dtype)
                     for p in paths]
        self.base = np.concatenate([[0], np.cumsum([len(m) for m in self.maps])]).astype(np.int64)

    def take(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty(idx.shape, dtype=self.maps[0].dtype if self.maps else np.int64)
        which = np.searchsorted(self.base, idx, side="right") - 1
        for f, mm in enumerate(self.maps):
            sel = which == f
            if sel.any():
                out[sel] = mm[idx[sel] - self.base[f]]
        return out


def pair_rows(store: TokenStore, segs: SegmentTable, anchor: np.ndarray, partner: np.ndarray,
              max_seq_len: int, special: SpecialIds, chunk: int = 4096) -> dict:
    """Every dataset of SPEC section 3 except pair_labels, for the given pairs."""
    n = len(anchor)
    ids = np.empty((n, max_seq_len), dtype=np.int64)
    a_len = segs.length[anchor].astype(np.int64)
    b_len = segs.length[partner].astype(np.int64)
    pos = np.arange(max_seq_len, dtype=np.int64)[None, :]
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        al, bl = a_len[s:e, None], b_len[s:e, None]
        a0, b0 = segs.start[anchor[s:e], None], segs.start[partner[s:e], None]
        in_a = (pos >= 1) & (pos <= al)
        in_b = (pos >= al + 2) & (pos < al + 2 + bl)
        src = np.where(in_a, a0 + pos - 1, np.where(in_b, b0 + pos - al - 2, -1))
        row = np.full(src.shape, special.pad_id, dtype=np.int64)
        tok = src >= 0
        row[tok] = store.take(src[tok])
        row[:, 0] = special.cls_id
        row[(pos == al + 1) | (pos == al + bl + 2)] = special.sep_id
        ids[s:e] = row
    seq_lens = a_len + b_len + 3
    if n and seq_lens.max() > max_seq_len:
        raise ValueError("a pair is longer than max_seq_len: segment_len is too large")
    ap = segs.doc_seg_indptr
    return {"input_ids": ids, "seq_lens": seq_lens.astype(np.int32), "a_lens": (a_len + 2).astype(np.int32),
            "anchor_doc": segs.doc[anchor], "partner_doc": segs.doc[partner],
            "anchor_seg": (anchor - ap[segs.doc[anchor]]).astype(np.int32),
            "partner_seg": (partner - ap[segs.doc[partner]]).astype(np.int32)}


_CACHE: dict = {}


def write_task(task) -> tuple[str, int, str]:
    """Worker entry: ``(config, path, anchor, partner, label)`` -> (path, rows, sha256).

    config = (build id, token file paths, token dtype, segments.npz path, max_seq_len, SpecialIds,
    number of documents); the token store and segment table are opened once per process and build.
    """
    config, path, anchor, partner, label = task
    state = _CACHE.get(config)
    if state is None:
        _CACHE.clear()
        _, token_paths, dtype, segments_path, _, _, _ = config
        state = _CACHE[config] = (TokenStore(list(token_paths), dtype), SegmentTable.load(segments_path))
    store, segs = state
    max_seq_len, special, num_docs = config[4:]
    arrays = pair_rows(store, segs, anchor, partner, max_seq_len, special)
    arrays["pair_labels"] = label
    sha = write_shard(path, arrays, max_seq_len, special, num_docs)
    return str(path), len(anchor), sha
