"""Sequence-level tasks on `AutoModelForSequenceClassification`: single-label classification (seqcls),
multi-label (HoC) and regression (BIOSSES, STS-B), three small classes on one base.

Rows: `{id, sentence | sentence1 + sentence2, label}`. seqcls labels are strings (or ints), sorted as
LinkBERT sorts them. The negative class that ChemProt/DDI/GAD's F1 leaves out is found by its name, not
by its position: with the authors' files it is "0" (which sorts first), but with the raw releases it is
"false" (ChemProt, after "CPR:3"...) or "DDI-false" (DDI, after "DDI-advise"...). HoC labels are a 0/1
list per row (or a list of label names); regression labels are numbers.
"""
from __future__ import annotations

import numpy as np

from finetune import metrics as M
from finetune.data_io import require
from finetune.errors import FinetuneError
from finetune.tasks.base import Split, Task, TaskOptions, stored_task_info

# What --ignore_negative_class alone accepts as the negative label: the authors' "0" and the raw releases'
# "false" (ChemProt) and "DDI-false" (DDI); a file must hold exactly one of them.
STANDARD_NEGATIVE_LABELS = ("0", "false", "DDI-false")


def _file_of(rows) -> str:
    return rows[0]["_where"].rsplit(":", 1)[0]


class SequenceTask(Task):
    """What the three share: text fields, tokenization, the model class, the stored task info.
    Subclasses say how a row's label is checked (`check_label`), becomes a target (`target`), is read
    back from logits (`decode`) and scored (`score`)."""

    problem_type = ""
    label_hint = ""

    def __init__(self, opts: TaskOptions):
        super().__init__(opts)
        self.labels: list = []           # class values (seqcls) or label names (multi-label "names" format)
        self.text_fields: tuple[str, ...] = ()

    @property
    def label_index(self) -> dict:
        return {v: i for i, v in enumerate(self.labels)}

    def validate(self, rows, split):
        if not self.text_fields:
            first = rows[0]
            self.text_fields = (tuple(self.opts.text_fields) or
                                (("sentence1", "sentence2") if "sentence1" in first else ("sentence",)))
        hint = "{id, sentence, label} or {id, sentence1, sentence2, label}"
        for r in rows:
            for f in self.text_fields:
                require(r, f, str, self.kind, hint)
        has_gold = self.gold_presence(rows, split)
        if has_gold:
            for r in rows:
                self.check_label(r)
        return has_gold

    def check_label(self, r) -> None:
        raise NotImplementedError

    def target(self, r):
        raise NotImplementedError

    def labels_from_config(self, config):
        info = stored_task_info(config, self.kind)
        if not self.opts.text_fields and info.get("text_fields"):
            self.text_fields = tuple(info["text_fields"])
        self.labels = list(info.get("labels", []))
        return info

    def config_overrides(self):
        out = {"num_labels": self.num_labels(), "problem_type": self.problem_type}
        if self.labels:
            out["id2label"] = {i: str(v) for i, v in enumerate(self.labels)}
            out["label2id"] = {str(v): i for i, v in enumerate(self.labels)}
        return out

    def num_labels(self) -> int:
        return len(self.labels)

    def task_info(self):
        return {"task": self.kind, "labels": self.labels, "text_fields": list(self.text_fields)}

    def auto_model_class(self):
        from transformers import AutoModelForSequenceClassification
        return AutoModelForSequenceClassification

    def encode(self, rows, tokenizer, split, has_gold):
        texts = [[r[f] for r in rows] for f in self.text_fields]
        enc = tokenizer(*texts, truncation=True, max_length=self.opts.max_seq_length)
        feats, truncated = [], 0
        for i, r in enumerate(rows):
            f = {k: enc[k][i] for k in enc.keys()}
            if len(f["input_ids"]) >= self.opts.max_seq_length:
                truncated += 1
            if has_gold:
                f["labels"] = self.target(r)
            feats.append(f)
        return Split(split, rows, feats, has_gold, counts={"rows_truncated_to_max_seq_length": truncated})

    @staticmethod
    def _logits(logits) -> np.ndarray:
        return np.asarray(logits[0] if isinstance(logits, tuple) else logits)


