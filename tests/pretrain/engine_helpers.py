"""Helpers for the engine tests: prepared data from the bundled corpus, 2-rank runs, synthetic shards."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from data_prep.shards import SpecialIds, write_shard
from tests.procs import ROOT, child_env, free_port, kill_tree

CORPUS = ROOT / "data_prep" / "corpora" / "jargon.jsonl.gz"


def build_jargon(tokenizer_dir: Path, out: Path, max_seq_len: int = 64, seed: int = 0) -> Path:
    """The real bundled corpus prepared by the project's own builder (a few seconds)."""
    from data_prep.cli import main as prep_main
    if not (out / "manifest.json").is_file():
        rc = prep_main(["build", "--corpus", str(CORPUS), "--tokenizer", str(tokenizer_dir), "--out", str(out),
                        "--max-seq-len", str(max_seq_len), "--seed", str(seed), "--workers", "1", "--quiet"])
        assert rc == 0
    return out


def synthetic_dataset(out: Path, n: int = 100, max_seq_len: int = 16, shards: int = 2, vocab: int = 50,
                      seed: int = 0, relation_cue: bool = False) -> Path:
    """A tiny prepared dataset of random tokens. With relation_cue, B's tokens are drawn from a range that
    depends on the pair's label, so the relation is learnable (a plumbing check for labels and eval)."""
    rng = np.random.default_rng(seed)
    special = SpecialIds(vocab_size=vocab, cls_id=1, sep_id=2, pad_id=0, mask_id=3)
    out.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    entries = []
    for k in range(shards):
        rows = np.arange(bounds[k], bounds[k + 1])
        m = len(rows)
        lens = rng.integers(8, max_seq_len + 1, size=m).astype(np.int32)
        a = np.maximum(3, lens // 2).astype(np.int32)
        ids = np.zeros((m, max_seq_len), dtype=np.int64)
        for j in range(m):
            ids[j, :lens[j]] = rng.integers(4, vocab, size=lens[j])
            if relation_cue:
                lab = rows[j] % 3
                lo = 4 + lab * (vocab - 4) // 3
                ids[j, a[j]:lens[j]] = rng.integers(lo, lo + (vocab - 4) // 3, size=lens[j] - a[j])
            ids[j, 0], ids[j, a[j] - 1], ids[j, lens[j] - 1] = 1, 2, 2
        arrays = {"input_ids": ids, "seq_lens": lens, "a_lens": a,
                  "pair_labels": (rows % 3).astype(np.int8), "anchor_doc": rows.astype(np.int32),
                  "partner_doc": rows.astype(np.int32), "anchor_seg": np.zeros(m, np.int32),
                  "partner_seg": np.zeros(m, np.int32)}
        name = f"shard_{k:05d}.h5"
        sha = write_shard(out / name, arrays, max_seq_len, special, num_docs=n)
        entries.append({"path": name, "num_pairs": m, "sha256": sha})
    (out / "manifest.json").write_text(json.dumps({"format": "linkbert-pairs", "version": 1,
                                                   "max_seq_len": max_seq_len, "seed": seed, "shards": entries}))
    return out


class Ranks:
    """Two (or N) ranks started the way srun/mpirun would: one process each, rank in the environment."""

    def __init__(self, args: list[str], world: int = 2, extra_env: dict | None = None, log_dir: Path | None = None):
        port = free_port()
        self.procs, self.logs = [], []
        for r in range(world):
            env = child_env(RANK=r, LOCAL_RANK=r, WORLD_SIZE=world, LOCAL_WORLD_SIZE=world,
                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS=1, **(extra_env or {}))
            log = open((log_dir or Path(args[args.index("--output") + 1])).parent / f"rank{r}_{port}.log", "a+")
            self.logs.append(log)
            self.procs.append(subprocess.Popen([sys.executable, "-m", "pretrain.cli", *args], cwd=ROOT, env=env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def wait(self, timeout: float) -> list[int]:
        end = time.time() + timeout
        try:
            for p in self.procs:
                p.wait(timeout=max(1.0, end - time.time()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ranks timed out after {timeout}s:\n{self.output()[-4000:]}") from None
        return [p.returncode for p in self.procs]

    def kill(self, sig=9) -> None:
        for p in self.procs:
            kill_tree(p.pid, sig)

    def output(self, rank: int = 0) -> str:
        f = self.logs[rank]
        f.flush()
        f.seek(0)
        return f.read()

    def close(self):
        self.kill()
        for f in self.logs:
            f.close()


def run_ranks(args: list[str], timeout: float = 240, world: int = 2, extra_env: dict | None = None,
              expect: int | None = 0) -> tuple[list[int], str]:
    r = Ranks(args, world, extra_env)
    try:
        codes = r.wait(timeout)
        out = "\n".join(r.output(i) for i in range(world))
    finally:
        r.close()
    if expect is not None:
        assert codes == [expect] * world, f"exit codes {codes}\n{out[-6000:]}"
    return codes, out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def losses(output: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(output / "metrics.jsonl")]
