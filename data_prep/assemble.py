"""Step 2 of a build (rank 0): the tokenized batches walked in input order into document rows, duplicate
ids, unit and chunk tables, docs.jsonl and the link graph (see build.py for the four steps)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep.corpus import CorpusIndex
from data_prep.pairs import index_dtype
from data_prep.shard_writer import SegmentTable
from data_prep.shards import DOCS


class Assembler:
    """Walks tokenized batches in input order: rows, duplicate ids, units and chunks, docs.jsonl, links.

    Everything per document or unit is kept in numpy arrays, one per batch (30M documents would
    otherwise be 30M Python objects): ~12 bytes per document for the id table, 8 for its place, 8 for its
    token offset, 2 per unit; links wait in a work file as id hashes until every id is known.
    """

    def __init__(self, files, out: Path, work: Path, skip_bad_lines: bool):
        self.files = files
        self.index = CorpusIndex(skip_bad_lines=skip_bad_lines)
        self.docs = open(out / DOCS, "w", encoding="utf-8")
        self.work = work
        self.links = open(work / "links.bin", "wb")
        self.link_batches = 0
        self.unit_len, self.nseg, self.doc_start, self.chunk_units, self.nchunk = [], [], [], [], []
        self.tokens = 0
        self.cuts = 0

    def _add_run(self, res, idx: list, keep: np.ndarray) -> None:
        rows = self.index.add_batch([res.ids[i] for i in idx], res.id_hash[idx],
                                    [(self.files[res.linenos[i][0]], res.linenos[i][1]) for i in idx])
        keep[idx] = rows >= 0

    def feed(self, res, token_base: int) -> None:
        """``token_base``: global offset of this batch's first token."""
        ix = self.index
        self.cuts += res.cuts
        keep = np.zeros(len(res.reasons), dtype=bool)
        run: list = []  # valid lines since the last bad one: their ids are checked together, in order
        for i, reason in enumerate(res.reasons):
            ix.lines_in += 1
            if reason is None:
                run.append(i)
                continue
            if run:
                self._add_run(res, run, keep)
                run = []
            fi, lineno = res.linenos[i]
            ix.reject(reason, self.files[fi], lineno, res.messages[i])
        if run:
            self._add_run(res, run, keep)
        # A batch's tokens are its documents' tokens back to back.
        self.doc_start.append((token_base + np.cumsum(res.ntok) - res.ntok)[keep])
        self.unit_len.append(res.seg_lens[np.repeat(keep, res.nseg)])
        self.nseg.append(res.nseg[keep].astype(np.int32))
        self.chunk_units.append(res.chunk_units[np.repeat(keep, res.nchunk)].astype(np.uint16))
        self.nchunk.append(res.nchunk[keep].astype(np.int32))
        self.tokens += int(res.ntok[keep].sum())
        self.docs.write("".join(json.dumps({"id": res.ids[i]}, ensure_ascii=False) + "\n"
                                for i in np.flatnonzero(keep)))
        np.save(self.links, res.nlinks[keep])
        np.save(self.links, res.link_hash[np.repeat(keep, res.nlinks)])
        self.link_batches += 1

    def _graph(self, progress: bool):
        """Resolve the links batch by batch into a CSR over document rows (int32 targets when they fit)."""
        num_docs = self.index.num_docs
        tdtype = np.int32 if num_docs < 2**31 else np.int64
        indptr = np.zeros(num_docs + 1, dtype=np.int64)
        row = 0
        with open(self.work / "links.bin", "rb") as f, open(self.work / "link_rows.bin", "wb") as g:
            for _ in tqdm(range(self.link_batches), desc="link graph", unit="batch", disable=not progress):
                nl, th = np.load(f), np.load(f)
                t, kept = self.index.resolve_batch(np.arange(row, row + len(nl)), nl, th)
                t.astype(tdtype).tofile(g)
                indptr[row + 1:row + 1 + len(nl)] = kept
                row += len(nl)
        np.cumsum(indptr, out=indptr)
        indptr = indptr.astype(index_dtype(int(indptr[-1]) + 1), copy=False)
        self.index.release()  # ids are resolved: the id table is not needed any more
        indices = np.fromfile(self.work / "link_rows.bin", dtype=tdtype)
        indegree = np.bincount(indices, minlength=num_docs).astype(np.int32)
        return indptr, indices, indegree

    def finish(self, progress: bool):
        self.docs.close()
        self.links.close()
        indptr, indices, indegree = self._graph(progress)

        def cat(name, dtype):
            parts = getattr(self, name)
            setattr(self, name, None)  # let each batch array go as soon as it is copied
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

        def indptr_of(counts):
            out = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=out[1:])
            return out.astype(index_dtype(int(out[-1]) + 1), copy=False)

        num_units = sum(len(a) for a in self.unit_len)
        cum = np.zeros(num_units + 1, dtype=np.uint32)  # modulo 2**32: see SegmentTable
        pos, total = 0, 0
        for a in self.unit_len:
            c = np.cumsum(a, dtype=np.uint64) + np.uint64(total)
            cum[pos + 1:pos + 1 + len(a)] = c & np.uint64(0xFFFFFFFF)
            if len(a):
                total = int(c[-1])
            pos += len(a)
        self.unit_len = None
        segs = SegmentTable(cum=cum, doc_seg_indptr=indptr_of(cat("nseg", np.int32)),
                            doc_start=cat("doc_start", np.int64))
        chunks = Chunks(indptr=indptr_of(cat("chunk_units", np.uint16)),
                        doc_indptr=indptr_of(cat("nchunk", np.int32)))
        return segs, chunks, indptr, indices, indegree


@dataclass
class Chunks:
    """Anchors: chunk c is the units [indptr[c], indptr[c+1]); document d has chunks [doc_indptr[d], doc_indptr[d+1])."""
    indptr: np.ndarray
    doc_indptr: np.ndarray


