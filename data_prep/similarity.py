"""Nearest neighbours of every document by content, for corpora without links (`linkbert-prep links`).

Sparse methods (tfidf, bm25) weight scikit-learn's term counts and score with scipy sparse products,
blocked over query rows; each block keeps its per-row top candidates (one lexsort per block, ties broken
by document index). Why not `bm25s`: it answers one query list against an index, so an all-pairs kNN
would run N retrievals through its Python API; BM25 is a weighting, and the same blocked product then
serves both methods, the same pruning and the same determinism argument.

- tfidf: sublinear tf, idf, rows L2-normalised; score = cosine.
- bm25: document side tf(k1+1)/(tf+k1(1-b+b*len/avglen)) * idf (k1 1.2, b 0.75, idf log(1+(N-df+.5)/(df+.5)));
  query side 1 per distinct term (query tf ignored, as in classic BM25). The score is not symmetric.
- Up to ``exact_max_docs`` documents the product is exact (every query against every posting). Beyond
  it, cost would grow with N^2 (a frequent term's posting list grows with N), so each query keeps its
  ``QUERY_TERMS`` highest-weighted terms and each term's posting list its ``POSTINGS_CAP`` highest
  weights: a query then touches at most QUERY_TERMS*POSTINGS_CAP postings, whatever N. The best
  ``CANDIDATES`` per query are rescored exactly (full rows). The recall this gives up is measured
  against the exact answer in docs/data_prep.md.
- Near-duplicates: a pair whose cosine (of the tf-idf vectors, of the BM25 document vectors for bm25,
  of the embeddings for dense) is at least ``DUP_COSINE`` (dense: ``DENSE_DUP_COSINE``) is not a link.

Dense: mean-pooled embeddings of a Hugging Face encoder (CUDA when present), L2-normalised; FAISS exact
inner product up to ``exact_max_docs``, HNSW beyond. Candidates are rescored with one float32 dot per
pair in numpy, so the order does not depend on FAISS's (thread-dependent) BLAS rounding.

Every block's result depends only on its rows (block size is a function of N, never of --workers or of
the MPI ranks, which each take a contiguous run of whole blocks: ``share``), and the counting chunks are
merged in input order, so the output is the same for any number of workers and ranks.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from data_prep.errors import PrepError
from data_prep.parallel import WorkerState, make_pool, ordered_map

DUP_COSINE = 0.9
DENSE_DUP_COSINE = 0.98
EXACT_MAX_DOCS = 50_000
DENSE_EXACT_MAX_DOCS = 200_000
QUERY_TERMS = 24
POSTINGS_CAP = 400
CANDIDATES = 48
EXTRA = 8                    # candidates kept beyond k, to fill in for skipped near-duplicates
BM25_K1, BM25_B = 1.2, 0.75
TOKEN_PATTERN = r"(?u)\b\w\w+\b"   # scikit-learn's default word tokenizer; English stop words dropped
DENSE_BLOCK = 4096           # query rows per FAISS search call
COUNT_CHUNK_DOCS = 2048      # documents per counting task (fixed: the merge order never depends on --workers)


@dataclass
class Neighbours:
    """Row i: document i's neighbours (-1 padded) by descending score, then ascending index."""
    index: np.ndarray        # int32 [N, k]
    score: np.ndarray        # float32 [N, k]
    duplicates: int          # candidate pairs skipped as near-duplicates
    exact: bool


# ------------------------------------------------------------------------------------- weighting

def _analyzer():
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, stop_words="english", dtype=np.float32)


