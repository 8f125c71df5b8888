"""Task kinds of `linkbert-finetune --task`: how rows become features and logits become predictions."""
from __future__ import annotations

from finetune.tasks.base import Split, Task, TaskOptions


def make_task(kind: str, opts: TaskOptions) -> Task:
    if kind in ("seqcls", "multilabel", "regression"):
        from finetune.tasks.classification import ClassificationTask
        return ClassificationTask(kind, opts)
    if kind == "qa":
        from finetune.tasks.qa import QATask
        return QATask(opts)
    if kind == "ner":
        from finetune.tasks.ner import NERTask
        return NERTask(opts)
    if kind == "mc":
        from finetune.tasks.mc import MultipleChoiceTask
        return MultipleChoiceTask(opts)
    raise ValueError(f"unknown task kind {kind!r}")


TASK_KINDS = ("qa", "seqcls", "multilabel", "regression", "ner", "mc")
__all__ = ["Split", "Task", "TaskOptions", "make_task", "TASK_KINDS"]
