"""Task kinds of `linkbert-finetune --task`: how rows become features and logits become predictions."""
from __future__ import annotations

import importlib

from finetune.tasks.base import Split, Task, TaskOptions

# kind -> (module, class): imported on use, so `--task qa` does not import the others
REGISTRY: dict[str, tuple[str, str]] = {
    "qa": ("finetune.tasks.qa", "QATask"),
    "seqcls": ("finetune.tasks.classification", "SingleLabelTask"),
    "multilabel": ("finetune.tasks.classification", "MultiLabelTask"),
    "regression": ("finetune.tasks.classification", "RegressionTask"),
    "ner": ("finetune.tasks.ner", "NERTask"),
    "mc": ("finetune.tasks.mc", "MultipleChoiceTask"),
}
TASK_KINDS = tuple(REGISTRY)


def make_task(kind: str, opts: TaskOptions) -> Task:
    if kind not in REGISTRY:
        raise ValueError(f"unknown task kind {kind!r}")
    module, name = REGISTRY[kind]
    return getattr(importlib.import_module(module), name)(opts)


__all__ = ["Split", "Task", "TaskOptions", "make_task", "TASK_KINDS", "REGISTRY"]
