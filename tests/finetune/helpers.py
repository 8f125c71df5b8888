"""Shared bits of the fine-tuning tests: fixture paths, a small-and-fast run, reading outputs."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from finetune.runner import FinetuneArgs, run_finetune

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "finetune"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIX / name).read_text().splitlines() if line.strip()]


def finetune(task: str, model, out, **kw) -> dict:
    """Run in-process with the test-speed defaults (2 threads, no tqdm, no model save unless asked)."""
    torch.set_num_threads(2)
    opts = dict(per_device_train_batch_size=16, per_device_eval_batch_size=32, learning_rate=1e-4,
                num_train_epochs=1, max_seq_length=64, disable_tqdm=True, save_model=False, logging_steps=10)
    opts.update(kw)
    for split in ("train", "validation", "test"):
        if isinstance(opts.get(split), str) and not opts[split].startswith("/"):
            opts[split] = str(FIX / opts[split])
    run_finetune(FinetuneArgs(task=task, model=str(model), output=str(out), **opts))
    return outputs(out)


def outputs(out) -> dict:
    out = Path(out)
    res = {"metrics": json.loads((out / "metrics.json").read_text()),
           "info": json.loads((out / "run_info.json").read_text())}
    for split in ("validation", "test"):
        p = out / f"predictions_{split}.json"
        if p.is_file():
            res[split] = json.loads(p.read_text())
    return res