def count_chunk(texts: list) -> tuple:
    """One chunk's counts with scikit-learn's vectorizer and no pruning: (its terms in sorted order,
    indptr, column indices into those terms, float32 counts). Runs in a worker."""
    cv = _analyzer()
    try:
        x = cv.fit_transform(texts)
    except ValueError:   # no word at all in this chunk (stop words only, empty texts)
        return [], np.zeros(len(texts) + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    x.sort_indices()
    return (cv.get_feature_names_out().tolist(), x.indptr.astype(np.int64), x.indices.astype(np.int32),
            x.data.astype(np.float32, copy=False))


def _chunks(texts, size: int):
    chunk = []
    for t in texts:
        chunk.append(t)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def term_counts(texts, pool=None, workers: int = 1, chunk_docs: int | None = None) -> sp.csr_matrix:
    """Documents x terms counts (float32) with the documented word tokenizer; terms in one document
    only cannot link two documents and are dropped, as are terms in more than half the documents.

    The same matrix as scikit-learn's ``CountVectorizer(min_df=2, max_df=0.5).fit_transform`` (columns in
    sorted term order), but the tokenizing and counting (pure Python, most of the cost) runs per chunk of
    ``chunk_docs`` (default ``COUNT_CHUNK_DOCS``) documents across ``pool``'s workers. The chunks' vocabularies are merged in input order
    and pruned and sorted once at the end, so the result does not depend on the number of workers. By
    hand because scikit-learn's vectorizer fits one process only and its HashingVectorizer would give
    up the exact vocabulary (collisions) that the document-frequency pruning needs."""
    chunk_docs = chunk_docs or COUNT_CHUNK_DOCS
    vocab: dict = {}
    parts = []               # per chunk: (row lengths, global term ids, counts)
    df = np.zeros(0, np.int64)
    n = 0
    for terms, ip, ix, dx in ordered_map(count_chunk, _chunks(texts, chunk_docs), pool, workers):
        gid = np.fromiter((vocab.setdefault(t, len(vocab)) for t in terms), np.int32, len(terms))
        g = gid[ix]
        df = np.concatenate([df, np.zeros(len(vocab) - len(df), np.int64)])
        df += np.bincount(g, minlength=len(vocab))   # one count per (document, term): no repeats in a row
        parts.append((np.diff(ip), g, dx))
        n += len(ip) - 1
    if not vocab:
        raise PrepError("no words to compare documents by (empty texts or stop words only): the sparse "
                        "methods need documents that share words; give more documents or use --method dense")
    keep = (df >= 2) & (df <= 0.5 * n)    # scikit-learn's min_df=2, max_df=0.5 rule
    if 0.5 * n < 2 or not keep.any():
        raise PrepError(f"no shared words to compare documents by ({n} documents; a word counts if it is in "
                        "at least 2 and at most half of them): the sparse methods need documents that share "
                        "words; give more documents or use --method dense")
    terms = list(vocab)
    del vocab
    kept = np.array(sorted(np.flatnonzero(keep).tolist(), key=terms.__getitem__), np.int64)  # term order
    del terms
    col = np.full(len(keep), -1, np.int32)
    col[kept] = np.arange(len(kept), dtype=np.int32)
    return _assemble_counts(parts, col, n, len(kept))


def _assemble_counts(parts: list, col: np.ndarray, n: int, width: int) -> sp.csr_matrix:
    """The chunks' counts with columns renumbered by ``col`` (-1: dropped) in one CSR matrix. The output
    arrays are allocated once and each chunk is freed as soon as it is copied: the peak is about one copy."""
    total = sum(int(np.count_nonzero(col[g] >= 0)) for _, g, _ in parts)
    indptr = np.zeros(n + 1, np.int64)
    indices = np.empty(total, np.int32)
    data = np.empty(total, np.float32)
    row = pos = 0
    parts.reverse()          # pop() from the end: input order, each chunk released once copied
    while parts:
        lens, g, dx = parts.pop()
        new = col[g]
        ok = new >= 0
        m = int(ok.sum())
        indices[pos:pos + m] = new[ok]
        data[pos:pos + m] = dx[ok]
        kept_before = np.concatenate([[0], np.cumsum(ok)])       # kept entries before each position
        indptr[row + 1:row + 1 + len(lens)] = pos + kept_before[np.cumsum(lens)]
        pos += m
        row += len(lens)
        del lens, g, dx, new, ok
    x = sp.csr_matrix((data, indices, indptr), shape=(n, width))
    x.sort_indices()
    return x


def tfidf_weights(counts: sp.csr_matrix, block: int = 1 << 13) -> sp.csr_matrix:
    """In place: ``counts`` becomes the weights. scikit-learn's transformer, fitted on the whole matrix,
    transforms a block of rows at a time (every step is per row once the idf is known): its temporaries
    (about one more copy of what it transforms) stay the size of a block, not of the largest array of the run."""
    from sklearn.feature_extraction.text import TfidfTransformer

    # fit() copies its input while validating it (~1.1x the matrix at once): fitted on one row, it is given
    # the whole matrix's idf, computed with the same steps as its fit (smooth idf: ln((1+N)/(1+df)) + 1)
    t = TfidfTransformer(sublinear_tf=True, norm="l2").fit(counts[:1])
    df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(counts.dtype)
    df += 1.0
    idf = np.full_like(df, counts.shape[0] + 1, dtype=counts.dtype)
    idf /= df
    np.log(idf, out=idf)
    idf += 1.0
    t.idf_ = idf
    ip = counts.indptr
    for a in range(0, counts.shape[0], block):
        b = min(counts.shape[0], a + block)
        w = t.transform(counts[a:b], copy=False)   # the slice is a copy: transformed in place, then put back
        counts.data[ip[a]:ip[b]] = w.data
    return counts


def bm25_weights(counts: sp.csr_matrix, block: int = 1 << 13) -> sp.csr_matrix:
    """In place: ``counts`` becomes the weights, computed (in float64) a block of rows at a time."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float64)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    dl = np.asarray(counts.sum(axis=1)).ravel()
    norm = BM25_K1 * (1 - BM25_B + BM25_B * dl / max(dl.mean(), 1e-9))
    ip = counts.indptr
    for a in range(0, n, block):
        b = min(n, a + block)
        lo, hi = ip[a], ip[b]
        tf = counts.data[lo:hi].astype(np.float64)
        rows = np.repeat(np.arange(a, b), np.diff(ip[a:b + 1]))
        counts.data[lo:hi] = (tf * (BM25_K1 + 1) / (tf + norm[rows]) * idf[counts.indices[lo:hi]]).astype(np.float32)
    return counts


# ------------------------------------------------------------------------------------- sparse search

def _prune_postings(csc: sp.csc_matrix, cap: int) -> sp.csr_matrix:
    """D (given as CSC) with each term's postings cut to its ``cap`` largest weights (ties: lower
    document index), returned transposed (terms x documents, CSR): the CSC arrays filtered in place of a
    conversion, so the peak is the CSC matrix plus the kept postings."""
    csc.sort_indices()
    lens = np.diff(csc.indptr)
    keep = np.repeat(lens <= cap, lens)
    for t in np.flatnonzero(lens > cap):   # only frequent terms; each one sorted on its own
        a, b = csc.indptr[t], csc.indptr[t + 1]
        order = np.lexsort((csc.indices[a:b], -csc.data[a:b]))[:cap]
        keep[a + order] = True
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lens, cap))]).astype(np.int64)
    # the kept postings moved to the front of the CSC arrays a block at a time (never ahead of what is
    # still to be read): no second copy of the arrays
    w = 0
    for a in range(0, csc.nnz, 1 << 22):
        sel = keep[a:a + (1 << 22)]
        m = int(sel.sum())
        csc.data[w:w + m] = csc.data[a:a + (1 << 22)][sel]
        csc.indices[w:w + m] = csc.indices[a:a + (1 << 22)][sel]
        w += m
    del keep
    return sp.csr_matrix((csc.data[:w], csc.indices[:w], indptr), shape=(csc.shape[1], csc.shape[0]), copy=False)


def _query_rows(d: sp.csr_matrix, start: int, stop: int, method: str, terms: int | None) -> sp.csr_matrix:
    """Query vectors of rows [start, stop): tfidf its weights, bm25 ones; ``terms``: keep only the
    row's highest-weighted terms (ties: lower term index)."""
    q = d[start:stop].tocsr()
    q.sort_indices()
    if terms is not None:
        lens = np.diff(q.indptr)
        r = np.repeat(np.arange(q.shape[0]), lens)
        order = np.lexsort((q.indices, -q.data, r))
        rank = np.arange(q.nnz) - np.repeat(q.indptr[:-1], lens)
        keep = np.zeros(q.nnz, bool)
        keep[order[rank < terms]] = True
        q = sp.csr_matrix((q.data[keep], q.indices[keep], np.concatenate([[0], np.cumsum(
            np.bincount(r[keep], minlength=q.shape[0]))])), shape=q.shape)
    if method == "bm25":
        q = sp.csr_matrix((np.ones_like(q.data), q.indices, q.indptr), shape=q.shape)
    return q


