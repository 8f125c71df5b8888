"""Tokenize, segment, link and pair a corpus into HDF5 shards (SPEC section 3).

Steps: (1) each rank tokenizes its share of the batches of lines (whole files when there are at least K
files, else every K-th batch of each file) across its worker processes, appending token ids to a file in ``.OUT.building/.work`` (the corpus never sits in memory);
(2) rank 0 walks the batches in input order: document rows, duplicate ids, segment table, link graph;
(3) rank 0 samples the pairs (pure function of seed and anchor/dupe index) and shuffles them;
(4) every rank writes its share of the shards across its workers; rank 0 writes the manifest (with each
shard's sha256, size and pair count) and swaps the finished folder in at OUT (data_prep.staging): a build
that fails leaves a previous build at OUT intact.
The work directory is beside the output folder, so under MPI it must be a filesystem all ranks share.
"""
from __future__ import annotations

import importlib
import json
import math
import pickle
import shutil
import sys
import threading
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep import segments as segments_mod
from data_prep import shard_writer, staging
from data_prep.corpus import CorpusIndex, corpus_files, iter_file_lines
from data_prep.errors import PrepError
from data_prep.pairs import mix_of, sample_pairs
from data_prep.parallel import make_pool, ordered_map, world
from data_prep.segments import run_batch
from data_prep.shard_writer import SegmentTable
from data_prep.shards import DOCS, FORMAT, MANIFEST, RELATION_NAMES, VERSION, SpecialIds, token_dtype
from data_prep.verify import vocab_sha256

BATCH_LINES = 256
BATCH_BYTES = 1 << 20
DEFAULT_SHARD_ROWS = 16384


@dataclass
class BuildOptions:
    corpus: list
    tokenizer: str
    out: str
    max_seq_len: int = 512
    seed: int = 0
    workers: int = 1
    pair_mix: tuple = (1 / 3, 1 / 3, 1 / 3)
    dupe_factor: int = 1
    num_shards: int | None = None
    segment_len: int | None = None
    linked_sampling: str = "inverse-indegree"
    partner_segment: str = "random"
    skip_bad_lines: bool = False
    keep_work: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.max_seq_len < 8:
            raise PrepError(f"--max-seq-len {self.max_seq_len}: too small, use at least 8")
        limit = (self.max_seq_len - 3) // 2
        if self.segment_len is None:
            self.segment_len = limit
        if not 1 <= self.segment_len <= limit:
            raise PrepError(f"--segment-len {self.segment_len}: must be 1..{limit} so that "
                            f"[CLS] A [SEP] B [SEP] fits --max-seq-len {self.max_seq_len}")
        mix = [float(x) for x in self.pair_mix]
        if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
            raise PrepError(f"--pair-mix {self.pair_mix}: give three non-negative weights C,R,L (e.g. 1,1,1)")
        self.pair_mix = tuple(x / sum(mix) for x in mix)
        if self.workers < 1 or self.dupe_factor < 1 or (self.num_shards is not None and self.num_shards < 1):
            raise PrepError("--workers, --dupe-factor and --num-shards must be at least 1")
        if not 0 <= self.seed < 2**63:
            raise PrepError(f"--seed {self.seed}: use a non-negative integer below 2**63")
        if self.linked_sampling not in ("inverse-indegree", "uniform"):
            raise PrepError(f"--linked-sampling {self.linked_sampling}: use inverse-indegree or uniform")
        if self.partner_segment not in ("random", "lead"):
            raise PrepError(f"--partner-segment {self.partner_segment}: use random or lead")


