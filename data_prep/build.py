"""Tokenize, segment, link and pair a corpus into HDF5 shards (docs/formats.md section 3).

Steps: (1) each rank tokenizes its share of the batches of lines (whole files when there are at least K
files, else every K-th batch of each file) across its worker processes, appending token ids to a file in ``.OUT.building/.work`` (the corpus never sits in memory);
(2) rank 0 walks the batches in input order: document rows, duplicate ids, unit and chunk tables, link graph;
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
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep import folder_lock, shard_writer, staging
from data_prep.assemble import Assembler, Chunks
from data_prep.corpus import corpus_files, iter_file_lines
from data_prep.errors import PrepError
from data_prep.pairs import MIX_POLICIES, mix_of, sample_pairs, sample_sentence_pairs
from data_prep.parallel import make_pool, on_rank0, ordered_map, release_worker_state, world
from data_prep.segments import TokenizeConfig, TokenizeJob, run_batch
from data_prep.shard_writer import SegmentTable, ShardConfig, ShardJob
from data_prep.shards import (
    DOCS,
    GRAPH,
    MANIFEST,
    RELATION_NAMES,
    TOKENIZER_FILES,
    Manifest,
    ShardEntry,
    SpecialIds,
    TokenizerRecord,
    token_dtype,
)
from data_prep.verify import vocab_sha256

SEGMENTINGS = ("sentences", "fixed")
LINKED_SAMPLINGS = ("inverse-indegree", "uniform")
PARTNER_SEGMENTS = ("random", "lead")
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
    pair_mix: tuple = (1.0, 1.0, 1.0)     # contiguous, random, linked weights (check() normalises them)
    dupe_factor: int = 1
    num_shards: int | None = None
    segment_len: int | None = None
    segmenting: str = "sentences"
    mix_policy: str = "global"
    linked_sampling: str = "inverse-indegree"
    partner_segment: str = "random"
    skip_bad_lines: bool = False
    keep_work: bool = False
    progress: bool = True
    force_unlock: bool = False

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
        if self.linked_sampling not in LINKED_SAMPLINGS:
            raise PrepError(f"--linked-sampling {self.linked_sampling}: use inverse-indegree or uniform")
        if self.partner_segment not in PARTNER_SEGMENTS:
            raise PrepError(f"--partner-segment {self.partner_segment}: use random or lead")
        if self.segmenting not in SEGMENTINGS:
            raise PrepError(f"--segmenting {self.segmenting}: use {' or '.join(SEGMENTINGS)}")
        if self.mix_policy not in MIX_POLICIES:
            raise PrepError(f"--mix-policy {self.mix_policy}: use {' or '.join(MIX_POLICIES)}")


_DEFAULTS = {f.name: f.default for f in fields(BuildOptions) if f.default is not MISSING}


def add_arguments(p) -> None:
    """The CLI spellings of BuildOptions: its defaults are the only ones."""
    d = _DEFAULTS
    p.add_argument("--corpus", nargs="+", required=True, help="corpus JSONL files (.gz/.bz2) or directories")
    p.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory (fast tokenizer)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--max-seq-len", type=int, default=d["max_seq_len"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--workers", type=int, default=d["workers"], help="worker processes per rank")
    p.add_argument("--pair-mix", default=",".join(f"{x:g}" for x in d["pair_mix"]),
                   help="contiguous,random,linked weights (default thirds)")
    p.add_argument("--dupe-factor", type=int, default=d["dupe_factor"], help="independent pair draws per anchor")
    p.add_argument("--num-shards", type=int, default=d["num_shards"],
                   help=f"number of shards (default: one per {DEFAULT_SHARD_ROWS} pairs)")
    p.add_argument("--segmenting", default=d["segmenting"], choices=SEGMENTINGS,
                   help="sentences: A/B split at a random sentence boundary of a chunk filling max_seq_len "
                   "(BERT); fixed: A and B are whole segments of at most --segment-len tokens")
    p.add_argument("--segment-len", type=int, default=d["segment_len"], help="fixed: max tokens per segment; "
                   "sentences: longer sentences are cut into pieces of this size (default (max_seq_len-3)//2)")
    p.add_argument("--mix-policy", default=d["mix_policy"], choices=MIX_POLICIES,
                   help="global: per-class probabilities so the overall mix hits --pair-mix; per-anchor: "
                   "each anchor draws from the relations it can take in the --pair-mix proportions")
    p.add_argument("--linked-sampling", default=d["linked_sampling"], choices=LINKED_SAMPLINGS)
    p.add_argument("--partner-segment", default=d["partner_segment"], choices=PARTNER_SEGMENTS,
                   help="which segment of a random/linked partner document becomes B")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip (and count) invalid JSON/UTF-8, bad fields and duplicate ids instead of failing")
    p.add_argument("--keep-work", action="store_true", help="keep OUT/.work (token files, segment table)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force-unlock", action="store_true", help=folder_lock.FORCE_HELP)


def run(args) -> int:
    try:
        mix = tuple(float(x) for x in str(args.pair_mix).split(","))
    except ValueError:
        raise PrepError(f"--pair-mix {args.pair_mix!r}: expected three numbers like 1,1,1") from None
    given = {f.name: getattr(args, f.name) for f in fields(BuildOptions) if hasattr(args, f.name)}
    build(BuildOptions(**{**given, "pair_mix": mix, "progress": not args.quiet}))
    return 0


# ---------------------------------------------------------------------------------------------- helpers

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
    from data_prep.hub import HubError, resolve

    try:   # a local folder, or a Hub id (michiyasunaga/BioLinkBERT-base) fetched or found in the Hub cache
        srcp = resolve(src, "--tokenizer", weights=False)
    except HubError as e:
        raise PrepError(str(e)) from None
    dst.mkdir(parents=True, exist_ok=True)
    if (srcp / "tokenizer.json").is_file():
        for name in TOKENIZER_FILES:
            if (srcp / name).is_file():
                shutil.copyfile(srcp / name, dst / name)
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(srcp)
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
    if not (isinstance(name, str) and name):
        name = str(src) if srcp != Path(src).expanduser() else srcp.resolve().name   # a Hub id is its name
    return {"name": name, "source": str(srcp.resolve()), "path": dst.name,
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


def _sample(opts: BuildOptions, segs: SegmentTable, chunks: Chunks, indptr, indices, indegree):
    common = dict(mix=opts.pair_mix, dupe_factor=opts.dupe_factor, seed=opts.seed,
                  linked_sampling=opts.linked_sampling, partner_segment=opts.partner_segment,
                  mix_policy=opts.mix_policy)
    if opts.segmenting == "fixed":
        return sample_pairs(segs.doc_seg_indptr, indptr, indices, indegree, **common)
    return sample_sentence_pairs(chunks.indptr, chunks.doc_indptr, segs.cum, segs.doc_seg_indptr, indptr, indices,
                                 indegree, opts.max_seq_len - 3, **common)


# ------------------------------------------------------------------------------------------------ build

def _return_freed_memory() -> None:
    """Have glibc serve large allocations with mmap (1 MiB and up), so a freed array goes back to the
    system at once. By default glibc raises that threshold to the size of the last freed block (up to
    32 MiB), and arrays below it then come from the heap, which keeps freed memory: at 1M documents the
    peak RSS of rank 0 was ~100 MB above what was live."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def build(opts: BuildOptions, comm=None) -> Manifest:
    """Prepare the dataset; returns its manifest (on every rank), shard paths absolute under --out."""
    opts.check()
    _return_freed_memory()
    comm = comm or world()
    lock = _lock_out(opts, comm)   # before .OUT.building is touched: a second build leaves it alone
    try:
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
            release_worker_state()  # in-process work (one worker) must not pin this build's files
    finally:
        if lock is not None:
            lock.release()