def _prefilter(rows: np.ndarray, vals: np.ndarray, nrows: int, m: int) -> np.ndarray | None:
    """Positions that can be among their row's ``m`` best: value >= the row's m-th largest (ties kept),
    found with one partition of a padded [rows, longest row] matrix. None when not worth it."""
    counts = np.bincount(rows, minlength=nrows)
    longest = int(counts.max()) if nrows else 0
    if longest <= 4 * m or longest * nrows > (1 << 24) or np.any(rows[1:] < rows[:-1]):
        return None
    pos = np.arange(len(rows)) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    pad = np.full((nrows, longest), -np.inf, np.float32)
    pad[rows, pos] = vals
    kth = np.partition(pad, longest - m, axis=1)[:, longest - m]
    return np.flatnonzero(vals >= kth[rows])


def top_per_row(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, nrows: int, m: int):
    """Per row (0..nrows-1), the ``m`` best (col, val) by descending val then ascending col; -1 padded."""
    keep = _prefilter(rows, vals, nrows, m)
    if keep is not None:
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((cols, -vals, rows))
    r = rows[order]
    counts = np.bincount(r, minlength=nrows)
    rank = np.arange(len(r)) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    sel = order[rank < m]
    idx = np.full((nrows, m), -1, np.int64)
    val = np.zeros((nrows, m), np.float32)
    rr, kk = rows[sel], rank[rank < m]
    idx[rr, kk] = cols[sel]
    val[rr, kk] = vals[sel]
    return idx, val