def add_arguments(p) -> None:
    p.add_argument("--corpus", nargs="+", required=True, help="corpus JSONL files (.gz/.bz2) or directories")
    p.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory (fast tokenizer)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="worker processes per rank")
    p.add_argument("--pair-mix", default="1,1,1", help="contiguous,random,linked weights (default thirds)")
    p.add_argument("--dupe-factor", type=int, default=1, help="independent pair draws per anchor segment")
    p.add_argument("--num-shards", type=int, default=None,
                   help=f"number of shards (default: one per {DEFAULT_SHARD_ROWS} pairs)")
    p.add_argument("--segment-len", type=int, default=None, help="max tokens per segment "
                   "(default (max_seq_len-3)//2)")
    p.add_argument("--linked-sampling", default="inverse-indegree", choices=("inverse-indegree", "uniform"))
    p.add_argument("--partner-segment", default="random", choices=("random", "lead"),
                   help="which segment of a random/linked partner document becomes B")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip (and count) invalid JSON/UTF-8, bad fields and duplicate ids instead of failing")
    p.add_argument("--keep-work", action="store_true", help="keep OUT/.work (token files, segment table)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    try:
        mix = tuple(float(x) for x in str(args.pair_mix).split(","))
    except ValueError:
        raise PrepError(f"--pair-mix {args.pair_mix!r}: expected three numbers like 1,1,1") from None
    opts = BuildOptions(corpus=args.corpus, tokenizer=args.tokenizer, out=args.out, max_seq_len=args.max_seq_len,
                        seed=args.seed, workers=args.workers, pair_mix=mix, dupe_factor=args.dupe_factor,
                        num_shards=args.num_shards, segment_len=args.segment_len,
                        linked_sampling=args.linked_sampling, partner_segment=args.partner_segment,
                        skip_bad_lines=args.skip_bad_lines, keep_work=args.keep_work, progress=not args.quiet)
    build(opts)
    return 0


# ---------------------------------------------------------------------------------------------- helpers

def _on_rank0(comm, fn):
    """Run fn on rank 0 and share its result; a PrepError there becomes the same error on every rank."""
    result, err = None, None
    if comm.rank == 0:
        try:
            result = fn()
        except PrepError as e:
            err = str(e)
    err, result = comm.bcast((err, result))
    if err is not None:
        raise PrepError(err)
    return result


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "added_tokens.json")


def _special_token(src: Path, name: str, default: str):
    """A special token's string from tokenizer_config.json / special_tokens_map.json (either layout)."""
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        p = src / fname
        if p.is_file():
            v = json.loads(p.read_text(encoding="utf-8")).get(name)
            if isinstance(v, dict):
                v = v.get("content")
            if isinstance(v, str):
                return v
    return default


def _tokenizer_info(src: str, dst: Path) -> dict:
    """Describe the tokenizer and copy it into the dataset (inspect and pretraining read it there).

    A folder with tokenizer.json is read with `tokenizers` alone (importing transformers costs
    seconds); one without (vocab.txt only) goes through AutoTokenizer, which converts it.
    """
    srcp = Path(src)
    if not srcp.is_dir():
        raise PrepError(f"--tokenizer {src}: no such directory; give a Hugging Face tokenizer folder")
    dst.mkdir(parents=True, exist_ok=True)
    if (srcp / "tokenizer.json").is_file():
        for name in TOKENIZER_FILES:
            if (srcp / name).is_file():
                shutil.copyfile(srcp / name, dst / name)
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(src)
        except Exception as e:  # noqa: BLE001 -- any load failure is a user error about this directory
            raise PrepError(f"--tokenizer {src}: cannot load a Hugging Face tokenizer ({e})") from e
        if not getattr(hf, "is_fast", False):
            raise PrepError(f"--tokenizer {src}: not convertible to a fast tokenizer; save one with tokenizer.json")
        hf.save_pretrained(dst)
    from data_prep.segments import load_backend

    try:
        tok = load_backend(str(dst / "tokenizer.json"))
    except Exception as e:  # noqa: BLE001
        raise PrepError(f"--tokenizer {src}: tokenizer.json does not load ({e})") from e
    vocab = tok.get_vocab(with_added_tokens=True)
    ids = {}
    for key, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("pad", "[PAD]"), ("mask", "[MASK]")):
        t = _special_token(dst, f"{key}_token", default)
        if t not in vocab:
            raise PrepError(f"--tokenizer {src}: {key} token {t!r} is not in the vocabulary; a BERT tokenizer "
                            "needs [CLS] [SEP] [PAD] [MASK]")
        ids[f"{key}_id"] = vocab[t]
    cfg = dst / "tokenizer_config.json"
    name = json.loads(cfg.read_text(encoding="utf-8")).get("name_or_path") if cfg.is_file() else None
    return {"name": name if isinstance(name, str) and name else srcp.resolve().name, "source": str(srcp.resolve()), "path": dst.name,
            "vocab_size": max(vocab.values()) + 1, "vocab_sha256": vocab_sha256(vocab),
            **ids}