def _lock_out(opts: BuildOptions, comm):
    """Rank 0 takes the lock of --out for the build's life (data_prep.folder_lock); a held lock is the same
    one-line error on every rank."""
    held = []

    def take():
        lock = folder_lock.build_lock(opts.out).acquire(force=opts.force_unlock)
        held.append(lock)
        if lock.took_over:
            print(f"linkbert-prep build: took over the lock of --out {opts.out} from {lock.took_over}",
                  file=sys.stderr)
    on_rank0(comm, take)
    return held[0] if held else None


@dataclass
class _Run:
    """One build in progress: what its four steps share."""
    opts: BuildOptions
    comm: object
    pool: object
    build_id: str
    final: Path             # --out
    out: Path               # the staging folder, swapped in at --out when complete
    work: Path
    progress: bool
    files: list[Path] = field(default_factory=list)
    tok_info: dict = field(default_factory=dict)
    special: SpecialIds | None = None
    tdtype: str = ""


def _build(opts: BuildOptions, comm, pool) -> Manifest:
    t0 = time.time()
    final = Path(opts.out)
    out = staging.staging_dir(final)   # everything is written here; swapped in at --out when complete
    run = _Run(opts, comm, pool, f"{time.time_ns()}-{comm.rank}", final, out, out / ".work",
               opts.progress and comm.rank == 0)
    _prepare(run)
    tokenized = _tokenize(run)                                        # (1)
    t_tok = time.time()
    summary = on_rank0(comm, lambda: _assemble_and_pair(run, *tokenized))   # (2) + (3)
    t_pairs = time.time()
    shards = _write_shards(run, summary, tokenized[3])                # (4)
    t_shards = time.time()
    manifest = _finish(run, summary, shards, (t0, t_tok, t_pairs, t_shards))
    manifest.timings_s = {"tokenize": t_tok - t0, "graph_pairs": t_pairs - t_tok, "shards": t_shards - t_pairs,
                             "total": time.time() - t0}  # returned only, not written: the file stays reproducible
    return manifest


