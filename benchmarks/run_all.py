"""`make bench`: every benchmark in turn, each printing ours beside its baseline and the ratio.

Each script runs in its own process (they set thread counts and spawn ranks themselves). Arguments after
`--` go to every script; `--only prep,model` picks some. The figures quoted in docs/ come from these runs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parent.parent / "shared" / "data"

BENCHES = {
    "prep": "bench_prep.py",          # build tokens/s vs raw fast-tokenizer ceiling; 2 workers vs 1
    "convert": "bench_convert.py",    # converters vs parse-only ceiling (needs the real PubMed/enwiki files)
    "model": "bench_model.py",        # our train step vs transformers BertForPreTraining (3-way head)
    "engine": "bench_engine.py",      # loader headroom; tokens/s and memory per ZeRO stage
    "finetune": "bench_finetune.py",  # ours vs a plain transformers Trainer script; QA eval time
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHES), help="comma list of " + ", ".join(BENCHES))
    args = ap.parse_args()
    failed = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHES:
            ap.error(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")
        if name == "convert" and not SHARED_DATA.is_dir():
            print(f"== {name}: skipped (needs the real corpora in {SHARED_DATA}; pass --pubmed/--wiki by hand)")
            continue
        print(f"== {name}: {BENCHES[name]}", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, str(HERE / BENCHES[name])])
        print(f"== {name}: exit {rc} in {time.time() - t0:.0f}s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
