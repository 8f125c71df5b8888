"""transformers' Trainer with task-aware evaluation: logits -> predictions -> LinkBERT's metrics.

The stock Trainer evaluates through `compute_metrics(EvalPrediction)`, which cannot see QA windows'
offsets or NER word alignment; overriding `evaluate` (as HF's own QA example does) keeps periodic
`--eval_steps` evaluation and the final one on the same code path.
"""
from __future__ import annotations

import time

from transformers import Trainer

from finetune.tasks.base import Split, Task


class TaskTrainer(Trainer):
    def __init__(self, *args, task: Task, eval_split: Split | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task
        self.eval_split = eval_split

    def run_split(self, split: Split, prefix: str) -> tuple[dict, dict, dict]:
        """(predictions by id, task metrics, loop stats) for one encoded split."""
        start = time.perf_counter()
        loader = self.get_eval_dataloader(split.dataset)
        out = self.evaluation_loop(loader, description=f"{prefix} ({split.name})", prediction_loss_only=False,
                                   metric_key_prefix=prefix)
        predictions = self.task.decode(split, out.predictions)
        metrics = self.task.score(split, predictions) if split.has_gold else {}
        stats = {"seconds": time.perf_counter() - start, "examples": len(split.rows),
                 "features": len(split.features)}
        if f"{prefix}_loss" in out.metrics:
            stats["loss"] = float(out.metrics[f"{prefix}_loss"])
        return predictions, metrics, stats

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        if self.eval_split is None:
            return {}
        _, metrics, stats = self.run_split(self.eval_split, metric_key_prefix)
        logged = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        logged[f"{metric_key_prefix}_runtime"] = stats["seconds"]
        if "loss" in stats:
            logged[f"{metric_key_prefix}_loss"] = stats["loss"]
        self.log(logged)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logged)
        return logged