def _owner(fi: int, j: int, num_files: int, size: int) -> int:
    """Rank that tokenizes batch j of file fi: whole files when there are enough of them (a rank then
    never reads the others' files), else every size-th batch of each file (every rank reads all)."""
    return fi % size if num_files >= size else j % size


def _batches(files, rank: int, size: int, counts: dict):
    """This rank's batches of lines (by count and bytes: independent of ranks/workers).

    ``counts[fi]`` = number of batches of each file this rank read (for the assembly's order).
    """
    for fi, path in enumerate(files):
        if len(files) >= size and _owner(fi, 0, len(files), size) != rank:
            continue
        batch, nbytes, j = [], 0, 0
        for item in iter_file_lines(fi, path):
            batch.append(item)
            nbytes += len(item[2])
            if len(batch) >= BATCH_LINES or nbytes >= BATCH_BYTES:
                if _owner(fi, j, len(files), size) == rank:
                    yield batch
                j += 1
                batch, nbytes = [], 0
        if batch:
            if _owner(fi, j, len(files), size) == rank:
                yield batch
            j += 1
        counts[fi] = j


class Assembler:
    """Walks tokenized batches in input order: rows, duplicate ids, segments, docs.jsonl, links file."""

    def __init__(self, files, out: Path, work: Path, skip_bad_lines: bool):
        self.files = files
        self.index = CorpusIndex(skip_bad_lines=skip_bad_lines)
        self.docs = open(out / DOCS, "w", encoding="utf-8")
        self.links_path = work / "links.pkl"
        self.links = open(self.links_path, "wb")
        # one array per batch, not per document: 30M documents would otherwise be 90M tiny arrays
        self.seg_start, self.seg_len, self.nseg = [], [], []
        self.tokens = 0
        self.cuts = 0

    def feed(self, res, token_base: int) -> None:
        """``token_base``: global offset of this batch's first token."""
        ix = self.index
        self.cuts += res.cuts
        keep = np.zeros(len(res.reasons), dtype=bool)
        kept_links, kept_ids = [], []
        for i, reason in enumerate(res.reasons):
            fi, lineno = res.linenos[i]
            ix.lines_in += 1
            if reason is not None:
                ix.reject(reason, self.files[fi], lineno, res.messages[i])
                continue
            if ix.add(res.ids[i], self.files[fi], lineno) is None:
                continue
            keep[i] = True
            kept_ids.append(res.ids[i])
            kept_links.append(res.links[i])
        # A batch's tokens are its documents' tokens back to back and every segment follows the
        # previous one, so segment starts are an exclusive cumulative sum over the whole batch.
        lens = res.seg_lens.astype(np.int64)
        starts = token_base + np.cumsum(lens) - lens
        seg_keep = np.repeat(keep, res.nseg)
        self.seg_start.append(starts[seg_keep])
        self.seg_len.append(res.seg_lens[seg_keep])
        self.nseg.append(res.nseg[keep])
        self.tokens += int(res.ntok[keep].sum())
        self.docs.write("".join(json.dumps({"id": d}, ensure_ascii=False) + "\n" for d in kept_ids))
        pickle.dump(kept_links, self.links, protocol=pickle.HIGHEST_PROTOCOL)

    def _iter_links(self):
        with open(self.links_path, "rb") as f:
            while True:
                try:
                    yield from pickle.load(f)
                except EOFError:
                    return

    def finish(self, progress: bool):
        self.docs.close()
        self.links.close()
        num_docs = self.index.num_docs
        indptr = np.zeros(num_docs + 1, dtype=np.int64)
        indices = array("q")  # compact: a PubMed-sized graph has hundreds of millions of links
        for row, links in enumerate(tqdm(self._iter_links(), total=num_docs, desc="link graph", unit="doc",
                                         disable=not progress)):
            t = self.index.resolve(row, links)
            indices.extend(t)
            indptr[row + 1] = indptr[row] + len(t)
        indices = np.frombuffer(indices, dtype=np.int64).copy() if len(indices) else np.zeros(0, np.int64)
        indegree = np.bincount(indices, minlength=num_docs).astype(np.int64)
        nseg = np.concatenate(self.nseg).astype(np.int64) if self.nseg else np.zeros(0, np.int64)
        segs = SegmentTable(
            start=np.concatenate(self.seg_start).astype(np.int64) if self.seg_start else np.zeros(0, np.int64),
            length=np.concatenate(self.seg_len).astype(np.int32) if self.seg_len else np.zeros(0, np.int32),
            doc=np.repeat(np.arange(num_docs, dtype=np.int64), nseg),
            doc_seg_indptr=np.concatenate([[0], np.cumsum(nseg)]).astype(np.int64))
        return segs, indptr, indices, indegree


