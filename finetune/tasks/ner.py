"""Token classification (BLURB NER, EBM PICO): one tag per word, the first sub-token carries it.

Rows: `{id, tokens: [...], ner_tags: [...]}`. Other sub-tokens and special tokens get label -100. Words
cut off by max_seq_length get no prediction from the model: they are predicted "O" in predictions_*.json,
left out of the score as LinkBERT's run_ner leaves them out, and counted in run_info.json.
"""
from __future__ import annotations

import numpy as np

from finetune import metrics as M
from finetune.data_io import require
from finetune.errors import FinetuneError
from finetune.tasks.base import Split, Task, stored_task_info

HINT = "{id, tokens: [...], ner_tags: [...]}"


class NERTask(Task):
    kind = "ner"
    label_field = "ner_tags"

    def __init__(self, opts):
        super().__init__(opts)
        self.labels: list[str] = []

    def validate(self, rows, split):
        for r in rows:
            toks = require(r, "tokens", list, self.kind, HINT)
            if not all(isinstance(t, str) for t in toks):
                raise FinetuneError(f"{r['_where']}: field 'tokens' must be a list of strings")
        has_gold = self.gold_presence(rows, split)
        if has_gold:
            for r in rows:
                tags = require(r, "ner_tags", list, self.kind, HINT)
                if len(tags) != len(r["tokens"]):
                    raise FinetuneError(f"{r['_where']}: {len(tags)} ner_tags for {len(r['tokens'])} tokens; "
                                        "give one tag per token")
                if not all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in tags):
                    raise FinetuneError(f"{r['_where']}: field 'ner_tags' must be a list of tag strings")
        return has_gold

    def fit_labels(self, train_rows):
        tags = {t for r in train_rows for t in r["ner_tags"]}
        if len({type(t) for t in tags}) > 1:
            raise FinetuneError(f"{train_rows[0]['_where'].rsplit(':', 1)[0]}: ner_tags mix strings and "
                                "numbers; use tag strings such as B-Chemical")
        self.labels = sorted(tags)

    def labels_from_config(self, config):
        self.labels = list(stored_task_info(config, self.kind)["labels"])

    def check_labels(self, rows, split):
        known = set(self.labels)
        for r in rows:
            for t in r["ner_tags"]:
                if t not in known:
                    raise FinetuneError(f"{r['_where']}: tag {t!r} of the {split} file never occurs in "
                                        f"training (known: {', '.join(map(str, self.labels))})")

    def config_overrides(self):
        return {"num_labels": len(self.labels), "id2label": {i: str(t) for i, t in enumerate(self.labels)},
                "label2id": {str(t): i for i, t in enumerate(self.labels)}}

    def task_info(self):
        return {"task": self.kind, "labels": self.labels}

    def auto_model_class(self):
        from transformers import AutoModelForTokenClassification
        return AutoModelForTokenClassification

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification
        return DataCollatorForTokenClassification(tokenizer)

    def encode(self, rows, tokenizer, split, has_gold):
        if not getattr(tokenizer, "is_fast", False):
            raise FinetuneError("NER needs a fast tokenizer (tokenizer.json) for word alignment")
        enc = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True,
                        max_length=self.opts.max_seq_length)
        index = {t: i for i, t in enumerate(self.labels)}
        feats, first_pos = [], []
        unseen_words = 0
        for i, r in enumerate(rows):
            word_ids = enc.word_ids(i)
            firsts = {}
            for pos, w in enumerate(word_ids):
                if w is not None and w not in firsts:
                    firsts[w] = pos
            f = {k: enc[k][i] for k in enc.keys()}
            if has_gold:
                labels = [-100] * len(word_ids)
                for w, pos in firsts.items():
                    labels[pos] = index[r["ner_tags"][w]]
                f["labels"] = labels
            unseen_words += len(r["tokens"]) - len(firsts)
            feats.append(f)
            first_pos.append(firsts)
        return Split(split, rows, feats, has_gold, extra={"first_pos": first_pos},
                     counts={"words_without_prediction": unseen_words})

    def decode(self, split, logits):
        logits = logits[0] if isinstance(logits, tuple) else logits
        best = np.asarray(logits).argmax(-1)
        out = {}
        outside = "O" if "O" in self.labels else self.labels[0]
        for i, r in enumerate(split.rows):
            firsts = split.extra["first_pos"][i]
            out[r["id"]] = [self.labels[int(best[i, firsts[w]])] if w in firsts else outside
                            for w in range(len(r["tokens"]))]
        return out

    def score(self, split, predictions):
        gold, pred = [], []
        for i, r in enumerate(split.rows):
            seen = sorted(split.extra["first_pos"][i])
            gold.append([str(r["ner_tags"][w]) for w in seen])
            pred.append([str(predictions[r["id"]][w]) for w in seen])
        return M.seqeval_scores(gold, pred, macro=self.opts.macro_metrics)
