"""Give a corpus links: each document's k most similar documents, and/or an external edge list.

`linkbert-prep links --corpus IN --out OUT --method tfidf|bm25|dense --k K`: reads a corpus (one JSON
line per document), writes it again with ``links`` set to the document's neighbours by descending
similarity (ties: earlier document first); other fields are kept. ``--merge`` keeps the document's own
links first and adds up to k new neighbours after them. ``--from-edges FILE`` (``source_id<TAB>target_id``
lines, plain or gzip/bzip2; ``#`` comments) adds those edges after the own links, before the neighbours.
Never a link to the document itself; near-duplicates are not links (see data_prep.similarity).
``--method none`` only merges edges (and own links with --merge). Statistics go to OUT.stats.json,
with a ``link_source`` record that `linkbert-prep build` copies into the dataset's manifest.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep import similarity
from data_prep.converters.common import _open_out, check_out_name
from data_prep.corpus import (
    CorpusIndex,
    corpus_files,
    id_hashes,
    iter_file_lines,
    iter_lines,
    parse_line,
)
from data_prep.errors import PrepError
from data_prep.parallel import make_pool, on_every_rank, on_rank0, world

METHODS = ("tfidf", "bm25", "dense", "none")
STATS_SUFFIX = ".stats.json"


@dataclass
class LinksOptions:
    corpus: list
    out: str
    method: str = "tfidf"
    k: int = 5
    model: str | None = None
    workers: int = 1
    merge: bool = False
    from_edges: list = field(default_factory=list)
    exact_max_docs: int | None = None      # None: the method's default (similarity.EXACT_MAX_DOCS, ...)
    skip_bad_lines: bool = False
    progress: bool = False

    def check(self) -> None:
        if self.method not in METHODS:
            raise PrepError(f"--method {self.method}: choose one of {', '.join(METHODS)}")
        if self.k < 1 and self.method != "none":
            raise PrepError(f"--k {self.k}: give 1 or more neighbours per document")
        if self.workers < 1:
            raise PrepError(f"--workers {self.workers}: give 1 or more")
        if self.method == "dense" and not self.model:
            raise PrepError("--method dense needs --model (a local Hugging Face folder or a Hub id, "
                            "e.g. sentence-transformers/all-MiniLM-L6-v2)")
        if self.method == "none" and not self.from_edges and not self.merge:
            raise PrepError("--method none adds no links: give --from-edges (and/or another --method)")
        check_out_name(Path(self.out))


# ---------------------------------------------------------------------------------------- corpus passes

def _iter_docs(files: list[Path], index: CorpusIndex, batch: int = 1024):
    """(row, parsed JSON object) of every usable document in input order; bad lines go to ``index``.
    Ids are added to the index a batch at a time (one vectorised lookup per batch, not per document)."""
    pending: list = []

    def flush():
        rows = index.add_batch([p.id for p, _, _ in pending], id_hashes([p.id for p, _, _ in pending]),
                               [place for _, place, _ in pending])
        out = [(int(r), json.loads(raw)) for r, (_, _, raw) in zip(rows, pending) if r >= 0]
        pending.clear()
        return out

    for fi, lineno, raw in iter_lines(files):
        index.lines_in += 1
        p = parse_line(raw)
        if p.reason is not None:
            index.reject(p.reason, files[fi], lineno, p.message)
            continue
        pending.append((p, (files[fi], lineno), raw))
        if len(pending) == batch:
            yield from flush()
    if pending:
        yield from flush()


def _doc_text(obj: dict) -> str:
    """What is compared: the title (a linking document often names it) and the text."""
    title = obj.get("title")
    return f"{title}\n{obj['text']}" if isinstance(title, str) and title else obj["text"]


# ---------------------------------------------------------------------------------------- edges

def read_edges(paths: list, index: CorpusIndex, skip_bad_lines: bool, counts: Counter) -> tuple:
    """(source rows, target rows) of the usable edges in file order; unknown ids, self edges and repeats
    are counted, a malformed line is an error naming file:line (counted with --skip-bad-lines)."""
    src_ids, tgt_ids = [], []
    for path in map(Path, paths):
        if not path.is_file():
            raise PrepError(f"--from-edges {path}: no such file")
        for _, lineno, raw in iter_file_lines(0, path):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                line = None
            if line is not None and line.lstrip().startswith("#"):
                continue
            parts = line.split("\t") if line is not None else []
            if len(parts) != 2 or not parts[0] or not parts[1]:
                what = "not UTF-8" if line is None else f"{len(parts)} tab-separated field(s)"
                if not skip_bad_lines:
                    raise PrepError(f"{path}:{lineno}: expected source_id<TAB>target_id, got {what}; fix the "
                                    "line or pass --skip-bad-lines to skip such lines (they are counted)")
                counts["malformed"] += 1
                continue
            src_ids.append(parts[0])
            tgt_ids.append(parts[1])
    counts["read"] += len(src_ids)
    src = index.ids.find(id_hashes(src_ids))
    tgt = index.ids.find(id_hashes(tgt_ids))
    del src_ids, tgt_ids
    unknown = (src < 0) | (tgt < 0)
    self_edge = ~unknown & (src == tgt)
    counts["unknown_id"] += int(unknown.sum())
    counts["self_link"] += int(self_edge.sum())
    ok = ~unknown & ~self_edge
    src, tgt = src[ok], tgt[ok]
    # stable: each source keeps its edges in file order
    order = np.argsort(src, kind="stable")
    return src[order], tgt[order]


# ---------------------------------------------------------------------------------------- main

def make_links(opts: LinksOptions, comm=None) -> dict:
    """Write ``opts.out`` and its stats file; returns the stats (on every rank).

    Under mpirun/srun (data_prep.parallel.world) rank 0 reads the corpus, counts and weights (or embeds)
    and saves the matrix in ``OUT.work/`` (beside --out: a filesystem all ranks share); every rank then
    scores its contiguous share of the query blocks across its own --workers, rank 0 gathers the shares
    in rank order and writes. The blocks are the same whatever the ranks and workers: so are the bytes."""
    opts.check()
    t0 = time.time()
    comm = comm or world()
    out = Path(opts.out)
    files = corpus_files(opts.corpus)
    if out.resolve() in {f.resolve() for f in files}:
        raise PrepError(f"--out {out} is also an input; choose another output path")
    work = out.with_name(out.name + ".work")
    if comm.rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    pool = make_pool(opts.workers)
    try:
        return _make_links(opts, files, out, work, t0, comm, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if comm.rank == 0:   # the other ranks are past their search (gathered) or stopped by the same error
            shutil.rmtree(work, ignore_errors=True)


def _first_pass(opts: LinksOptions, files, index: CorpusIndex, work: Path, pool, ranks: int):
    """Rank 0, pass 1: ids in row order and what the search needs: ("sparse", N, exact) with the
    weighted matrix saved in ``work``, ("dense", embeddings or, with several ranks, their saved path),
    or None for --method none."""
    ids: list[str] = []

    def texts():
        for _, obj in _iter_docs(files, index):
            ids.append(obj["id"])
            yield _doc_text(obj)

    if opts.method == "none":
        for _ in texts():
            pass
        return ids, None
    if opts.method == "dense":
        emb = similarity.embed(texts(), opts.model, progress=opts.progress)
        _enough(ids, files)
        if ranks > 1:
            work.mkdir(parents=True, exist_ok=True)
            np.save(work / "emb.npy", emb)
            emb = str(work / "emb.npy")
        return ids, ("dense", emb)
    counts = similarity.term_counts(texts(), pool, opts.workers)
    _enough(ids, files)
    weights = [similarity.tfidf_weights(counts) if opts.method == "tfidf" else similarity.bm25_weights(counts)]
    del counts
    n, exact = similarity.sparse_prepare(   # takes the matrix out of the list: freed once on disk
        weights, work, similarity.EXACT_MAX_DOCS if opts.exact_max_docs is None else opts.exact_max_docs)
    return ids, ("sparse", n, exact)


def _search(opts: LinksOptions, plan, work: Path, pool, comm) -> similarity.Neighbours:
    """Every rank: the neighbours of its share of the rows."""
    # with own links or edges some neighbours may be linked already: keep spares to add k new ones
    width = opts.k + (similarity.EXTRA if opts.merge or opts.from_edges else 0)
    part = (comm.rank, comm.size)
    progress = opts.progress and comm.rank == 0
    if plan[0] == "dense":
        emb = np.load(plan[1]) if isinstance(plan[1], str) else plan[1]
        return similarity.dense_neighbours(
            emb, width, opts.workers, similarity.DENSE_EXACT_MAX_DOCS if opts.exact_max_docs is None
            else opts.exact_max_docs, progress, part)
    _, n, exact = plan
    return similarity.sparse_search(work, opts.method, width, n, exact, pool, opts.workers, part, progress)


def _enough(ids, files) -> None:
    if len(ids) < 2:
        raise PrepError(f"{', '.join(map(str, files))}: {len(ids)} usable document(s); links need at least 2")


def _make_links(opts: LinksOptions, files, out: Path, work: Path, t0: float, comm, pool) -> dict:
    index = CorpusIndex(skip_bad_lines=opts.skip_bad_lines)
    first: dict = {}

    def pass1():
        first["ids"], plan = _first_pass(opts, files, index, work, pool, comm.size)
        if plan is not None and plan[0] == "dense" and comm.size == 1:
            first["emb"] = plan[1]   # kept here, not broadcast
            return ("dense", None)
        return plan

    plan = on_rank0(comm, pass1)
    if plan is not None and plan[0] == "dense" and plan[1] is None:
        plan = ("dense", first.pop("emb"))
    parts = None
    if plan is not None:
        mine = on_every_rank(comm, lambda: _search(opts, plan, work, pool, comm))
        parts = comm.gather(mine)
        del mine
    return on_rank0(comm, lambda: _write(opts, files, out, t0, index, first["ids"],
                                         similarity.join(parts) if parts else None, comm.size))


def _write(opts: LinksOptions, files, out: Path, t0: float, index: CorpusIndex, ids: list, nb, ranks: int) -> dict:
    """Rank 0, pass 2: the same documents in the same order (a fresh index gives the same rows), each
    with its links; then the stats file."""
    n = len(ids)
    edge_counts: Counter = Counter()
    e_src, e_tgt = read_edges(opts.from_edges, index, opts.skip_bad_lines, edge_counts)
    e_ptr = np.searchsorted(e_src, np.arange(n + 1))
    counts: Counter = Counter()
    indegree = np.zeros(n, np.int64)
    outdeg = np.zeros(n, np.int64)
    score_sum = 0.0
    index2 = CorpusIndex(skip_bad_lines=True)
    tmp = out.with_name(out.name + ".partial")
    f, closers = _open_out(out, tmp)
    targets: list = []
    try:
        for row, obj in _iter_docs(files, index2):
            links, ssum = _links_of(row, obj, ids, nb, e_tgt[e_ptr[row]:e_ptr[row + 1]], opts, counts)
            score_sum += ssum
            obj["links"] = links
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            outdeg[row] = len(links)
            targets.extend(links)
            if len(targets) >= 65536:
                _count_indegree(index, targets, indegree)
        _count_indegree(index, targets, indegree)
    finally:
        f.close()
        for c in closers:
            c.close()
    tmp.replace(out)
    stats = _stats(opts, files, index, n, counts, edge_counts, nb, score_sum, indegree, outdeg, time.time() - t0)
    stats["ranks"], stats["workers"] = ranks, opts.workers
    Path(str(out) + STATS_SUFFIX).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    return stats


def _count_indegree(index: CorpusIndex, targets: list, indegree: np.ndarray) -> None:
    t = index.ids.find(id_hashes(targets))
    indegree += np.bincount(t[t >= 0], minlength=len(indegree))
    targets.clear()


def _links_of(row, obj, ids, nb, edge_targets, opts, counts) -> tuple[list, int]:
    """The document's links: own (with --merge), then edges, then up to k new neighbours.
    Returns (links, the sum of the added neighbours' scores)."""
    me = obj["id"]
    links, seen = [], {me}
    if opts.merge:
        for t in obj.get("links") or []:
            if t == me:
                counts["own_self_dropped"] += 1
            elif t not in seen:
                seen.add(t)
                links.append(t)
        counts["own_kept"] += len(links)
    else:
        counts["own_replaced"] += len(obj.get("links") or [])
    for t in edge_targets:
        tid = ids[t]
        if tid in seen:
            counts["edges_repeated"] += 1
        else:
            seen.add(tid)
            links.append(tid)
            counts["edges_added"] += 1
    ssum = 0.0
    if nb is not None:
        added = 0
        for t, s in zip(nb.index[row].tolist(), nb.score[row].tolist()):
            if added == opts.k or t < 0:
                break
            tid = ids[t]
            if tid in seen:
                counts["neighbours_already_linked"] += 1
                continue
            seen.add(tid)
            links.append(tid)
            ssum += s
            added += 1
        counts["neighbours_added"] += added
        counts["neighbour_slots_short"] += opts.k - added
    return links, ssum


def _stats(opts, files, index, n, counts, edge_counts, nb, score_sum, indegree, outdeg, seconds) -> dict:
    considered = counts.get("neighbours_added", 0)
    isolated = int(((indegree == 0) & (outdeg == 0)).sum())
    q = np.percentile(indegree, [50, 90, 99]).tolist() if n else [0, 0, 0]
    return {
        "stage": "links",
        "link_source": {"method": opts.method, "k": opts.k if opts.method != "none" else 0,
                        "model": opts.model if opts.method == "dense" else None, "merge": opts.merge,
                        "edges": [str(p) for p in opts.from_edges],
                        "exact": nb.exact if nb is not None else None},
        "inputs": [str(f) for f in files],
        "out": str(opts.out),
        "documents": {**index.document_stats(n), "written": n},
        "links": {"written": int(outdeg.sum()), **{k: int(v) for k, v in sorted(counts.items())},
                  "mean_score": round(score_sum / considered, 6) if considered else None,
                  "duplicates_skipped": nb.duplicates if nb is not None else 0},
        "edges": {k: int(edge_counts.get(k, 0)) for k in ("read", "malformed", "unknown_id", "self_link")},
        "isolated_documents": isolated,
        "indegree": {"max": int(indegree.max()) if n else 0, "p50": q[0], "p90": q[1], "p99": q[2],
                     "zero": int((indegree == 0).sum())},
        "seconds": round(seconds, 2),
    }


def summary_line(stats: dict) -> str:
    src, lk = stats["link_source"], stats["links"]
    ms = "-" if lk["mean_score"] is None else f"{lk['mean_score']:.3f}"
    return (f"links ({src['method']}, k={src['k']}{', merge' if src['merge'] else ''}): "
            f"{stats['documents']['written']} documents, {lk['written']} links written "
            f"({lk.get('neighbours_added', 0)} neighbours, mean score {ms}; {lk.get('edges_added', 0)} from edges; "
            f"{lk.get('own_kept', 0)} own), {lk['duplicates_skipped']} near-duplicates skipped, "
            f"{stats['isolated_documents']} isolated, edges unknown {stats['edges']['unknown_id']} / malformed "
            f"{stats['edges']['malformed']}, in-degree max {stats['indegree']['max']}, {stats['seconds']} s "
            f"with {stats.get('ranks', 1)} rank(s) x {stats.get('workers', 1)} worker(s)")


def read_link_source(corpus_file: str | Path) -> dict | None:
    """The ``link_source`` record `links` left beside a corpus file (None if there is none)."""
    p = Path(str(corpus_file) + STATS_SUFFIX)
    try:
        st = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    src = st.get("link_source") if isinstance(st, dict) and st.get("stage") == "links" else None
    return dict(src) if isinstance(src, dict) else None


# ---------------------------------------------------------------------------------------- CLI

def add_arguments(p) -> None:
    d = LinksOptions(corpus=[], out="")
    p.add_argument("--corpus", nargs="+", required=True, help="corpus JSONL files (.gz/.bz2) or directories")
    p.add_argument("--out", required=True, help="output corpus: .jsonl, .jsonl.gz or .jsonl.bz2")
    p.add_argument("--method", default=d.method, choices=METHODS,
                   help="tfidf / bm25: word similarity; dense: a sentence-embedding model (--model); "
                        "none: only --from-edges (default tfidf)")
    p.add_argument("--k", type=int, default=d.k, help="neighbours added per document (default 5)")
    p.add_argument("--model", default=None, help="dense: a local Hugging Face folder or a Hub id")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="processes scoring query blocks (sparse) / FAISS threads (dense); output identical for any")
    p.add_argument("--merge", action="store_true", help="keep each document's own links first, then add k new")
    p.add_argument("--from-edges", nargs="+", default=[], metavar="EDGES",
                   help="edge lists source_id<TAB>target_id (.gz/.bz2 ok) merged in after own links")
    p.add_argument("--exact-max-docs", type=int, default=None,
                   help=f"exact search up to this many documents, pruned (sparse) / HNSW (dense) beyond "
                        f"(default {similarity.EXACT_MAX_DOCS} sparse, {similarity.DENSE_EXACT_MAX_DOCS} dense)")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip and count bad corpus lines and malformed edge lines instead of failing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (shown only on a terminal)")


def run(args) -> int:
    opts = LinksOptions(corpus=args.corpus, out=args.out, method=args.method, k=args.k, model=args.model,
                        workers=args.workers, merge=args.merge, from_edges=args.from_edges,
                        exact_max_docs=args.exact_max_docs, skip_bad_lines=args.skip_bad_lines,
                        progress=not args.no_progress and sys.stderr.isatty())
    comm = world()
    stats = make_links(opts, comm)
    if comm.rank == 0:
        print(summary_line(stats))
        print(f"wrote {stats['out']} (stats: {stats['out']}{STATS_SUFFIX})")
    return 0

