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
    """Where every unit's tokens are (a sentence, or a fixed segment): offsets into the token files."""
    start: np.ndarray          # [U] int64 global token offset
    length: np.ndarray         # [U] int32
    doc_seg_indptr: np.ndarray  # [D+1] int64: the units of document d are [indptr[d], indptr[d+1])

    def doc_of(self, unit: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.doc_seg_indptr, unit, side="right") - 1

    def save(self, path):
        np.savez(path, start=self.start, length=self.length, doc_seg_indptr=self.doc_seg_indptr)

    @classmethod
    def load(cls, path):
        z = np.load(path)
        return cls(z["start"], z["length"], z["doc_seg_indptr"])


class TokenStore:
    """Read-only view of several token files as one array of global offsets."""

    def __init__(self, paths: list[str], dtype: str):
        # np.memmap cannot map an empty file (a rank may have tokenized nothing).
        self.maps = [np.memmap(p, dtype=dtype, mode="r") if os.path.getsize(p) else np.zeros(0, dtype)
                     for p in paths]
        self.base = np.concatenate([[0], np.cumsum([len(m) for m in self.maps])]).astype(np.int64)

    def take(self, idx: np.ndarray) -> np.ndarray:
        if len(self.maps) == 1:
            return self.maps[0][idx]
        out = np.empty(idx.shape, dtype=self.maps[0].dtype if self.maps else np.int64)
        which = np.searchsorted(self.base, idx, side="right") - 1
        for f, mm in enumerate(self.maps):
            sel = which == f
            if sel.any():
                out[sel] = mm[idx[sel] - self.base[f]]
        return out


def _runs(starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened runs: (row of each element, offset within its run, starts[row] + offset)."""
    row = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    k = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    return row, k, starts[row] + k


def pair_rows(store: TokenStore, segs: SegmentTable, a_lo: np.ndarray, a_hi: np.ndarray, b_lo: np.ndarray,
              b_hi: np.ndarray, max_seq_len: int, special: SpecialIds) -> dict:
    """Every dataset of SPEC section 3 except pair_labels; A = units [a_lo, a_hi), B = [b_lo, b_hi).

    The units of a span belong to one document and lie back to back in its token file. Work is
    proportional to the real tokens (flat gathers), not to rows x max_seq_len.
    """
    n, L = len(a_lo), max_seq_len
    a_start, b_start = segs.start[a_lo], segs.start[b_lo]
    a_len = segs.start[a_hi - 1] + segs.length[a_hi - 1] - a_start
    b_len = segs.start[b_hi - 1] + segs.length[b_hi - 1] - b_start
    seq_lens = a_len + b_len + 3
    if n and seq_lens.max() > L:
        raise ValueError("a pair is longer than max_seq_len")
    flat = np.full(n * L, special.pad_id, dtype=np.int64)
    base = np.arange(n, dtype=np.int64) * L
    row, k, src = _runs(a_start, a_len)
    flat[base[row] + 1 + k] = store.take(src)
    row, k, src = _runs(b_start, b_len)
    flat[base[row] + a_len[row] + 2 + k] = store.take(src)
    flat[base] = special.cls_id
    flat[base + a_len + 1] = special.sep_id
    flat[base + seq_lens - 1] = special.sep_id
    ap = segs.doc_seg_indptr
    ad, pd = segs.doc_of(a_lo), segs.doc_of(b_lo)
    return {"input_ids": flat.reshape(n, L), "seq_lens": seq_lens.astype(np.int32),
            "a_lens": (a_len + 2).astype(np.int32), "anchor_doc": ad, "partner_doc": pd,
            "anchor_seg": (a_lo - ap[ad]).astype(np.int32), "partner_seg": (b_lo - ap[pd]).astype(np.int32)}


_CACHE: dict = {}


def write_task(task) -> tuple[str, int, str]:
    """Worker entry: ``(config, path, (a_lo, a_hi, b_lo, b_hi), label)`` -> (path, rows, sha256).

    config = (build id, token file paths, token dtype, segments.npz path, max_seq_len, SpecialIds,
    number of documents); the token store and segment table are opened once per process and build.
    """
    config, path, spans, label = task
    state = _CACHE.get(config)
    if state is None:
        _CACHE.clear()
        _, token_paths, dtype, segments_path, _, _, _ = config
        state = _CACHE[config] = (TokenStore(list(token_paths), dtype), SegmentTable.load(segments_path))
    store, segs = state
    max_seq_len, special, num_docs = config[4:]
    arrays = pair_rows(store, segs, *spans, max_seq_len, special)
    arrays["pair_labels"] = label
    sha = write_shard(path, arrays, max_seq_len, special, num_docs)
    return str(path), len(label), sha
