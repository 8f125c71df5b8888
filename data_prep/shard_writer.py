"""Turn sampled pairs into rows ``[CLS] A [SEP] B [SEP] [PAD]...`` and write them as HDF5 shards.

Runs in build's worker processes: tokens are gathered straight from the memory-mapped token files
(one per rank that tokenized), so no process holds the corpus.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from data_prep.pairs import span_tokens
from data_prep.parallel import WorkerState
from data_prep.shards import SpecialIds, write_shard


@dataclass
class SegmentTable:
    """Where every unit's tokens are (a sentence, or a fixed segment), in 4 bytes per unit.

    The units of a document lie back to back in its token file from ``doc_start``; ``cum`` holds the
    cumulative unit lengths modulo 2**32 (differences inside a document are exact).
    """
    cum: np.ndarray             # [U+1] uint32
    doc_seg_indptr: np.ndarray  # [D+1] int64: the units of document d are [indptr[d], indptr[d+1])
    doc_start: np.ndarray       # [D] int64 global token offset of each document

    def doc_of(self, unit: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.doc_seg_indptr, unit, side="right") - 1

    def tokens(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return span_tokens(self.cum, lo, hi)

    def start(self, unit: np.ndarray, doc: np.ndarray | None = None) -> np.ndarray:
        doc = self.doc_of(unit) if doc is None else doc
        return self.doc_start[doc] + span_tokens(self.cum, self.doc_seg_indptr[doc], unit)

    def save(self, path):
        np.savez(path, cum=self.cum, doc_seg_indptr=self.doc_seg_indptr, doc_start=self.doc_start)

    @classmethod
    def load(cls, path):
        z = np.load(path)
        return cls(z["cum"], z["doc_seg_indptr"], z["doc_start"])


class TokenStore:
    """Read-only view of several token files as one array of global offsets.

    Runs are read with pread, not through a memory map: pages of a map touched while gathering stay in
    the process's RSS, which would then grow with the corpus (the whole token file, at PubMed scale).
    """

    def __init__(self, paths: list[str], dtype: str):
        self.dtype = np.dtype(dtype)
        self.fds = [os.open(p, os.O_RDONLY) for p in paths]
        sizes = [os.fstat(fd).st_size // self.dtype.itemsize for fd in self.fds]
        self.base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def runs(self, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """The tokens of every run [start, start + len), back to back."""
        which = np.searchsorted(self.base, starts, side="right") - 1
        size = self.dtype.itemsize
        off = ((starts - self.base[which]) * size).tolist()
        nbytes = (lens * size).tolist()
        fds = [self.fds[w] for w in which.tolist()]
        buf = b"".join([os.pread(fd, nb, o) for fd, nb, o in zip(fds, nbytes, off)])
        return np.frombuffer(buf, dtype=self.dtype)


def _runs(lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened runs: (row of each element, offset within its run)."""
    row = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    k = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    return row, k


def pair_rows(store: TokenStore, segs: SegmentTable, a_lo: np.ndarray, a_hi: np.ndarray, b_lo: np.ndarray,
              b_hi: np.ndarray, max_seq_len: int, special: SpecialIds) -> dict:
    """Every dataset of docs/formats.md section 3 except pair_labels; A = units [a_lo, a_hi), B = [b_lo, b_hi).

    The units of a span belong to one document and lie back to back in its token file. Work is
    proportional to the real tokens (flat gathers), not to rows x max_seq_len.
    """
    n, L = len(a_lo), max_seq_len
    ad, pd = segs.doc_of(a_lo), segs.doc_of(b_lo)
    a_start, b_start = segs.start(a_lo, ad), segs.start(b_lo, pd)
    a_len, b_len = segs.tokens(a_lo, a_hi), segs.tokens(b_lo, b_hi)
    seq_lens = a_len + b_len + 3
    if n and seq_lens.max() > L:
        raise ValueError("a pair is longer than max_seq_len")
    flat = np.full(n * L, special.pad_id, dtype=np.int64)
    base = np.arange(n, dtype=np.int64) * L
    row, k = _runs(a_len)
    flat[base[row] + 1 + k] = store.runs(a_start, a_len)
    row, k = _runs(b_len)
    flat[base[row] + a_len[row] + 2 + k] = store.runs(b_start, b_len)
    flat[base] = special.cls_id
    flat[base + a_len + 1] = special.sep_id
    flat[base + seq_lens - 1] = special.sep_id
    ap = segs.doc_seg_indptr
    return {"input_ids": flat.reshape(n, L), "seq_lens": seq_lens.astype(np.int32),
            "a_lens": (a_len + 2).astype(np.int32), "anchor_doc": ad, "partner_doc": pd,
            "anchor_seg": (a_lo - ap[ad]).astype(np.int32), "partner_seg": (b_lo - ap[pd]).astype(np.int32)}


@dataclass(frozen=True)
class ShardConfig:
    """What every shard task of one build shares (hashable: the worker's segment table is keyed by it)."""
    build_id: str
    token_paths: tuple[str, ...]   # each rank's token file
    token_dtype: str
    segments_path: str             # segments.npz of the build
    max_seq_len: int
    special: SpecialIds
    num_docs: int


@dataclass(frozen=True)
class ShardJob:
    config: ShardConfig
    path: str                      # the shard file to write
    spans: tuple                   # (a_lo, a_hi, b_lo, b_hi) int64 unit spans of its pairs
    labels: np.ndarray             # relation label of each pair


_SEGMENTS = WorkerState()


def write_task(job: ShardJob) -> tuple[str, int, str]:
    """Worker entry: write one shard -> (path, rows, sha256). The segment table is loaded once per process
    and build, the token files per task."""
    c = job.config
    segs = _SEGMENTS.get(c, lambda: SegmentTable.load(c.segments_path))
    store = TokenStore(list(c.token_paths), c.token_dtype)
    try:
        arrays = pair_rows(store, segs, *job.spans, c.max_seq_len, c.special)
    finally:
        store.close()
    arrays["pair_labels"] = job.labels
    sha = write_shard(job.path, arrays, c.max_seq_len, c.special, c.num_docs)
    return str(job.path), len(job.labels), sha