class SingleLabelTask(SequenceTask):
    """seqcls: one class per row; accuracy, plus P/R/F1 without a named negative class, MCC, or one
    class's F1 where the preset asks."""

    kind = "seqcls"
    problem_type = "single_label_classification"

    def __init__(self, opts: TaskOptions):
        super().__init__(opts)
        self.negative_label = None       # the label left out of P/R/F1 (ChemProt/DDI/GAD)
        self.positive_label = None       # the class whose F1 is reported (MRPC/QQP "1")

    def check_label(self, r):
        v = require(r, "label", (str, int), self.kind, "a class label string")
        if self.labels and type(v) is not type(self.labels[0]):
            raise FinetuneError(f"{r['_where']}: label {v!r} is {type(v).__name__} but the training "
                                f"labels are {type(self.labels[0]).__name__}")

    def fit_labels(self, train_rows):
        if len({type(r["label"]) for r in train_rows}) > 1:
            raise FinetuneError(f"{_file_of(train_rows)}: labels mix strings and numbers; use one type")
        self.labels = sorted({r["label"] for r in train_rows})
        if len(self.labels) < 2:
            raise FinetuneError(f"{_file_of(train_rows)}: only one label ({self.labels[0]!r}) in the training file")
        self._find_special_labels(_file_of(train_rows))

    def labels_from_config(self, config):
        info = super().labels_from_config(config)
        if not self.opts.negative_labels and info.get("negative_label") is not None:
            self.opts.negative_labels = (str(info["negative_label"]),)   # as the fine-tuning run scored it
        self._find_special_labels(f"{getattr(config, '_name_or_path', 'model')} (labels stored in config.json)")

    def _find_special_labels(self, where: str) -> None:
        if self.opts.negative_labels:
            self.negative_label = self._find_negative(where)
        if "f1" in self.opts.extra_metrics:
            hits = [v for v in self.labels if str(v) == str(self.opts.positive_label)]
            if not hits:
                raise FinetuneError(f"{where}: the class {self.opts.positive_label!r} whose F1 is reported never "
                                    f"occurs in the training labels ({', '.join(map(repr, map(str, self.labels)))})")
            self.positive_label = hits[0]

    def _find_negative(self, where: str):
        """The one label that matches an accepted negative spelling, or a FinetuneError saying why not."""
        spellings = self.opts.negative_labels
        hits = [v for v in self.labels if str(v) in spellings]
        named = "/".join(map(repr, spellings))
        if not hits:
            raise FinetuneError(f"{where}: the negative label {named} never occurs in the training labels "
                                f"({', '.join(map(repr, map(str, self.labels)))}); name the negative class "
                                "with --negative_label LABEL")
        if len(hits) > 1:
            raise FinetuneError(f"{where}: several labels could be the negative class "
                                f"({', '.join(map(repr, map(str, hits)))}); name one with --negative_label LABEL")
        return hits[0]

    def check_labels(self, rows, split):
        known = set(self.labels)
        for r in rows:
            if r["label"] not in known:
                raise FinetuneError(f"{r['_where']}: label {r['label']!r} of the {split} file never occurs "
                                    f"in training (known: {', '.join(map(repr, self.labels))})")

    def task_info(self):
        return {**super().task_info(), "negative_label": self.negative_label}

    def target(self, r):
        return self.label_index[r["label"]]

    def decode(self, split, logits):
        return {r["id"]: self.labels[int(k)] for r, k in zip(split.rows, self._logits(logits).argmax(-1))}

    def score(self, split, predictions):
        index = self.label_index
        pred = [index[predictions[r["id"]]] for r in split.rows]
        gold = [index[r["label"]] for r in split.rows]
        out = {"accuracy": M.accuracy(pred, gold)}
        if self.negative_label is not None:
            out.update(M.prf1_ignore_negative(pred, gold, negative_id=index[self.negative_label]))
        if "matthews_corrcoef" in self.opts.extra_metrics:
            out["matthews_corrcoef"] = M.matthews_corrcoef(pred, gold)
        if self.positive_label is not None:
            out["f1"] = M.binary_f1(pred, gold, positive_id=index[self.positive_label])
        return out