# ------------------------------------------------------------------------------------------------ build

def build(opts: BuildOptions, comm=None) -> dict:
    """Prepare the dataset; returns the manifest (on every rank)."""
    opts.check()
    comm = comm or world()
    pool = make_pool(opts.workers)
    try:
        return _build(opts, comm, pool)
    except BaseException:
        if comm.rank == 0 and not opts.keep_work:
            staging.discard(staging.staging_dir(Path(opts.out)))   # the finished build at --out is untouched
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        segments_mod._CACHE.clear()  # in-process work (one worker) must not pin this build's files
        shard_writer._CACHE.clear()


def _build(opts: BuildOptions, comm, pool) -> dict:
    t0 = time.time()
    build_id = f"{time.time_ns()}-{comm.rank}"
    final = Path(opts.out)
    out = staging.staging_dir(final)   # everything is written here; swapped in at --out when complete
    work = out / ".work"
    progress = opts.progress and comm.rank == 0

    def prepare():
        if final.exists() and not final.is_dir():
            raise PrepError(f"--out {final}: exists and is not a folder; choose a folder path")
        shutil.rmtree(out, ignore_errors=True)   # a killed build's leftovers
        try:
            work.mkdir(parents=True)
        except OSError as e:
            raise PrepError(f"--out {final}: cannot create {out} ({e.strerror}); choose a writable place") from None
        # a directory corpus that contains --out must not read a previous build's docs.jsonl as input
        files = [f for f in corpus_files(opts.corpus)
                 if not {final.resolve(), out.resolve()} & set(f.resolve().parents)]
        if not files:
            raise PrepError(f"--corpus {' '.join(map(str, opts.corpus))}: no corpus files outside --out {final}")
        return _tokenizer_info(opts.tokenizer, out / "tokenizer"), [str(f) for f in files]

    tok_info, files = _on_rank0(comm, prepare)
    files = [Path(f) for f in files]
    special = SpecialIds(tok_info["vocab_size"], tok_info["cls_id"], tok_info["sep_id"], tok_info["pad_id"],
                         tok_info["mask_id"])
    tdtype = token_dtype(special.vocab_size).str
    tok_json = str(out / "tokenizer" / "tokenizer.json")

    if pool is not None and comm.rank == 0:
        # The parent mostly waits on its workers while they tokenize: import the pair sampler's LP
        # solver (scipy.optimize, ~0.3-0.9 s) meanwhile instead of after, when it would be serial time.
        threading.Thread(target=importlib.import_module, args=("scipy.optimize",), daemon=True).start()

    # (1) tokenize this rank's batches; with one rank, assemble on the fly so bad lines fail fast.
    inline = Assembler(files, out, work, opts.skip_bad_lines) if comm.size == 1 else None
    token_path = work / f"tokens_rank{comm.rank}.bin"
    meta_path = work / f"batches_rank{comm.rank}.pkl"
    counter: dict = {}
    written = 0
    local_err = None
    try:
        with open(token_path, "wb") as tf, open(meta_path, "wb") as mf:
            bar = tqdm(desc="tokenize", unit="doc", disable=not progress, file=sys.stderr)
            config = (build_id, tok_json, opts.segment_len, tdtype)
            tasks = ((config, b) for b in _batches(files, comm.rank, comm.size, counter))
            for res in ordered_map(run_batch, tasks, pool, opts.workers):
                res.tokens.tofile(tf)
                tokens = res.tokens
                res.tokens = None
                if inline is not None:
                    inline.feed(res, written)
                else:
                    pickle.dump((written, res), mf, protocol=pickle.HIGHEST_PROTOCOL)
                written += len(tokens)
                bar.update(len(res.reasons))
            bar.close()
    except PrepError as e:
        if comm.size == 1:
            raise
        local_err = str(e)  # e.g. an unreadable file: every rank reads it, every rank reports it
    t_tok = time.time()
    errs = [e for e in comm.allgather(local_err) if e]
    if errs:
        raise PrepError(errs[0])
    batch_counts: dict = {}
    for c in comm.allgather(counter):
        batch_counts.update(c)
    sizes = comm.allgather(written)
    bases = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    token_paths = [str(work / f"tokens_rank{r}.bin") for r in range(comm.size)]

    # (2)+(3) assemble in input order, build the graph, sample and shuffle the pairs.
    def assemble_and_pair():
        asm = inline
        if asm is None:
            asm = Assembler(files, out, work, opts.skip_bad_lines)
            streams = [open(work / f"batches_rank{r}.pkl", "rb") for r in range(comm.size)]
            order = [(fi, j) for fi in range(len(files)) for j in range(batch_counts[fi])]
            for fi, j in tqdm(order, desc="assemble", unit="batch", disable=not progress):
                r = _owner(fi, j, len(files), comm.size)
                tok_off, res = pickle.load(streams[r])
                asm.feed(res, int(bases[r]) + tok_off)
            for s in streams:
                s.close()
        segs, indptr, indices, indegree = asm.finish(progress)
        if segs.doc_seg_indptr[-1] == 0:
            raise PrepError(f"{', '.join(map(str, files))}: no usable documents "
                            f"({dict(asm.index.skipped)} skipped); nothing to build")
        if asm.index.num_docs < 2:
            raise PrepError(f"{', '.join(map(str, files))}: only one usable document; random and linked pairs "
                            "need partners from other documents: give a corpus of at least 2 documents")
        pairs = sample_pairs(segs.doc_seg_indptr, indptr, indices, indegree, opts.pair_mix, opts.dupe_factor,
                             opts.seed, opts.linked_sampling, opts.partner_segment)
        if len(pairs.label) == 0:
            raise PrepError(f"{', '.join(map(str, files))}: 0 pairs from {asm.index.num_docs} documents; check "
                            "--pair-mix (a relation the corpus cannot give) or add documents")
        perm = np.random.Generator(np.random.Philox(key=opts.seed)).permutation(len(pairs.label))
        anchor, partner, label = pairs.anchor[perm], pairs.partner[perm], pairs.label[perm]
        segs.save(work / "segments.npz")
        np.savez(work / "pairs.npz", anchor=anchor, partner=partner, label=label)
        np.savez(out / "graph.npz", indptr=indptr, indices=indices, indegree=indegree)
        n = len(label)
        num_shards = opts.num_shards or max(1, math.ceil(n / DEFAULT_SHARD_ROWS))
        if n and num_shards > n:
            raise PrepError(f"--num-shards {num_shards}: only {n} pairs; use at most {n} shards")
        stats = _stats(asm, segs, pairs, label, indptr, indegree)
        return {"num_docs": asm.index.num_docs, "num_shards": num_shards, "stats": stats}

    summary = _on_rank0(comm, assemble_and_pair)
    t_pairs = time.time()

    # (4) shards k = rank, rank + K, ... written by this rank's workers.
    with np.load(work / "pairs.npz") as z:  # NpzFile re-reads an array on every z[...]: read each once
        p_anchor, p_partner, p_label = z["anchor"], z["partner"], z["label"]
    bounds = np.linspace(0, len(p_label), summary["num_shards"] + 1).round().astype(np.int64)
    width = max(5, len(str(summary["num_shards"] - 1)))
    config = (build_id, tuple(token_paths), tdtype, str(work / "segments.npz"), opts.max_seq_len, special,
              summary["num_docs"])
    tasks = ((config, str(out / f"shard_{k:0{width}d}.h5"), p_anchor[bounds[k]:bounds[k + 1]],
              p_partner[bounds[k]:bounds[k + 1]], p_label[bounds[k]:bounds[k + 1]])
             for k in range(comm.rank, summary["num_shards"], comm.size))
    mine = []
    bar = tqdm(total=len(range(comm.rank, summary["num_shards"], comm.size)), desc="shards", unit="shard",
               disable=not progress, file=sys.stderr)
    for res in ordered_map(shard_writer.write_task, tasks, pool, opts.workers, inflight_per_worker=1):
        mine.append(res)
        bar.update(1)
    bar.close()
    gathered = comm.gather(mine)
    t_shards = time.time()

    manifest = None
    if comm.rank == 0:
        shards = sorted((r for rank_res in gathered for r in rank_res), key=lambda r: r[0])
        manifest = {
            "format": FORMAT, "version": VERSION, "tokenizer": {k: tok_info[k] for k in
                                                                 ("name", "source", "path", "vocab_size",
                                                                  "vocab_sha256")},
            "special_ids": asdict(special), "max_seq_len": opts.max_seq_len, "seed": opts.seed,
            "options": {"corpus": [str(f) for f in files], "pair_mix": list(opts.pair_mix),
                        "dupe_factor": opts.dupe_factor, "segment_len": opts.segment_len,
                        "linked_sampling": opts.linked_sampling, "partner_segment": opts.partner_segment,
                        "skip_bad_lines": opts.skip_bad_lines, "num_shards": summary["num_shards"]},
            "docs": DOCS, "graph": "graph.npz",
            "shards": [{"path": Path(p).name, "num_pairs": n, "sha256": sha, "size": Path(p).stat().st_size}
                       for p, n, sha in shards],
            "stats": summary["stats"],
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    manifest = comm.bcast(manifest)
    comm.barrier()
    if comm.rank == 0:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        staging.swap_in(out, final, _is_build_output)
        st = manifest["stats"]
        gap = max(abs(st["pairs"]["mix"][k] - st["pairs"]["target_mix"][k]) for k in RELATION_NAMES)
        if gap > 0.02:
            print(f"linkbert-prep build: warning: relation mix is {gap:.1%} off the target: too few anchors "
                  "have a next segment or an out-link for it", file=sys.stderr)
        mix = " ".join(f"{k} {v:.1%}" for k, v in st["pairs"]["mix"].items())
        print(f"linkbert-prep build: {st['pairs']['total']} pairs ({mix}) from {st['documents']['used']} "
              f"documents, {st['segments']['total']} segments, {st['links']['used']} links, "
              f"{st['tokens']} tokens in {time.time() - t0:.1f}s (tokenize {t_tok - t0:.1f}, graph+pairs "
              f"{t_pairs - t_tok:.1f}, shards {t_shards - t_pairs:.1f}) with {comm.size} rank(s) x {opts.workers} "
              f"worker(s) -> {final}", file=sys.stderr)
    comm.barrier()   # every rank returns once --out holds the new build
    manifest["timings_s"] = {"tokenize": t_tok - t0, "graph_pairs": t_pairs - t_tok, "shards": t_shards - t_pairs,
                             "total": time.time() - t0}  # returned only, not written: the file stays reproducible
    return manifest


def _is_build_output(name: str) -> bool:
    """Entries a build writes in --out (an old build's are replaced, anything else is kept)."""
    return name in (MANIFEST, DOCS, "graph.npz", "tokenizer", ".work") or (name.startswith("shard_")
                                                                          and name.endswith(".h5"))


def _stats(asm: Assembler, segs: SegmentTable, pairs, label: np.ndarray, indptr: np.ndarray,
           indegree: np.ndarray) -> dict:
    used = asm.index.num_docs
    docs = asm.index.document_stats(used)
    counts = {name: int((label == i).sum()) for i, name in enumerate(RELATION_NAMES)}
    linked_partners = segs.doc[pairs.partner[pairs.label == 2]]
    return {
        "documents": docs,
        "links": asm.index.link_stats(),
        "tokens": asm.tokens,
        "segments": {"total": int(segs.doc_seg_indptr[-1]), "long_sentences_cut": asm.cuts,
                     "mean_tokens": float(segs.length.mean()) if len(segs.length) else 0.0},
        "pairs": {"total": int(len(label)), **counts, "mix": mix_of(label),
                  "target_mix": dict(zip(RELATION_NAMES, pairs.target_mix)),
                  "dropped_anchor_draws": pairs.dropped_anchor_draws},
        "graph": {"docs_with_links": int((np.diff(indptr) > 0).sum()),
                  "max_indegree": int(indegree.max()) if len(indegree) else 0,
                  "distinct_linked_partners": int(len(np.unique(linked_partners)))},
    }