def _prepare(run: _Run) -> None:
    """Rank 0 makes the staging folder and copies the tokenizer; every rank learns the files and ids."""
    final, out, opts = run.final, run.out, run.opts

    def prepare():
        if final.exists() and not final.is_dir():
            raise PrepError(f"--out {final}: exists and is not a folder; choose a folder path")
        shutil.rmtree(out, ignore_errors=True)   # a killed build's leftovers
        try:
            run.work.mkdir(parents=True)
        except OSError as e:
            raise PrepError(f"--out {final}: cannot create {out} ({e.strerror}); choose a writable place") from None
        # a directory corpus that contains --out must not read a previous build's docs.jsonl as input
        files = [f for f in corpus_files(opts.corpus)
                 if not {final.resolve(), out.resolve()} & set(f.resolve().parents)]
        if not files:
            raise PrepError(f"--corpus {' '.join(map(str, opts.corpus))}: no corpus files outside --out {final}")
        return _tokenizer_info(opts.tokenizer, out / "tokenizer"), [str(f) for f in files]

    run.tok_info, files = on_rank0(run.comm, prepare)
    run.files = [Path(f) for f in files]
    t = run.tok_info
    run.special = SpecialIds(t["vocab_size"], t["cls_id"], t["sep_id"], t["pad_id"], t["mask_id"])
    run.tdtype = token_dtype(run.special.vocab_size).str
    if run.pool is not None and run.comm.rank == 0:
        # The parent mostly waits on its workers while they tokenize: import the pair sampler's LP
        # solver (scipy.optimize, ~0.3-0.9 s) meanwhile instead of after, when it would be serial time.
        threading.Thread(target=importlib.import_module, args=("scipy.optimize",), daemon=True).start()


