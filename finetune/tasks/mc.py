"""Multiple choice (MedQA-USMLE, MMLU professional medicine) in the SWAG layout LinkBERT uses.

Rows: `{id, sent1, sent2, ending0..endingK, label}`; choice i is the pair (sent1, sent2 + " " + ending_i).
The number of endings is read from the first row (MedQA: 4).
"""
from __future__ import annotations

import numpy as np

from finetune import metrics as M
from finetune.data_io import require
from finetune.errors import FinetuneError
from finetune.tasks.base import Split, Task, stored_task_info

HINT = "{id, sent1, sent2, ending0, ending1, ending2, ending3, label}"


class MultipleChoiceTask(Task):
    kind = "mc"

    def __init__(self, opts):
        super().__init__(opts)
        self.num_choices = 0

    def validate(self, rows, split):
        if not self.num_choices:
            while f"ending{self.num_choices}" in rows[0]:
                self.num_choices += 1
            if self.num_choices < 2:
                raise FinetuneError(f"{rows[0]['_where']}: missing field 'ending0'/'ending1' for task mc "
                                    f"(expected {HINT})")
        for r in rows:
            require(r, "sent1", str, self.kind, HINT)
            if "sent2" in r:
                require(r, "sent2", str, self.kind, HINT)
            for k in range(self.num_choices):
                require(r, f"ending{k}", str, self.kind, HINT)
        has_gold = self.gold_presence(rows, split)
        if has_gold:
            for r in rows:
                v = require(r, "label", int, self.kind, f"the index of the right ending, 0..{self.num_choices - 1}")
                if not 0 <= v < self.num_choices:
                    raise FinetuneError(f"{r['_where']}: label {v} is not an ending index 0..{self.num_choices - 1}")
        return has_gold

    def labels_from_config(self, config):
        if any(a.endswith("ForMultipleChoice") for a in (config.architectures or [])):
            return   # a multiple-choice head trained elsewhere (e.g. HF's run_swag) is fine too
        info = stored_task_info(config, self.kind)
        if self.num_choices and info.get("num_choices") not in (None, self.num_choices):
            raise FinetuneError(f"the model was fine-tuned with {info['num_choices']} choices, the data has "
                                f"{self.num_choices}")

    def task_info(self):
        return {"task": self.kind, "num_choices": self.num_choices}

    def auto_model_class(self):
        from transformers import AutoModelForMultipleChoice
        return AutoModelForMultipleChoice

    def collator(self, tokenizer):
        from transformers import DataCollatorForMultipleChoice
        with_labels = DataCollatorForMultipleChoice(tokenizer)

        def collate(examples):
            if "labels" in examples[0]:
                return with_labels(examples)
            # a test file without gold (MMLU-style prediction): transformers' collator requires labels
            k = len(examples[0]["input_ids"])
            flat = [{key: v[j] for key, v in ex.items()} for ex in examples for j in range(k)]
            batch = tokenizer.pad(flat, return_tensors="pt")
            return {key: v.view(len(examples), k, -1) for key, v in batch.items()}
        return collate

    def encode(self, rows, tokenizer, split, has_gold):
        k = self.num_choices
        first = [r["sent1"] for r in rows for _ in range(k)]
        second = [f"{r.get('sent2', '')} {r[f'ending{j}']}".strip() for r in rows for j in range(k)]
        enc = tokenizer(first, second, truncation=True, max_length=self.opts.max_seq_length)
        feats, truncated = [], 0
        for i, r in enumerate(rows):
            f = {key: [enc[key][i * k + j] for j in range(k)] for key in enc.keys()}
            truncated += any(len(x) >= self.opts.max_seq_length for x in f["input_ids"])
            if has_gold:
                f["labels"] = r["label"]
            feats.append(f)
        return Split(split, rows, feats, has_gold, counts={"rows_truncated_to_max_seq_length": truncated})

    def decode(self, split, logits):
        logits = logits[0] if isinstance(logits, tuple) else logits
        return {r["id"]: int(k) for r, k in zip(split.rows, np.asarray(logits).argmax(-1))}

    def score(self, split, predictions):
        return {"accuracy": M.accuracy([predictions[r["id"]] for r in split.rows],
                                       [r["label"] for r in split.rows])}
