"""Sentence(-pair) classification, multi-label (HoC) and regression (BIOSSES) on one model class.

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


class ClassificationTask(Task):
    def __init__(self, kind: str, opts: TaskOptions):
        super().__init__(opts)
        self.kind = kind
        self.labels: list = []           # seqcls: class values; multilabel "names" format: label names
        self.multilabel_format = None    # "binary" (fixed-length 0/1 vector) or "names"
        self.num_binary = 0
        self.text_fields: tuple[str, ...] = ()
        self.negative_label = None       # seqcls with negative_labels: the label left out of P/R/F1
        self.positive_label = None       # seqcls with extra metric f1: the class it is the F1 of

    # -- data checks -------------------------------------------------------------------------------
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
                self._check_label_type(r)
        return has_gold

    def _check_label_type(self, r):
        if self.kind == "regression":
            require(r, "label", (int, float), self.kind, "a number")
        elif self.kind == "multilabel":
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
        else:
            v = require(r, "label", (str, int), self.kind, "a class label string")
            if self.labels and type(v) is not type(self.labels[0]):
                raise FinetuneError(f"{r['_where']}: label {v!r} is {type(v).__name__} but the training "
                                    f"labels are {type(self.labels[0]).__name__}")

    # -- labels ------------------------------------------------------------------------------------
    def fit_labels(self, train_rows):
        if self.kind == "seqcls":
            kinds = {type(r["label"]) for r in train_rows}
            if len(kinds) > 1:
                raise FinetuneError(f"{train_rows[0]['_where'].rsplit(':', 1)[0]}: labels mix strings and "
                                    "numbers; use one type")
            self.labels = sorted({r["label"] for r in train_rows})
            where = train_rows[0]['_where'].rsplit(':', 1)[0]
            if len(self.labels) < 2:
                raise FinetuneError(f"{where}: only one label ({self.labels[0]!r}) in the training file")
            self._find_negative(where)
            self._find_positive(where)
        elif self.kind == "multilabel" and self.multilabel_format == "names":
            self.labels = sorted({x for r in train_rows for x in r["label"]})

    def labels_from_config(self, config):
        info = stored_task_info(config, self.kind)
        if not self.opts.text_fields and info.get("text_fields"):
            self.text_fields = tuple(info["text_fields"])
        self.labels = list(info.get("labels", []))
        self.multilabel_format = info.get("multilabel_format")
        self.num_binary = int(info.get("num_binary", 0))
        if self.kind == "seqcls" and not self.opts.negative_labels and info.get("negative_label") is not None:
            self.opts.negative_labels = (str(info["negative_label"]),)   # as the fine-tuning run scored it
        where = f"{getattr(config, '_name_or_path', 'model')} (labels stored in config.json)"
        self._find_negative(where)
        self._find_positive(where)

    def _find_positive(self, where: str) -> None:
        if self.kind != "seqcls" or "f1" not in self.opts.extra_metrics:
            return
        hits = [v for v in self.labels if str(v) == str(self.opts.positive_label)]
        if not hits:
            raise FinetuneError(f"{where}: the class {self.opts.positive_label!r} whose F1 is reported never "
                                f"occurs in the training labels ({', '.join(map(repr, map(str, self.labels)))})")
        self.positive_label = hits[0]

    def _find_negative(self, where: str) -> None:
        """The one label that matches an accepted negative spelling, or a FinetuneError saying why not."""
        if self.kind != "seqcls" or not self.opts.negative_labels:
            return
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
        self.negative_label = hits[0]

    def check_labels(self, rows, split):
        if self.kind == "seqcls":
            known = set(self.labels)
            for r in rows:
                if r["label"] not in known:
                    raise FinetuneError(f"{r['_where']}: label {r['label']!r} of the {split} file never occurs "
                                        f"in training (known: {', '.join(map(repr, self.labels))})")
        elif self.kind == "multilabel":
            for r in rows:
                if self.multilabel_format == "binary" and len(r["label"]) != self.num_binary:
                    raise FinetuneError(f"{r['_where']}: {len(r['label'])} labels, training has "
                                        f"{self.num_binary}")
                if self.multilabel_format == "names":
                    bad = [x for x in r["label"] if x not in set(self.labels)]
                    if bad:
                        raise FinetuneError(f"{r['_where']}: label {bad[0]!r} of the {split} file never "
                                            "occurs in training")

    def num_labels(self) -> int:
        if self.kind == "regression":
            return 1
        if self.kind == "multilabel" and self.multilabel_format == "binary":
            return self.num_binary
        return len(self.labels)

    def config_overrides(self):
        problem = {"seqcls": "single_label_classification", "multilabel": "multi_label_classification",
                   "regression": "regression"}[self.kind]
        out = {"num_labels": self.num_labels(), "problem_type": problem}
        if self.labels:
            out["id2label"] = {i: str(v) for i, v in enumerate(self.labels)}
            out["label2id"] = {str(v): i for i, v in enumerate(self.labels)}
        return out

    def task_info(self):
        return {"task": self.kind, "labels": self.labels, "multilabel_format": self.multilabel_format,
                "num_binary": self.num_binary, "text_fields": list(self.text_fields),
                "negative_label": self.negative_label}

    # -- model I/O ---------------------------------------------------------------------------------
    def auto_model_class(self):
        from transformers import AutoModelForSequenceClassification
        return AutoModelForSequenceClassification

    def _target(self, r):
        if self.kind == "regression":
            return float(r["label"])
        if self.kind == "seqcls":
            return self._index[r["label"]]
        if self.multilabel_format == "binary":
            return [float(x) for x in r["label"]]
        vec = [0.0] * len(self.labels)
        for x in r["label"]:
            vec[self._index[x]] = 1.0
        return vec

    def encode(self, rows, tokenizer, split, has_gold):
        self._index = {v: i for i, v in enumerate(self.labels)}
        texts = [[r[f] for r in rows] for f in self.text_fields]
        enc = tokenizer(*texts, truncation=True, max_length=self.opts.max_seq_length)
        feats = []
        truncated = 0
        for i, r in enumerate(rows):
            f = {k: enc[k][i] for k in enc.keys()}
            if len(f["input_ids"]) >= self.opts.max_seq_length:
                truncated += 1
            if has_gold:
                f["labels"] = self._target(r)
            feats.append(f)
        return Split(split, rows, feats, has_gold, counts={"rows_truncated_to_max_seq_length": truncated})

    def decode(self, split, logits):
        logits = logits[0] if isinstance(logits, tuple) else logits
        logits = np.asarray(logits)
        out = {}
        if self.kind == "regression":
            for r, v in zip(split.rows, logits.reshape(len(split.rows), -1)[:, 0]):
                out[r["id"]] = float(v)
        elif self.kind == "seqcls":
            for r, k in zip(split.rows, logits.argmax(-1)):
                out[r["id"]] = self.labels[int(k)]
        else:
            on = logits > 0   # a label is predicted where its logit is positive (sigmoid > 0.5)
            for r, row in zip(split.rows, on):
                if self.multilabel_format == "binary":
                    out[r["id"]] = [int(x) for x in row]
                else:
                    out[r["id"]] = [self.labels[j] for j in np.flatnonzero(row)]
        return out

    def score(self, split, predictions):
        rows = split.rows
        if self.kind == "regression":
            pred = [predictions[r["id"]] for r in rows]
            gold = [float(r["label"]) for r in rows]
            out = {"pearsonr": M.pearson(pred, gold),
                   "mse": float(np.mean((np.asarray(pred) - np.asarray(gold)) ** 2))}
            if "spearmanr" in self.opts.extra_metrics:
                out["spearmanr"] = M.spearman(pred, gold)
            return out
        if self.kind == "seqcls":
            pred = [self._index[predictions[r["id"]]] for r in rows]
            gold = [self._index[r["label"]] for r in rows]
            out = {"accuracy": M.accuracy(pred, gold)}
            if self.negative_label is not None:
                out.update(M.prf1_ignore_negative(pred, gold, negative_id=self._index[self.negative_label]))
            if "matthews_corrcoef" in self.opts.extra_metrics:
                out["matthews_corrcoef"] = M.matthews_corrcoef(pred, gold)
            if self.positive_label is not None:
                out["f1"] = M.binary_f1(pred, gold, positive_id=self._index[self.positive_label])
            return out
        pred = np.array([self._target({"label": predictions[r["id"]]}) for r in rows], dtype=bool)
        gold = np.array([self._target(r) for r in rows], dtype=bool)
        ids = [r["id"] for r in rows] if self.opts.document_regroup else [str(i) for i in range(len(rows))]
        return M.multilabel_doc_prf1(pred, gold, ids)