def _tokenize(run: _Run):
    """(1) This rank's batches tokenized across its workers into a token file; with one rank the batches
    are assembled on the fly so bad lines fail fast. Returns (inline Assembler or None, batches per file,
    token offset of each rank, token file of each rank)."""
    opts, comm, work = run.opts, run.comm, run.work
    inline = Assembler(run.files, run.out, work, opts.skip_bad_lines) if comm.size == 1 else None
    counter: dict = {}
    written = 0
    local_err = None
    try:
        with open(work / f"tokens_rank{comm.rank}.bin", "wb") as tf, \
                open(work / f"batches_rank{comm.rank}.pkl", "wb") as mf:
            bar = tqdm(desc="tokenize", unit="doc", disable=not run.progress, file=sys.stderr)
            config = TokenizeConfig(run.build_id, str(run.out / "tokenizer" / "tokenizer.json"), opts.segmenting,
                                    opts.segment_len, opts.max_seq_len - 3, run.tdtype)
            jobs = (TokenizeJob(config, b) for b in _batches(run.files, comm.rank, comm.size, counter))
            for res in ordered_map(run_batch, jobs, run.pool, opts.workers):
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
    errs = [e for e in comm.allgather(local_err) if e]
    if errs:
        raise PrepError(errs[0])
    batch_counts: dict = {}
    for c in comm.allgather(counter):
        batch_counts.update(c)
    bases = np.concatenate([[0], np.cumsum(comm.allgather(written))]).astype(np.int64)
    token_paths = [str(work / f"tokens_rank{r}.bin") for r in range(comm.size)]
    return inline, batch_counts, bases, token_paths


def _assemble_and_pair(run: _Run, inline, batch_counts: dict, bases: np.ndarray, token_paths) -> dict:
    """(2) + (3), rank 0: assemble in input order, build the graph, sample the pairs, shuffle them once."""
    opts, work, files = run.opts, run.work, run.files
    asm = inline
    if asm is None:
        asm = Assembler(files, run.out, work, opts.skip_bad_lines)
        streams = [open(work / f"batches_rank{r}.pkl", "rb") for r in range(run.comm.size)]
        order = [(fi, j) for fi in range(len(files)) for j in range(batch_counts[fi])]
        for fi, j in tqdm(order, desc="assemble", unit="batch", disable=not run.progress):
            r = _owner(fi, j, len(files), run.comm.size)
            tok_off, res = pickle.load(streams[r])
            asm.feed(res, int(bases[r]) + tok_off)
        for s in streams:
            s.close()
    segs, chunks, indptr, indices, indegree = asm.finish(run.progress)
    where = ", ".join(map(str, files))
    if segs.doc_seg_indptr[-1] == 0:
        raise PrepError(f"{where}: no usable documents ({dict(asm.index.skipped)} skipped); nothing to build")
    if asm.index.num_docs < 2:
        raise PrepError(f"{where}: only one usable document; random and linked pairs need partners from other "
                        "documents: give a corpus of at least 2 documents")
    segs.save(work / "segments.npz")
    segs.doc_start = None  # only the shard writers need it (from segments.npz)
    np.savez(run.out / GRAPH, indptr=indptr, indices=indices, indegree=indegree)
    pairs = _sample(opts, segs, chunks, indptr, indices, indegree)
    n = len(pairs.label)
    if n == 0:
        raise PrepError(f"{where}: 0 pairs from {asm.index.num_docs} documents; check --pair-mix (a relation the "
                        "corpus cannot give) or add documents")
    num_shards = opts.num_shards or max(1, math.ceil(n / DEFAULT_SHARD_ROWS))
    if n and num_shards > n:
        raise PrepError(f"--num-shards {num_shards}: only {n} pairs; use at most {n} shards")
    n_anchor = len(chunks.indptr) - 1 if opts.segmenting == "sentences" else int(segs.doc_seg_indptr[-1])
    stats = _stats(asm, segs, pairs, n_anchor, indptr, indegree, opts)
    del segs, chunks, indices
    # one global shuffle (Philox, keyed by the seed), applied one array at a time
    perm = np.random.Generator(np.random.Philox(key=opts.seed)).permutation(n)
    cols = {}
    for k in PAIR_FIELDS:
        cols[k] = getattr(pairs, k)[perm]
        setattr(pairs, k, None)
    del perm
    np.savez(work / "pairs.npz", **cols)
    return {"num_docs": asm.index.num_docs, "num_shards": num_shards, "stats": stats}


