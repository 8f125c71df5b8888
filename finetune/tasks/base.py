"""What every task kind provides, and the encoded split the trainer runs on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from finetune.errors import FinetuneError


@dataclass
class TaskOptions:
    max_seq_length: int = 128
    doc_stride: int = 128            # QA: overlap between windows of a long context
    n_best_size: int = 20            # QA: start/end candidates per window
    max_answer_length: int = 30      # QA: longest answer span in tokens
    # seqcls: micro P/R/F1 without the negative class (ChemProt/DDI/GAD), named by label: the accepted
    # spellings of that one label (authors' files "0", raw ChemProt "false", raw DDI "DDI-false")
    negative_labels: tuple[str, ...] = ()
    macro_metrics: bool = False      # NER: mean of per-type P/R/F1 (EBM PICO)
    document_regroup: bool = True    # multilabel: OR rows per document id before scoring (HoC)
    text_fields: tuple[str, ...] = ()  # seqcls/multilabel/regression: input fields (GLUE: question,sentence)
    extra_metrics: tuple[str, ...] = ()  # GLUE: matthews_corrcoef, f1 (of positive_label), spearmanr
    positive_label: str | None = None     # seqcls "f1": the class it is the F1 of (MRPC/QQP "1")


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@dataclass
class Split:
    """One file after encoding: `features` feed the model, `extra` holds what decoding needs."""
    name: str
    rows: list[dict]
    features: list[dict]
    has_gold: bool
    extra: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)   # skipped/truncated things, reported in run_info
    first_ids: dict[str, list[str]] = field(default_factory=dict)   # count name -> ids of its first rows
    notes: list[str] = field(default_factory=list)   # what a user must know about this split (run_info notes)

    def note_ids(self, count: str, ids: list[str], keep: int = 5) -> None:
        """Count `ids` under `count` and keep the first few, so a user can find those rows."""
        self.counts[count] = len(ids)
        if ids:
            self.first_ids[count] = [str(i) for i in ids[:keep]]

    @property
    def dataset(self) -> ListDataset:
        return ListDataset(self.features)


class Task:
    """Interface of a task kind; subclasses in this package."""
    kind: str = ""
    label_field: str = "label"

    def __init__(self, opts: TaskOptions):
        self.opts = opts

    # -- data checks -------------------------------------------------------------------------------
    def validate(self, rows: list[dict], split: str) -> bool:
        """Check every row's fields (FinetuneError naming file:line) and return whether gold is present."""
        raise NotImplementedError

    def gold_presence(self, rows: list[dict], split: str) -> bool:
        """Gold labels must be on every row or on none (a test file may come without them)."""
        have = [self.label_field in r for r in rows]
        if all(have):
            return True
        if split == "train" or any(have):
            missing = next(r for r, h in zip(rows, have) if not h)
            raise FinetuneError(f"{missing['_where']}: missing field {self.label_field!r} for task {self.kind}"
                                + ("" if split == "train" else " (give it on every row or on none)"))
        return False

    # -- labels ------------------------------------------------------------------------------------
    def fit_labels(self, train_rows: list[dict]) -> None:
        """Build the label vocabulary from the training rows (sorted, as LinkBERT does)."""

    def labels_from_config(self, config) -> None:
        """Predict-only runs take the label vocabulary a previous fine-tuning stored in config.json."""

    def check_labels(self, rows: list[dict], split: str) -> None:
        """FinetuneError for a label the model was not trained on."""

    def config_overrides(self) -> dict:
        return {}

    def task_info(self) -> dict:
        """Stored as `config.linkbert_finetune` so a predict-only run can restore labels."""
        return {"task": self.kind}

    # -- model I/O ---------------------------------------------------------------------------------
    def auto_model_class(self):
        raise NotImplementedError

    def encode(self, rows: list[dict], tokenizer, split: str, has_gold: bool) -> Split:
        raise NotImplementedError

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding
        return DataCollatorWithPadding(tokenizer)

    def decode(self, split: Split, logits) -> dict[str, Any]:
        """{row id: prediction} in the form docs/formats.md section 8 gives."""
        raise NotImplementedError

    def score(self, split: Split, predictions: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError


def stored_task_info(config, kind: str) -> dict:
    info = getattr(config, "linkbert_finetune", None)
    if not isinstance(info, dict) or info.get("task") != kind:
        raise FinetuneError(
            f"{getattr(config, '_name_or_path', 'model')}: has no {kind} head fine-tuned by linkbert-finetune "
            f"(config.json lacks linkbert_finetune.task={kind!r}); give --train to fine-tune first")
    return info