def pair_dots(a: sp.csr_matrix, ra: np.ndarray, b: sp.csr_matrix, rb: np.ndarray) -> np.ndarray:
    """a[ra[i]] . b[rb[i]] for every i (exact, full rows)."""
    if not len(ra):
        return np.zeros(0, np.float32)
    prod = a[ra].multiply(b[rb]).tocsr()
    return np.asarray(prod.sum(axis=1), dtype=np.float64).ravel().astype(np.float32)


def _finish_rows(start, cand, cand_score, k, dup_cos) -> tuple:
    """Drop invalid candidates and near-duplicates (cosine from ``dup_cos(queries, cands)``), keep k."""
    n = len(cand)
    q = np.repeat(np.arange(start, start + n), cand.shape[1])
    c = cand.ravel()
    s = cand_score.ravel()
    ok = c >= 0
    cos = np.zeros(len(c), np.float32)
    cos[ok] = dup_cos(q[ok], c[ok])
    dup = ok & (cos >= np.float32(DUP_COSINE))
    # a duplicate counts as skipped only if it would have been chosen: among the first k valid per row
    rank_valid = np.cumsum(ok.reshape(n, -1), axis=1).ravel()
    dups = int((dup & (rank_valid <= k)).sum())
    ok &= ~dup
    rows = np.repeat(np.arange(n), cand.shape[1])[ok]
    idx, val = top_per_row(rows, c[ok], s[ok], n, k)
    return idx.astype(np.int32), val, dups


class _SparseState:
    """What one worker needs: the weighted matrix (memory-mapped), its row norms, the pruned index."""

    def __init__(self, work: str, method: str, exact: bool):
        def load(name):
            return np.load(os.path.join(work, name + ".npy"), mmap_mode="r")
        shape = tuple(load("shape"))
        self.d = sp.csr_matrix((load("data"), load("indices"), load("indptr")), shape=shape)
        self.norm = load("norm")
        self.method, self.exact = method, exact
        if exact:
            self.dt = self.d.T.tocsr()
        else:
            self.dt = sp.csr_matrix((load("p_data"), load("p_indices"), load("p_indptr")), shape=shape[::-1])

    def dup_cos(self, qa, cb):
        dots = pair_dots(self.d, qa, self.d, cb)
        return dots / np.maximum(self.norm[qa] * self.norm[cb], 1e-12)


_STATE = WorkerState()


def _sparse_block(job) -> tuple:
    work, method, exact, k, start, stop = job
    st = _STATE.get((work, method, exact), lambda: _SparseState(work, method, exact))
    q = _query_rows(st.d, start, stop, method, None if exact else QUERY_TERMS)
    s = (q @ st.dt).tocsr()
    n = stop - start
    rows = np.repeat(np.arange(n), np.diff(s.indptr))
    cols = s.indices.astype(np.int64)
    vals = s.data.astype(np.float32)
    ok = (cols != rows + start) & (vals > 0)
    m = k + EXTRA if exact else CANDIDATES
    cand, cscore = top_per_row(rows[ok], cols[ok], vals[ok], n, m)
    if not exact:   # rescore the candidates with full query rows
        qq = _query_rows(st.d, start, stop, method, None)
        r = np.repeat(np.arange(n), m)
        c = cand.ravel()
        valid = c >= 0
        exact_s = np.zeros(len(c), np.float32)
        exact_s[valid] = pair_dots(qq, r[valid], st.d, c[valid])
        cand, cscore = top_per_row(r[valid], c[valid], exact_s[valid], n, k + EXTRA)
    dup_cos = st.dup_cos if method == "bm25" else (lambda qa, cb: pair_dots(st.d, qa, st.d, cb))
    return _finish_rows(start, cand, cscore, k, dup_cos)