class MultiLabelTask(SequenceTask):
    """HoC: a 0/1 vector per row ("binary") or a list of label names ("names"); a label is predicted
    where its logit is positive; micro P/R/F1, regrouped by document id when the preset asks."""

    kind = "multilabel"
    problem_type = "multi_label_classification"

    def __init__(self, opts: TaskOptions):
        super().__init__(opts)
        self.multilabel_format = None    # "binary" (fixed-length 0/1 vector) or "names"
        self.num_binary = 0

    def check_label(self, r):
        v = require(r, "label", list, self.kind, "a list of 0/1 or of label names")
        if all(isinstance(x, int) and not isinstance(x, bool) and x in (0, 1) for x in v) and v:
            fmt = "binary"
        elif all(isinstance(x, str) for x in v):
            fmt = "names"
        else:
            raise FinetuneError(f"{r['_where']}: field 'label' must be a list of 0/1 or of label names")
        if self.multilabel_format is None:
            self.multilabel_format = fmt
            self.num_binary = len(v) if fmt == "binary" else 0
        elif fmt != self.multilabel_format or (fmt == "binary" and len(v) != self.num_binary):
            raise FinetuneError(f"{r['_where']}: field 'label' must be like the first row's "
                                f"({self.multilabel_format}, {self.num_binary or 'any'} entries)")

    def fit_labels(self, train_rows):
        if self.multilabel_format == "names":
            self.labels = sorted({x for r in train_rows for x in r["label"]})

    def labels_from_config(self, config):
        info = super().labels_from_config(config)
        self.multilabel_format = info.get("multilabel_format")
        self.num_binary = int(info.get("num_binary", 0))

    def check_labels(self, rows, split):
        known = set(self.labels)
        for r in rows:
            if self.multilabel_format == "binary" and len(r["label"]) != self.num_binary:
                raise FinetuneError(f"{r['_where']}: {len(r['label'])} labels, training has {self.num_binary}")
            if self.multilabel_format == "names":
                bad = [x for x in r["label"] if x not in known]
                if bad:
                    raise FinetuneError(f"{r['_where']}: label {bad[0]!r} of the {split} file never occurs in training")

    def num_labels(self) -> int:
        return self.num_binary if self.multilabel_format == "binary" else len(self.labels)

    def task_info(self):
        return {**super().task_info(), "multilabel_format": self.multilabel_format, "num_binary": self.num_binary}

    def target(self, r):
        if self.multilabel_format == "binary":
            return [float(x) for x in r["label"]]
        vec = [0.0] * len(self.labels)
        index = self.label_index
        for x in r["label"]:
            vec[index[x]] = 1.0
        return vec

    def decode(self, split, logits):
        on = self._logits(logits) > 0   # sigmoid > 0.5
        if self.multilabel_format == "binary":
            return {r["id"]: [int(x) for x in row] for r, row in zip(split.rows, on)}
        return {r["id"]: [self.labels[j] for j in np.flatnonzero(row)] for r, row in zip(split.rows, on)}

    def score(self, split, predictions):
        rows = split.rows
        pred = np.array([self.target({"label": predictions[r["id"]]}) for r in rows], dtype=bool)
        gold = np.array([self.target(r) for r in rows], dtype=bool)
        ids = [r["id"] for r in rows] if self.opts.document_regroup else [str(i) for i in range(len(rows))]
        return M.multilabel_doc_prf1(pred, gold, ids)


class RegressionTask(SequenceTask):
    """BIOSSES / STS-B: one number per row; Pearson (and Spearman where asked) and MSE."""

    kind = "regression"
    problem_type = "regression"

    def check_label(self, r):
        require(r, "label", (int, float), self.kind, "a number")

    def num_labels(self) -> int:
        return 1

    def target(self, r):
        return float(r["label"])

    def decode(self, split, logits):
        values = self._logits(logits).reshape(len(split.rows), -1)[:, 0]
        return {r["id"]: float(v) for r, v in zip(split.rows, values)}

    def score(self, split, predictions):
        pred = [predictions[r["id"]] for r in split.rows]
        gold = [float(r["label"]) for r in split.rows]
        out = {"pearsonr": M.pearson(pred, gold), "mse": float(np.mean((np.asarray(pred) - np.asarray(gold)) ** 2))}
        if "spearmanr" in self.opts.extra_metrics:
            out["spearmanr"] = M.spearman(pred, gold)
        return out