def _write_shards(run: _Run, summary: dict, token_paths) -> list:
    """(4) Shards k = rank, rank + K, ... written by this rank's workers; rank 0 gets every rank's
    (path, pairs, sha256)."""
    comm = run.comm
    with np.load(run.work / "pairs.npz") as z:  # NpzFile re-reads an array on every z[...]: read each once
        cols = {k: z[k] for k in PAIR_FIELDS}
    p_label = cols["label"]
    bounds = np.linspace(0, len(p_label), summary["num_shards"] + 1).round().astype(np.int64)
    width = max(5, len(str(summary["num_shards"] - 1)))
    config = ShardConfig(run.build_id, tuple(token_paths), run.tdtype, str(run.work / "segments.npz"),
                         run.opts.max_seq_len, run.special, summary["num_docs"])
    mine_k = range(comm.rank, summary["num_shards"], comm.size)
    jobs = (ShardJob(config, str(run.out / f"shard_{k:0{width}d}.h5"), _spans(cols, bounds[k], bounds[k + 1]),
                     p_label[bounds[k]:bounds[k + 1]]) for k in mine_k)
    mine = []
    bar = tqdm(total=len(mine_k), desc="shards", unit="shard", disable=not run.progress, file=sys.stderr)
    for res in ordered_map(shard_writer.write_task, jobs, run.pool, run.opts.workers, inflight_per_worker=1):
        mine.append(res)
        bar.update(1)
    bar.close()
    return comm.gather(mine)


def _finish(run: _Run, summary: dict, gathered, times) -> Manifest:
    """Rank 0 writes the manifest (each shard's sha256, size and pair count) and swaps the build in at
    --out; every rank returns the manifest once it is there."""
    opts, comm, out = run.opts, run.comm, run.out
    manifest = None
    if comm.rank == 0:
        shards = sorted((r for rank_res in gathered for r in rank_res), key=lambda r: r[0])
        manifest = Manifest(
            tokenizer=TokenizerRecord(**{k: run.tok_info[k] for k in ("name", "source", "path", "vocab_size",
                                                                     "vocab_sha256")}),
            special_ids=run.special, max_seq_len=opts.max_seq_len, seed=opts.seed,
            options={"corpus": [str(f) for f in run.files], "pair_mix": list(opts.pair_mix),
                     "dupe_factor": opts.dupe_factor, "segmenting": opts.segmenting,
                     "segment_len": opts.segment_len, "mix_policy": opts.mix_policy,
                     "linked_sampling": opts.linked_sampling, "partner_segment": opts.partner_segment,
                     "skip_bad_lines": opts.skip_bad_lines, "num_shards": summary["num_shards"]},
            shards=[ShardEntry(Path(p).name, n, sha, Path(p).stat().st_size) for p, n, sha in shards],
            stats=summary["stats"], link_sources=_link_sources(run.files))
        manifest.write(out)
    manifest = comm.bcast(manifest)
    comm.barrier()
    if comm.rank == 0:
        if not opts.keep_work:
            shutil.rmtree(run.work, ignore_errors=True)
        staging.swap_in(out, run.final, _is_build_output)
        _report(run, manifest.stats, times)
    comm.barrier()   # every rank returns once --out holds the new build
    return manifest.located(run.final)


def _link_sources(files) -> list:
    """Provenance of links that `linkbert-prep links` gave a corpus file (its stats file beside it)."""
    from data_prep.links import read_link_source

    return [{"corpus": str(f), **src} for f in files if (src := read_link_source(f)) is not None]