def block_rows(n: int, exact: bool) -> int:
    """Rows per query block: a function of N only (never of --workers), for identical output."""
    return max(16, min(4096, (1 << 22) // max(n, 1))) if exact else 1024


def save_weights(weights: sp.csr_matrix | list, work: Path, exact: bool, block: int = 1 << 16) -> None:
    """Write the weighted matrix (and, for the pruned search, the capped postings) to ``work`` as .npy
    files that every worker memory-maps. ``weights`` may be a one-element list holding the matrix: it is
    then taken out and dropped once its CSC copy for the pruning exists (the two never wait beside a third)."""
    if isinstance(weights, list):
        weights = weights.pop()
    work.mkdir(parents=True, exist_ok=True)
    n = weights.shape[0]
    norm = np.zeros(n, np.float32)
    for a in range(0, n, block):   # a block at a time: the squares never take a full copy
        w = weights[a:a + block]
        norm[a:a + block] = np.sqrt(np.asarray(w.multiply(w).sum(axis=1)).ravel())
    for name, a in (("data", weights.data.astype(np.float32, copy=False)),
                    ("indices", weights.indices.astype(np.int32, copy=False)),
                    ("indptr", weights.indptr.astype(np.int64, copy=False)),
                    ("shape", np.array(weights.shape, np.int64)), ("norm", norm)):
        np.save(work / f"{name}.npy", a)
    if not exact:
        csc = weights.tocsc()
        del weights
        p = _prune_postings(csc, POSTINGS_CAP)
        del csc
        for name, a in (("p_data", p.data), ("p_indices", p.indices.astype(np.int32, copy=False)),
                        ("p_indptr", p.indptr.astype(np.int64, copy=False))):
            np.save(work / f"{name}.npy", a)


def share(n: int, step: int, part: tuple = (0, 1)) -> tuple[int, int]:
    """Rows [lo, hi) that MPI rank ``part[0]`` of ``part[1]`` scores: a contiguous run of whole blocks
    (blocks of ``step`` rows, a function of N only), so joining the ranks' rows in rank order gives the
    one-process answer."""
    rank, size = part
    blocks = -(-n // step)
    return min(n, blocks * rank // size * step), min(n, blocks * (rank + 1) // size * step)


def sparse_prepare(weights: sp.csr_matrix | list, work: Path, exact_max_docs: int = EXACT_MAX_DOCS) -> tuple:
    """Save the weighted matrix for the search (``weights``: the matrix, or a one-element list holding
    it, taken out and freed once saved); returns (N, exact)."""
    if isinstance(weights, list):
        weights = weights.pop()
    n = weights.shape[0]
    exact = n <= exact_max_docs
    holder = [weights]
    del weights
    save_weights(holder, work, exact)
    return n, exact


def sparse_search(work: Path, method: str, k: int, n: int, exact: bool, pool=None, workers: int = 1,
                  part: tuple = (0, 1), progress: bool = False) -> Neighbours:
    """Neighbours of this rank's share of the rows (``share``), scored in blocks across ``pool``."""
    step = block_rows(n, exact)
    lo, hi = share(n, step, part)
    jobs = [(str(work), method, exact, k, a, min(hi, a + step)) for a in range(lo, hi, step)]
    out_idx = np.full((hi - lo, k), -1, np.int32)
    out_score = np.zeros((hi - lo, k), np.float32)
    dups = 0
    own = pool is None and workers > 1
    if own:
        pool = make_pool(workers)
    try:
        bar = tqdm(total=hi - lo, desc=f"{method} neighbours", unit="doc", disable=not progress, file=sys.stderr)
        for (_, _, _, _, a, b), (idx, val, d) in zip(jobs, ordered_map(_sparse_block, jobs, pool, workers)):
            out_idx[a - lo:b - lo], out_score[a - lo:b - lo] = idx, val
            dups += d
            bar.update(b - a)
        bar.close()
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
        _STATE.clear()
    return Neighbours(out_idx, out_score, dups, exact)


def sparse_neighbours(weights: sp.csr_matrix | list, method: str, k: int, work: Path, workers: int = 1,
                      exact_max_docs: int = EXACT_MAX_DOCS, progress: bool = False, pool=None) -> Neighbours:
    """Every row's neighbours in this process (and its workers)."""
    n, exact = sparse_prepare(weights, work, exact_max_docs)
    return sparse_search(work, method, k, n, exact, pool, workers, (0, 1), progress)


def join(parts: list) -> Neighbours:
    """The ranks' Neighbours (rank order) as one."""
    if len(parts) == 1:
        return parts[0]
    return Neighbours(np.concatenate([p.index for p in parts]), np.concatenate([p.score for p in parts]),
                      sum(p.duplicates for p in parts), parts[0].exact)


# ------------------------------------------------------------------------------------- dense

def embed(texts_iter, model: str, batch_size: int = 64, max_length: int = 256, progress: bool = False,
          total: int | None = None) -> np.ndarray:
    """L2-normalised mean-pooled embeddings (float32 [N, dim]) of ``texts_iter`` in order."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from data_prep.hub import HubError, resolve

    try:
        folder = resolve(model, "--model")
    except HubError as e:
        raise PrepError(str(e)) from None
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        enc = AutoModel.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise PrepError(f"--model {model}: cannot load a Hugging Face encoder from {folder} ({e})") from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    enc.to(device).eval()
    out = []
    bar = tqdm(total=total, desc="embed", unit="doc", disable=not progress, file=sys.stderr)

    def run(batch):
        b = tok(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        with torch.inference_mode():
            h = enc(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1)
            e = torch.nn.functional.normalize(e, dim=-1)
        out.append(e.float().cpu().numpy())
        bar.update(len(batch))

    batch = []
    for t in texts_iter:
        batch.append(t)
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    bar.close()
    if not out:
        return np.zeros((0, 1), np.float32)
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def dense_neighbours(emb: np.ndarray, k: int, workers: int = 1, exact_max_docs: int = DENSE_EXACT_MAX_DOCS,
                     progress: bool = False, part: tuple = (0, 1)) -> Neighbours:
    """Neighbours of rank ``part[0]``'s share of the rows (``share``; all rows by default). Every rank
    builds the same index (HNSW on one thread: the same graph everywhere) and searches its rows."""
    import faiss

    n, dim = emb.shape
    exact = n <= exact_max_docs
    if exact:
        index = faiss.IndexFlatIP(dim)
        faiss.omp_set_num_threads(max(1, workers))
    else:
        # HNSW insertion with several threads depends on their timing: built on one thread, searched on all
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        faiss.omp_set_num_threads(1)
    index.add(emb)
    faiss.omp_set_num_threads(max(1, workers))
    if not exact:
        index.hnsw.efSearch = 128
    m = min(n, k + EXTRA + 1)
    step = DENSE_BLOCK
    lo, hi = share(n, step, part)
    out_idx = np.full((hi - lo, k), -1, np.int32)
    out_score = np.zeros((hi - lo, k), np.float32)
    dups = 0
    bar = tqdm(total=hi - lo, desc="dense neighbours", unit="doc", disable=not progress, file=sys.stderr)
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        _, cand = index.search(emb[a:b], m)
        q = np.repeat(np.arange(a, b), m)
        c = cand.ravel().astype(np.int64)
        ok = (c >= 0) & (c != q)
        s = np.zeros(len(c), np.float32)
        s[ok] = np.einsum("ij,ij->i", emb[q[ok]], emb[c[ok]])
        dup = ok & (s >= np.float32(DENSE_DUP_COSINE))
        ranked = np.where(ok, s, -np.inf).reshape(b - a, m)
        # count duplicates that would have been among the k best
        kth = np.sort(ranked, axis=1)[:, ::-1][:, min(k, m) - 1:min(k, m)]
        dups += int((dup.reshape(b - a, m) & (ranked >= kth)).sum())
        ok &= ~dup
        rows = np.repeat(np.arange(b - a), m)[ok]
        idx, val = top_per_row(rows, c[ok], s[ok], b - a, k)
        out_idx[a - lo:b - lo], out_score[a - lo:b - lo] = idx, val
        bar.update(b - a)
    bar.close()
    return Neighbours(out_idx, out_score, dups, exact)
