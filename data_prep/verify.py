"""Check a prepared dataset against its manifest: every shard's size, pair count and (full) sha256, and the
vocabulary of the tokenizer copy. `linkbert-prep verify DIR` runs the full check alone; pretraining runs
the same functions before step 1 (pretrain.preflight), so a swapped, truncated or damaged shard is one
line naming the file before any GPU-hour is spent.

Modes: ``none`` = size and num_pairs (HDF5 metadata, milliseconds a shard; always done), ``quick`` = also
the first and last row of every dataset (decompresses the first and last chunks: catches truncation and
most damage near the ends), ``full`` = also the sha256 of every byte (catches any flipped byte and any
swapped shard). Shards are hashed in parallel threads (hashlib and file reads release the GIL).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data_prep.errors import PrepError

if TYPE_CHECKING:
    from data_prep.shards import Manifest, ShardEntry

MODES = ("full", "quick", "none")


# ------------------------------------------------------------------------------------------- vocabulary

def vocab_sha256(vocab: dict[str, int]) -> str:
    """The vocabulary's identity: sha256 of its tokens in id order, one per line ("tok\\n" each).

    Two tokenizers with the same size but other tokens (or the same tokens at other ids) differ here."""
    text = "".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_vocab(tokenizer_dir: str | Path) -> dict[str, int] | None:
    """token -> id of a Hugging Face tokenizer folder (tokenizer.json with its added tokens, else vocab.txt
    plus added_tokens.json); None when the folder holds neither."""
    d = Path(tokenizer_dir)
    if (d / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        try:
            return Tokenizer.from_file(str(d / "tokenizer.json")).get_vocab(with_added_tokens=True)
        except Exception as e:  # noqa: BLE001 -- any parse failure is a damaged user file
            raise PrepError(f"{d / 'tokenizer.json'}: does not load ({e}); replace the tokenizer folder") from None
    if (d / "vocab.txt").is_file():
        tokens = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        vocab = {t: i for i, t in enumerate(tokens)}
        added = d / "added_tokens.json"
        if added.is_file():
            vocab.update(json.loads(added.read_text(encoding="utf-8")))
        return vocab
    return None


def tokenizer_vocab_sha256(tokenizer_dir: str | Path) -> str | None:
    vocab = read_vocab(tokenizer_dir)
    return None if vocab is None else vocab_sha256(vocab)


# ---------------------------------------------------------------------------------------------- shards

@dataclass
class ShardResult:
    path: str
    bytes: int = 0
    problem: str | None = None
    hashed: bool = False


@dataclass
class VerifyReport:
    """What a verification did; ``problems`` holds one line per bad shard (empty: all good)."""
    mode: str
    shards: int = 0
    bytes: int = 0
    hashed_bytes: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        rate = f", {self.hashed_bytes / max(self.seconds, 1e-9) / 1e6:.0f} MB/s hashed" if self.hashed_bytes else ""
        return (f"{self.shards} shard(s), {self.bytes / 1e9:.3f} GB, checked ({self.mode}) in {self.seconds:.2f}s"
                f"{rate}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}")


FIX = "restore the file or rebuild with `linkbert-prep build`"


def manifest_attrs(m: Manifest) -> dict:
    """What the manifest says that every shard also records in its attributes (None: not recorded)."""
    sp = m.special_ids
    out = {"max_seq_len": m.max_seq_len, "vocab_size": sp.vocab_size if sp else m.vocab_size}
    for k in ("cls_id", "sep_id", "pad_id", "mask_id"):
        out[k] = getattr(sp, k) if sp else None
    return {k: v for k, v in out.items() if v is not None}


def unlisted_shards(m: Manifest) -> list[Path]:
    """Shard files (``*.h5``) in the dataset folder that the manifest does not name."""
    named = {Path(s.path).resolve() for s in m.shards}
    return sorted(p for p in m._folder().glob("*.h5") if p.resolve() not in named)


def manifest_problems(m: Manifest) -> list[str]:
    """Where the manifest contradicts itself or its folder: pair totals that are not the sum of the shards'
    entries, shard files it does not name (each one line)."""
    from data_prep.shards import MANIFEST
    where = m._folder() / MANIFEST
    out = []
    total = (m.stats.get("pairs") or {}).get("total") if isinstance(m.stats.get("pairs"), dict) else None
    if isinstance(total, int) and total != m.num_pairs:
        out.append(f"{where}: stats.pairs.total is {total} but its shard entries hold {m.num_pairs} pairs (a shard "
                   f"entry was removed or edited); restore the manifest or rebuild with `linkbert-prep build`")
    extra = unlisted_shards(m)
    if extra:
        names = ", ".join(p.name for p in extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        out.append(f"{m._folder()}: shard file(s) {names} not named in {MANIFEST} (an entry removed by hand, or a "
                   "file copied in); restore the manifest, rebuild, or move the file(s) out")
    return out


def check_shard(entry: ShardEntry, mode: str = "full", hash_it: bool = True, expect: dict | None = None) -> ShardResult:
    """One shard against its manifest entry (``path`` absolute, read through ``Manifest.read``) and, with
    ``expect`` (``manifest_attrs``), against what the manifest says every shard records."""
    import h5py

    from data_prep.shards import DATASETS, ShardError, check_shard_attrs, sha256_file
    path = entry.path
    res = ShardResult(path)
    try:
        res.bytes = os.stat(path).st_size
    except OSError as e:
        res.problem = f"{path}: cannot stat ({e.strerror}); {FIX}"
        return res
    size = entry.size
    if size is not None and res.bytes != size:
        res.problem = (f"{path}: {res.bytes} bytes, the manifest says {size} (truncated, or another file under "
                       f"this name); {FIX}")
        return res
    try:
        with h5py.File(path, "r") as f:
            attrs = check_shard_attrs(path, f.attrs)
            for k, want in (expect or {}).items():
                if attrs.get(k) != want:
                    res.problem = (f"{path}: attribute {k}={attrs.get(k)} but the manifest says {want} (the manifest "
                                   f"was edited, or this shard is from another build); {FIX}")
                    return res
            missing = [k for k in DATASETS if k not in f]
            if missing:
                res.problem = f"{path}: datasets {missing} missing; {FIX}"
                return res
            n = len(f["seq_lens"])
            if n != entry.num_pairs:
                res.problem = (f"{path}: holds {n} pairs, the manifest says {entry.num_pairs} (another "
                               f"shard under this name?); {FIX}")
                return res
            bad = [k for k in DATASETS if len(f[k]) != n]
            if bad:
                res.problem = f"{path}: datasets {bad} do not have {n} rows; {FIX}"
                return res
            if mode in ("quick", "full") and n:
                for k in DATASETS:   # the first and last chunk of each dataset are inflated and checksummed
                    f[k][0]
                    f[k][n - 1]
    except ShardError as e:
        res.problem = str(e)
        return res
    except (OSError, KeyError, ValueError, RuntimeError) as e:  # h5py's errors for damaged files
        res.problem = f"{path}: not a readable HDF5 shard ({str(e).splitlines()[0] if str(e) else type(e).__name__}); {FIX}"
        return res
    if mode == "full" and hash_it:
        want = entry.sha256
        if want:
            got = sha256_file(path)
            res.hashed = True
            if got != want:
                res.problem = (f"{path}: sha256 {got[:12]}... differs from the manifest's {want[:12]}... (damaged, "
                               f"or another file under this name); {FIX}")
    return res


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def verify_shards(shards: list[ShardEntry], mode: str = "full", workers: int | None = None,
                  part: tuple[int, int] = (0, 1), expect: list[dict | None] | None = None) -> VerifyReport:
    """Check ``shards`` (manifest entries with absolute paths) in parallel threads.

    ``part=(rank, world)``: size and pair count of every shard, sha256 only of shards rank, rank+world, ...
    (ranks of a job split the hashing; the caller combines their problems)."""
    if mode not in MODES:
        raise PrepError(f"verify mode {mode!r}: use one of {', '.join(MODES)}")
    rank, world = part
    t0 = time.perf_counter()
    workers = workers or default_workers()
    expect = expect or [None] * len(shards)
    jobs = [(s, mode, i % world == rank, e) for i, (s, e) in enumerate(zip(shards, expect))]
    report = VerifyReport(mode, shards=len(shards))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as ex:
        for res in ex.map(lambda j: check_shard(*j), jobs):
            report.bytes += res.bytes
            if res.hashed:
                report.hashed_bytes += res.bytes
            if res.problem:
                report.problems.append(res.problem)
    if mode != "none" and shards and all(s.size is None for s in shards):
        report.notes.append("the manifest records no shard sizes (built by an older linkbert-prep): sizes not "
                            "checked; rebuild to record them")
    if mode == "full" and any(not s.sha256 for s in shards):
        report.notes.append("some shards have no sha256 in the manifest: those were not hashed")
    report.seconds = time.perf_counter() - t0
    return report


def verify_dataset(dataset_dir: str | Path, mode: str = "full", workers: int | None = None) -> VerifyReport:
    """The whole check of one dataset folder: its manifest, shards and the vocabulary of its tokenizer copy."""
    from data_prep.shards import Manifest
    return verify_manifest(Manifest.read(dataset_dir), mode, workers)


def verify_manifest(m: Manifest, mode: str = "full", workers: int | None = None) -> VerifyReport:
    """``verify_dataset`` of a manifest already read."""
    from data_prep.shards import MANIFEST
    report = verify_shards(m.shards, mode, workers, expect=[manifest_attrs(m)] * len(m.shards))
    report.problems.extend(manifest_problems(m))
    want = m.vocab_sha256
    tdir = m.tokenizer_copy()
    if not want:
        report.notes.append(f"{m.folder / MANIFEST}: no vocabulary hash (built by an older "
                            "linkbert-prep): vocabulary identity cannot be checked; rebuild to record it")
    elif tdir.is_dir():
        got = tokenizer_vocab_sha256(tdir)
        if got is not None and got != want:
            report.problems.append(f"{tdir}: vocabulary sha256 {got[:12]}... differs from the manifest's "
                                   f"{want[:12]}...; the tokenizer copy was replaced: {FIX}")
    return report


def startup_lines(dataset_dir: str | Path, mode: str = "quick") -> tuple[list[str], list[str]]:
    """(lines, problems): what `linkbert-pretrain` checks about this dataset at start-up, for `inspect`."""
    from data_prep.shards import Manifest
    m = Manifest.read(dataset_dir)
    report = verify_manifest(m, mode)
    pairs = m.num_pairs
    h = m.vocab_sha256
    lines = [f"start-up checks: vocabulary {m.tokenizer_name} sha256 {h[:12] if h else 'not recorded'} "
             "(compared with the tokenizer of --init-from, --data.tokenizer and a resumed checkpoint)",
             f"start-up checks: shards {report.summary()}",
             f"start-up checks: {pairs} pairs: data.held_out must be below that"]
    lines += [f"start-up checks: note: {n}" for n in report.notes]
    return lines, report.problems


def add_arguments(p) -> None:
    p.add_argument("dir", help="dataset directory made by `linkbert-prep build`")
    p.add_argument("--mode", choices=MODES, default="full",
                   help="full: sha256 of every shard (default); quick: HDF5 structure and end rows; "
                        "none: sizes and pair counts")
    p.add_argument("--workers", type=int, default=None, help="threads hashing shards (default: the CPUs)")


def run(args) -> int:
    if args.workers is not None and args.workers < 1:
        raise PrepError(f"--workers {args.workers}: give 1 or more")
    report = verify_dataset(args.dir, args.mode, args.workers)
    import sys
    for line in report.notes:
        print(f"note: {line}", file=sys.stderr)
    for line in report.problems:
        print(f"linkbert-prep verify: {line}", file=sys.stderr)
    print(f"{args.dir}: {report.summary()}")
    return 0 if report.ok else 2