def _report(run: _Run, st: dict, times) -> None:
    t0, t_tok, t_pairs, t_shards = times
    opts = run.opts
    gap = max(abs(st["pairs"]["mix"][k] - st["pairs"]["target_mix"][k]) for k in RELATION_NAMES)
    if gap > 0.02:
        why = ("--mix-policy per-anchor: each anchor draws only from the relations it can take"
               if opts.mix_policy == "per-anchor" else
               "too few anchors have a next sentence or segment, or an out-link, for it")
        print(f"linkbert-prep build: warning: relation mix is {gap:.1%} off the target: {why}", file=sys.stderr)
    mix = " ".join(f"{k} {v:.1%}" for k, v in st["pairs"]["mix"].items())
    print(f"linkbert-prep build: {st['pairs']['total']} pairs ({mix}, mean fill {st['pairs']['mean_fill']:.1%}) "
          f"from {st['documents']['used']} documents, {st['segments']['total']} anchors, {st['links']['used']} links, "
          f"{st['tokens']} tokens in {time.time() - t0:.1f}s (tokenize {t_tok - t0:.1f}, graph+pairs "
          f"{t_pairs - t_tok:.1f}, shards {t_shards - t_pairs:.1f}) with {run.comm.size} rank(s) x {opts.workers} "
          f"worker(s) -> {run.final}", file=sys.stderr)


PAIR_FIELDS = ("a_lo", "a_units", "partner", "b_units", "label")


def _is_build_output(name: str) -> bool:
    """Entries a build writes in --out (an old build's are replaced, anything else is kept)."""
    return name in (MANIFEST, DOCS, GRAPH, "tokenizer", ".work") or (name.startswith("shard_")
                                                                          and name.endswith(".h5"))


def _spans(cols: dict, lo: int, hi: int):
    """(a_lo, a_hi, b_lo, b_hi) int64 unit spans of pairs [lo, hi)."""
    a, b = cols["a_lo"][lo:hi].astype(np.int64), cols["partner"][lo:hi].astype(np.int64)
    return a, a + cols["a_units"][lo:hi], b, b + cols["b_units"][lo:hi]


def _stats(asm: Assembler, segs: SegmentTable, pairs, n_anchor: int, indptr: np.ndarray, indegree: np.ndarray,
           opts: BuildOptions, block: int = 1 << 16) -> dict:
    used = asm.index.num_docs
    label = pairs.label
    counts = {name: int((label == i).sum()) for i, name in enumerate(RELATION_NAMES)}
    has_links = np.diff(indptr) > 0
    filled, kinds = 0, np.zeros(6, np.int64)
    partners = np.zeros(used, bool)
    for lo in range(0, len(label), block):  # blocks: a PubMed build has ~40M pairs
        a_lo, a_hi, b_lo, b_hi = pairs.spans(lo, lo + block)
        lab = label[lo:lo + block]
        filled += int(segs.tokens(a_lo, a_hi).sum() + segs.tokens(b_lo, b_hi).sum()) + 3 * len(lab)
        kinds += np.bincount(has_links[segs.doc_of(a_lo)] * 3 + lab, minlength=6)
        partners[segs.doc_of(b_lo[lab == 2])] = True
    by_kind = {}
    for name, row in (("with_links", kinds[3:]), ("without_links", kinds[:3])):
        by_kind[name] = {"total": int(row.sum()),
                         "mix": {k: float(row[i] / max(row.sum(), 1)) for i, k in enumerate(RELATION_NAMES)}}
    return {
        "documents": asm.index.document_stats(used),
        "links": asm.index.link_stats(),
        "tokens": asm.tokens,
        "segments": {"segmenting": opts.segmenting, "total": n_anchor, "units": int(segs.doc_seg_indptr[-1]),
                     "long_sentences_cut": asm.cuts, "mean_tokens": float(asm.tokens / max(n_anchor, 1))},
        "pairs": {"total": int(len(label)), **counts, "mix": mix_of(label),
                  "target_mix": dict(zip(RELATION_NAMES, pairs.target_mix)), "mix_policy": opts.mix_policy,
                  "mix_by_anchor": by_kind,
                  "mean_fill": float(filled / len(label) / opts.max_seq_len) if len(label) else 0.0,
                  "dropped_anchor_draws": pairs.dropped_anchor_draws},
        "graph": {"docs_with_links": int(has_links.sum()),
                  "max_indegree": int(indegree.max()) if len(indegree) else 0,
                  "distinct_linked_partners": int(partners.sum())},
    }
